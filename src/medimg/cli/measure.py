"""``medimg measure ellipse MASK [--label L] [--spacing MM] [--json]`` (operation ``measure_ellipse``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import JsonOpt, RootsOpt, _floats, _run, app, console

measure_app = typer.Typer(
    help="Shape measurements of label maps: `medimg measure ellipse MASK` (e.g. fetal head circumference).",
    no_args_is_help=True,
)


@measure_app.command("ellipse")
def ellipse_cmd(
    mask: Annotated[Path, typer.Argument(help="2D label map: a filled structure or a drawn outline.")],
    label: Annotated[
        int | None, typer.Option("--label", help="Label value to measure (default: all non-zero).")
    ] = None,
    spacing: Annotated[
        str | None,
        typer.Option("--spacing", help="Pixel size in mm, MM or MMxMM, when the file has none (PNG); overrides it."),
    ] = None,
    as_json: JsonOpt = False,
    root: RootsOpt = None,
) -> None:
    """Fit an ellipse to a 2D structure: circumference, semi-axes, area and angle in mm."""
    from medimg.ops import Context, run

    def body() -> None:
        sp = _floats(spacing.lower() if spacing else None, "--spacing (the pixel size in mm)")
        params = {"mask": str(mask), "label": label, "spacing": list(sp) if sp else None}
        r = run("measure_ellipse", params, Context(roots=root or None)).model_dump(mode="json")
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2) + "\n")
            return
        a, b = r["semi_axes_mm"]
        console.print(
            f"circumference {r['circumference_mm']:.2f} mm  semi-axes {a:.2f} x {b:.2f} mm  area {r['area_mm2']:.1f} "
            f"mm²  angle {r['angle_deg']:.1f}°  centre ({r['center_mm'][0]:.2f}, {r['center_mm'][1]:.2f}) mm  fit RMS "
            f"{r['rms_residual_mm']:.3f} mm"
            + ("  [touches the image border]" if r["touches_border"] else "")
            + (
                ""
                if r["elliptical"]
                else "\nwarning: the outline is not an ellipse (fit RMS above 5 % of the minor semi-axis): the mask "
                "may include another structure; check it before using this circumference"
            ),
            markup=False,
            highlight=False,
        )

    _run(body)


app.add_typer(measure_app, name="measure")
