"""``medimg frd A B [--version v0|v1] [--masks DIR --masks DIR] [--bootstrap N] [--ood] [--json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from medimg.cli._common import JsonOpt, RootsOpt, _progress, _run, app, console
from medimg.errors import MedimgError


@app.command("frd")
def frd_cmd(
    set_a: Annotated[Path, typer.Argument(help="Reference image folder (real images).")],
    set_b: Annotated[Path, typer.Argument(help="Folder of the images judged against it (e.g. generated).")],
    version: Annotated[str, typer.Option("--version", help="FRD version: v1 (default) or v0.")] = "v1",
    masks: Annotated[
        list[Path] | None,
        typer.Option("--masks", help="Mask folder of A, then of B (give it twice; nonzero = region)."),
    ] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for a 95 % CI.")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    ood: Annotated[bool, typer.Option("--ood", help="Score each image of B as in/out of A's distribution.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Processes for the feature extraction.")] = 1,
    drop_degenerate: Annotated[
        bool,
        typer.Option("--drop-degenerate", help="v1: leave out features constant in A up to rounding (not frd-score)."),
    ] = False,
    as_json: JsonOpt = False,
    root: RootsOpt = None,
) -> None:
    """Fréchet Radiomic Distance between image folders A (reference) and B, with medimg's own radiomics
    (frd-score compatible; v1: log of the squared distance of A-z-scored features). Lower is closer."""
    from medimg.ops import Context, run

    def body() -> None:
        if version not in ("v0", "v1"):
            raise MedimgError(f"--version {version!r} is not known; use v0 or v1.")
        if masks is not None and len(masks) != 2:
            raise MedimgError("Give --masks twice: the mask folder of A, then that of B.")
        v: Literal["v0", "v1"] = "v0" if version == "v0" else "v1"
        params = {
            "set_a": str(set_a),
            "set_b": str(set_b),
            "version": v,
            "masks_a": str(masks[0]) if masks else None,
            "masks_b": str(masks[1]) if masks else None,
            "bootstrap": bootstrap,
            "seed": seed,
            "ood": ood,
            "workers": workers,
            "drop_degenerate": drop_degenerate,
        }
        res = run("frd", params, Context(roots=root or None, progress=None if as_json else _progress))
        if as_json:
            sys.stdout.write(json.dumps(res.model_dump(mode="json"), indent=2) + "\n")
            return
        r = res.model_dump()
        val = "n/a (identical feature distributions)" if r["value"] is None else f"{r['value']:.4f}"
        console.print(
            f"FRD {r['version']}: {val}  ({r['n_a']} vs {r['n_b']} {r['dims']}D images, {r['n_features']} features)",
            markup=False,
            highlight=False,
        )
        if r["degenerate_features"]:
            names = ", ".join(r["degenerate_features"][:4])
            console.print(
                f"note: {len(r['degenerate_features'])} feature(s) are constant in A up to rounding ({names}); "
                + ("left out." if drop_degenerate else "kept as frd-score does; --drop-degenerate leaves them out."),
                markup=False,
                highlight=False,
            )
        if r["ci_low"] is not None:
            console.print(f"95 % bootstrap CI: {r['ci_low']:.4f} .. {r['ci_high']:.4f}", markup=False)
        for row in r["ood"] or []:
            flag = "OUT" if row["outlier"] else "in "
            console.print(f"{flag} {row['image']}  z={row['z']:.2f}  p={row['p_value']:.3g}", markup=False)

    _run(body)
