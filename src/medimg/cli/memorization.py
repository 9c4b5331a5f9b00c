"""``medimg memorization SAMPLES --train TRAIN [--threshold T] [--false-alarm A] [--report FILE] [--json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import JsonOpt, RootsOpt, _run, app, console


@app.command("memorization")
def memorization_cmd(
    samples: Annotated[Path, typer.Argument(help="Folder of generated images.")],
    train: Annotated[Path, typer.Option("--train", help="Folder of the training images (same kind).")],
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Flag above this similarity (default: calibrated on TRAIN).")
    ] = None,
    false_alarm: Annotated[
        float, typer.Option("--false-alarm", help="Calibration: share of genuinely new images that may be flagged.")
    ] = 0.05,
    grid: Annotated[
        int | None, typer.Option("--grid", help="Pixels per axis of the common grid (2D 32, 3D 24).")
    ] = None,
    max_shift: Annotated[
        int | None, typer.Option("--max-shift", help="Largest shift searched, grid pixels (2D 4, 3D 2).")
    ] = None,
    no_flips: Annotated[bool, typer.Option("--no-flips", help="Do not match mirrored samples.")] = False,
    calibration_size: Annotated[
        int, typer.Option("--calibration-size", help="Training images used as leave-one-out queries.")
    ] = 1000,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the per-sample table (.csv) or the whole result (.json).")
    ] = None,
    as_json: JsonOpt = False,
    root: RootsOpt = None,
) -> None:
    """Flag generated images that copy or nearly copy a training image (shifted, rescaled, intensity-changed,
    noised, mirrored): nearest training image, similarity (max. correlation of band-passed structure), and a
    threshold calibrated on TRAIN's own leave-one-out nearest-neighbour similarities."""
    from medimg.ops import Context, run

    def body() -> None:
        params = {
            "samples": str(samples),
            "train": str(train),
            "threshold": threshold,
            "false_alarm": false_alarm,
            "grid": grid,
            "max_shift": max_shift,
            "flips": not no_flips,
            "calibration_size": calibration_size,
            "report": str(report) if report else None,
        }
        res = run("memorization", params, Context(roots=root or None))
        if as_json:
            sys.stdout.write(json.dumps(res.model_dump(mode="json"), indent=2) + "\n")
            return
        r = res.model_dump()
        console.print(
            f"{r['n_memorized']} of {r['n_samples']} samples over the threshold {r['threshold']:.4f} "
            f"({r['threshold_source']}"
            + (f", {100 * r['false_alarm']:.0f} % false alarms on new images" if r["false_alarm"] else "")
            + f"; {r['n_train']} training images)",
            markup=False,
            highlight=False,
        )
        for m in sorted(r["matches"], key=lambda m: -m["similarity"]):
            flag = "COPY" if m["memorized"] else "new "
            console.print(
                f"{flag} {m['sample']} ~ {m['match']}  similarity {m['similarity']:.4f}"
                + (f"  p={m['p_value']:.3g}" if m["p_value"] is not None else ""),
                markup=False,
                highlight=False,
            )

    _run(body)
