"""Shape measurements of label maps: an ellipse fitted to a 2D structure (fetal head circumference, HC18 style).

The fit is done in physical space: the structure's outline (the 0.5 iso-line of its filled mask, marching squares, so
sub-pixel) is mapped to world coordinates (LPS, mm) with the image's spacing, origin and direction, and an ellipse is
fitted to it by least squares (:class:`skimage.measure.EllipseModel`, Halir & Flusser's direct fit). Outline points on
the image border are left out, so a head cut off by the field of view is still fitted to its visible outline. The
circumference is Ramanujan's second approximation, exact to about 1e-10 relative for the eccentricities of heads. A
drawn outline (an annotation that is a closed line, not a filled region: its filled area is more than 3x its own) is
fitted along both edges of the line, i.e. to its centre line, which is where the annotator meant the boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medimg.errors import MedimgError
from medimg.image import Image

#: Largest RMS distance of an outline to its fitted ellipse, as a share of the minor semi-axis, for the structure to
#: count as elliptical (HC18's drawn heads: about 1 %; the fetal-head model's held-out failures: 10-35 %).
MAX_RELATIVE_RMS = 0.05


class MeasureError(MedimgError):
    """A structure that cannot be measured (missing, 3D, too small)."""


@dataclass
class EllipseFit:
    """An ellipse in world coordinates: centre (LPS mm, 2 values), semi-axes (mm, major first), the major axis' angle to
    the first world axis (degrees, -90..90), circumference (mm), area (mm^2), RMS distance of the boundary points to
    the ellipse (mm), points used, whether the structure touches the image border, and whether it was a drawn
    outline (fitted to the line's centre: both its edges)."""

    center_mm: tuple[float, float]
    semi_axes_mm: tuple[float, float]
    angle_deg: float
    circumference_mm: float
    area_mm2: float
    rms_residual_mm: float
    n_points: int
    touches_border: bool
    outline: bool = False

    @property
    def elliptical(self) -> bool:
        """Whether the outline is an ellipse: its RMS distance to the fit is at most :data:`MAX_RELATIVE_RMS` of the
        minor semi-axis. A segmentation that took in a neighbouring structure is not, and its "circumference" must
        not be reported as a head's without a look."""
        return self.rms_residual_mm <= MAX_RELATIVE_RMS * self.semi_axes_mm[1]


def ellipse_mask(fit: EllipseFit, like: Image) -> np.ndarray:
    """The pixels of ``like``'s grid whose centres lie inside ``fit`` (uint8 {0, 1}, ``like``'s array shape), in
    world coordinates, so any spacing, origin and direction works."""
    n0, n1 = like.shape[:2]
    ij = np.stack(np.meshgrid(np.arange(n0), np.arange(n1), indexing="ij"), -1).astype(np.float64)
    sp = np.asarray(like.spacing, np.float64)
    w = np.asarray(like.origin, np.float64) + (ij * sp) @ np.asarray(like.direction, np.float64).T
    th = math.radians(fit.angle_deg)
    d0, d1 = w[..., 0] - fit.center_mm[0], w[..., 1] - fit.center_mm[1]
    u = d0 * math.cos(th) + d1 * math.sin(th)
    v = -d0 * math.sin(th) + d1 * math.cos(th)
    a, b = fit.semi_axes_mm
    return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.uint8)


def ellipse_circumference(a: float, b: float) -> float:
    """Ramanujan's second approximation of an ellipse's perimeter with semi-axes ``a``, ``b``."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def fit_ellipse(labels: Image, label: int | None = None) -> EllipseFit:
    """Fit an ellipse to the boundary of ``label`` (None: every non-zero pixel) of a 2D label map."""
    from skimage.measure import EllipseModel, find_contours

    arr = np.asarray(labels.array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or labels.ndim != 2:
        raise MeasureError(
            f"An ellipse is fitted to a 2D structure; this label map is {labels.ndim}D {arr.shape}. Measure one slice "
            "(e.g. extract it with medimg convert) instead."
        )
    region = arr > 0 if label is None else arr == label
    if not region.any():
        present = sorted(int(v) for v in np.unique(arr) if v != 0)
        raise MeasureError(
            f"Label {label if label is not None else 'non-zero'} is empty in this label map; labels present: "
            f"{present or 'none'}."
        )
    filled = ndimage.binary_fill_holes(region)
    # a drawn outline (HC18 annotations): fit both of its edges, whose average is the line's centre
    outline = filled.sum() > 3 * region.sum()
    traced = region if outline else filled
    region = filled
    border = np.zeros_like(region)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    touches = bool((region & border).any())
    # the outline at sub-pixel precision: the 0.5 iso-line between pixel centres inside and outside (marching
    # squares), without the stretches along the image border
    ij = np.concatenate(find_contours(traced.astype(np.float32), 0.5))
    n0, n1 = region.shape
    ij = ij[(ij[:, 0] > 0.5) & (ij[:, 0] < n0 - 1.5) & (ij[:, 1] > 0.5) & (ij[:, 1] < n1 - 1.5)]
    if len(ij) < 6:
        raise MeasureError(f"Only {len(ij)} outline points off the image border; an ellipse needs at least 6.")
    sp = np.asarray(labels.spacing, np.float64)
    world = np.asarray(labels.origin, np.float64) + (ij * sp) @ np.asarray(labels.direction, np.float64).T
    model = EllipseModel.from_estimate(world)
    if not model:
        raise MeasureError("The ellipse fit failed (the boundary is degenerate, e.g. a straight line).")
    (xc, yc), (a, b), theta = (float(v) for v in model.center), (float(v) for v in model.axis_lengths), model.theta
    if b > a:
        a, b, theta = b, a, theta + math.pi / 2
    theta = (theta + math.pi / 2) % math.pi - math.pi / 2
    res = model.residuals(world)
    return EllipseFit(
        center_mm=(xc, yc),
        semi_axes_mm=(a, b),
        angle_deg=math.degrees(theta),
        circumference_mm=ellipse_circumference(a, b),
        area_mm2=math.pi * a * b,
        rms_residual_mm=float(np.sqrt(np.mean(res**2))),
        n_points=len(ij),
        touches_border=touches,
        outline=bool(outline),
    )
