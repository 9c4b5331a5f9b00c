"""The ``deid`` operation: de-identify a DICOM file or folder tree (PS3.15 Annex E Basic Application Level
Confidentiality Profile and its options) into a new file or folder that mirrors it.

The engine is :mod:`medimg.deid`; this module only validates parameters and shapes the result. The result
carries the counts and, per file, what changed (attribute names, never values); the full report can be written
with ``report``. The mapping file (re-identification key) is written only where ``mapping`` says, outside the
input and the output.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from medimg.ops.base import Context, OpParams, OpResult, operation


class DeidParams(OpParams):
    input: str = Field(description="A DICOM file or a folder tree of DICOM files (non-DICOM files are skipped).")
    output: str = Field(
        description="Output file (for one input file) or folder (mirrors the input tree); not inside the input, "
        "and empty unless overwrite is given."
    )
    profile: list[str] = Field(
        default_factory=lambda: ["basic"],
        description="basic (always applied) plus options: retain-dates (per-patient date shift), retain-full-dates, "
        "retain-device, retain-institution, retain-patient-characteristics, clean-descriptors, retain-safe-private.",
    )
    mapping: str | None = Field(
        None,
        description="Mapping JSON (secret, UID map, pseudonyms, date shifts) outside input and output; read if it "
        "exists, then updated, so a re-run gives the same UIDs and pseudonyms.",
    )
    date_shift_days: int | None = Field(
        None, description="With retain-dates: shift every patient's dates by this many days (default: per patient)."
    )
    report: str | None = Field(None, description="JSON report of what changed per file (outside input and output).")
    overwrite: bool = Field(False, description="Replace an existing non-empty output.")


class DeidResult(OpResult):
    input: str
    output: str
    profile: list[str]
    n_files: int = Field(description="DICOM files de-identified.")
    n_skipped: int = Field(description="Files skipped (not DICOM, DICOMDIR).")
    n_review: int = Field(description="Files flagged for burned-in text review.")
    patients: int
    studies: int
    series: int
    frames_of_reference: int
    date_shift: str
    skipped: list[dict[str, str]]
    review: list[dict[str, Any]]
    warnings: list[str]
    report: dict[str, Any] = Field(description="The full report (per-file changes).")


@operation(
    "deid",
    "De-identify DICOM files (PS3.15 Basic Application Level Confidentiality Profile + options): identifiers "
    "removed or replaced, UIDs remapped consistently, private tags removed, dates shifted per patient on request, "
    "burned-in text flagged; pixel data and geometry untouched; a report of what changed.",
    reads=("input",),
    writes=("output", "mapping", "report"),
)
def deid(p: DeidParams, ctx: Context) -> DeidResult:
    from medimg.deid import deidentify

    rep = deidentify(
        p.input,
        p.output,
        profile=p.profile,
        mapping=p.mapping,
        date_shift_days=p.date_shift_days,
        report=p.report,
        overwrite=p.overwrite,
        progress=ctx.progress,
    )
    d = rep.to_dict()
    files = [rep.output] + [f for f in (p.mapping, p.report) if f]
    return DeidResult(
        input=rep.input,
        output=rep.output,
        profile=rep.profile,
        n_files=d["n_files"],
        n_skipped=d["n_skipped"],
        n_review=d["n_review"],
        patients=rep.patients,
        studies=rep.studies,
        series=rep.series,
        frames_of_reference=rep.frames_of_reference,
        date_shift=rep.date_shift,
        skipped=rep.skipped,
        review=rep.review,
        warnings=rep.warnings,
        report=d,
        files=files,
    )
