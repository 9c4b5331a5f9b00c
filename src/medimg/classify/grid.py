"""A classifier's physical input grid: images resampled to a fixed voxel spacing and a fixed field of view.

A classifier trained on arrays resizes whatever it gets to its input size, which is right for pictures (a chest
X-ray thumbnail) but wrong where physical size matters: a 25 mm lung nodule and a 5 mm one would look alike once
each crop is stretched to the same array. A model whose ``model.json`` has a ``"grid"`` instead takes every image
file through :func:`on_grid`: resampled (linear) to ``spacing_mm`` on a ``size`` voxel grid centred on the image's
centre, with the image's own direction, and voxels outside the image set to ``pad_value`` (e.g. -1000 HU, air).
``spacing_mm`` and ``size`` are in the image's axis order (x, y[, z]); the returned array is in numpy image order
``(c, [z,] y, x)`` like every classification array (:mod:`medimg.classify.data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image


def make_grid(spacing_mm: Sequence[float], size: Sequence[int], pad_value: float = 0.0) -> dict[str, Any]:
    """A grid record (stored in model.json) after checking its values."""
    sp, sz = [float(s) for s in spacing_mm], [int(n) for n in size]
    if len(sp) != len(sz) or len(sp) not in (2, 3):
        raise MedimgError(f"A grid needs 2 or 3 spacings and as many sizes; got spacing {sp} and size {sz}.")
    if any(s <= 0 for s in sp) or any(n < 4 for n in sz):
        raise MedimgError(f"Grid spacing must be positive (mm) and sizes at least 4 voxels; got {sp} and {sz}.")
    return {"spacing_mm": sp, "size": sz, "pad_value": float(pad_value)}


def numpy_shape(grid: dict[str, Any]) -> tuple[int, ...]:
    """The grid's array shape in numpy image order (z, y, x) / (y, x)."""
    return tuple(int(n) for n in grid["size"][::-1])


def on_grid(image: Image, grid: dict[str, Any]) -> np.ndarray:
    """``image`` resampled onto ``grid`` (centred on the image's centre): ``(c, *spatial)`` float32, numpy order."""
    from medimg.transforms.spatial import resample

    sp = np.asarray(grid["spacing_mm"], np.float64)
    size = np.asarray(grid["size"], np.int64)
    if image.ndim != len(sp):
        raise MedimgError(f"This model takes {len(sp)}D images on its grid; the image is {image.ndim}D.")
    if not image.spacing_known:
        raise MedimgError(
            "The image's voxel spacing is unknown (e.g. a PNG or raw array); this model resamples its input to "
            f"{'x'.join(f'{s:g}' for s in sp)} mm voxels and needs a file with its spacing (NIfTI, NRRD, DICOM)."
        )
    direction = np.asarray(image.direction, np.float64)
    half_in = (np.asarray(image.shape[: image.ndim], np.float64) - 1) / 2 * np.asarray(image.spacing, np.float64)
    centre = np.asarray(image.origin, np.float64) + direction @ half_in
    origin = centre - direction @ ((size - 1) / 2 * sp)
    out = resample(
        image,
        size=[int(n) for n in size],
        spacing=tuple(float(s) for s in sp),
        origin=tuple(float(v) for v in origin),
        direction=direction,
        interpolation="linear",
        fill=float(grid["pad_value"]),
    )
    a = np.asarray(out.array, np.float32)
    a = np.moveaxis(a, -1, 0) if a.ndim == image.ndim + 1 else a[None]
    return np.ascontiguousarray(np.transpose(a, (0, *range(a.ndim - 1, 0, -1))))


def intensity_record(images: np.ndarray) -> dict[str, Any]:
    """The range of each image's 1st, 50th and 99th intensity percentile over training images ``(n, c, *spatial)``
    on the grid (raw units, e.g. HU; :func:`medimg.domain.percentile_record`). The network itself only sees per-image
    z-scored values, so without this an MR crop resampled onto a CT model's grid can look like a CT crop to its
    features."""
    from medimg.domain import percentile_record

    return percentile_record(list(np.asarray(images)))


def intensity_differences(images: np.ndarray, record: dict[str, Any]) -> list[list[str]]:
    """Per image, why its raw intensities are outside the training range (empty lists when inside)."""
    from medimg.domain import percentile_differences

    return [percentile_differences(a, record) for a in np.asarray(images)]
