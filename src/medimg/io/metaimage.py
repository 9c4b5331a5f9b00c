"""MetaImage (.mha / .mhd) and generic SimpleITK-backed reading and writing."""

from __future__ import annotations

from pathlib import Path

from medimg.errors import CorruptFileError
from medimg.image import Image
from medimg.interop import from_sitk, to_sitk


def read_with_sitk(path: str | Path, fmt: str) -> Image:
    """Read any file SimpleITK understands into an :class:`Image`."""
    import SimpleITK as sitk

    try:
        simg = sitk.ReadImage(str(path))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else str(e)
        raise CorruptFileError(f"{str(path)!r} could not be read as {fmt}: {msg}") from e
    return from_sitk(simg, {"source": str(path), "format": fmt})


def write_with_sitk(image: Image, path: Path, compress: bool = True) -> None:
    """Write with SimpleITK (format from the extension of ``path``)."""
    import SimpleITK as sitk

    sitk.WriteImage(to_sitk(image), str(path), useCompression=compress)
