"""Spatial and intensity transforms that preserve geometry (see :mod:`medimg.transforms.spatial`)."""

from medimg.transforms.intensity import (
    CT_WINDOWS,
    clip,
    fill_nonfinite,
    percentile_scale,
    select_channel,
    select_channel_array,
    to_uint8,
    window,
    zscore,
)
from medimg.transforms.spatial import (
    crop,
    crop_to_foreground,
    foreground_bbox,
    pad,
    pad_to,
    reorient,
    resample,
    resample_to,
    resample_to_spacing,
)

__all__ = [
    "CT_WINDOWS",
    "clip",
    "crop",
    "crop_to_foreground",
    "fill_nonfinite",
    "foreground_bbox",
    "pad",
    "pad_to",
    "percentile_scale",
    "reorient",
    "resample",
    "resample_to",
    "resample_to_spacing",
    "select_channel",
    "select_channel_array",
    "to_uint8",
    "window",
    "zscore",
]
