"""Folder-level evaluation: match prediction and reference files by case id, compute per-class metrics,
and write ``per_case.csv``, ``summary.json`` and ``report.html`` (behind ``medimg evaluate``)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import GeometryError, MedimgError
from medimg.image import LabelMap, geometry_differences
from medimg.io._atomic import atomic_path, split_ext
from medimg.metrics.segmentation import DEFAULT_METRICS, segmentation_metrics
from medimg.metrics.stats import subgroup_breakdown, summarize

SUMMARY_METRICS = ("dice", "iou", "hd95", "assd", "nsd")


def case_id(path: Path) -> str:
    """The case id of a file: its name without the (double) extension, e.g. ``case_001.nii.gz`` -> ``case_001``;
    DICOM folders are named by the folder."""
    return path.name if path.is_dir() else split_ext(path)[0]


def match_cases(pred_dir: Path, ref_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pairs ``(case, pred, ref)`` with the same case id; plus ids missing a prediction, and extra predictions."""
    for d, what in ((pred_dir, "prediction"), (ref_dir, "reference")):
        if not d.is_dir():
            raise MedimgError(f"The {what} folder {str(d)!r} does not exist or is not a folder.")

    def index(d: Path) -> dict[str, Path]:
        return {case_id(p): p for p in sorted(d.iterdir()) if not p.name.startswith(".")}

    preds, refs = index(pred_dir), index(ref_dir)
    pairs = [(c, preds[c], refs[c]) for c in sorted(refs) if c in preds]
    if not pairs:
        raise MedimgError(
            f"No prediction in {str(pred_dir)!r} has the same case id as a reference in {str(ref_dir)!r} (ids are "
            f"file names without extensions; e.g. references {sorted(refs)[:3]}, predictions {sorted(preds)[:3]})."
        )
    return pairs, sorted(set(refs) - set(preds)), sorted(set(preds) - set(refs))


def _align(pred: LabelMap, ref: LabelMap, case: str, resample: bool, spacing_from: str | None) -> LabelMap:
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


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path,
    *,
    names: Mapping[int, str] | None = None,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    convention: str = "deepmind",
    nsd_tolerance_mm: float = 2.0,
    resample: bool = False,
    spacing_from: str | None = None,
    metadata_csv: str | Path | None = None,
    group_by: str | None = None,
    images_dir: str | Path | None = None,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate every prediction against its reference; write CSV, JSON and HTML into ``out_dir``.

    Returns the summary dictionary (also saved as ``summary.json``). ``metadata_csv`` + ``group_by`` add a
    subgroup breakdown of the mean Dice per case with the fairness gap (max - min group mean). ``images_dir``
    (optional) holds the intensity images, by case id, used as background of the worst-case overlays.
    """
    pred_p, ref_p, out = Path(pred_dir), Path(ref_dir), Path(out_dir)
    if not out.exists():
        out.mkdir(parents=True)
    pairs, missing, extra = match_cases(pred_p, ref_p)
    meta_rows = _read_metadata(metadata_csv, group_by) if metadata_csv else {}
    rows: list[dict[str, Any]] = []
    class_names: dict[int, str] = dict(names or {})
    iterator = progress(pairs, "evaluating") if progress else pairs
    import medimg

    for case, pp, rp in iterator:
        ref = medimg.read_labels(rp)
        pred = _align(medimg.read_labels(pp), ref, case, resample, spacing_from)
        for lab in (ref, pred):
            for k, v in lab.names.items():
                class_names.setdefault(k, v)
        res = segmentation_metrics(
            pred,
            ref,
            labels=labels,
            metrics=metrics,
            convention=convention,  # type: ignore[arg-type]
            nsd_tolerance_mm=nsd_tolerance_mm,
        )
        for lab_value, vals in res.items():
            rows.append(
                {"case": case, "label": lab_value, "name": class_names.get(lab_value, f"label_{lab_value}"), **vals}
            )
    for r in rows:
        r["name"] = class_names.get(r["label"], r["name"])
    summary = _summary(rows, metrics, convention, nsd_tolerance_mm, missing, extra, class_names)
    if group_by:
        per_case = _mean_dice_per_case(rows)
        cases = [c for c in per_case if c in meta_rows]
        if not cases:
            raise MedimgError(f"No case of the evaluation appears in the metadata CSV {str(metadata_csv)!r}.")
        summary["subgroups"] = {
            "column": group_by,
            **subgroup_breakdown([per_case[c] for c in cases], [meta_rows[c] for c in cases]),
        }
    _write_csv(rows, out / "per_case.csv")
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    from medimg.report.evaluation import write_report

    write_report(
        rows,
        summary,
        out / "report.html",
        pairs=pairs,
        images_dir=Path(images_dir) if images_dir else None,
        resample=resample,
        spacing_from=spacing_from,
    )
    return summary


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _read_metadata(path: str | Path, column: str | None) -> dict[str, str]:
    p = Path(path)
    if not p.is_file():
        raise MedimgError(f"Metadata CSV {str(p)!r} not found.")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        key = next((k for k in ("case", "case_id", "id", "subject") if k in fields), None)
        if key is None:
            raise MedimgError(f"Metadata CSV {p.name!r} needs a 'case' (or case_id/id/subject) column; has {fields}.")
        if column is not None and column not in fields:
            raise MedimgError(f"Metadata CSV {p.name!r} has no column {column!r}; columns: {fields}.")
        out: dict[str, str] = {}
        for i, row in enumerate(reader, start=2):
            if not row.get(key):
                raise MedimgError(f"Metadata CSV {p.name!r}, line {i}: empty case id.")
            out[row[key]] = row[column] if column else ""
        return out


def _mean_dice_per_case(rows: list[dict[str, Any]]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["case"], []).append(float(r.get("dice", math.nan)))
    return {c: float(np.nanmean(v)) if np.any(np.isfinite(v)) else math.nan for c, v in by.items()}


def _summary(
    rows: list[dict[str, Any]],
    metrics: Sequence[str],
    convention: str,
    tol: float,
    missing: list[str],
    extra: list[str],
    names: Mapping[int, str],
) -> dict[str, Any]:
    classes: dict[str, Any] = {}
    for lab in sorted({r["label"] for r in rows}):
        sel = [r for r in rows if r["label"] == lab]
        classes[str(lab)] = {
            "name": names.get(lab, f"label_{lab}"),
            **{m: summarize([r[m] for r in sel]) for m in metrics if m in sel[0]},
        }
    per_case = _mean_dice_per_case(rows)
    worst = sorted((c for c in per_case if math.isfinite(per_case[c])), key=lambda c: per_case[c])[:5]
    return {
        "convention": convention,
        "nsd_tolerance_mm": tol,
        "n_cases": len(per_case),
        "missing_predictions": missing,
        "unmatched_predictions": extra,
        "classes": classes,
        "mean_dice_per_case": per_case,
        "worst_cases": [{"case": c, "mean_dice": per_case[c]} for c in worst],
    }


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
