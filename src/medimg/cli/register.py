"""``medimg register`` and ``medimg warp``: thin CLI layers over :mod:`medimg.register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medimg.cli._common import DeviceOpt, _run, console
from medimg.cli.predict import FillNonfiniteOpt
from medimg.errors import MedimgError
from medimg.ops.segmentation import load_input

MAX_VOXELS = 300_000  # medimg.register.deformable.MAX_VOXELS (not imported here: that module loads torch)


def register_cmd(
    fixed: Annotated[Path, typer.Argument(help="Fixed (target) image: any format medimg reads.")],
    moving: Annotated[Path, typer.Argument(help="Moving image, warped onto the fixed grid.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    method: Annotated[str, typer.Option("--method", help="rigid, affine, deformable or learned.")] = "deformable",
    metric: Annotated[str, typer.Option("--metric", help="auto (MI linear + NCC deformable), mi, ncc, mse.")] = "auto",
    moving_labels: Annotated[Path | None, typer.Option("--moving-labels", help="Labels to propagate.")] = None,
    fixed_labels: Annotated[Path | None, typer.Option("--fixed-labels", help="Fixed labels: Dice/HD95.")] = None,
    smoothness: Annotated[float, typer.Option("--smoothness", help="Deformable regularisation weight.")] = 1.0,
    ext: Annotated[str, typer.Option("--ext", help="Extension of the written images.")] = ".nii.gz",
    model: Annotated[str, typer.Option("--model", help="Learned model folder or bundled name.")] = "hippocampus_flow",
    refine: Annotated[bool, typer.Option("--refine", help="Learned: refine by instance optimisation.")] = False,
    full_resolution: Annotated[
        bool,
        typer.Option(
            "--full-resolution",
            help="Deformable: run every pyramid level up to the image's own grid (no --max-voxels time guard).",
        ),
    ] = False,
    max_voxels: Annotated[
        int,
        typer.Option(
            "--max-voxels",
            min=1,
            help="Deformable time guard: pyramid levels with more voxels are skipped (field upsampled).",
        ),
    ] = MAX_VOXELS,
    fill_nonfinite: FillNonfiniteOpt = None,
    device: DeviceOpt = "auto",
    linear: Annotated[
        str,
        typer.Option(
            "--linear",
            help="Deformable: the linear stage before it, affine (default), rigid, or none for images already "
            "aligned (frames of one series).",
        ),
    ] = "affine",
    speed: Annotated[
        str,
        typer.Option(
            "--speed",
            help="default, or fast: a shorter linear stage and one coarse deformable level (about 20x faster than "
            "default, about ANTs SyN's accuracy; docs/registration.md).",
        ),
    ] = "default",
) -> None:
    """Register MOVING to FIXED; writes warped image (+ labels), transform/, jacobian, metrics.json and PNGs."""
    import medimg
    from medimg.register.api import register, write_outputs

    def body() -> None:
        f = load_input(fixed, fill_nonfinite=fill_nonfinite)
        m = load_input(moving, fill_nonfinite=fill_nonfinite)
        ml = medimg.read_labels(moving_labels) if moving_labels else None
        fl = medimg.read_labels(fixed_labels) if fixed_labels else None
        from medimg.device import resolve_device

        resolve_device(device)  # an unavailable GPU is refused before any work
        opts: dict[str, Any] = {}
        if method == "deformable":
            opts = {"smoothness": smoothness, "max_voxels": None if full_resolution else max_voxels, "device": device}
        if method == "learned":
            opts = {"model": model, "refine": refine, "device": device}
        if linear not in ("affine", "rigid", "none"):
            raise MedimgError(f"--linear must be affine, rigid or none (got {linear!r}).")
        if linear != "affine" and method != "deformable":
            raise MedimgError("--linear sets the linear stage of --method deformable; drop it for other methods.")
        if speed not in ("default", "fast"):
            raise MedimgError(f"--speed must be default or fast (got {speed!r}).")
        if speed == "fast" and method == "learned":
            raise MedimgError("--speed fast applies to rigid, affine and deformable; drop it for --method learned.")
        res = register(f, m, method, metric, fixed_labels=fl, moving_labels=ml, linear_kind=linear, speed=speed, **opts)
        paths = write_outputs(res, f, out, ext)
        r = res.report
        console.print(f"{method} registration in {r['seconds']:.2f} s")
        if "levels_note" in r:
            style = None if r["full_resolution"] else "yellow"
            console.print(f"  deformable {r['levels_note']}", style=style, highlight=False, markup=False)
        if "folding_percent" in r:
            console.print(f"  folding {r['folding_percent']:.4f} % of voxels, SDlogJ {r['sdlogj']:.3f}")
        for k, v in r.get("labels", {}).items():
            console.print(f"  label {k}: Dice {v['dice_before']:.3f} -> {v['dice']:.3f}, HD95 {v['hd95_mm']:.2f} mm")
        console.print(f"wrote {len(paths)} outputs to {out}/")

    _run(body)


def warp_cmd(
    moving: Annotated[Path, typer.Argument(help="Image or label map to warp.")],
    transform: Annotated[Path, typer.Option("--transform", "-t", help="transform/ folder, .tfm/.h5 or field.")],
    reference: Annotated[Path, typer.Option("--reference", "-r", help="Image whose grid the output takes.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file.")],
    labels: Annotated[bool, typer.Option("--labels", help="The input is a label map.")] = False,
    interpolation: Annotated[
        str, typer.Option("--interpolation", help="linear, bspline or nearest (labels: linear = one-hot, nearest).")
    ] = "linear",
    inverse: Annotated[bool, typer.Option("--inverse", help="Apply the inverse transform.")] = False,
) -> None:
    """Apply a saved transform (medimg register's transform/ folder, an ITK .tfm/.h5, or a displacement field)."""
    import medimg
    from medimg.register import Transform

    def body() -> None:
        t = Transform.load(transform)
        if inverse:
            t = t.inverse()
        ref = medimg.read(reference)
        res: Any
        if labels:
            res = t.apply_labels(medimg.read_labels(moving), ref, interpolation)
        else:
            res = t.apply(medimg.read(moving), ref, interpolation)
        medimg.write(res, out)
        console.print(f"wrote {out} {res.shape}")

    _run(body)
