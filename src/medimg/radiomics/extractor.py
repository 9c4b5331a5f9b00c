"""The radiomics extraction pipeline (pyradiomics' ``RadiomicsFeatureExtractor.execute``, reimplemented).

Steps, in pyradiomics' order: diagnostics of the image as loaded; optional normalisation of the whole image;
optional resampling to a new spacing over the mask's padded bounding box (diagnostics of the interpolated image
and of the ROI); the filtered images (original, LoG per sigma, wavelet bands), each computed on the (resampled,
padded) image and then cropped to the mask's bounding box; the enabled feature classes on each, with bin-width
discretisation per image. Feature names are pyradiomics' (``original_glcm_Contrast``,
``wavelet-LH_firstorder_Mean``, ``diagnostics_Image-original_Mean``).

Images are ``(z, y, x)`` arrays (a 2D image is ``(1, y, x)``), spacings ``(x, y, z)`` in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medimg.errors import DimensionError, LabelError, MedimgError, NonFiniteError
from medimg.radiomics import batch as B
from medimg.radiomics import features as F
from medimg.radiomics.discretize import bin_image
from medimg.radiomics.filters import (
    crop_to_mask,
    log_filter,
    log_sigmas_allowed,
    normalize,
    resample,
    wavelet,
)

#: The GLCM features FRD v1 uses (its configuration lists them; MCC and SumAverage are left out).
FRD_V1_GLCM = (
    "Autocorrelation",
    "JointAverage",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "JointEnergy",
    "JointEntropy",
    "Imc1",
    "Imc2",
    "Idm",
    "Idmn",
    "Id",
    "Idn",
    "InverseVariance",
    "MaximumProbability",
    "SumEntropy",
    "SumSquares",
)


@dataclass(frozen=True)
class RadiomicsSettings:
    """Extraction settings (pyradiomics' names in brackets).

    ``classes`` maps a feature class to the features to compute (None: all of the class).
    ``resampled_spacing`` (x, y, z mm, 0 keeps the input's) with ``pad_distance`` voxels of margin enables
    resampling [resampledPixelSpacing, padDistance, interpolator sitkBSpline]; ``force2d`` computes texture in
    the y-x plane [force2D, force2Ddimension 0]; ``diagnostics`` adds the numeric diagnostics frd-score v1 keeps.
    """

    classes: dict[str, tuple[str, ...] | None] = field(
        default_factory=lambda: {"firstorder": None, "glcm": None, "glrlm": None, "glszm": None, "ngtdm": None}
    )
    bin_width: float = 25.0  # [binWidth]
    normalize: bool = False  # [normalize]
    normalize_scale: float = 1.0  # [normalizeScale]
    resampled_spacing: tuple[float, float, float] | None = None
    pad_distance: float = 5.0
    force2d: bool = False
    voxel_array_shift: float = 0.0  # [voxelArrayShift]
    image_types: tuple[str, ...] = ("original",)  # original, log, wavelet
    log_sigma: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)
    diagnostics: bool = False


def frd_v1_settings(dims: int) -> RadiomicsSettings:
    """frd-score 1.0.1's v1 configuration (``extraction_2d.yaml`` / ``extraction_3d.yaml``)."""
    return RadiomicsSettings(
        classes={"firstorder": None, "glcm": FRD_V1_GLCM, "glrlm": None, "glszm": None, "ngtdm": None},
        bin_width=5.0,
        normalize=True,
        normalize_scale=100.0,
        resampled_spacing=(2.0, 2.0, 0.0) if dims == 2 else (2.0, 2.0, 2.0),
        pad_distance=10.0,
        force2d=dims == 2,
        voxel_array_shift=300.0,
        image_types=("original", "log", "wavelet"),
        diagnostics=True,
    )


def frd_v0_settings() -> RadiomicsSettings:
    """frd-score 1.0.1's v0 configuration (pyradiomics defaults, original image; shape classes left out)."""
    return RadiomicsSettings(
        classes={"firstorder": None, "glcm": None, "glrlm": None, "gldm": None, "glszm": None, "ngtdm": None},
        bin_width=25.0,
        force2d=True,
    )


def _volume_num(mask: np.ndarray) -> float:
    return float(ndimage.label(mask)[1])


def class_features(
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    settings: RadiomicsSettings,
    binned: np.ndarray | None = None,
    wanted: Sequence[str] | None = None,
) -> dict[str, float]:
    """The features of class ``name`` on ``image`` inside ``mask`` (``wanted``: those needed, None: all; the
    result may hold more)."""
    b = bin_image(image, mask, settings.bin_width) if binned is None else binned
    if name == "firstorder":
        return F.firstorder(image, mask, b, spacing, settings.voxel_array_shift)
    if name == "glcm":
        return F.glcm(b, mask, settings.force2d, mcc=wanted is None or "MCC" in wanted)
    fn = {"glrlm": F.glrlm, "glszm": F.glszm, "ngtdm": F.ngtdm, "gldm": F.gldm}[name]
    return fn(b, mask, settings.force2d)


def extract(
    image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], settings: RadiomicsSettings
) -> dict[str, float]:
    """Every enabled feature of ``image`` (``(z, y, x)``) inside ``mask`` (bool, same shape); ``spacing``
    (x, y, z) mm. Returns ``{name: value}`` in pyradiomics' order (diagnostics, then per image type, class,
    feature)."""
    if image.ndim != 3 or image.shape != mask.shape:
        raise DimensionError(
            f"Radiomics needs a (z, y, x) image and a mask of the same shape; got {image.shape} and {mask.shape}. "
            "Give a mask drawn on the image's own grid (a 2D image is a 1-slice volume)."
        )
    mask = mask.astype(bool)
    if not mask.any():
        raise LabelError("The radiomics mask is empty; give a mask with at least one voxel of the region.")
    if not np.isfinite(image[mask]).all():
        raise NonFiniteError("The image has NaN or infinite voxels inside the mask; replace them first.")
    out: dict[str, float] = {}
    img = image.astype(np.float64)
    sp = tuple(float(s) for s in spacing)
    if settings.diagnostics:
        out["diagnostics_Image-original_Mean"] = float(img.mean())
        out["diagnostics_Image-original_Minimum"] = float(img.min())
        out["diagnostics_Image-original_Maximum"] = float(img.max())
        out["diagnostics_Mask-original_VoxelNum"] = float(mask.sum())
        out["diagnostics_Mask-original_VolumeNum"] = _volume_num(mask)
    if settings.normalize:
        img = normalize(img, settings.normalize_scale)
    if settings.resampled_spacing is not None:
        img, mask, sp = resample(img, mask, sp, settings.resampled_spacing, settings.pad_distance)
        if settings.diagnostics:
            roi = img[mask]
            out["diagnostics_Image-interpolated_Mean"] = float(img.mean())
            out["diagnostics_Image-interpolated_Minimum"] = float(img.min())
            out["diagnostics_Image-interpolated_Maximum"] = float(img.max())
            out["diagnostics_Mask-interpolated_VoxelNum"] = float(mask.sum())
            out["diagnostics_Mask-interpolated_VolumeNum"] = _volume_num(mask)
            out["diagnostics_Mask-interpolated_Mean"] = float(roi.mean())
            out["diagnostics_Mask-interpolated_Minimum"] = float(roi.min())
            out["diagnostics_Mask-interpolated_Maximum"] = float(roi.max())
    images: list[tuple[str, np.ndarray]] = []
    for kind in settings.image_types:
        if kind == "original":
            images.append(("original", img))
        elif kind == "log":
            for s in log_sigmas_allowed(img.shape, sp, settings.log_sigma):
                images.append((f"log-sigma-{str(float(s)).replace('.', '-')}-mm-3D", log_filter(img, sp, s)))
        elif kind == "wavelet":
            images.extend(wavelet(img, settings.force2d))
        else:
            raise MedimgError(f"Unknown radiomics image type {kind!r}; use original, log or wavelet.")
    crops = [(prefix, *crop_to_mask(filtered, mask, 0)) for prefix, filtered in images]
    fmask = crops[0][2]
    stack = np.stack([c[1] for c in crops])
    binned = np.stack([bin_image(c[1], fmask, settings.bin_width) for c in crops])
    per_class: dict[str, dict[str, np.ndarray]] = {}
    for cls, wanted in settings.classes.items():
        names = wanted if wanted is not None else F.CLASSES[cls]
        if cls == "firstorder":
            per_class[cls] = B.firstorder(stack, fmask, binned, sp, settings.voxel_array_shift)
        elif cls in ("glcm", "glrlm", "glszm", "ngtdm"):
            per_class[cls] = getattr(B, cls)(binned, fmask, settings.force2d)
        if cls not in per_class or any(n not in per_class[cls] for n in names):  # GLDM, GLCM's MCC: one by one
            rows = [class_features(cls, c[1], fmask, sp, settings, binned[k], names) for k, c in enumerate(crops)]
            per_class[cls] = {n: np.array([r[n] for r in rows]) for n in names}
    for k, (prefix, _, _) in enumerate(crops):
        for cls, wanted in settings.classes.items():
            names = wanted if wanted is not None else F.CLASSES[cls]
            for n in names:
                out[f"{prefix}_{cls}_{n}"] = float(per_class[cls][n][k])
    return out
