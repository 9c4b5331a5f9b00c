"""``medimg interact``: scripted interactive segmentation (a thin layer over :mod:`medimg.interactive`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import IrregularOpt, _run, console
from medimg.cli.predict import ChannelOpt, FillNonfiniteOpt
from medimg.ops.segmentation import load_input


def interact_cmd(
    image: Annotated[Path, typer.Argument(help="2D or 3D image (any format medimg reads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Mask to write (.png, .nii.gz, .seg.nrrd ...).")],
    box: Annotated[str | None, typer.Option("--box", help="x0,y0,x1,y1 (or x0,y0,z0,x1,y1,z1), voxels.")] = None,
    click: Annotated[
        list[str] | None, typer.Option("--click", help="x,y[,z][,neg]; repeat; positive unless tagged neg.")
    ] = None,
    scribble: Annotated[
        list[str] | None,
        typer.Option("--scribble", help="x,y[,z];x,y[,z];...[;neg] polyline; repeat; positive unless ;neg."),
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompts JSON (applied before --box/--click).")
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="learned (the promptable network), random_walker or region_growing.")
    ] = "learned",
    model: Annotated[
        Path | None, typer.Option("--model", help="Promptable model folder (default: the bundled one).")
    ] = None,
    channel: ChannelOpt = None,
    fill_nonfinite: FillNonfiniteOpt = None,
    allow_irregular: IrregularOpt = False,
) -> None:
    """Segment one structure from prompts given at once, applied in order as a session would (--prompts, then
    --box, --scribble, --click; voxel coordinates, x = column)."""
    import medimg
    from medimg.interactive import InteractiveSession, PromptList
    from medimg.interactive.prompts import PromptError, parse_box, parse_click, parse_scribble

    def body() -> None:
        img = load_input(image, channel, fill_nonfinite, allow_irregular)
        s = InteractiveSession(img, method, model)
        items = PromptList.load(prompts).items if prompts else []
        if box:
            items.append(parse_box(box, img.ndim))
        items += [parse_scribble(c, img.ndim) for c in scribble or []]
        items += [parse_click(c, img.ndim) for c in click or []]
        if not items:
            raise PromptError("Give at least one prompt: --box, --scribble, --click or --prompts.")
        for p in items:
            s.add(p)  # one interaction each: the learned method refines its previous mask
        lab = s.label_map()
        medimg.write(lab, out)
        console.print(
            f"{len(items)} prompt(s), {int(lab.array.sum())} voxels segmented "
            f"({1000 * sum(s.latencies):.0f} ms, method {method}); wrote {out}"
        )

    _run(body)
