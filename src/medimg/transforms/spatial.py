"""Spatial operations that keep geometry exact: resample, reorient, crop, pad.

All functions return new images whose ``origin``/``direction``/``spacing`` describe where the voxels now
are, so that a point keeps its world (LPS, mm) coordinate through any chain of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from medimg.errors import DimensionError, GeometryError, MedimgError
from medimg.image import Image, LabelMap, direction_from_code, orientation_code

Interpolation = Literal["nearest", "linear", "bspline", "label"]


def _interpolator(name: str) -> int:
    import SimpleITK as sitk

    table = {
        "nearest": sitk.sitkNearestNeighbor,
        "linear": sitk.sitkLinear,
        "bspline": sitk.sitkBSpline,
        "label": sitk.sitkLabelGaussian,
    }
    if name not in table:
        raise MedimgError(f"Unknown interpolation {name!r}; choose one of {', '.join(table)}.")
    return table[name]


def resample(
    image: Image,
    *,
    size: Sequence[int],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: np.ndarray,
    interpolation: Interpolation | None = None,
    fill: float = 0.0,
) -> Image:
    """Resample ``image`` onto an explicit grid (world coordinates are honoured, so any input orientation works).

    ``interpolation`` defaults to ``"nearest"`` for :class:`LabelMap` and ``"linear"`` otherwise; ``"label"``
    is a smooth label interpolator (per-label Gaussian). Integer images interpolated with linear/B-spline are
    rounded and clipped back to their dtype. Multi-channel images are resampled per channel.
    """
    import SimpleITK as sitk

    from medimg.interop import from_sitk, to_sitk

    is_label = isinstance(image, LabelMap)
    interp = interpolation or ("nearest" if is_label else "linear")
    if is_label and interp in ("linear", "bspline"):
        raise MedimgError("Label maps cannot be interpolated linearly; use 'nearest' or 'label'.")
    n = image.ndim
    if len(size) != n or len(spacing) != n or len(origin) != n:
        raise DimensionError(f"Target grid must have {n} dimensions to match the {n}D image.")
    if interp == "bspline" and min(image.shape[:n]) < 4:
        # ITK's cubic B-spline needs 4 samples along every axis; with fewer it returns NaN (a 2-slice CT crop would
        # silently become garbage once cast back to int16), so such images are interpolated linearly
        interp = "linear"
    src = image.array
    dtype = src.dtype
    work = image if interp in ("nearest", "label") else image.with_array(src.astype(np.float32, copy=False))
    if work.array.dtype == bool:
        work = work.with_array(work.array.astype(np.uint8))
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in size])
    f.SetOutputSpacing([float(s) for s in spacing])
    f.SetOutputOrigin([float(o) for o in origin])
    f.SetOutputDirection([float(v) for v in np.asarray(direction).ravel()])
    f.SetInterpolator(_interpolator(interp))
    f.SetDefaultPixelValue(float(fill))
    out = from_sitk(f.Execute(to_sitk(work)), dict(image.meta))
    arr = out.array
    if np.issubdtype(dtype, np.integer) and arr.dtype != dtype:
        info = np.iinfo(dtype)
        arr = np.clip(np.round(arr), info.min, info.max).astype(dtype)
    elif arr.dtype != dtype and dtype != np.bool_:
        arr = arr.astype(dtype)
    result = Image(np.ascontiguousarray(arr), out.spacing, out.origin, out.direction, out.meta)
    return LabelMap.from_image(result, image.names, image.colors) if isinstance(image, LabelMap) else result


def resample_to_spacing(
    image: Image, spacing: Sequence[float] | float, interpolation: Interpolation | None = None, fill: float = 0.0
) -> Image:
    """Resample to a new voxel spacing (mm). The first voxel's centre and the direction stay; the size is
    chosen so the new grid covers the same physical extent (``round(size * old / new)``)."""
    sp = (float(spacing),) * image.ndim if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
    if len(sp) != image.ndim or any(s <= 0 for s in sp):
        raise GeometryError(f"Target spacing must be {image.ndim} positive values (mm), got {sp}.")
    size = [max(1, round(n * s0 / s1)) for n, s0, s1 in zip(image.shape, image.spacing, sp, strict=True)]
    return resample(
        image,
        size=size,
        spacing=sp,
        origin=image.origin,
        direction=image.direction,
        interpolation=interpolation,
        fill=fill,
    )


def resample_to_shape(
    image: Image, shape: Sequence[int], interpolation: Interpolation | None = None, fill: float = 0.0
) -> Image:
    """Resample onto a grid of ``shape`` voxels covering the same physical extent as ``image`` (the outer voxel
    edges coincide; the spacing becomes ``spacing * size / shape`` per axis, the direction stays)."""
    n = image.ndim
    new_n = np.asarray([int(v) for v in shape], np.float64)
    if len(new_n) != n or np.any(new_n < 1):
        raise GeometryError(f"Target shape must be {n} positive sizes, got {tuple(shape)}.")
    old_sp = np.asarray(image.spacing, np.float64)
    new_sp = old_sp * np.asarray(image.shape[:n], np.float64) / new_n
    origin = np.asarray(image.origin, np.float64) + np.asarray(image.direction) @ ((new_sp - old_sp) / 2)
    return resample(
        image,
        size=[int(v) for v in new_n],
        spacing=tuple(float(v) for v in new_sp),
        origin=tuple(float(v) for v in origin),
        direction=image.direction,
        interpolation=interpolation,
        fill=fill,
    )


def resample_to(image: Image, reference: Image, interpolation: Interpolation | None = None, fill: float = 0.0) -> Image:
    """Resample ``image`` onto the voxel grid of ``reference`` (shape, spacing, origin, direction)."""
    if image.ndim != reference.ndim:
        raise DimensionError(f"Cannot resample a {image.ndim}D image onto a {reference.ndim}D reference.")
    return resample(
        image,
        size=reference.shape,
        spacing=reference.spacing,
        origin=reference.origin,
        direction=reference.direction,
        interpolation=interpolation,
        fill=fill,
    )


def reorient(image: Image, code: str = "RAS") -> Image:
    """Permute/flip axes (no interpolation) so that the orientation code becomes ``code`` (e.g. ``"RAS"``,
    ``"LPS"``). Exact and reversible: ``reorient(reorient(img, "RAS"), img.orientation)`` gives ``img`` back.
    For oblique images each axis is matched to its dominant world direction."""
    n = image.ndim
    target = direction_from_code(code)
    if target.shape[0] != n:
        raise DimensionError(f"Orientation code {code!r} has {target.shape[0]} letters for a {n}D image.")
    d = image.direction
    perm: list[int] = []
    flips: list[bool] = []
    for j in range(n):
        world_axis = int(np.argmax(np.abs(target[:, j])))
        sign = np.sign(target[world_axis, j])
        src = int(np.argmax(np.abs(d[world_axis, :])))
        if src in perm:
            raise GeometryError(f"Image orientation {image.orientation} cannot be mapped to {code} unambiguously.")
        perm.append(src)
        flips.append(bool(np.sign(d[world_axis, src]) != sign))
    arr = image.array.transpose(tuple(perm) + ((n,) if image.is_multichannel else ()))
    spacing = [image.spacing[p] for p in perm]
    new_dir = d[:, perm].copy()
    start = np.zeros(n)
    shape = image.shape
    slicer: list[slice] = []
    for j, (p, flip) in enumerate(zip(perm, flips, strict=True)):
        if flip:
            new_dir[:, j] *= -1
            start[p] = shape[p] - 1
            slicer.append(slice(None, None, -1))
        else:
            slicer.append(slice(None))
    arr = np.ascontiguousarray(arr[tuple(slicer)])
    origin = image.index_to_world(start)
    out = Image(arr, spacing, origin, new_dir, dict(image.meta))
    return LabelMap.from_image(out, image.names, image.colors) if isinstance(image, LabelMap) else out


def canonical_orientation(image: Image) -> str:
    """The closest axis-aligned orientation code of ``image`` (alias of ``image.orientation``)."""
    return orientation_code(image.direction)


def crop(image: Image, start: Sequence[int], stop: Sequence[int]) -> Image:
    """Crop to voxel box ``[start, stop)`` (x, y[, z]); the origin moves so world positions are unchanged."""
    n = image.ndim
    st = [max(0, int(s)) for s in start]
    sp = [min(int(e), size) for e, size in zip(stop, image.shape, strict=True)]
    if len(st) != n or any(a >= b for a, b in zip(st, sp, strict=True)):
        raise GeometryError(f"Empty or invalid crop box {tuple(st)} -> {tuple(sp)} for shape {image.shape}.")
    sl = tuple(slice(a, b) for a, b in zip(st, sp, strict=True))
    origin = image.index_to_world(np.asarray(st, dtype=float))
    out = Image(np.ascontiguousarray(image.array[sl]), image.spacing, origin, image.direction, dict(image.meta))
    return LabelMap.from_image(out, image.names, image.colors) if isinstance(image, LabelMap) else out


def foreground_bbox(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box ``(start, stop)`` of the non-zero voxels of ``mask``, grown by ``margin`` voxels (clipped)."""
    nz = np.nonzero(mask)
    if len(nz[0]) == 0:
        raise MedimgError("The mask is empty: there is no foreground to crop to.")
    m = [margin] * mask.ndim if isinstance(margin, int) else list(margin)
    start = tuple(max(0, int(a.min()) - mm) for a, mm in zip(nz, m, strict=True))
    stop = tuple(min(s, int(a.max()) + 1 + mm) for a, s, mm in zip(nz, mask.shape, m, strict=True))
    return start, stop


def crop_to_foreground(
    image: Image, mask: Image | np.ndarray | None = None, margin: int = 0, threshold: float | None = None
) -> tuple[Image, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Crop ``image`` to the bounding box of ``mask`` (or of ``image > threshold``, default: non-zero voxels).

    Returns the cropped image and the ``(start, stop)`` voxel box, which :func:`pad_to` can undo.
    """
    if mask is None:
        scalar = image.array if not image.is_multichannel else np.abs(image.array).max(axis=-1)
        m = scalar > (threshold if threshold is not None else 0)
    else:
        m = np.asarray(mask.array if isinstance(mask, Image) else mask) != 0
        if m.shape != image.shape:
            raise GeometryError(f"Mask shape {m.shape} differs from image shape {image.shape}.")
    start, stop = foreground_bbox(m, margin)
    return crop(image, start, stop), (start, stop)


def pad(image: Image, before: Sequence[int], after: Sequence[int], value: float = 0.0) -> Image:
    """Pad with ``value``; ``before``/``after`` are voxel counts per axis. The origin moves accordingly."""
    n = image.ndim
    if len(before) != n or len(after) != n or min(*before, *after) < 0:
        raise GeometryError(f"pad needs {n} non-negative counts before and after, got {before}, {after}.")
    widths = [(int(b), int(a)) for b, a in zip(before, after, strict=True)] + (
        [(0, 0)] if image.is_multichannel else []
    )
    arr = np.pad(image.array, widths, constant_values=value)
    origin = image.index_to_world(-np.asarray(before, dtype=float))
    out = Image(arr, image.spacing, origin, image.direction, dict(image.meta))
    return LabelMap.from_image(out, image.names, image.colors) if isinstance(image, LabelMap) else out


def pad_to(image: Image, shape: Sequence[int], start: Sequence[int], value: float = 0.0) -> Image:
    """Place ``image`` (e.g. a crop) back at voxel ``start`` inside a grid of ``shape`` (inverse of crop)."""
    after = [int(s) - int(b) - n for s, b, n in zip(shape, start, image.shape, strict=True)]
    return pad(image, start, after, value)
