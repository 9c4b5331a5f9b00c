"""2D pictures: PNG, JPEG, BMP (Pillow) and TIFF (tifffile, any dtype, multi-page = z stack).

Pictures carry no patient geometry. medimg stores its geometry as JSON in a PNG text chunk, a JPEG comment
or the TIFF ImageDescription, so its own files round-trip exactly while other programs see a plain picture.
Foreign pictures get spacing 1 with ``meta["spacing_known"] = False``. JPEG is lossy: use PNG or TIFF for
data you will measure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import CorruptFileError, DimensionError, UnsupportedFormatError
from medimg.image import Image, LabelMap

_KEY = "medimg"


def _geometry_json(image: Image) -> str:
    d: dict[str, Any] = {
        "spacing": list(image.spacing),
        "origin": list(image.origin),
        "direction": image.direction.ravel().tolist(),
        "spacing_known": image.spacing_known,
    }
    if isinstance(image, LabelMap):
        d["names"] = {str(k): v for k, v in image.names.items()}
        if image.colors:
            d["colors"] = {str(k): list(v) for k, v in image.colors.items()}
    return json.dumps(d)


def _apply_geometry(arr: np.ndarray, text: str | None, meta: dict[str, Any], ndim: int) -> Image:
    geo: dict[str, Any] = {}
    if text:
        try:
            geo = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            geo = {}
    if geo and len(geo.get("spacing", [])) == ndim:
        meta["spacing_known"] = bool(geo.get("spacing_known", True))
        img = Image(arr, geo["spacing"], geo["origin"], np.reshape(geo["direction"], (ndim, ndim)), meta)
        if "names" in geo:
            colors = {int(k): tuple(v) for k, v in geo.get("colors", {}).items()}
            return LabelMap.from_image(img, names={int(k): v for k, v in geo["names"].items()}, colors=colors)
        return img
    return Image(arr, None, None, None, meta, ndim=ndim)


def _is_mask(image: Image) -> bool:
    """A label map, or a binary (bool or 0/1-valued) single-channel image."""
    if image.is_multichannel:
        return False
    if isinstance(image, LabelMap) or image.array.dtype == bool:
        return True
    a = image.array
    return bool(np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 1)


def _palette_picture(pic: Any, image: Image) -> Any:
    """The label values as palette indices (exact) with a colour per value, so masks are visible in any viewer:
    a binary mask shows white on black, label maps their LabelMap colours (or medimg's label palette)."""
    from medimg.report_colors import label_color

    colors = getattr(image, "colors", {}) or {}
    binary = int(image.array.max()) <= 1 and 1 not in colors
    palette: list[int] = []
    for v in range(256):
        rgb = (255, 255, 255) if binary and v == 1 else colors.get(v, label_color(v))
        palette.extend(int(c) for c in rgb)
    out = pic.convert("L") if pic.mode != "L" else pic
    out = out.copy()
    out.putpalette(palette)  # mode L + palette -> P with the same indices
    return out


def read_raster(path: str | Path) -> Image:
    """Read a PNG/JPEG/BMP/TIFF picture as a 2D image (x = column, y = row); RGB(A) becomes channels."""
    p = Path(path)
    if p.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(p)
    from PIL import Image as PILImage

    try:
        with PILImage.open(p) as im:
            im.load()
            text = im.info.get(_KEY) or im.info.get("comment")
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            mode = im.mode
            lossy = im.format in ("JPEG", "MPO")
            pic: Any = im
            if mode in ("CMYK", "YCbCr"):
                pic = im.convert("RGB")
            elif mode == "LA":
                pic = im.convert("L")
            arr = np.asarray(pic)
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptFileError(f"{str(p)!r} is not a readable picture: {e}") from e
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    arr = np.ascontiguousarray(np.swapaxes(arr, 0, 1))
    meta: dict[str, Any] = {"source": str(p), "format": "raster", "mode": mode}
    if lossy:
        meta["lossy"] = "JPEG"
    return _apply_geometry(arr, text, meta, 2)


def _read_tiff(p: Path) -> Image:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tf:
            arr = tf.asarray()
            text = tf.pages[0].description if tf.pages else None  # type: ignore[union-attr]
    except Exception as e:
        raise CorruptFileError(f"{str(p)!r} is not a readable TIFF file: {e}") from e
    meta = {"source": str(p), "format": "tiff"}
    geo_ndim = 2
    if text and text.startswith("{"):
        try:
            geo_ndim = len(json.loads(text).get("spacing", [0, 0]))
        except json.JSONDecodeError:
            text = None
    if arr.ndim == 2:
        return _apply_geometry(np.ascontiguousarray(arr.T), text, meta, 2)
    if arr.ndim == 3 and (geo_ndim == 2 and arr.shape[-1] in (3, 4)):
        return _apply_geometry(np.ascontiguousarray(arr.swapaxes(0, 1)), text, meta, 2)
    if arr.ndim == 3:  # pages = z
        return _apply_geometry(np.ascontiguousarray(arr.transpose(2, 1, 0)), text, meta, 3)
    if arr.ndim == 4:
        return _apply_geometry(np.ascontiguousarray(arr.transpose(2, 1, 0, 3)), text, meta, 3)
    raise DimensionError(f"{str(p)!r}: TIFF array of shape {arr.shape} is not supported.")


def write_raster(image: Image, path: Path, quality: int = 95) -> None:
    """Write a 2D image as PNG/JPEG/BMP (uint8, or uint16 greyscale for PNG) or TIFF (any dtype, 2D/3D)."""
    ext = path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile

        arr = image.array
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        perm = (1, 0) if image.ndim == 2 else (2, 1, 0)
        perm_full = perm + ((image.ndim,) if image.is_multichannel else ())
        tifffile.imwrite(
            path,
            np.ascontiguousarray(arr.transpose(perm_full)),
            description=_geometry_json(image),
            metadata=None,
            compression="zlib",
        )
        return
    if image.ndim != 2:
        raise DimensionError(
            f"{ext} holds 2D pictures; this image is {image.ndim}D {image.shape}. Write NIfTI/NRRD/TIFF, or take a "
            "slice first."
        )
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    arr = image.array
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    ok = arr.dtype == np.uint8 and (not image.is_multichannel or image.n_channels in (3, 4))
    if ext == ".png" and arr.dtype == np.uint16 and not image.is_multichannel:
        ok = True
    if not ok:
        raise UnsupportedFormatError(
            f"{ext} cannot store {arr.dtype} data with {image.n_channels} channel(s) without loss. Convert to uint8 "
            "(e.g. medimg.transforms.to_uint8(image)) or write .tif / .nii.gz instead."
        )
    if ext in (".jpg", ".jpeg") and _is_mask(image):
        raise UnsupportedFormatError(
            f"JPEG is lossy: a label map or mask written as {ext} would not read back as the same labels. Write it "
            "as .png (a palette PNG: exact values, visible colours), .tif or .nii.gz instead."
        )
    pic = PILImage.fromarray(np.ascontiguousarray(np.swapaxes(arr, 0, 1)))
    if ext in (".png", ".bmp") and arr.dtype == np.uint8 and not image.is_multichannel and _is_mask(image):
        pic = _palette_picture(pic, image)
    text = _geometry_json(image)
    if ext == ".png":
        info = PngInfo()
        info.add_text(_KEY, text)
        pic.save(path, pnginfo=info, compress_level=6)
    elif ext in (".jpg", ".jpeg"):
        if pic.mode == "RGBA":
            pic = pic.convert("RGB")
        pic.save(path, quality=quality, comment=text.encode())
    elif ext == ".bmp":
        pic.save(path)
    else:
        raise UnsupportedFormatError(f"Unknown picture extension {ext!r}.")
