"""What ``medimg info`` reports: a JSON-friendly summary of an image, label map, DICOM folder or array file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medimg.image import Image, LabelMap

#: Integer images with at most this many distinct values (and none negative) are summarised as label maps.
MAX_AUTO_LABELS = 64


def looks_like_labels(image: Image) -> bool:
    """Heuristic: a LabelMap, or a non-negative integer-valued image (any dtype) with few distinct values."""
    if isinstance(image, LabelMap):
        return True
    if image.meta.get("lossy"):  # JPEG: compression invents values; never summarised as labels
        return False
    a = image.array
    if (
        image.is_multichannel
        or a.size == 0
        or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating))
    ):
        return False
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 10 * MAX_AUTO_LABELS:
        return False
    values = np.unique(a)
    return len(values) <= MAX_AUTO_LABELS and bool(np.all(values == np.round(values)))


def image_summary(image: Image, labels: bool | None = None) -> dict[str, Any]:
    """Shape, geometry, intensity range and (for label maps) per-label voxel counts and volumes in mL."""
    a = image.array
    finite = np.isfinite(a) if np.issubdtype(a.dtype, np.floating) else None
    n_nonfinite = int(a.size - np.count_nonzero(finite)) if finite is not None else 0
    vals = a[finite] if finite is not None and n_nonfinite else a
    extent = [float(n * s) for n, s in zip(image.shape, image.spacing, strict=True)]
    out: dict[str, Any] = {
        "kind": "label map" if isinstance(image, LabelMap) else "image",
        "dimensions": image.ndim,
        "shape": list(image.shape),
        "channels": image.n_channels,
        "dtype": str(a.dtype),
        "spacing_mm": [float(s) for s in image.spacing],
        "spacing_known": image.spacing_known,
        "origin_mm": [float(o) for o in image.origin],
        "direction": image.direction.round(6).tolist(),
        "orientation": image.orientation,
        "extent_mm": extent,
        "min": float(vals.min()) if vals.size else None,
        "max": float(vals.max()) if vals.size else None,
        "mean": float(vals.mean()) if vals.size else None,
        "nonfinite_voxels": n_nonfinite,
    }
    for k in (
        "format",
        "modality",
        "series_uid",
        "series_description",
        "overlap_voxels",
        "irregular_slices_interpolated",
        "key",
    ):
        if k in image.meta and image.meta[k] not in ("", None):
            out[k] = image.meta[k]
    if labels or (labels is None and looks_like_labels(image)):
        lab = image if isinstance(image, LabelMap) else LabelMap.from_image(image)
        vols = lab.volumes_ml()
        out["kind"] = "label map"
        out["labels"] = [
            {"value": v, "name": lab.name_of(v), "voxels": c, "volume_ml": vols[v]}
            for v, c in lab.voxel_counts().items()
        ]
    return out


def path_summary(path: str | Path, **read_kwargs: Any) -> dict[str, Any]:
    """Summary of whatever ``path`` holds: a DICOM folder lists its series and describes the chosen one,
    HDF5/NPZ files list their arrays."""
    from medimg.io import list_arrays, read, scan_folder
    from medimg.io._sniff import detect_format
    from medimg.io.dicom import short_uids

    p = Path(path)
    labels = read_kwargs.pop("labels", None)
    out: dict[str, Any] = {"path": str(p)}
    fmt = detect_format(p, read_kwargs.get("format"))
    if fmt == "dicom" and p.is_dir():
        found = scan_folder(p)
        short = short_uids([s.uid for s in found])
        out["series"] = [{**s.summary(), "series_uid_short": short[s.uid]} for s in found]
        if len(found) > 1 and read_kwargs.get("series") is None:
            read_kwargs["series"] = "largest"
            out["note"] = (
                "several series: describing the largest; pick another with --series UID (a unique prefix such as "
                "the short form shown, or a unique suffix, is enough)"
            )
    if fmt in ("hdf5", "npz", "npy"):
        out["arrays"] = {k: {"shape": list(s), "dtype": d} for k, (s, d) in list_arrays(p).items()}
    read_kwargs.setdefault("allow_nonfinite", True)
    img = read(p, **read_kwargs)
    out.update(image_summary(img, labels))
    return out
