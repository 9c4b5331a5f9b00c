"""``medimg interact``: scripted interactive segmentation (a thin layer over :mod:`medimg.interactive`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    lasso: Annotated[
        list[str] | None,
        typer.Option(
            "--lasso",
            help="x,y[,z];x,y[,z];...[;neg] closed outline on one slice (all points share z, y or x); repeat. "
            "Positive: the structure on that slice is what it encloses; neg: none of it.",
        ),
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompts JSON (applied before --box/--click).")
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(
            "--mask",
            help="Initial mask to refine (a model's prediction, yesterday's label; nonzero = the structure), on "
            "the image's grid. The prompts correct it.",
        ),
    ] = None,
    support: Annotated[
        Path | None,
        typer.Option(
            "--support",
            help="Start from the in-context segmentation by this dataset of labelled examples (imagesTr/labelsTr; "
            "medimg segment --support): images already segmented as context. The prompts correct it.",
        ),
    ] = None,
    label: Annotated[
        int | None,
        typer.Option("--label", help="With --mask / --support: the label value to refine (default: every nonzero)."),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="learned (the promptable network), random_walker or region_growing.")
    ] = "learned",
    model: Annotated[
        Path | None, typer.Option("--model", help="Promptable model folder (default: the bundled one).")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="3D volumes, learned method: 3d (the 3D network on a crop around the prompts) or slices (the 2D "
            "network slice by slice, then a 3D random walker). Default: 3d when the first prompt is a 3D box, else "
            "slices; multi-channel volumes: slices (the 3D network reads one channel).",
        ),
    ] = None,
    channel: ChannelOpt = None,
    fill_nonfinite: FillNonfiniteOpt = None,
    allow_irregular: IrregularOpt = False,
) -> None:
    """Segment one structure from prompts given at once, applied in order as a session would (--prompts, then
    --box, --scribble, --lasso, --click; voxel coordinates, x = column). --mask or --support gives the mask the
    prompts start from (and refine)."""
    import medimg
    from medimg.errors import MedimgError
    from medimg.interactive import InteractiveSession, PromptList
    from medimg.interactive.prompts import (
        PromptError,
        lasso_constraint,
        lasso_prompts,
        parse_box,
        parse_click,
        parse_lasso,
        parse_scribble,
    )

    def body() -> None:
        img = load_input(image, channel, fill_nonfinite, allow_irregular)
        if mask is not None and support is not None:
            raise MedimgError("Give --mask or --support, not both (each is the mask the prompts start from).")
        if label is not None and mask is None and support is None:
            raise MedimgError("--label picks a value of --mask or --support; give one of them, or drop --label.")
        start, start_note = _initial_mask(img, mask, support, label)
        items = PromptList.load(prompts).items if prompts else []
        if box:
            items.append(parse_box(box, img.ndim))
        items += [parse_scribble(c, img.ndim) for c in scribble or []]
        lassos = [parse_lasso(t, img.ndim) for t in lasso or []]
        shape = tuple(img.shape)
        lasso_items = [(lasso_prompts(pts, shape, pos), lasso_constraint(pts, shape, pos)) for pts, pos in lassos]
        clicks = [parse_click(c, img.ndim) for c in click or []]
        if not items and not lasso_items and not clicks and start is None:
            raise PromptError("Give at least one prompt (--box, --scribble, --lasso, --click or --prompts) or --mask.")
        if engine is not None and engine not in ("3d", "slices"):
            raise MedimgError(f"--engine {engine!r} is not known; choose --engine 3d or --engine slices.")
        if engine is not None and (method != "learned" or img.ndim != 3):
            raise MedimgError("--engine applies to the learned method on 3D volumes; drop --engine here.")
        s = InteractiveSession(img, method, model, initial_mask=start, engine=engine)
        for p in items:
            s.add(p)  # one interaction each: the learned method refines its previous mask
        for group, within in lasso_items:
            s.add_many(group, within=within if method == "learned" else None)
        for p in clicks:
            s.add(p)
        lab = s.label_map()
        medimg.write(lab, out)
        n = len(items) + len(lasso_items) + len(clicks)
        console.print(
            f"{start_note}{n} prompt(s), {int(lab.array.sum())} voxels segmented "
            f"({1000 * sum(s.latencies):.0f} ms, method {method}{_engine_note(s)}); wrote {out}",
            highlight=False,
            markup=False,
        )

    _run(body)


def _engine_note(s: Any) -> str:
    return f", {s.engine} engine" if s.method == "learned" and s.image.ndim == 3 else ""


def _initial_mask(img: Any, mask: Path | None, support: Path | None, label: int | None) -> tuple[Any, str]:
    """The mask a session starts from: read from ``mask``, or segmented in context from ``support``; with a note."""
    import numpy as np

    import medimg
    from medimg.errors import MedimgError
    from medimg.image import check_same_geometry

    if mask is None and support is None:
        return None, ""
    if mask is not None:
        lab = medimg.read_labels(mask)
        check_same_geometry(img, lab, "image and --mask")
        note = f"started from {mask.name}; "
    else:
        from medimg.seg.incontext import load_support, segment_in_context

        assert support is not None
        lab, rep = segment_in_context(img, load_support(support))
        note = f"started from the in-context segmentation ({rep['n_support']} support cases, {rep['seconds']:.1f} s); "
    arr = lab.array != 0 if label is None else lab.array == label
    if label is not None and not arr.any():
        values = [int(v) for v in np.unique(lab.array) if v != 0]
        raise MedimgError(f"The initial mask has no voxel of --label {label}; its values are {values}.")
    return arr, note
