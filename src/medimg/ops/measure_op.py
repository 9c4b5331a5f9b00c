"""The ``measure_ellipse`` operation: an ellipse fitted to a 2D structure of a label map, in mm (fetal head
circumference, HC18 style; engine: :mod:`medimg.measure`)."""

from __future__ import annotations

from pydantic import Field

from medimg.ops.base import Context, OpParams, OpResult, operation


class MeasureEllipseParams(OpParams):
    mask: str = Field(description="2D label map (PNG, NIfTI, NRRD, ...): a filled structure or a drawn outline.")
    label: int | None = Field(None, ge=1, description="Label value to measure (default: every non-zero pixel).")
    spacing: list[float] | None = Field(
        None,
        min_length=1,
        max_length=2,
        description="Pixel size in mm (one value, or one per axis) when the file has none (PNG); overrides the file's.",
    )


class MeasureEllipseResult(OpResult):
    mask: str
    center_mm: list[float] = Field(description="Ellipse centre, world coordinates (LPS), mm.")
    semi_axes_mm: list[float] = Field(description="Semi-major and semi-minor axis, mm.")
    angle_deg: float = Field(description="Angle of the major axis to the first world axis, degrees (-90..90).")
    circumference_mm: float = Field(description="Perimeter (Ramanujan's second approximation), mm.")
    area_mm2: float
    rms_residual_mm: float = Field(description="RMS distance of the outline points to the ellipse, mm.")
    n_points: int
    touches_border: bool = Field(description="The structure reaches the image border (fitted to the visible part).")
    outline: bool = Field(description="The structure is a drawn outline, fitted to the line's centre.")
    elliptical: bool = Field(
        description="The outline is an ellipse (RMS distance to the fit <= 5 % of the minor semi-axis); when false the "
        "circumference describes a fitted ellipse, not the structure: check the mask."
    )
    spacing_mm: list[float]


@operation(
    "measure_ellipse",
    "Fit an ellipse to a 2D structure of a label map and report its circumference, axes, area and angle in mm "
    "(e.g. fetal head circumference).",
    reads=("mask",),
)
def measure_ellipse(p: MeasureEllipseParams, ctx: Context) -> MeasureEllipseResult:
    import medimg
    from medimg.measure import MeasureError, fit_ellipse

    lab = medimg.read_labels(p.mask)
    if p.spacing is not None:
        if lab.ndim != 2:
            raise MeasureError(f"{p.mask} is {lab.ndim}D; an ellipse is fitted to a 2D structure.")
        sp = p.spacing * 2 if len(p.spacing) == 1 else p.spacing
        if min(sp) <= 0:
            raise MeasureError(f"--spacing {p.spacing}: pixel sizes must be positive (mm).")
        lab = type(lab)(lab.array, spacing=sp, origin=lab.origin, direction=lab.direction, names=lab.names)
    elif lab.meta.get("spacing_known") is False:
        raise MeasureError(
            f"{p.mask} has no pixel size (a PNG or similar), so a length in mm would be made up; give --spacing MM "
            "(for HC18: the pixel size column of pixel_size_and_HC.csv)."
        )
    f = fit_ellipse(lab, p.label)
    return MeasureEllipseResult(
        mask=p.mask,
        center_mm=list(f.center_mm),
        semi_axes_mm=list(f.semi_axes_mm),
        angle_deg=f.angle_deg,
        circumference_mm=f.circumference_mm,
        area_mm2=f.area_mm2,
        rms_residual_mm=f.rms_residual_mm,
        n_points=f.n_points,
        touches_border=f.touches_border,
        outline=f.outline,
        elliptical=f.elliptical,
        spacing_mm=[float(v) for v in lab.spacing],
    )
