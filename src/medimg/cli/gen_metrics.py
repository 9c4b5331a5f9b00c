"""``medimg gen-metrics A B [--space radiomics|pixels] [--encoder MODEL] [--k K] [--json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import JsonOpt, RootsOpt, _progress, _run, app, console
from medimg.errors import MedimgError


@app.command("gen-metrics")
def gen_metrics_cmd(
    set_a: Annotated[Path, typer.Argument(help="Reference image folder (real images).")],
    set_b: Annotated[Path, typer.Argument(help="Folder of the images judged (e.g. generated).")],
    space: Annotated[
        list[str] | None,
        typer.Option("--space", help="Feature space for KID/PRDC: radiomics, pixels (repeatable; default both)."),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder",
            help="Also FID/KID/PRDC on this medimg classifier's encoder features (bundled name, e.g. pneumoniamnist, "
            "or a model folder from `medimg classify train`).",
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Neighbours of the k-NN manifolds.")] = 5,
    pairs: Annotated[int, typer.Option("--pairs", help="Random pairs for the MS-SSIM diversity.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of subsets and pairs.")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Processes for the radiomics extraction.")] = 1,
    as_json: JsonOpt = False,
    root: RootsOpt = None,
) -> None:
    """FRD, KID, precision, recall, density, coverage and MS-SSIM diversity of image folder B against A (the
    reference), with no downloaded weights; each metric names its feature space."""
    from medimg.ops import Context, run

    def body() -> None:
        spaces = space or ["radiomics", "pixels"]
        for s in spaces:
            if s not in ("radiomics", "pixels"):
                raise MedimgError(f"--space {s!r} is not known; use radiomics or pixels.")
        params = {
            "set_a": str(set_a),
            "set_b": str(set_b),
            "spaces": spaces,
            "k": k,
            "pairs": pairs,
            "seed": seed,
            "workers": workers,
            "encoder": encoder,
        }
        res = run("gen_metrics", params, Context(roots=root or None, progress=None if as_json else _progress))
        if as_json:
            sys.stdout.write(json.dumps(res.model_dump(mode="json"), indent=2) + "\n")
            return
        r = res.model_dump()
        frd = "n/a (identical)" if r["frd"] is None else f"{r['frd']:.4f}"
        out = [f"{r['n_a']} vs {r['n_b']} {r['dims']}D images", f"FRD v1 {frd}  [{r['frd_space']}]"]
        for s in r["spaces"]:
            fid = "" if s["fid"] is None else f"FID {s['fid']:.4g}  "
            out.append(
                f"[{s['space']}, {s['n_features']} features] {fid}KID {s['kid']:.4g} ± {s['kid_std']:.2g}  "
                f"precision {s['precision']:.3f}  recall {s['recall']:.3f}  density {s['density']:.3f}  "
                f"coverage {s['coverage']:.3f}  (k={r['k']})"
            )
        out.append(
            f"MS-SSIM diversity A {r['diversity_a']:.4f}  B {r['diversity_b']:.4f}  "
            f"({r['diversity_pairs']} pairs; lower = more diverse) [{r['diversity_space']}]"
        )
        for line in out:
            console.print(line, markup=False, highlight=False)

    _run(body)
