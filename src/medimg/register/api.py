"""One call from a fixed/moving pair to a checked result: ``register(fixed, moving, method=...)`` and
:func:`write_outputs` (warped image and labels, transform files, Jacobian map, metrics JSON, quick-look PNGs)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap
from medimg.register.deformable import fast_options, register_deformable
from medimg.register.linear import fast_linear_options, register_linear
from medimg.register.transform import Transform

METHODS = ("rigid", "affine", "deformable", "learned")
SPEEDS = ("default", "fast")


@dataclass
class RegistrationResult:
    """The transform (fixed -> moving points), the moving image (and labels) warped onto the fixed grid, the
    Jacobian determinant map of the deformable part (None for linear methods) and a report."""

    transform: Transform
    warped: Image
    warped_labels: LabelMap | None = None
    jacobian: Image | None = None
    report: dict[str, Any] = field(default_factory=dict)


def register(
    fixed: Image,
    moving: Image,
    method: str = "deformable",
    metric: str = "auto",
    fixed_labels: LabelMap | None = None,
    moving_labels: LabelMap | None = None,
    linear_kind: str = "affine",
    speed: str = "default",
    **deformable_options: Any,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``. ``method``: ``rigid``, ``affine``, ``deformable`` (affine, then the
    diffeomorphic instance optimisation of :mod:`medimg.register.deformable`; ``linear_kind`` picks its linear
    stage, ``"none"`` for images already aligned) or ``learned`` (a trained network,
    :mod:`medimg.register.learned`; options ``model=``, ``refine=``).
    Deformable options (``levels``, ``iterations``, ``smoothness``, ``max_voxels`` — ``None`` for full resolution —
    ...) go to :func:`~medimg.register.deformable.register_deformable`; the report then says which pyramid levels
    ran and why (``levels_run``, ``full_resolution``, ``levels_note``).
    ``metric``: ``auto`` (mutual information for the linear stage, local NCC for the deformable one), or
    ``mi``/``ncc``/``mse``. With ``moving_labels`` the labels are warped (one-hot linear); with both label maps the
    report holds Dice and HD95 per label before (identity, on the fixed grid) and after registration.
    ``speed="fast"``: a shorter linear stage (:func:`~medimg.register.linear.fast_linear_options`) and one coarse
    deformable level (:func:`~medimg.register.deformable.fast_options`; explicit ``deformable_options`` still win),
    about 20x faster than the default pyramid at about ANTs SyN's accuracy (``benchmarks/register_fast.py``)."""
    if method not in METHODS:
        raise MedimgError(f"Unknown method {method!r}; choose {', '.join(METHODS)}.")
    if speed not in SPEEDS:
        raise MedimgError(f"Unknown speed {speed!r}; choose {', '.join(SPEEDS)}.")
    if linear_kind not in ("affine", "rigid", "none"):
        raise MedimgError(f"The linear stage must be affine, rigid or none; got {linear_kind!r}.")
    if linear_kind != "affine" and method != "deformable":
        raise MedimgError("The linear-stage choice (linear / --linear) is for method deformable; leave it at affine.")
    if speed == "fast" and method == "learned":
        raise MedimgError("speed 'fast' applies to rigid, affine and deformable; a learned model is one forward pass.")
    t0 = time.perf_counter()
    if method == "learned":
        from medimg.register.learned import register_learned

        tr, rep = register_learned(fixed, moving, **deformable_options)
        rep_l = {"method": method, "learned": rep, "folding_percent": rep["folding_percent"], "sdlogj": rep["sdlogj"]}
        return _finish(tr, fixed, moving, fixed_labels, moving_labels, rep_l, t0)
    lin_metric = "mi" if metric == "auto" else metric
    kind = "rigid" if method == "rigid" else ("affine" if method == "affine" else linear_kind)
    if kind == "none" and method == "deformable":  # images already aligned (frames of one cine series, one session)
        lin_tr: Transform | None = None
        rep_lin: dict[str, Any] = {"kind": "none", "seconds": 0.0}
    else:
        lin_opts = fast_linear_options(fixed.shape) if speed == "fast" else {}
        lin_tr, rep_lin = register_linear(fixed, moving, kind, "mi" if lin_metric == "ncc" else lin_metric, **lin_opts)
    report: dict[str, Any] = {"method": method, "speed": speed, "linear": rep_lin}
    if method == "deformable":
        def_metric = "ncc" if metric in ("auto", "ncc", "mi") else metric
        opts = {**fast_options(fixed.shape), **deformable_options} if speed == "fast" else deformable_options
        tr, rep_def = register_deformable(fixed, moving, lin_tr, def_metric, **opts)
        report["deformable"] = rep_def
        for k in ("levels_run", "full_resolution", "levels_note"):  # visible at the top: which levels ran and why
            report[k] = rep_def[k]
        report["folding_percent"] = rep_def["folding_percent"]
        report["sdlogj"] = rep_def["sdlogj"]
    else:
        assert lin_tr is not None  # rigid / affine always run their linear stage
        tr = lin_tr
    return _finish(tr, fixed, moving, fixed_labels, moving_labels, report, t0)


def _finish(
    tr: Transform,
    fixed: Image,
    moving: Image,
    fixed_labels: LabelMap | None,
    moving_labels: LabelMap | None,
    report: dict[str, Any],
    t0: float,
) -> RegistrationResult:
    """Timing, the Jacobian map of the deformable part (when there is one), warped image and labels, overlaps."""
    report["seconds"] = time.perf_counter() - t0
    jac = None
    if tr.field is not None:
        det = tr.jacobian_determinant()
        jac = Image(det, fixed.spacing, fixed.origin, fixed.direction)
    warped = tr.apply(moving, fixed, "linear")
    warped_labels = tr.apply_labels(moving_labels, fixed, "linear") if moving_labels is not None else None
    if warped_labels is not None and fixed_labels is not None:
        report["labels"] = label_overlap(fixed_labels, moving_labels, warped_labels)  # type: ignore[arg-type]
    return RegistrationResult(tr, warped, warped_labels, jac, report)


def label_overlap(fixed_labels: LabelMap, moving_labels: LabelMap, warped_labels: LabelMap) -> dict[str, Any]:
    """Dice and HD95 (mm) per label: before (the moving labels resampled onto the fixed grid by world coordinates,
    no registration) and after."""
    from medimg.metrics import segmentation_metrics

    before_lab = Transform().apply_labels(moving_labels, fixed_labels, "nearest")
    labels = sorted(int(v) for v in np.unique(fixed_labels.array) if v != 0)
    before = segmentation_metrics(before_lab, fixed_labels, labels=labels, metrics=("dice", "hd95"))
    after = segmentation_metrics(warped_labels, fixed_labels, labels=labels, metrics=("dice", "hd95"))
    return {
        str(k): {"dice_before": before[k]["dice"], "dice": after[k]["dice"], "hd95_mm": after[k]["hd95"]}
        for k in labels
    }


def _middle_slice(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 2 else a[:, :, a.shape[2] // 2]


def _grey(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / (hi - lo + 1e-8), 0, 1)


def quicklook_png(fixed: Image, warped: Image, kind: str = "checkerboard", block: int = 8) -> np.ndarray:
    """8-bit RGB of the middle axial slice (index z): ``checkerboard`` alternates fixed and warped blocks;
    ``overlay`` shows fixed in magenta and warped in green (grey where they agree). Rows are image y, columns x."""
    f = _grey(_middle_slice(np.asarray(fixed.array, np.float64))).T
    w = _grey(_middle_slice(np.asarray(warped.array, np.float64))).T
    if kind == "checkerboard":
        yy, xx = np.indices(f.shape)
        g = np.where(((yy // block) + (xx // block)) % 2 == 0, f, w)
        rgb = np.stack([g, g, g], -1)
    else:
        rgb = np.stack([f, w, f], -1)
    return (255 * rgb).round().astype(np.uint8)


def write_outputs(result: RegistrationResult, fixed: Image, out_dir: str | Path, ext: str = ".nii.gz") -> list[Path]:
    """Write warped image (+ labels), ``transform/``, ``jacobian``, ``metrics.json``, ``checkerboard.png`` and
    ``overlay.png`` into ``out_dir``; returns the paths."""
    from PIL import Image as PILImage

    import medimg
    from medimg.io._atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [medimg.write(result.warped, out / f"warped{ext}")]
    if result.warped_labels is not None:
        paths.append(medimg.write(result.warped_labels, out / f"warped_labels{ext}"))
    paths.append(result.transform.save(out / "transform", ext))
    if result.jacobian is not None:
        paths.append(
            medimg.write(result.jacobian.with_array(result.jacobian.array.astype(np.float32)), out / f"jacobian{ext}")
        )
    for kind in ("checkerboard", "overlay"):
        png = out / f"{kind}.png"
        rgb = quicklook_png(fixed, result.warped, kind)
        scale = max(1, 256 // max(rgb.shape[:2]))
        with atomic_path(png) as tmp:
            PILImage.fromarray(rgb).resize(
                (rgb.shape[1] * scale, rgb.shape[0] * scale), PILImage.Resampling.NEAREST
            ).save(tmp, format="PNG")
        paths.append(png)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result.report, indent=2, default=float) + "\n")
    paths.append(out / "metrics.json")
    return [Path(p) for p in paths]
