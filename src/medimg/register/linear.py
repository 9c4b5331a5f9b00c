"""Rigid, similarity and affine registration with SimpleITK: multi-resolution (shrink 4-2-1 with Gaussian smoothing
2-1-0 voxels), Mattes mutual information (multi-modal) or correlation / mean squares (mono-modal), initialised at the
images' geometric centres or centres of mass (moments), regular-step gradient descent with physical-shift scales.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from medimg.errors import DimensionError, MedimgError
from medimg.image import Image
from medimg.register.transform import Transform

KINDS = ("translation", "rigid", "similarity", "affine")
METRICS = ("mi", "ncc", "mse")
FAST_LINEAR: dict[str, Any] = {"shrink": (4, 2), "smoothing_vox": (2.0, 1.0), "iterations": 30}
"""Options of the ``fast`` preset (:func:`fast_linear_options`): the 4x and 2x levels only, 30 iterations each (the
full resolution level adds little to a linear fit that a deformable stage follows)."""
FAST_SAMPLES = 20_000
"""The ``fast`` preset's metric samples per iteration. SimpleITK draws the sampling fraction from the full-resolution
fixed image at every level, so a fixed fraction costs 8x more on a 216 x 256 x 10 cine volume than on a hippocampus
crop: the fraction is capped to about this many samples."""


def fast_linear_options(shape: Sequence[int]) -> dict[str, Any]:
    """:func:`register_linear` options of the ``fast`` preset for a fixed image of ``shape``."""
    return {**FAST_LINEAR, "sampling": min(0.25, FAST_SAMPLES / float(np.prod(shape)))}


def check_pair(fixed: Image, moving: Image) -> None:
    """Clear errors for pairs that cannot be registered: dimensionality, channels, empty or non-finite images."""
    if fixed.ndim != moving.ndim:
        raise DimensionError(
            f"Fixed image is {fixed.ndim}D and moving image {moving.ndim}D: register images of the same "
            "dimensionality (extract a slice or stack slices first)."
        )
    for name, im in (("fixed", fixed), ("moving", moving)):
        if im.is_multichannel:
            raise DimensionError(f"The {name} image has {im.n_channels} channels; register one channel at a time.")
        a = np.asarray(im.array)
        if not np.all(np.isfinite(a)):
            raise MedimgError(f"The {name} image contains NaN or infinite values; fill them first (medimg.transforms).")
        if a.size == 0 or float(a.max()) == float(a.min()):
            raise MedimgError(f"The {name} image is empty or constant: there is nothing to align.")
        if min(im.shape[: im.ndim]) < 4:
            raise DimensionError(f"The {name} image {im.shape} is too small to register (at least 4 voxels per axis).")


def _initial(kind: str, dim: int) -> Any:
    import SimpleITK as sitk

    if kind == "translation":
        return sitk.TranslationTransform(dim)
    if kind == "rigid":
        return sitk.Euler3DTransform() if dim == 3 else sitk.Euler2DTransform()
    if kind == "similarity":
        return sitk.Similarity3DTransform() if dim == 3 else sitk.Similarity2DTransform()
    return sitk.AffineTransform(dim)


def register_linear(
    fixed: Image,
    moving: Image,
    kind: str = "affine",
    metric: str = "mi",
    init: str = "moments",
    shrink: tuple[int, ...] = (4, 2, 1),
    smoothing_vox: tuple[float, ...] = (2.0, 1.0, 0.0),
    iterations: int = 200,
    sampling: float = 0.25,
    initial: Transform | None = None,
    seed: int = 0,
) -> tuple[Transform, dict[str, Any]]:
    """Estimate a linear transform mapping fixed to moving points. ``kind``: translation, rigid, similarity or
    affine; ``metric``: ``mi`` (Mattes mutual information, 32 bins — any modality pair), ``ncc`` (correlation) or
    ``mse``; ``init``: ``moments`` (centres of mass), ``geometry`` (image centres) or ``none``; ``sampling``: the
    random fraction of voxels used by the metric at each level. Returns the transform and a report (final metric,
    iterations, seconds, stop condition)."""
    import SimpleITK as sitk

    from medimg.interop import to_sitk

    if kind not in KINDS:
        raise MedimgError(f"Unknown linear transform {kind!r}; choose {', '.join(KINDS)}.")
    if metric not in METRICS:
        raise MedimgError(f"Unknown metric {metric!r}; choose {', '.join(METRICS)}.")
    check_pair(fixed, moving)
    t0 = time.perf_counter()
    f = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    m = sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    dim = fixed.ndim
    tx = _initial(kind, dim)
    if initial is not None and initial.linear is not None and kind != "translation":
        tx = sitk.AffineTransform(dim) if kind == "affine" else tx
        try:
            tx.SetMatrix(initial.linear.GetMatrix())
            tx.SetTranslation(initial.linear.GetTranslation())
            tx.SetCenter(initial.linear.GetCenter())
        except (AttributeError, RuntimeError):
            tx = _initial(kind, dim)
            init = "moments"
    if kind != "translation" and (initial is None or initial.linear is None) and init != "none":
        mode = (
            sitk.CenteredTransformInitializerFilter.MOMENTS
            if init == "moments"
            else sitk.CenteredTransformInitializerFilter.GEOMETRY
        )
        tx = sitk.CenteredTransformInitializer(f, m, tx, mode)
    reg = sitk.ImageRegistrationMethod()
    if metric == "mi":
        reg.SetMetricAsMattesMutualInformation(32)
    elif metric == "ncc":
        reg.SetMetricAsCorrelation()
    else:
        reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK's seed 0 means "seed from the wall clock" (a different sample, and result, at every run): shift by one
    # so that every seed, the default 0 included, is reproducible
    reg.SetMetricSamplingPercentage(sampling, int(seed) + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    levels = [s for s in shrink if min(fixed.shape[: fixed.ndim]) // s >= 8] or [1]
    reg.SetShrinkFactorsPerLevel(levels)
    reg.SetSmoothingSigmasPerLevel(list(smoothing_vox[-len(levels) :]))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(tx, inPlace=False)
    try:
        out = reg.Execute(f, m)
    except RuntimeError as e:
        raise MedimgError(
            "Linear registration failed ("
            + str(e).strip().splitlines()[-1]
            + "); the images may not overlap: try init='geometry' or a rough manual alignment."
        ) from None
    if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
        out = out.GetNthTransform(0)
    out = _downcast(out)
    report = {
        "kind": kind,
        "metric": metric,
        "final_metric": float(reg.GetMetricValue()),
        "iterations": int(reg.GetOptimizerIteration()),
        "stop": reg.GetOptimizerStopConditionDescription(),
        "seconds": time.perf_counter() - t0,
    }
    return Transform(out, None), report


def _downcast(t: Any) -> Any:
    """The concrete transform class (Euler/Similarity/Affine...), so that it is written and read back as such."""
    import SimpleITK as sitk

    name = t.GetName()
    cls = getattr(sitk, name, None)
    try:
        return cls(t) if cls is not None else t
    except (TypeError, RuntimeError):
        return t
