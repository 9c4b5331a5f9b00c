"""NRRD (.nrrd, .nhdr) and 3D Slicer segmentation (.seg.nrrd) reading and writing (pynrrd).

Slicer stores segment names, colours and label values as ``Segment<i>_*`` header fields; medimg reads them
into :class:`LabelMap` names/colours and writes them back, so a label map saved as ``.seg.nrrd`` opens in
3D Slicer as a segmentation with named segments. Multi-layer (4D) segmentations with overlapping segments
are flattened (later layer wins; ``meta["overlap_voxels"]`` counts the conflicts).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import CorruptFileError
from medimg.image import Image, LabelMap

_SPACES_TO_LPS = {
    "left-posterior-superior": np.array([1.0, 1.0, 1.0]),
    "lps": np.array([1.0, 1.0, 1.0]),
    "right-anterior-superior": np.array([-1.0, -1.0, 1.0]),
    "ras": np.array([-1.0, -1.0, 1.0]),
    "left-anterior-superior": np.array([1.0, -1.0, 1.0]),
    "las": np.array([1.0, -1.0, 1.0]),
}


def _segments(header: dict[str, Any]) -> list[dict[str, str]]:
    segs: list[dict[str, str]] = []
    i = 0
    while f"Segment{i}_ID" in header or f"Segment{i}_Name" in header:
        segs.append({k[len(f"Segment{i}_") :]: str(v) for k, v in header.items() if k.startswith(f"Segment{i}_")})
        i += 1
    return segs


def read_nrrd(path: str | Path) -> Image:
    """Read NRRD; returns a :class:`LabelMap` when the header carries Slicer segment metadata."""
    import nrrd

    p = Path(path)
    try:
        data, header = nrrd.read(str(p), index_order="F")
    except Exception as e:
        raise CorruptFileError(f"{str(p)!r} is not a readable NRRD file: {e}") from e
    dirs = header.get("space directions")
    space = str(header.get("space", "left-posterior-superior")).lower()
    sign = _SPACES_TO_LPS.get(space, np.ones(3))
    meta: dict[str, Any] = {"source": str(p), "format": "nrrd"}
    if "medimg_provenance" in header:
        import json

        with contextlib.suppress(ValueError):
            meta["provenance"] = json.loads(header["medimg_provenance"])
    if dirs is not None:
        dirs = np.asarray(dirs, dtype=np.float64)
        spatial = [i for i in range(dirs.shape[0]) if np.all(np.isfinite(dirs[i]))]
        other = [i for i in range(data.ndim) if i not in spatial]
        if len(other) > 1:
            raise CorruptFileError(f"{str(p)!r}: more than one non-spatial axis ({data.shape}); not supported.")
        data = np.moveaxis(data, other, [data.ndim - 1] * len(other)) if other else data
        m = dirs[spatial].T * sign[: dirs.shape[1], None]  # columns = axis vectors (LPS)
        spacing = np.linalg.norm(m, axis=0)
        origin = np.asarray(header.get("space origin", np.zeros(m.shape[0])), dtype=np.float64) * sign[: m.shape[0]]
        image = Image(data, spacing, origin, m / spacing[None, :], meta)
    else:
        spacings = header.get("spacings")
        image = Image(
            data,
            spacings if spacings is not None and np.all(np.isfinite(spacings)) else None,
            None,
            None,
            meta,
            ndim=min(data.ndim, 3),
        )
    segs = _segments(header)
    if not segs:
        return image
    names: dict[int, str] = {}
    colors: dict[int, tuple[int, int, int]] = {}
    arr = image.array
    layered = image.is_multichannel  # one layer per channel: label values may repeat across layers
    if layered:
        flat = np.zeros(image.shape, dtype=np.uint16 if len(segs) > 255 else np.uint8)
    for i, s in enumerate(segs):
        value = int(s.get("LabelValue", 1))
        new = i + 1 if layered else value
        if layered:
            mask = arr[..., int(s.get("Layer", 0))] == value
            n_overlap = int(np.count_nonzero(mask & (flat > 0)))
            if n_overlap:
                meta["overlap_voxels"] = meta.get("overlap_voxels", 0) + n_overlap
            flat[mask] = new
        names[new] = s.get("Name", f"label_{new}")
        if "Color" in s:
            c = [float(x) for x in s["Color"].split()]
            colors[new] = (round(c[0] * 255), round(c[1] * 255), round(c[2] * 255))
    if layered:
        arr = flat
        if meta.get("overlap_voxels"):
            warnings.warn(
                f"{p.name}: {meta['overlap_voxels']} voxels are in more than one segment; later segments "
                "win in the label map.",
                stacklevel=2,
            )
    meta["format"] = "seg.nrrd"
    return LabelMap(arr, image.spacing, image.origin, image.direction, meta, names=names, colors=colors)


def write_nrrd(image: Image, path: Path, segments: bool | None = None) -> None:
    """Write NRRD (gzip). LabelMaps get Slicer segment fields when ``segments`` (default: for .seg.nrrd or when
    the label map has names)."""
    import nrrd

    from medimg.io._atomic import split_ext

    arr = image.array
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    n = image.ndim
    dirs = (image.direction * np.asarray(image.spacing)[None, :]).T  # rows = axis vectors
    header: dict[str, Any] = OrderedDict()
    header["space"] = "left-posterior-superior" if n == 3 else "left-posterior"
    header["encoding"] = "gzip"
    if image.is_multichannel:
        arr = np.moveaxis(arr, -1, 0)
        header["kinds"] = ["vector"] + ["domain"] * n
        header["space directions"] = np.vstack([np.full((1, n), np.nan), dirs])
    else:
        header["kinds"] = ["domain"] * n
        header["space directions"] = dirs
    header["space origin"] = np.asarray(image.origin, dtype=np.float64)
    if segments is None:
        segments = isinstance(image, LabelMap) and (split_ext(path)[1].lower() == ".seg.nrrd" or bool(image.names))
    if segments and isinstance(image, LabelMap):
        header.update(_slicer_segment_fields(image))
    if image.meta.get("provenance"):
        import json

        # a custom key-value field (key:=value): what produced the image; readers that do not know it ignore it
        header["medimg_provenance"] = json.dumps(image.meta["provenance"], default=str, sort_keys=True)
    nrrd.write(str(path), np.asarray(arr), header, index_order="F", compression_level=1)


def _slicer_segment_fields(labels: LabelMap) -> dict[str, str]:
    from medimg.report_colors import label_color

    fields: dict[str, str] = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": " ".join("0" for _ in labels.shape),
    }
    extent = " ".join(f"0 {s - 1}" for s in labels.shape)
    for i, v in enumerate(labels.labels):
        r, g, b = labels.colors.get(v, label_color(v))
        fields[f"Segment{i}_ID"] = f"Segment_{v}"
        fields[f"Segment{i}_Name"] = labels.name_of(v)
        fields[f"Segment{i}_NameAutoGenerated"] = "0" if v in labels.names else "1"
        fields[f"Segment{i}_Color"] = f"{r / 255:.6g} {g / 255:.6g} {b / 255:.6g}"
        fields[f"Segment{i}_ColorAutoGenerated"] = "0" if v in labels.colors else "1"
        fields[f"Segment{i}_LabelValue"] = str(v)
        fields[f"Segment{i}_Layer"] = "0"
        fields[f"Segment{i}_Extent"] = extent
        fields[f"Segment{i}_Tags"] = "|"
    return fields
