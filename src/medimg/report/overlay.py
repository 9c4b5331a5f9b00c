"""Quick-look overlay pictures: one slice of an image with a label map blended on top."""

from __future__ import annotations

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap, check_same_geometry
from medimg.report_colors import label_color
from medimg.transforms.intensity import to_uint8
from medimg.transforms.spatial import reorient


def overlay_slice(image: Image, labels: LabelMap | None = None, z: int | None = None, alpha: float = 0.45) -> Image:
    """An RGB 2D :class:`Image` of an axial slice in radiological display (patient right on the left).

    The volume is reoriented to LPS so that columns run right->left and rows anterior->posterior. ``z`` is
    the slice index after reorientation; by default the slice with the most labelled voxels (or the middle).
    2D images are used as they are.
    """
    if labels is not None:
        check_same_geometry(image, labels, what="image and label map")
    scalar = image if not image.is_multichannel else image.channel(0)
    if image.ndim == 3:
        scalar = reorient(scalar, "LPS")
        labels = reorient(labels, "LPS") if labels is not None else None  # type: ignore[assignment]
        if z is None:
            if labels is not None and labels.array.any():
                z = int(np.argmax((labels.array > 0).sum(axis=(0, 1))))
            else:
                z = scalar.shape[2] // 2
        if not 0 <= z < scalar.shape[2]:
            raise MedimgError(f"Slice {z} is outside the volume (0..{scalar.shape[2] - 1}).")
        grey = to_uint8(Image(scalar.array[:, :, z], scalar.spacing[:2]), 0.5, 99.5).array
        lab = labels.array[:, :, z] if labels is not None else None
    else:
        grey = to_uint8(scalar, 0.5, 99.5).array
        lab = labels.array if labels is not None else None
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    if lab is not None:
        for v in np.unique(lab):
            if v == 0:
                continue
            color = np.asarray(labels.colors.get(int(v), label_color(int(v))) if labels else label_color(int(v)))
            m = lab == v
            rgb[m] = (1 - alpha) * rgb[m] + alpha * color
    spacing = image.spacing[:2]
    return Image(np.round(rgb).astype(np.uint8), spacing, meta={"note": "overlay"})
