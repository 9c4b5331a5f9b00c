"""The ``memorization`` operation: which generated samples copy a training image (:mod:`medimg.memorization`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from medimg.ops.base import Context, OpParams, OpResult, operation


class MemorizationParams(OpParams):
    samples: str = Field(description="Folder of generated images (2D PNG/JPEG/TIFF or 3D NIfTI/NRRD/MHA).")
    train: str = Field(description="Folder of the training images, same kind as samples.")
    threshold: float | None = Field(
        None, ge=-1, le=1, description="Similarity above which a sample is flagged (None: calibrated on train)."
    )
    false_alarm: float = Field(
        0.05, gt=0, lt=1, description="Calibration: fraction of genuinely new images the threshold may flag."
    )
    grid: int | None = Field(None, ge=8, le=128, description="Pixels per axis of the common grid (2D 32, 3D 24).")
    max_shift: int | None = Field(None, ge=0, le=16, description="Largest shift searched, grid pixels (2D 4, 3D 2).")
    flips: bool = Field(True, description="Also match the left-right mirrored sample.")
    calibration_size: int = Field(1000, ge=2, description="Training images used as leave-one-out queries.")
    seed: int = Field(0, description="Seed of the calibration subset.")
    report: str | None = Field(None, description="Write the per-sample table here (.csv) or the whole result (.json).")


class MatchRow(BaseModel):
    sample: str
    match: str = Field(description="Most similar training image.")
    similarity: float = Field(description="Max. correlation of band-passed structure over shifts/scales/flip.")
    memorized: bool = Field(description="similarity above the threshold.")
    p_value: float | None = Field(description="Fraction of training leave-one-out similarities >= this one.")
    shift: list[float] = Field(description="Shift of the sample relative to the match, grid pixels ((z,) y, x).")
    scale: float
    flipped: bool


class MemorizationResult(OpResult):
    threshold: float
    threshold_source: str = Field(description="'calibrated' (train leave-one-out quantile) or 'given'.")
    false_alarm: float | None
    calibration_n: int = Field(description="Training images used as calibration queries.")
    calibration_quantiles: dict[str, float]
    n_samples: int
    n_train: int
    n_memorized: int
    memorized_fraction: float
    dims: int
    grid: int
    max_shift: int
    scales: list[float]
    flips: bool
    matches: list[MatchRow]
    seconds: float


@operation(
    "memorization",
    "Flag generated images that copy or nearly copy (shifted, rescaled, intensity-changed, noised, mirrored) a "
    "training image, with the matched training image, its similarity and a threshold calibrated on the training "
    "set's own nearest-neighbour similarities.",
    reads=("samples", "train"),
    writes=("report",),
)
def memorization(p: MemorizationParams, ctx: Context) -> MemorizationResult:
    from medimg.io._atomic import atomic_path, check_output_path
    from medimg.memorization import MemorizationInputError, memorization_folders, report_text

    fmt = None
    if p.report is not None:
        fmt = Path(p.report).suffix.lower().lstrip(".")
        if fmt not in ("csv", "json"):
            raise MemorizationInputError(f"--report {p.report}: give a .csv or .json file name.")
        check_output_path(p.report)
    res = memorization_folders(
        p.samples,
        p.train,
        threshold=p.threshold,
        false_alarm=p.false_alarm,
        grid=p.grid,
        max_shift=p.max_shift,
        flips=p.flips,
        calibration_size=p.calibration_size,
        seed=p.seed,
    )
    files = []
    if p.report is not None and fmt is not None:
        with atomic_path(p.report) as tmp:
            Path(tmp).write_text(report_text(res, fmt), encoding="utf-8")
        files.append(p.report)
    cal = res.calibration
    rows = [
        MatchRow(
            sample=m.sample,
            match=m.match,
            similarity=round(m.similarity, 6),
            memorized=m.memorized,
            p_value=None if m.p_value != m.p_value else m.p_value,
            shift=list(m.shift),
            scale=m.scale,
            flipped=m.flipped,
        )
        for m in res.matches
    ]
    return MemorizationResult(
        files=files,
        threshold=cal.threshold,
        threshold_source=cal.source,
        false_alarm=None if cal.source == "given" else cal.false_alarm,
        calibration_n=cal.n,
        calibration_quantiles=cal.quantiles,
        n_samples=res.n_samples,
        n_train=res.n_train,
        n_memorized=res.n_memorized,
        memorized_fraction=res.n_memorized / max(1, res.n_samples),
        dims=res.dims,
        grid=res.grid,
        max_shift=res.max_shift,
        scales=list(res.scales),
        flips=res.flips,
        matches=rows,
        seconds=round(res.seconds, 3),
    )
