"""Conversions between :class:`medimg.Image` and SimpleITK images / nibabel NIfTI images.

SimpleITK numbers axes (x, y, z) like medimg and uses LPS world coordinates, so only the numpy view changes
(SimpleITK's numpy arrays are (z, y, x)). nibabel uses RAS affines: the sign flip happens in
:func:`medimg.image.lps_to_ras`, nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from medimg.image import Image, LabelMap, from_affine, lps_to_ras, ras_to_lps

if TYPE_CHECKING:
    import nibabel as nib
    import SimpleITK as sitk


def to_sitk(image: Image) -> sitk.Image:
    """Convert to a SimpleITK image (a copy; channels become a vector pixel type)."""
    import SimpleITK as sitk

    n = image.ndim
    arr = image.array
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if image.is_multichannel:
        perm = (*tuple(range(n - 1, -1, -1)), n)
        out = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(perm)), isVector=True)
    else:
        out = sitk.GetImageFromArray(np.ascontiguousarray(arr.T))
    out.SetSpacing(image.spacing)
    out.SetOrigin(image.origin)
    out.SetDirection(tuple(float(v) for v in image.direction.ravel()))
    return out


def from_sitk(simg: sitk.Image, meta: dict[str, Any] | None = None) -> Image:
    """Convert a SimpleITK image to a medimg :class:`Image` (the array is a transposed view, no copy)."""
    import SimpleITK as sitk

    n = simg.GetDimension()
    arr = sitk.GetArrayFromImage(simg)
    arr = arr.transpose((*tuple(range(n - 1, -1, -1)), n)) if simg.GetNumberOfComponentsPerPixel() > 1 else arr.T
    direction = np.array(simg.GetDirection(), dtype=np.float64).reshape(n, n)
    return Image(arr, simg.GetSpacing(), simg.GetOrigin(), direction, meta)


def to_nibabel(image: Image) -> nib.Nifti1Image:
    """Convert to a nibabel NIfTI-1 image with a RAS affine (qform and sform both set, code 1 = scanner)."""
    import nibabel as nib

    arr = image.array
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    affine = lps_to_ras(image.geometry_3d_affine())
    if image.ndim == 2 and image.is_multichannel:
        arr = arr[:, :, None, :]
    nimg = nib.Nifti1Image(arr, affine)
    nimg.set_qform(affine, code=1)
    nimg.set_sform(affine, code=1)
    nimg.header.set_xyzt_units("mm", "sec")
    if isinstance(image, LabelMap):
        nimg.header["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    return nimg


def from_nibabel(nimg: nib.spatialimages.SpatialImage, meta: dict[str, Any] | None = None) -> Image:
    """Convert a nibabel image (RAS affine) to a medimg :class:`Image` in LPS.

    A 4D image becomes 3D with channels; a 5D NIfTI vector image ``(x, y, z, 1, c)`` likewise. Images whose
    header says 2D (``dim[0] == 2``) stay 2D.
    """
    arr = np.asanyarray(nimg.dataobj)
    affine = ras_to_lps(nimg.affine)
    header: Any = nimg.header
    hdr_dims = int(header["dim"][0]) if "dim" in header else arr.ndim
    if arr.ndim == 5 and arr.shape[3] == 1:
        arr = arr[:, :, :, 0, :]
    if hdr_dims == 2 or arr.ndim == 2:
        arr = arr.reshape(arr.shape[:2])
        a2 = np.eye(3)
        a2[:2, :2] = affine[:2, :2]
        a2[:2, 2] = affine[:2, 3]
        return from_affine(arr, a2, meta)
    if arr.ndim > 4:
        from medimg.errors import DimensionError

        raise DimensionError(
            f"NIfTI image of shape {arr.shape} has more than 4 dimensions; medimg reads up to 3D + channels."
        )
    return from_affine(arr, affine, meta)
