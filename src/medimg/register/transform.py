"""A registration result as one object: an optional linear (ITK) transform followed by an optional dense
displacement field, applied with SimpleITK so that world coordinates (spacing, origin, direction) are always
respected.

Convention (ITK's): a transform maps points of the **fixed** (output) space to the **moving** (input) space, and
warping samples the moving image at ``T(x)`` for every fixed-grid point ``x``. With both parts,
``T(x) = A(x + u(x))``: the displacement field ``u`` (LPS mm, sampled on the fixed grid) is applied first, then the
linear transform ``A`` — the order in which they are estimated (affine first, then deformable between the fixed
image and the affinely resampled moving image).

Files: the linear part is written as an ITK transform (``linear.tfm``, text), readable by ITK, ANTs
(``antsApplyTransforms``) and 3D Slicer; the field is written by ITK itself (SimpleITK's writer) as a float32
displacement-field image: for NIfTI a vector image (``intent_code`` 1007 NIFTI_INTENT_VECTOR, 5D
``(x, y, z, 1, ndim)``; 2D fields ``(x, y, 1, 1, 2)``) holding physical LPS mm displacements — the file ITK, ANTs
and 3D Slicer read as a displacement field. ``transform.json`` records which files form the transform and in which
order, which is also the order ANTs takes them in (like its own ``fwdtransforms = [warp, affine]``):
``ants.apply_transforms(fixed, moving, transformlist=["displacement.nii.gz", "linear.tfm"],
whichtoinvert=[False, False])`` reproduces medimg's warp (the reverse order does not) — see docs/registration.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import DimensionError, MedimgError
from medimg.image import Image, LabelMap

FIELD_EXTS = (".nii.gz", ".nii", ".mha", ".nrrd")
"""Extensions the displacement field is written with (ITK writes them as vector images); others fall back to
``.nii.gz``."""


class Transform:
    """``linear`` (a SimpleITK transform or None) and ``field`` (an :class:`Image` with ``ndim`` channels holding the
    LPS displacement in mm on the fixed grid, or None). ``Transform()`` is the identity."""

    def __init__(self, linear: Any = None, field: Image | None = None) -> None:
        if field is not None and field.n_channels != field.ndim:
            raise DimensionError(f"A displacement field needs {field.ndim} channels; got {field.n_channels}.")
        self.linear = linear
        self.field = field
        self._jacobian: np.ndarray | None = None

    @property
    def ndim(self) -> int | None:
        if self.field is not None:
            return self.field.ndim
        return None if self.linear is None else int(self.linear.GetDimension())

    def field_index_mm(self) -> np.ndarray:
        """The displacement field in mm along its grid's index axes, ``(*shape, ndim)`` — the form
        :mod:`medimg.metrics.registration` expects."""
        if self.field is None:
            raise MedimgError("This transform has no displacement field.")
        return np.asarray(self.field.array, np.float64) @ np.asarray(self.field.direction)

    def jacobian_determinant(self) -> np.ndarray:
        """Jacobian determinant map of the displacement field on its grid (:mod:`medimg.metrics.registration`;
        computed once and cached — the report's folding and the written Jacobian map share it; a field changed in
        place afterwards would leave it stale: build a new Transform instead)."""
        if self._jacobian is None:
            from medimg.metrics.registration import jacobian_determinant

            if self.field is None:
                raise MedimgError("This transform has no displacement field.")
            self._jacobian = jacobian_determinant(self.field_index_mm(), self.field.spacing)
        return self._jacobian

    def to_sitk(self) -> Any:
        """A SimpleITK transform (composite when both parts exist)."""
        import SimpleITK as sitk

        parts = []
        if self.linear is not None:
            parts.append(self.linear)
        if self.field is not None:
            parts.append(sitk.DisplacementFieldTransform(field_to_sitk(self.field)))
        if not parts:
            return sitk.Transform(self.ndim or 3, sitk.sitkIdentity)
        if len(parts) == 1:
            return parts[0]
        comp = sitk.CompositeTransform(parts[0].GetDimension())
        for p in parts:  # ITK applies the last added first: A(D(x))
            comp.AddTransform(p)
        return comp

    def transform_points(self, points_mm: np.ndarray) -> np.ndarray:
        """Map fixed-space LPS points ``(n, ndim)`` to moving space."""
        t = self.to_sitk()
        return np.array([t.TransformPoint(tuple(float(v) for v in p)) for p in np.asarray(points_mm, float)])

    def apply(
        self, moving: Image, reference: Image, interpolation: str = "linear", default: float | None = None
    ) -> Image:
        """Warp ``moving`` onto ``reference``'s grid (``linear``, ``bspline`` or ``nearest``); outside values are
        ``default`` (the moving image's minimum when None)."""
        import SimpleITK as sitk

        from medimg.interop import from_sitk, to_sitk

        if moving.ndim != reference.ndim:
            raise DimensionError(f"Cannot warp a {moving.ndim}D image onto a {reference.ndim}D grid.")
        interp = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}
        if interpolation not in interp:
            raise MedimgError(f"Unknown interpolation {interpolation!r}; use linear, bspline or nearest.")
        mv = to_sitk(moving)
        if interpolation != "nearest" and mv.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
            mv = sitk.Cast(mv, sitk.sitkFloat32)
        ref = to_sitk(reference.with_array(np.zeros(reference.shape[: reference.ndim], np.uint8)))
        fill = float(np.min(moving.array)) if default is None else float(default)
        out = sitk.Resample(mv, ref, self.to_sitk(), interp[interpolation], fill)
        res = from_sitk(out, dict(moving.meta))
        if isinstance(moving, LabelMap):
            return LabelMap(res.array, res.spacing, res.origin, res.direction, moving.meta, names=moving.names)
        return res

    def apply_labels(self, labels: LabelMap, reference: Image, method: str = "linear") -> LabelMap:
        """Warp a label map: ``nearest`` neighbour, or ``linear`` one-hot interpolation (each label's indicator is
        warped linearly and the largest wins — smoother boundaries than nearest)."""
        if method == "nearest":
            out = self.apply(labels, reference, "nearest", 0)
            return LabelMap(out.array, out.spacing, out.origin, out.direction, labels.meta, names=labels.names)
        if method != "linear":
            raise MedimgError(f"Unknown label interpolation {method!r}; use nearest or linear.")
        values = [int(v) for v in np.unique(labels.array)]
        best = None
        arg = None
        for v in values:
            ind = labels.with_array((labels.array == v).astype(np.float32))
            w = self.apply(
                Image(ind.array, ind.spacing, ind.origin, ind.direction), reference, "linear", 1.0 * (v == 0)
            )
            if best is None:
                best, arg = w.array.copy(), np.full(w.shape, v, dtype=labels.array.dtype)
            else:
                upd = w.array > best
                best[upd] = w.array[upd]
                assert arg is not None
                arg[upd] = v
        assert arg is not None
        return LabelMap(arg, reference.spacing, reference.origin, reference.direction, labels.meta, names=labels.names)

    def inverse(self, iterations: int = 50) -> Transform:
        """The inverse transform ``T^-1(y) = D^-1(A^-1(y))``: exact for the linear part; the field is inverted
        numerically on its own grid (``sitk.InvertDisplacementField``, fixed-point iterations)."""
        import SimpleITK as sitk

        from medimg.interop import from_sitk, to_sitk

        lin_inv = self.linear.GetInverse() if self.linear is not None else None
        if self.field is None:
            return Transform(lin_inv, None)
        f = sitk.Cast(to_sitk(self.field), sitk.sitkVectorFloat64)
        inv = sitk.InvertDisplacementField(
            f,
            maximumNumberOfIterations=iterations,
            maxErrorToleranceThreshold=0.01,
            meanErrorToleranceThreshold=0.0001,
            enforceBoundaryCondition=True,
        )
        field_inv = from_sitk(inv)
        if lin_inv is None:
            return Transform(None, field_inv)
        return _Composite([Transform(lin_inv, None), Transform(None, field_inv)])

    def save(self, folder: str | Path, field_ext: str = ".nii.gz") -> Path:
        """Write ``linear.tfm`` and/or ``displacement<ext>`` and ``transform.json`` into ``folder``. The field is
        written float32 by ITK's own writer (NIfTI: vector intent, 5D; see the module docstring), so ITK, ANTs and
        3D Slicer read it as a displacement field; ``field_ext`` other than .nii.gz/.nii/.mha/.nrrd gives .nii.gz."""
        import SimpleITK as sitk

        from medimg.io._atomic import atomic_path

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        desc: dict[str, Any] = {
            "format": "medimg-transform-1",
            "convention": "maps fixed (LPS mm) to moving points; T(x) = A(x + u(x)): the field first, then linear",
            "order": [],
        }
        if self.field is not None:
            ext = field_ext.lower() if field_ext.lower() in FIELD_EXTS else ".nii.gz"
            with atomic_path(d / f"displacement{ext}") as tmp:
                sitk.WriteImage(field_to_sitk(self.field, sitk.sitkVectorFloat32), str(tmp), useCompression=True)
            desc["order"].append({"type": "displacement_field", "file": f"displacement{ext}"})
        if self.linear is not None:
            with atomic_path(d / "linear.tfm") as tmp:
                sitk.WriteTransform(self.linear, str(tmp))
            desc["order"].append({"type": "linear", "file": "linear.tfm"})
        # antsApplyTransforms / ants.apply_transforms take the files in this same order (field, then linear)
        desc["ants_transformlist"] = [p["file"] for p in desc["order"]]
        with atomic_path(d / "transform.json") as tmp:
            tmp.write_text(json.dumps(desc, indent=2) + "\n")
        return d

    @staticmethod
    def load(path: str | Path) -> Transform:
        """Read a transform folder written by :meth:`save`, an ITK linear transform file (.tfm/.txt/.h5/.mat), or a
        displacement-field image."""
        import SimpleITK as sitk

        p = Path(path)
        if p.is_dir():
            if not (p / "transform.json").exists():
                raise MedimgError(f"{p} has no transform.json; give a transform folder written by medimg register.")
            desc = json.loads((p / "transform.json").read_text())
            lin = field = None
            for part in desc.get("order", []):
                if part["type"] == "linear":
                    lin = sitk.ReadTransform(str(p / part["file"]))
                elif part["type"] == "displacement_field":
                    field = read_field(p / part["file"])
            return Transform(lin, field)
        if not p.exists():
            raise MedimgError(f"No such transform file: {p}.")
        if p.suffix.lower() in (".tfm", ".txt", ".h5", ".mat", ".hdf5") and not p.name.endswith((".nii.gz",)):
            try:
                return Transform(sitk.ReadTransform(str(p)), None)
            except RuntimeError as e:
                raise MedimgError(f"Cannot read {p} as an ITK transform: {e}".splitlines()[0]) from None
        return Transform(None, read_field(p))


def field_to_sitk(field: Image, pixel_type: Any = None) -> Any:
    """A displacement field as a SimpleITK vector image (``sitkVectorFloat64`` unless ``pixel_type`` is given)."""
    import SimpleITK as sitk

    from medimg.interop import to_sitk

    return sitk.Cast(to_sitk(field), sitk.sitkVectorFloat64 if pixel_type is None else pixel_type)


def read_field(path: str | Path) -> Image:
    """Read a displacement field as ITK does (a 2D NIfTI field ``(x, y, 1, 1, 2)`` is 2D); files ITK cannot read
    as a vector image (e.g. medimg's earlier 4D scalar NIfTI) are read by :func:`medimg.read`."""
    import SimpleITK as sitk

    import medimg
    from medimg.interop import from_sitk

    p = Path(path)
    img: Image | None = None
    try:
        simg = sitk.ReadImage(str(p))
        if simg.GetNumberOfComponentsPerPixel() == simg.GetDimension():
            img = from_sitk(simg, {"source": str(p)})
    except RuntimeError:
        img = None
    if img is None:
        img = medimg.read(p)
    if img.ndim == 3 and img.shape[2] == 1 and img.n_channels == 2:  # a 2D field stored as one slice
        img = Image(img.array[:, :, 0, :], img.spacing[:2], img.origin[:2], img.direction[:2, :2], img.meta)
    if img.n_channels != img.ndim:
        raise MedimgError(f"{p} is not a displacement field ({img.ndim}D image with {img.n_channels} channels).")
    return img


def field_from_voxels(disp_vox: np.ndarray, grid: Image) -> Image:
    """A displacement field (LPS mm vectors on ``grid``) from displacements ``(ndim, *shape)`` in voxels along the
    grid's array axes."""
    index_mm = np.moveaxis(np.asarray(disp_vox, np.float64), 0, -1) * np.asarray(grid.spacing)
    lps = (index_mm @ np.asarray(grid.direction).T).astype(np.float32)  # float32: as stored, half the memory
    return Image(lps, grid.spacing, grid.origin, grid.direction)


class _Composite(Transform):
    """A chain of transforms applied first-to-last to points (used for inverses of linear + field)."""

    def __init__(self, chain: list[Transform]) -> None:
        super().__init__(None, None)
        self.chain = chain

    @property
    def ndim(self) -> int | None:
        return next((t.ndim for t in self.chain if t.ndim), None)

    def to_sitk(self) -> Any:
        import SimpleITK as sitk

        comp = sitk.CompositeTransform(int(self.ndim or 3))
        for t in reversed(self.chain):  # ITK applies the last added first
            comp.AddTransform(t.to_sitk())
        return comp

    def save(self, folder: str | Path, field_ext: str = ".nii.gz") -> Path:
        raise MedimgError("Saving an inverted linear+deformable transform is not supported; save the forward one.")
