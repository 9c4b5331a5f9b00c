"""Reading and writing medical images: one entry point each, the format chosen by extension or content.

>>> import medimg
>>> img = medimg.read("ct.nii.gz")                 # NIfTI, NRRD, MHA/MHD, DICOM folder/file, PNG, HDF5, NPZ ...
>>> seg = medimg.read_labels("seg.seg.nrrd")       # a LabelMap with segment names
>>> medimg.write(seg, "seg.dcm", reference="dicom_folder/")   # DICOM SEG referencing its source series

Every write is atomic (temporary file + rename): on any error nothing is left at the target path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import LabelError, MedimgError, UnsupportedFormatError
from medimg.image import Image, LabelMap
from medimg.io._atomic import atomic_path, check_output_path, split_ext
from medimg.io._labels import check_plausible_labels, class_map, class_map_names
from medimg.io._sniff import EXTENSIONS, detect_format, format_from_extension
from medimg.io.arrays import list_arrays
from medimg.io.dicom import DicomSeries, scan_folder

__all__ = [
    "EXTENSIONS",
    "WRITABLE",
    "DicomSeries",
    "class_map",
    "class_map_names",
    "detect_format",
    "list_arrays",
    "read",
    "read_labels",
    "scan_folder",
    "write",
]

#: Extensions :func:`write` accepts.
WRITABLE = (
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".seg.nrrd",
    ".mha",
    ".dcm",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".h5",
    ".hdf5",
    ".npz",
)


def read(
    path: str | Path,
    *,
    format: str | None = None,
    series: str | None = None,
    key: str | None = None,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
    allow_irregular: bool = False,
    allow_nonfinite: bool = False,
) -> Image:
    """Read an image (or a label map, for DICOM SEG / Slicer seg.nrrd) from a file or DICOM folder.

    Parameters
    ----------
    path:
        File, or folder of DICOM files.
    format:
        Force a reader (``nifti``, ``nrrd``, ``metaimage``, ``dicom``, ``raster``, ``hdf5``, ``npz``, ``npy``).
    series:
        DICOM folders with several series: a SeriesInstanceUID (or unique suffix) or ``"largest"``.
    key, spacing, axes:
        HDF5/NPZ/NPY only: which array, voxel spacing in mm (x, y, z), axis order (``"zyx"``/``"xyz"``).
    allow_irregular:
        DICOM: interpolate a series with missing slices / irregular spacing onto a regular grid instead of
        raising :class:`~medimg.errors.DicomSeriesError`.
    allow_nonfinite:
        Accept NaN/Inf voxels instead of raising :class:`~medimg.errors.NonFiniteError`.
    """
    p = Path(path)
    fmt = detect_format(p, format)
    if fmt == "nifti":
        from medimg.io.nifti import read_nifti

        img = read_nifti(p)
    elif fmt == "nrrd":
        from medimg.io.nrrd import read_nrrd

        img = read_nrrd(p)
    elif fmt == "metaimage":
        from medimg.io.metaimage import read_with_sitk

        img = read_with_sitk(p, "metaimage")
    elif fmt == "dicom":
        from medimg.io.dicom import read_dicom

        img = read_dicom(p, series=series, allow_irregular=allow_irregular)
    elif fmt == "raster":
        from medimg.io.raster import read_raster

        img = read_raster(p)
    elif fmt in ("hdf5", "npz", "npy"):
        from medimg.io.arrays import read_array_file

        img = read_array_file(p, key=key, spacing=spacing, axes=axes)
    else:
        raise UnsupportedFormatError(f"Unknown format {fmt!r} for {str(p)!r}.")
    if spacing is not None and fmt not in ("hdf5", "npz", "npy"):
        img.spacing = tuple(float(s) for s in spacing)
        img.meta["spacing_known"] = True
    if not allow_nonfinite:
        img.check_finite(f"image {p.name!r}")
    return img


def read_labels(
    path: str | Path, names: dict[int, str] | str | None = None, *, force: bool = False, **kwargs: Any
) -> LabelMap:
    """Read a label map (integer image); multi-channel files are rejected (pick a channel first).

    ``names`` adds/overrides class names: a ``{value: name}`` dict, or the name of a class list medimg ships
    (``"totalsegmentator"``: TotalSegmentator v2's 117 ``total`` classes; ``"totalsegmentator_mr"``).

    Files that are not believable as label maps are refused with :class:`~medimg.errors.LabelError`: lossy
    JPEGs, float data with non-integer values, and many-valued data that does not form regions (see
    :mod:`medimg.io._labels`). ``force=True`` accepts them anyway (non-integer values are rounded).
    """
    img = read(path, **kwargs)
    img.require(scalar=True, what="label map")
    label_names = class_map(names) if isinstance(names, str) else names
    name = repr(Path(path).name)
    if force and not isinstance(img, LabelMap):
        img = _force_integer(img)
    try:
        lab = img if isinstance(img, LabelMap) else LabelMap.from_image(img)
    except LabelError as e:
        hint = (
            " If the values are labels after rounding, read with medimg.read_labels(path, force=True)."
            if "non-integer" in str(e)
            else ""
        )
        raise LabelError(f"{name}: {e}{hint}") from e
    if not force and (lab is not img or img.meta.get("lossy")):
        check_plausible_labels(lab, name)  # label-aware readers (SEG, seg.nrrd) give labels by construction
    if force:
        lab.meta["labels_forced"] = True
    if label_names:
        lab.names.update({int(k): v for k, v in label_names.items()})
    return lab


def _force_integer(img: Image) -> Image:
    """Round non-integer float values (forced label reading); NaN/Inf and negative values still fail later."""
    a = img.array
    if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)):
        return img.with_array(np.rint(a))
    return img


def write(
    image: Image,
    path: str | Path,
    *,
    reference: str | Path | Image | None = None,
    overwrite: bool = True,
    algorithm: str | None = None,
) -> Path:
    """Write ``image`` to ``path``; the format follows the extension (see :data:`WRITABLE`).

    ``.dcm`` writes a DICOM SEG and needs a :class:`LabelMap` and ``reference`` (the source DICOM series
    folder). The write is atomic. Returns the written path.
    """
    p = check_output_path(path, overwrite)
    _, ext = split_ext(p)
    fmt = format_from_extension(p)
    if fmt is None or ext.lower() not in WRITABLE:
        raise UnsupportedFormatError(
            f"Cannot write {p.name!r}: unknown extension {ext!r}. Writable: {', '.join(WRITABLE)}."
        )
    if fmt == "dicom":
        if not isinstance(image, LabelMap):
            raise UnsupportedFormatError(
                "medimg writes DICOM as a Segmentation (SEG) object only: pass a LabelMap (medimg.read_labels) "
                "and the source series as reference=. To export an image, write NIfTI/NRRD."
            )
        if reference is None:
            raise UnsupportedFormatError(
                "Writing DICOM SEG needs the DICOM series the labels belong to: reference='path/to/dicom_folder' "
                "(CLI: --reference DICOM_DIR)."
            )
    with atomic_path(p, overwrite) as tmp:
        try:
            _write_format(image, tmp, fmt, ext.lower(), reference, algorithm)
        except MedimgError:
            raise
        except (ValueError, TypeError, KeyError, RuntimeError, AttributeError) as e:
            raise MedimgError(f"Writing {p.name!r} failed: {type(e).__name__}: {e}") from e
    return p


def _write_format(
    image: Image, tmp: Path, fmt: str, ext: str, reference: str | Path | Image | None, algorithm: str | None
) -> None:
    if fmt == "nifti":
        from medimg.io.nifti import write_nifti

        write_nifti(image, tmp)
    elif fmt == "nrrd":
        from medimg.io.nrrd import write_nrrd

        write_nrrd(image, tmp)
    elif fmt == "metaimage":
        from medimg.io.metaimage import write_with_sitk

        write_with_sitk(image, tmp)
    elif fmt == "dicom":
        from medimg.io.dicom_seg import write_dicom_seg

        assert isinstance(image, LabelMap) and reference is not None
        write_dicom_seg(image, tmp, reference, algorithm=algorithm)
    elif fmt == "raster":
        from medimg.io.raster import write_raster

        write_raster(image, tmp)
    else:
        from medimg.io.arrays import write_array_file

        write_array_file(image, tmp)
