"""Pairing predicted and reference label maps by case id (nnU-Net naming: the file name without its extension)
and bringing a prediction onto its reference's grid. Used by :mod:`medimg.evaluate` and the evaluation report."""

from __future__ import annotations

from pathlib import Path

from medimg.errors import GeometryError, MedimgError
from medimg.image import LabelMap, geometry_differences
from medimg.io._atomic import split_ext


def case_id(path: Path) -> str:
    """The case id of a file: its name without the (double) extension, e.g. ``case_001.nii.gz`` -> ``case_001``;
    DICOM folders are named by the folder."""
    return path.name if path.is_dir() else split_ext(path)[0]


def index_cases(d: Path) -> dict[str, Path]:
    """``{case id: path}`` of the (non-hidden) entries of a folder."""
    return {case_id(p): p for p in sorted(d.iterdir()) if not p.name.startswith(".")}


def match_cases(pred_dir: Path, ref_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pairs ``(case, pred, ref)`` with the same case id; plus ids missing a prediction, and extra predictions."""
    for d, what in ((pred_dir, "prediction"), (ref_dir, "reference")):
        if not d.is_dir():
            raise MedimgError(f"The {what} folder {str(d)!r} does not exist or is not a folder.")
    preds, refs = index_cases(pred_dir), index_cases(ref_dir)
    pairs = [(c, preds[c], refs[c]) for c in sorted(refs) if c in preds]
    if not pairs:
        raise MedimgError(
            f"No prediction in {str(pred_dir)!r} has the same case id as a reference in {str(ref_dir)!r} (ids are "
            f"file names without extensions; e.g. references {sorted(refs)[:3]}, predictions {sorted(preds)[:3]})."
        )
    return pairs, sorted(set(refs) - set(preds)), sorted(set(preds) - set(refs))


def align_to_reference(pred: LabelMap, ref: LabelMap, case: str, resample: bool, spacing_from: str | None) -> LabelMap:
    """``pred`` on ``ref``'s grid: unchanged when the grids agree; given the reference geometry when
    ``spacing_from == "ref"`` and the shapes match; resampled (nearest) when ``resample``; else a GeometryError
    naming the differences and the options that fix it."""
    diffs = geometry_differences(pred, ref)
    if not diffs:
        return pred
    if spacing_from == "ref" and pred.shape == ref.shape:
        return LabelMap(pred.array, ref.spacing, ref.origin, ref.direction, pred.meta, names=pred.names)
    if resample:
        from medimg.transforms.spatial import resample_to

        out = resample_to(pred, ref, "nearest")
        assert isinstance(out, LabelMap)
        return out
    raise GeometryError(
        f"Case {case!r}: prediction and reference grids differ ({'; '.join(diffs)}). Pass --resample to resample "
        "the prediction onto the reference (nearest neighbour), or --spacing-from ref when the prediction has the "
        "reference's shape but no geometry of its own."
    )
