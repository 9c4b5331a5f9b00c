"""``medimg fuse A B C ... -o OUT --method majority|staple|multi-staple``: fuse raters' label maps (the ``fuse``
operation) and print each rater's sensitivity / specificity."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from medimg.cli._common import RootsOpt, _progress, _run, app, console


@app.command("fuse")
def fuse_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Two or more raters' label maps (masks) on one voxel grid.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Fused label map (format from the extension).")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="staple (binary STAPLE per label, default) | majority (ties go to the smallest label value) | "
            "multi-staple (SimpleITK MultiLabelSTAPLE).",
        ),
    ] = "staple",
    probability: Annotated[
        Path | None,
        typer.Option("--probability", help="With --method staple: write STAPLE's probability map (.nii.gz/.tif...)."),
    ] = None,
    raters_json: Annotated[
        Path | None, typer.Option("--raters-json", help="Write the per-rater sensitivity/specificity JSON here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
    root: RootsOpt = None,
) -> None:
    """Fuse several raters' label maps of one image into one label map on the same grid (majority vote, STAPLE
    or multi-label STAPLE) and report every rater's sensitivity and specificity per label (STAPLE's estimates;
    for majority, against the fused map)."""
    from medimg.ops import Context, run
    from medimg.ops.fuse_op import FuseResult

    def body() -> None:
        params = {
            "inputs": [str(p) for p in inputs],
            "output": str(out),
            "method": method,
            "probability": str(probability) if probability else None,
            "raters_json": str(raters_json) if raters_json else None,
        }
        res = cast(FuseResult, run("fuse", params, Context(roots=root or None, progress=_progress)))
        if as_json:
            sys.stdout.write(json.dumps(res.model_dump(mode="json"), indent=1) + "\n")
            return
        t = Table(
            title=f"{res.method}: rater quality against {res.quality_against}",
            title_justify="left",
        )
        for c in ("rater", "label", "sensitivity", "specificity"):
            t.add_column(c, justify="left" if c == "rater" else "right")
        for r in res.raters:
            for lab, q in r.labels.items():
                t.add_row(r.name, lab, f"{q.sensitivity:.4f}", f"{q.specificity:.4f}")
        console.print(t)
        extra = []
        if res.tie_voxels:
            extra.append(f"{res.tie_voxels} tied voxels given the smallest label value")
        if res.undecided_voxels:
            extra.append(f"{res.undecided_voxels} undecided voxels given the majority vote")
        if extra:
            console.print("; ".join(extra), highlight=False)
        for f in res.files:
            console.print(f"wrote {f}", markup=False, highlight=False)

    _run(body)
