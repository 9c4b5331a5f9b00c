"""Format detection by file extension, falling back to the file's first bytes."""

from __future__ import annotations

from pathlib import Path

from medimg.errors import CorruptFileError, UnsupportedFormatError
from medimg.io._atomic import split_ext

#: extension (lower case) -> format name
EXTENSIONS: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".seg.nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".png": "raster",
    ".jpg": "raster",
    ".jpeg": "raster",
    ".tif": "raster",
    ".tiff": "raster",
    ".bmp": "raster",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".npz": "npz",
    ".npy": "npy",
}

READABLE = sorted(set(EXTENSIONS))


def format_from_extension(path: str | Path) -> str | None:
    """The format implied by the extension of ``path``, or None."""
    _, ext = split_ext(path)
    return EXTENSIONS.get(ext.lower())


def sniff(path: str | Path) -> str:
    """Detect the format of an existing file from its content (magic bytes)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(352)
    except OSError as e:
        raise UnsupportedFormatError(f"Cannot open {str(p)!r}: {e.strerror or e}.") from e
    if len(head) == 0:
        raise CorruptFileError(f"{str(p)!r} is empty (0 bytes).")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00"):
        return "nifti"
    if head[:2] == b"\x1f\x8b":
        return "nifti"  # gzip: in medical imaging almost always .nii.gz; the NIfTI reader checks
    if head[:4] == b"NRRD":
        return "nrrd"
    if (
        head[:8] == b"\x89PNG\r\n\x1a\n"
        or head[:3] == b"\xff\xd8\xff"
        or head[:2] == b"BM"
        or head[:4]
        in (
            b"II*\x00",
            b"MM\x00*",
        )
    ):
        return "raster"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if head[:2] == b"PK":
        return "npz"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    text = head[:200].decode("latin-1")
    if "ObjectType" in text or "NDims" in text:
        return "metaimage"
    if len(head) >= 8 and head[0] == 0x08 and head[1] == 0x00:  # DICOM without preamble (group 0008)
        return "dicom"
    raise UnsupportedFormatError(
        f"{str(p)!r} is not a recognised medical image. medimg reads NIfTI, NRRD, MHA/MHD, DICOM (files or "
        f"folders), DICOM SEG, PNG/JPEG/TIFF/BMP, HDF5, NPZ/NPY (extensions: {', '.join(READABLE)})."
    )


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """Choose the reader for ``path``: an explicit ``fmt``, a folder (DICOM), the extension, then content."""
    p = Path(path)
    if fmt:
        return fmt
    if p.is_dir():
        return "dicom"
    if not p.exists():
        raise UnsupportedFormatError(f"{str(p)!r} does not exist.")
    by_ext = format_from_extension(p)
    if by_ext is not None:
        return by_ext
    return sniff(p)
