"""The :class:`Image` and :class:`LabelMap` types and the geometry conventions of medimg.

Conventions (the one place they are defined)
-------------------------------------------
* ``Image.array`` is indexed in **(x, y, z)** order -- ITK / NIfTI voxel-index order ``(i, j, k)`` --
  followed by an optional trailing channel axis. For a 2D picture ``array[x, y]`` is column ``x``, row ``y``.
  The number of spatial dimensions is ``len(spacing)`` (2 or 3); ``array.ndim == ndim + 1`` means the last
  axis holds channels (RGB, multi-echo, time points, ...).
* ``spacing`` is in millimetres, in the same axis order.
* World coordinates are **LPS** (DICOM / ITK / 3D Slicer's files): +x towards the patient's Left, +y towards
  Posterior, +z towards Superior. ``origin`` is the world position (mm) of the centre of voxel ``(0, 0, 0)``.
* ``direction`` is a ``(ndim, ndim)`` matrix whose *columns* are the unit vectors of the index axes in world
  coordinates, so that ``world = origin + direction @ (spacing * index)``.
* NIfTI affines are RAS (nibabel): :func:`lps_to_ras` / :func:`ras_to_lps` convert, and nothing else in
  medimg flips signs.
* Orientation codes name the direction each index axis points *towards* (nibabel / 3D Slicer usage):
  an identity ``direction`` is ``"LPS"``; a typical NIfTI from a scanner is ``"RAS"``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medimg.errors import DimensionError, GeometryError, LabelError, NonFiniteError

#: Direction matrices whose columns deviate from orthonormal by more than this are rejected.
ORTHONORMAL_TOL = 1e-3
_TOWARD_POS = "LPS"
_TOWARD_NEG = "RAI"


def lps_to_ras(affine: npt.ArrayLike) -> np.ndarray:
    """Convert a homogeneous (4x4) affine between LPS and RAS world coordinates.

    The conversion negates the first two world axes; it is its own inverse, so :func:`ras_to_lps` is the same
    operation.
    """
    a = np.array(affine, dtype=np.float64)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ a


ras_to_lps = lps_to_ras


def orientation_code(direction: npt.ArrayLike) -> str:
    """Return the orientation code (e.g. ``"LPS"``, ``"RAS"``, ``"LAI"``) of a direction matrix.

    Each letter names the world direction the corresponding index axis points *towards* (its dominant
    component). For 2D images the code has two letters from the first two LPS axes.
    """
    d = np.asarray(direction, dtype=np.float64)
    letters = []
    for col in d.T:
        axis = int(np.argmax(np.abs(col)))
        letters.append(_TOWARD_POS[axis] if col[axis] > 0 else _TOWARD_NEG[axis])
    return "".join(letters)


def direction_from_code(code: str) -> np.ndarray:
    """Build the axis-aligned direction matrix for an orientation code such as ``"RAS"`` or ``"LPI"``."""
    code = code.upper()
    n = len(code)
    if n not in (2, 3):
        raise GeometryError(f"Orientation code {code!r} must have 2 or 3 letters (e.g. 'RAS', 'LPS').")
    d = np.zeros((n, n))
    used = set()
    for j, letter in enumerate(code):
        if letter in _TOWARD_POS[:n]:
            axis, sign = _TOWARD_POS.index(letter), 1.0
        elif letter in _TOWARD_NEG[:n]:
            axis, sign = _TOWARD_NEG.index(letter), -1.0
        else:
            raise GeometryError(f"Orientation code {code!r}: letter {letter!r} is not one of L/R, P/A, S/I.")
        if axis in used:
            raise GeometryError(f"Orientation code {code!r} names the same world axis twice.")
        used.add(axis)
        d[axis, j] = sign
    return d


class Image:
    """An n-dimensional image with its physical geometry.

    Parameters
    ----------
    array:
        Voxel values indexed ``(x, y[, z][, channel])`` -- see the module docstring.
    spacing:
        Voxel size per spatial axis in mm; defaults to 1.0 (and ``meta["spacing_known"] = False``).
    origin:
        World (LPS, mm) position of the centre of the first voxel; defaults to 0.
    direction:
        ``(ndim, ndim)`` matrix with the index axes' unit vectors in LPS as columns; defaults to identity.
    meta:
        Free-form metadata (source file, DICOM tags of interest, ``spacing_known``, ...).
    ndim:
        Number of spatial dimensions when ``spacing`` is not given (2 or 3). Without either, it is
        ``array.ndim``.
    """

    __slots__ = ("array", "direction", "meta", "origin", "spacing")

    def __init__(
        self,
        array: npt.ArrayLike,
        spacing: npt.ArrayLike | None = None,
        origin: npt.ArrayLike | None = None,
        direction: npt.ArrayLike | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        ndim: int | None = None,
    ) -> None:
        arr = np.asarray(array)
        meta_d: dict[str, Any] = dict(meta or {})
        if spacing is None:
            n = ndim if ndim is not None else (np.size(origin) if origin is not None else arr.ndim)
            spacing_t = (1.0,) * n
            meta_d.setdefault("spacing_known", False)
        else:
            spacing_t = tuple(float(s) for s in np.ravel(spacing))
        n = len(spacing_t)
        if n not in (2, 3):
            raise DimensionError(
                f"medimg images have 2 or 3 spatial dimensions, got {n} (array shape {arr.shape}). "
                "Pass ndim= or spacing= to say which axes are spatial."
            )
        if arr.ndim not in (n, n + 1):
            raise DimensionError(
                f"Array of shape {arr.shape} does not fit {n} spatial dimensions "
                f"(expected {n} axes, or {n + 1} with a trailing channel axis)."
            )
        if any(not np.isfinite(s) or s <= 0 for s in spacing_t):
            raise GeometryError(f"Spacing must be positive and finite (mm), got {spacing_t}.")
        origin_t = (0.0,) * n if origin is None else tuple(float(o) for o in np.ravel(origin))
        if len(origin_t) != n or not all(np.isfinite(origin_t)):
            raise GeometryError(f"Origin must have {n} finite values, got {origin_t}.")
        dirm = np.eye(n) if direction is None else np.array(direction, dtype=np.float64).reshape(n, n)
        if not np.all(np.isfinite(dirm)) or np.max(np.abs(dirm.T @ dirm - np.eye(n))) > ORTHONORMAL_TOL:
            raise GeometryError(
                f"Direction matrix must be orthonormal (a rotation, possibly with flips); got\n{dirm}.\n"
                "Sheared or scaled direction matrices are not supported: resample the image in the tool "
                "that produced it."
            )
        meta_d.setdefault("spacing_known", spacing is not None or bool(meta_d.get("spacing_known", False)))
        self.array = arr
        self.spacing = spacing_t
        self.origin = origin_t
        self.direction = dirm
        self.meta = meta_d

    # ------------------------------------------------------------------ basic properties
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spacing)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape in (x, y[, z]) order."""
        return tuple(int(s) for s in self.array.shape[: self.ndim])

    @property
    def n_channels(self) -> int:
        """Number of channels (1 for a scalar image)."""
        return int(self.array.shape[-1]) if self.array.ndim > self.ndim else 1

    @property
    def is_multichannel(self) -> bool:
        """True when the array has a trailing channel axis."""
        return self.array.ndim > self.ndim

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype."""
        return self.array.dtype

    @property
    def spacing_known(self) -> bool:
        """False when the spacing is a placeholder (e.g. arrays from HDF5/NPZ/PNG without spacing)."""
        return bool(self.meta.get("spacing_known", True))

    @property
    def orientation(self) -> str:
        """Orientation code such as ``"LPS"`` or ``"RAS"`` (see module docstring)."""
        return orientation_code(self.direction)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume (mm^3, or area mm^2 in 2D) of one voxel."""
        return float(np.prod(self.spacing))

    @property
    def affine(self) -> np.ndarray:
        """Homogeneous ``(ndim+1, ndim+1)`` matrix mapping voxel index to LPS world (mm)."""
        n = self.ndim
        a = np.eye(n + 1)
        a[:n, :n] = self.direction * np.asarray(self.spacing)[None, :]
        a[:n, n] = self.origin
        return a

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 voxel-to-RAS affine (the NIfTI / nibabel convention); 2D images are embedded in 3D."""
        return lps_to_ras(self.geometry_3d_affine())

    def geometry_3d_affine(self) -> np.ndarray:
        """4x4 voxel-to-LPS affine; a 2D image is treated as a single slice with 1 mm thickness at z=0."""
        if self.ndim == 3:
            return self.affine
        a = np.eye(4)
        a[:2, :2] = self.direction * np.asarray(self.spacing)[None, :]
        a[:2, 3] = self.origin
        return a

    # ------------------------------------------------------------------ coordinates
    def index_to_world(self, index: npt.ArrayLike) -> np.ndarray:
        """Map continuous voxel indices ``(..., ndim)`` (x, y[, z] order) to LPS world coordinates (mm)."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ (self.direction * np.asarray(self.spacing)[None, :]).T + np.asarray(self.origin)

    def world_to_index(self, points: npt.ArrayLike) -> np.ndarray:
        """Map LPS world coordinates ``(..., ndim)`` (mm) to continuous voxel indices."""
        p = np.asarray(points, dtype=np.float64) - np.asarray(self.origin)
        m = self.direction * np.asarray(self.spacing)[None, :]
        return np.linalg.solve(m, p.reshape(-1, self.ndim).T).T.reshape(p.shape)

    # ------------------------------------------------------------------ helpers
    def with_array(self, array: npt.ArrayLike, **meta: Any) -> Image:
        """A new image of the same class-free kind with the same geometry and a new array."""
        return Image(array, self.spacing, self.origin, self.direction, {**self.meta, **meta})

    def copy(self) -> Image:
        """A deep copy (array included)."""
        return copy.deepcopy(self)

    def same_geometry(self, other: Image, atol: float = 1e-4) -> bool:
        """True when ``other`` has the same spatial shape, spacing, origin and direction (within ``atol``)."""
        return not geometry_differences(self, other, atol)

    def check_finite(self, what: str = "image") -> None:
        """Raise :class:`NonFiniteError` when the array contains NaN or infinite values."""
        if np.issubdtype(self.array.dtype, np.floating) or np.issubdtype(self.array.dtype, np.complexfloating):
            bad = ~np.isfinite(self.array)
            n_bad = int(np.count_nonzero(bad))
            if n_bad:
                n_nan = int(np.count_nonzero(np.isnan(self.array)))
                raise NonFiniteError(
                    f"The {what} has {n_bad} non-finite voxels ({n_nan} NaN, {n_bad - n_nan} +/-Inf) out of "
                    f"{self.array.size}. Replace them (medimg.transforms.fill_nonfinite(image, 0); CLI: "
                    "--fill-nonfinite 0) or read with allow_nonfinite=True if you know they are harmless."
                )

    def require(self, ndim: int | None = None, scalar: bool = False, what: str = "image") -> Image:
        """Raise :class:`DimensionError` unless the image has ``ndim`` spatial dims (and one channel)."""
        if ndim is not None and self.ndim != ndim:
            raise DimensionError(f"Expected a {ndim}D {what}, got a {self.ndim}D one with shape {self.shape}.")
        if scalar and self.is_multichannel:
            raise DimensionError(
                f"Expected a single-channel {what}, got {self.n_channels} channels (array shape "
                f"{self.array.shape}; a 4D file is read as 3D + channels). Select one channel/time point first, "
                "e.g. image.channel(0) (CLI: --channel 0)."
            )
        return self

    def channel(self, index: int) -> Image:
        """Extract one channel as a scalar image."""
        if not self.is_multichannel:
            if index == 0:
                return self
            raise DimensionError("This image has a single channel; only channel 0 exists.")
        if not -self.n_channels <= index < self.n_channels:
            raise DimensionError(f"Channel {index} out of range: the image has {self.n_channels} channels.")
        return self.with_array(np.ascontiguousarray(self.array[..., index]))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={self.shape}, channels={self.n_channels}, dtype={self.array.dtype}, "
            f"spacing={tuple(round(s, 4) for s in self.spacing)}, origin={tuple(round(o, 3) for o in self.origin)}, "
            f"orientation={self.orientation})"
        )


class LabelMap(Image):
    """An integer label image; ``names`` maps label values to class names, ``colors`` to RGB (0-255).

    Label 0 is background. Values must be non-negative integers.
    """

    __slots__ = ("colors", "names")

    def __init__(
        self,
        array: npt.ArrayLike,
        spacing: npt.ArrayLike | None = None,
        origin: npt.ArrayLike | None = None,
        direction: npt.ArrayLike | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        names: Mapping[int, str] | None = None,
        colors: Mapping[int, Sequence[int]] | None = None,
        ndim: int | None = None,
    ) -> None:
        arr = np.asarray(array)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.integer):
            if (
                np.issubdtype(arr.dtype, np.floating)
                and arr.size
                and np.all(np.isfinite(arr))
                and np.all(arr == np.round(arr))
            ):
                arr = arr.astype(_smallest_label_dtype(arr))
            else:
                raise LabelError(
                    f"A label map needs integer values, got dtype {arr.dtype} with non-integer values. "
                    "Threshold or round it first (probabilities are not labels)."
                )
        if arr.size and arr.min() < 0:
            raise LabelError(f"Label values must be >= 0, found {int(arr.min())}.")
        super().__init__(arr, spacing, origin, direction, meta, ndim=ndim)
        if self.is_multichannel:
            raise DimensionError(f"A label map must have a single channel, got array shape {arr.shape}.")
        self.names: dict[int, str] = {int(k): str(v) for k, v in (names or {}).items()}
        self.colors: dict[int, tuple[int, int, int]] = {
            int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in (colors or {}).items()
        }

    @classmethod
    def from_image(
        cls, image: Image, names: Mapping[int, str] | None = None, colors: Mapping[int, Sequence[int]] | None = None
    ) -> LabelMap:
        """Wrap an image's array and geometry as a label map (raises :class:`LabelError` if not integer)."""
        return cls(
            image.array,
            image.spacing,
            image.origin,
            image.direction,
            image.meta,
            names=names if names is not None else getattr(image, "names", None),
            colors=colors if colors is not None else getattr(image, "colors", None),
        )

    def with_array(self, array: npt.ArrayLike, **meta: Any) -> LabelMap:
        return LabelMap(
            array,
            self.spacing,
            self.origin,
            self.direction,
            {**self.meta, **meta},
            names=self.names,
            colors=self.colors,
        )

    @property
    def labels(self) -> list[int]:
        """Sorted non-zero label values present in the array."""
        return sorted(self.voxel_counts())

    def voxel_counts(self) -> dict[int, int]:
        """Number of voxels per non-zero label present (see :func:`label_voxel_counts`)."""
        return label_voxel_counts(self.array)

    def volumes_ml(self) -> dict[int, float]:
        """Volume per label in millilitres (1 mL = 1000 mm^3); in 2D this is the area in cm^2 x 0.1."""
        v = self.voxel_volume_mm3 / 1000.0
        return {k: c * v for k, c in self.voxel_counts().items()}

    def name_of(self, label: int) -> str:
        """The class name of ``label`` or ``"label_<n>"`` when unnamed."""
        return self.names.get(int(label), f"label_{int(label)}")


def label_voxel_counts(array: npt.ArrayLike) -> dict[int, int]:
    """``{label: voxels}`` of the non-zero values of an integer label array. Only the non-zero voxels are counted,
    so a mostly empty 512 x 512 x 300 map costs milliseconds, not a full int64 copy."""
    flat = np.asarray(array).ravel()
    nz = flat[np.flatnonzero(flat)]
    if nz.size == 0:
        return {}
    counts = np.bincount(nz.astype(np.int64))
    return {int(i): int(c) for i, c in enumerate(counts) if i != 0 and c > 0}


def _smallest_label_dtype(arr: np.ndarray) -> type[np.integer[Any]]:
    m = float(np.max(arr)) if arr.size else 0.0
    for dt in (np.uint8, np.uint16, np.uint32):
        if m <= np.iinfo(dt).max:
            return dt
    return np.int64


def from_affine(array: npt.ArrayLike, affine_lps: npt.ArrayLike, meta: Mapping[str, Any] | None = None) -> Image:
    """Build an :class:`Image` from an array in (x, y, z) order and a 4x4 voxel-to-LPS affine."""
    a = np.asarray(affine_lps, dtype=np.float64)
    n = a.shape[0] - 1
    m = a[:n, :n]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"Affine has a zero-length axis: {a}.")
    return Image(array, spacing, a[:n, n], m / spacing[None, :], meta)


def geometry_differences(a: Image, b: Image, atol: float = 1e-4) -> list[str]:
    """Human-readable list of how the grids of ``a`` and ``b`` differ (empty when they agree).

    ``atol`` is in mm for spacing/origin and unitless for direction cosines.
    """
    diffs: list[str] = []
    if a.ndim != b.ndim:
        return [f"dimensionality {a.ndim}D vs {b.ndim}D"]
    if a.shape != b.shape:
        diffs.append(f"shape {a.shape} vs {b.shape}")
    if not np.allclose(a.spacing, b.spacing, rtol=0, atol=atol):
        diffs.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm")
    if not np.allclose(a.origin, b.origin, rtol=0, atol=max(atol, 1e-3 * min(a.spacing))):
        diffs.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)} mm")
    if not np.allclose(a.direction, b.direction, rtol=0, atol=atol):
        diffs.append(
            f"direction {a.orientation} {np.round(a.direction, 4).tolist()} vs {b.orientation} "
            f"{np.round(b.direction, 4).tolist()}"
        )
    return diffs


def check_same_geometry(a: Image, b: Image, what: str = "image and label", atol: float = 1e-4) -> None:
    """Raise :class:`GeometryError` (naming each difference) unless ``a`` and ``b`` share one voxel grid."""
    diffs = geometry_differences(a, b, atol)
    if diffs:
        raise GeometryError(
            f"The {what} do not share the same voxel grid: " + "; ".join(diffs) + ". Resample one onto the other "
            "first (medimg resample IN OUT --reference OTHER, or medimg.transforms.resample_to(img, reference))."
        )


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
