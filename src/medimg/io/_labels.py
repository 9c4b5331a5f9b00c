"""Label-map sanity: named class maps shipped with medimg, and the rule that tells a label map from a picture.

A file read with :func:`medimg.read_labels` becomes a label map only when its values can be labels. Refused
(unless ``force=True``):

* lossy files (JPEG): compression invents intermediate values along every edge, so class ids are not preserved;
* float data with non-integer values (probabilities, interpolated or intensity images);
* data with many distinct values that do not form regions: more than :data:`FREE_LABEL_COUNT` values and
  either more values than ``size / MIN_VOXELS_PER_LABEL`` or, among pairs of neighbouring voxels with at
  least one non-zero, more than :data:`MAX_BOUNDARY_FRACTION` that differ. Real label maps are piecewise
  constant (0.01-0.25 on every label map in the real data medimg was checked on, atlases with 117-137
  regions included); photographs, CT, MRI and ultrasound pictures are not (0.44-1.0).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import LabelError
from medimg.image import Image

#: Label maps with at most this many distinct values are accepted without further checks.
FREE_LABEL_COUNT = 16
#: Each label value must cover at least this many voxels on average when there are many values.
MIN_VOXELS_PER_LABEL = 8
#: Largest fraction of differing neighbour pairs (within the foreground) for a many-valued label map.
MAX_BOUNDARY_FRACTION = 0.35
#: Voxels sampled (whole slices along the last axis) when measuring the boundary fraction.
_SAMPLE_VOXELS = 4_000_000

_NAMES_FILE = Path(__file__).resolve().parent.parent / "data" / "label_names.json"


@cache
def _class_maps() -> dict[str, dict[int, str]]:
    with open(_NAMES_FILE, encoding="utf-8") as f:
        raw: dict[str, Any] = json.load(f)
    return {k: {int(i): str(n) for i, n in v.items()} for k, v in raw.items() if not k.startswith("_")}


def class_map_names() -> list[str]:
    """Names of the class maps medimg ships (e.g. ``"totalsegmentator"``)."""
    return sorted(_class_maps())


def class_map(name: str) -> dict[int, str]:
    """A shipped label value -> class name map, e.g. ``class_map("totalsegmentator")`` (TotalSegmentator v2
    ``total`` task, 117 classes) or ``"totalsegmentator_mr"`` (``total_mr``, 50 classes)."""
    maps = _class_maps()
    key = name.strip().lower().replace("-", "_")
    if key not in maps:
        raise LabelError(
            f"Unknown class-name list {name!r}; medimg ships: {', '.join(sorted(maps))}. Or give the names "
            "yourself, e.g. {1: 'liver', 2: 'spleen'} (CLI: --names 1=liver,2=spleen)."
        )
    return dict(maps[key])


def _distinct_count(a: np.ndarray) -> int:
    """Number of distinct values of a non-negative integer array (bincount when the range is small)."""
    if a.size == 0:
        return 0
    hi = int(a.max())
    if hi < (1 << 16):
        return int(np.count_nonzero(np.bincount(a.ravel(), minlength=1)))
    return len(np.unique(a))


def _sample(a: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Evenly spread whole slices (along the last axis) of a large volume, and the axes along which
    neighbours in the sample are still neighbours in the volume."""
    if a.ndim == 3 and a.size > _SAMPLE_VOXELS:
        step = int(np.ceil(a.size / _SAMPLE_VOXELS))
        return a[:, :, ::step], (0, 1)
    return a, tuple(range(a.ndim))


def boundary_fraction(a: np.ndarray) -> float:
    """Fraction of neighbouring voxel pairs (along each axis, at least one voxel non-zero) that differ.

    Large volumes are measured on evenly spread whole slices along the last axis (in-plane pairs only).
    """
    a, axes = _sample(a)
    differ = both = 0
    for ax in axes:
        if a.shape[ax] < 2:
            continue
        lo_idx: list[slice] = [slice(None)] * a.ndim
        hi_idx: list[slice] = [slice(None)] * a.ndim
        lo_idx[ax], hi_idx[ax] = slice(None, -1), slice(1, None)
        lo, hi = a[tuple(lo_idx)], a[tuple(hi_idx)]
        fg = (lo != 0) | (hi != 0)
        differ += int(np.count_nonzero((lo != hi) & fg))
        both += int(np.count_nonzero(fg))
    return differ / both if both else 0.0


def check_plausible_labels(image: Image, name: str) -> None:
    """Raise :class:`LabelError` (saying what to do) when ``image`` is not believable as a label map.

    ``image`` must already hold non-negative integers (see :class:`~medimg.image.LabelMap`).
    """
    fix = (
        "If it really is a label map, read it with medimg.read_labels(path, force=True); to use it as an image, "
        "read it with medimg.read(path)."
    )
    if image.meta.get("lossy"):
        raise LabelError(
            f"{name} is a lossy {image.meta.get('lossy')} file: compression changes values along every edge, so it "
            "cannot be trusted as a label map (class ids would be invented). Use the lossless original (PNG, TIFF, "
            f"NIfTI, NRRD). {fix}"
        )
    a, _ = _sample(image.array)  # large volumes: counted on evenly spread slices (a lower bound; fast)
    n = _distinct_count(a)
    if n <= FREE_LABEL_COUNT:
        return
    if n > a.size / MIN_VOXELS_PER_LABEL:
        raise LabelError(
            f"{name} has {n} distinct values in {a.size} (sampled) voxels (fewer than {MIN_VOXELS_PER_LABEL} "
            f"voxels per value): it looks like an image, not a label map. {fix}"
        )
    frac = boundary_fraction(a)
    if frac > MAX_BOUNDARY_FRACTION:
        raise LabelError(
            f"{name} has {n} distinct values and {frac:.0%} of neighbouring foreground voxels differ (label maps are "
            f"made of regions: at most {MAX_BOUNDARY_FRACTION:.0%}): it looks like an image, not a label map. {fix}"
        )
