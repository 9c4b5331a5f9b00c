"""Intensity operations: CT windowing/clipping, z-score, percentile scaling, NaN filling, 8-bit conversion.

All return new images with unchanged geometry; outputs of the normalisations are float32.
"""

from __future__ import annotations

import numpy as np

from medimg.errors import DimensionError, MedimgError
from medimg.image import Image

#: Common CT windows as (level/centre, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
    "mediastinum": (50.0, 350.0),
}


def clip(image: Image, low: float, high: float) -> Image:
    """Clip intensities to ``[low, high]`` (float32 output)."""
    if low >= high:
        raise MedimgError(f"clip: low ({low}) must be below high ({high}).")
    return image.with_array(np.clip(image.array.astype(np.float32), low, high))


def window(image: Image, center: float | str = "soft_tissue", width: float | None = None) -> Image:
    """CT window: clip to ``[center - width/2, center + width/2]`` and scale to [0, 1].

    ``center`` may name a preset in :data:`CT_WINDOWS` (e.g. ``"lung"``).
    """
    if isinstance(center, str):
        if center not in CT_WINDOWS:
            raise MedimgError(f"Unknown CT window {center!r}; presets: {', '.join(CT_WINDOWS)}.")
        c, w = CT_WINDOWS[center]
    else:
        if width is None or width <= 0:
            raise MedimgError("window: give a positive width (HU) with a numeric center.")
        c, w = float(center), float(width)
    lo = c - w / 2
    return image.with_array((np.clip(image.array.astype(np.float32), lo, lo + w) - lo) / np.float32(w))


def zscore(image: Image, mask: np.ndarray | Image | None = None, eps: float = 1e-8) -> Image:
    """Subtract the mean and divide by the standard deviation (computed inside ``mask`` when given)."""
    a = image.array.astype(np.float32)
    sel = a if mask is None else a[np.asarray(mask.array if isinstance(mask, Image) else mask) != 0]
    if sel.size == 0:
        raise MedimgError("zscore: the mask selects no voxels.")
    return image.with_array((a - np.float32(sel.mean())) / np.float32(max(float(sel.std()), eps)))


def percentile_scale(image: Image, lower: float = 0.5, upper: float = 99.5, clip_values: bool = True) -> Image:
    """Map the ``lower``/``upper`` percentiles to 0/1 (clipping outside when ``clip_values``)."""
    if not 0 <= lower < upper <= 100:
        raise MedimgError(f"percentile_scale: need 0 <= lower < upper <= 100, got {lower}, {upper}.")
    a = image.array.astype(np.float32)
    lo, hi = np.percentile(a, [lower, upper])
    scale = np.float32(hi - lo) if hi > lo else np.float32(1.0)
    out = (a - np.float32(lo)) / scale
    return image.with_array(np.clip(out, 0, 1) if clip_values else out)


def fill_nonfinite(image: Image, value: float = 0.0) -> Image:
    """Replace NaN and +/-Inf voxels by ``value``."""
    a = image.array.copy()
    if np.issubdtype(a.dtype, np.floating):
        a[~np.isfinite(a)] = value
    return image.with_array(a)


def to_uint8(image: Image, lower: float = 0.0, upper: float = 100.0) -> Image:
    """Scale to 0..255 uint8 between the given percentiles (for PNG/JPEG export and overlays)."""
    if image.dtype == np.uint8:
        return image
    s = percentile_scale(image, lower, upper)
    return image.with_array(np.round(s.array * 255).astype(np.uint8))


#: ITU-R BT.601 luma weights used to turn an RGB(A) image into grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def select_channel_array(a: np.ndarray, channel: int | str, axis: int = -1) -> np.ndarray:
    """One channel of an array whose ``axis`` holds channels, keeping that axis with size 1.

    ``channel`` is an index (0-based; negative counts from the end; a digit string is accepted) or ``"grey"`` /
    ``"gray"``: the BT.601 luma of RGB or RGBA channels (alpha ignored) as float32. One channel stays as it is.
    """
    n = a.shape[axis]
    if isinstance(channel, str) and channel.lower() in ("grey", "gray"):
        if n == 1:
            return a
        if n not in (3, 4):
            raise DimensionError(
                f"'grey' converts RGB(A) images; this one has {n} channels. Pick one with an index (CLI: --channel 0)."
            )
        rgb = np.moveaxis(np.asarray(a, dtype=np.float32), axis, -1)[..., :3]
        return np.ascontiguousarray(np.moveaxis((rgb @ np.asarray(LUMA_WEIGHTS, np.float32))[..., None], -1, axis))
    if isinstance(channel, str):
        try:
            channel = int(channel)
        except ValueError:
            raise DimensionError(f"--channel takes an index (0, 1, ...) or 'grey'; got {channel!r}.") from None
    if not -n <= channel < n:
        raise DimensionError(f"Channel {channel} is out of range: the image has {n} channel(s).")
    return np.ascontiguousarray(np.take(a, [channel], axis=axis))


def select_channel(image: Image, channel: int | str) -> Image:
    """One channel of a multi-channel image as a scalar image (see :func:`select_channel_array`; a
    single-channel image is returned unchanged for 0 and ``"grey"``)."""
    if not image.is_multichannel:
        select_channel_array(np.zeros((1,)), channel)  # validates the choice against one channel
        return image
    return image.with_array(select_channel_array(image.array, channel, -1)[..., 0])
