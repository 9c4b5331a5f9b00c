"""Plain arrays: HDF5 (.h5), NumPy (.npz, .npy).

Such files rarely say which axis is which or how large a voxel is. medimg's conventions:

* ``key`` picks the dataset / array (default: ``image``, else ``vol``, ``data``, ``img``, else the only or
  largest one);
* ``axes="zyx"`` (default for foreign files: numpy/SimpleITK order, e.g. ACDC's ``slices x H x W``) or
  ``"xyz"``; a 4th axis is a leading channel axis (``czyx``);
* ``spacing`` (mm, x/y/z order) may be passed; otherwise it comes from the file's ``spacing`` attribute /
  array, else it is **unknown**: 1.0 is used and ``image.spacing_known`` is False, which ``medimg info``
  and the training code report instead of trusting it.

Files written by medimg store ``spacing``, ``origin``, ``direction`` and ``axes="xyz"`` beside the array, so
they round-trip exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import CorruptFileError, DimensionError, UnsupportedFormatError
from medimg.image import Image, LabelMap

_PREFERRED = ("image", "vol", "data", "img", "arr_0")


def list_arrays(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names, shapes and dtypes of the arrays in an HDF5 / NPZ / NPY file."""
    p = Path(path)
    ext = p.suffix.lower()
    try:
        if ext == ".npy":
            a = np.load(p, mmap_mode="r", allow_pickle=False)
            return {"arr_0": (tuple(a.shape), str(a.dtype))}
        if ext == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: (tuple(z[k].shape), str(z[k].dtype)) for k in z.files}
        import h5py

        out: dict[str, tuple[tuple[int, ...], str]] = {}
        with h5py.File(p, "r") as f:
            f.visititems(
                lambda name, obj: (
                    out.__setitem__(name, (tuple(obj.shape), str(obj.dtype))) if isinstance(obj, h5py.Dataset) else None
                )
            )
        return out
    except Exception as e:
        raise CorruptFileError(f"{str(p)!r} is not a readable {ext} file: {e}") from e


def _pick(names: dict[str, tuple[tuple[int, ...], str]], key: str | None, path: Path) -> str:
    if key is not None:
        if key not in names:
            raise UnsupportedFormatError(f"{str(path)!r} has no array {key!r}; it has: {', '.join(names)}.")
        return key
    candidates = {k: v for k, v in names.items() if len(v[0]) >= 2}
    for k in _PREFERRED:
        if k in candidates:
            return k
    if not candidates:
        raise DimensionError(f"{str(path)!r} holds no array with 2 or more dimensions ({names}).")
    return max(candidates, key=lambda k: int(np.prod(candidates[k][0])))


def read_array_file(
    path: str | Path, key: str | None = None, spacing: Sequence[float] | None = None, axes: str | None = None
) -> Image:
    """Read one array from HDF5/NPZ/NPY as an :class:`Image` (see module docstring for the conventions)."""
    p = Path(path)
    names = list_arrays(p)
    k = _pick(names, key, p)
    ext = p.suffix.lower()
    attrs: dict[str, Any] = {}
    if ext == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif ext == ".npz":
        with np.load(p, allow_pickle=False) as z:
            arr = z[k]
            for a in ("spacing", "origin", "direction", "axes", "names"):
                if f"{k}_{a}" in z.files:
                    attrs[a] = z[f"{k}_{a}"]
    else:
        import h5py

        with h5py.File(p, "r") as f:
            arr = f[k][()]
            attrs = {a: f[k].attrs[a] for a in ("spacing", "origin", "direction", "axes", "names") if a in f[k].attrs}
    axes_s = axes or (str(attrs["axes"]) if "axes" in attrs else "zyx")
    if axes_s not in ("zyx", "xyz"):
        raise DimensionError(f"axes must be 'zyx' or 'xyz', got {axes_s!r}.")
    if arr.ndim not in (2, 3, 4):
        raise DimensionError(
            f"Array {k!r} in {str(p)!r} has shape {arr.shape}; medimg reads 2D, 3D or 3D+channel (czyx) arrays. "
            "For a stack of 2D images (N x H x W) read it as 3D and slice it, or use the classification loaders."
        )
    n = min(arr.ndim, 3)
    if axes_s == "zyx":
        arr = np.moveaxis(arr, 0, -1) if arr.ndim == 4 else arr
        arr = arr.transpose(tuple(range(n - 1, -1, -1)) + ((n,) if arr.ndim > n else ()))
    meta: dict[str, Any] = {"source": str(p), "format": ext.lstrip("."), "key": k}
    sp = spacing if spacing is not None else (attrs.get("spacing"))
    if sp is not None and len(sp) != n:
        raise DimensionError(f"spacing has {len(sp)} values but the array {k!r} has {n} spatial dimensions.")
    origin = attrs.get("origin")
    direction = np.reshape(attrs["direction"], (n, n)) if "direction" in attrs else None
    img = Image(np.ascontiguousarray(arr) if axes_s == "xyz" else arr, sp, origin, direction, meta, ndim=n)
    if "names" in attrs:
        import json

        names_d = json.loads(str(attrs["names"]))
        return LabelMap.from_image(img, names={int(a): b for a, b in names_d.items()})
    return img


def write_array_file(image: Image, path: Path, key: str = "image") -> None:
    """Write an image and its geometry to HDF5 or NPZ (``axes="xyz"``; geometry beside the array)."""
    import json

    ext = path.suffix.lower()
    extra: dict[str, Any] = {
        "spacing": np.asarray(image.spacing),
        "origin": np.asarray(image.origin),
        "direction": image.direction.ravel(),
        "axes": "xyz",
    }
    if isinstance(image, LabelMap) and image.names:
        extra["names"] = json.dumps({str(k): v for k, v in image.names.items()})
    if ext == ".npz":
        arrays: dict[str, Any] = {key: image.array, **{f"{key}_{a}": np.asarray(v) for a, v in extra.items()}}
        np.savez_compressed(path, **arrays)
    elif ext == ".npy":
        np.save(path, image.array)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            ds = f.create_dataset(key, data=image.array, compression="gzip", compression_opts=1)
            for a, v in extra.items():
                ds.attrs[a] = v
