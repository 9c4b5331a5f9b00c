"""Folder-level evaluation: match prediction and reference files by case id, compute per-class metrics, and
write ``per_case.csv``, ``summary.csv``, ``summary.json`` and ``report.html`` (behind ``medimg evaluate``);
compare two methods on the same references (behind ``medimg compare``).

Failures are counted, never hidden (Metrics Reloaded's recommendation). A (case, class) *fails* when

- ``missing_prediction``: the reference has the class but there is no prediction file for the case;
- ``unreadable_prediction``: the prediction file exists but cannot be read;
- ``empty_prediction``: the prediction lacks a class the reference has;
- ``not_in_reference``: the prediction has a class the reference lacks (a structure that does not exist).

With ``failures="worst"`` (default) a failure gets the worst-case value of every metric: Dice, IoU, recall,
NSD, boundary IoU, clDice, lesion F1 / mean lesion Dice / panoptic quality 0, and every distance (HD, HD95,
ASSD, MASD) the diagonal of the reference image in mm, ``||shape * spacing||`` -- the diagonal of the field
of view, an upper bound of any distance measured on that grid. With ``failures="exclude"`` the values are
kept as computed (a missing file contributes nothing, an empty prediction keeps its Dice 0 and its infinite
distances are left out of the means): the behaviour of medimg <= 0.1, now made explicit. Either way every
summary says, per class, ``n_cases``, ``n_failed`` and ``n_absent`` and, per metric, how many values entered
the mean (``n``).

A class that neither the prediction nor the reference holds is ``absent``, not a failure: its row keeps the
convention's both-empty values (NaN under ``deepmind``/``monai``, so it is left out of the means;
Dice 1, distances 0, NSD 1 under ``metricsreloaded``, so it enters them).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medimg.errors import GeometryError, MedimgError
from medimg.image import LabelMap
from medimg.io._atomic import atomic_path
from medimg.metrics.segmentation import CONVENTIONS, DEFAULT_METRICS, instance_metrics, segmentation_metrics
from medimg.metrics.stats import format_p, paired_comparison, subgroup_breakdown, summarize
from medimg.pairing import align_to_reference, index_cases, match_cases

SUMMARY_METRICS = ("dice", "iou", "hd95", "assd", "nsd")
FailurePolicy = Literal["worst", "exclude"]
FAILURE_POLICIES: tuple[str, ...] = ("worst", "exclude")
DISTANCE_METRICS = ("hd", "hd95", "assd", "masd")
#: worst-case value of each bounded metric (distances get the image diagonal)
WORST_VALUES: dict[str, float] = {
    "dice": 0.0,
    "iou": 0.0,
    "recall": 0.0,
    "nsd": 0.0,
    "boundary_iou": 0.0,
    "cldice": 0.0,
    "lesion_f1": 0.0,
    "lesion_recall": 0.0,
    "lesion_mean_dice": 0.0,
    "panoptic_quality": 0.0,
}
LESION_METRICS = ("lesion_f1", "lesion_precision", "lesion_recall", "lesion_mean_dice", "panoptic_quality")
FAILURE_REASONS = ("missing_prediction", "unreadable_prediction", "empty_prediction", "not_in_reference")
#: metrics compared by ``medimg compare`` and whether higher is better
COMPARE_METRICS: dict[str, bool] = {"dice": True, "hd95": False, "assd": False, "nsd": True}


def image_diagonal_mm(ref: LabelMap) -> float:
    """Diagonal of the image's field of view in mm, ``||shape * spacing||``: the worst-case distance of a
    failed case (no distance measured between two voxels of this grid can exceed it)."""
    return float(np.linalg.norm(np.asarray(ref.shape[: len(ref.spacing)], float) * np.asarray(ref.spacing, float)))


def parse_nsd_tolerance(text: str | float) -> float | dict[int, float]:
    """``'2'`` -> 2.0; ``'1=1.0,2=2.5'`` -> ``{1: 1.0, 2: 2.5}`` (NSD tolerance in mm, one value or per class)."""
    if isinstance(text, (int, float)):
        tol: float | dict[int, float] = float(text)
    else:
        s = text.strip()
        try:
            if "=" not in s:
                tol = float(s)
            else:
                tol = {}
                for part in s.split(","):
                    k, _, v = part.partition("=")
                    tol[int(k)] = float(v)
        except ValueError:
            raise MedimgError(
                f"--nsd-tolerance must be a number of mm (e.g. 2) or per class, e.g. '1=1.0,2=2.0' (got {text!r})."
            ) from None
    values = tol.values() if isinstance(tol, dict) else [tol]
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise MedimgError(f"NSD tolerances must be finite and >= 0 mm (got {text!r}).")
    return tol


def _lesion_values(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    m = instance_metrics(pred, ref, spacing=spacing)
    return {
        "lesion_f1": m["f1"],
        "lesion_precision": m["precision"],
        "lesion_recall": m["recall"],
        "lesion_mean_dice": m["mean_lesion_dice"],
        "panoptic_quality": m["panoptic_quality"],
        "ref_lesions": m["ref_lesions"],
        "pred_lesions": m["pred_lesions"],
    }


def _status(vals: Mapping[str, Any]) -> str:
    n_p = int(vals["tp_voxels"]) + int(vals["fp_voxels"])
    n_r = int(vals["tp_voxels"]) + int(vals["fn_voxels"])
    if n_r and not n_p:
        return "empty_prediction"
    if n_p and not n_r:
        return "not_in_reference"
    if not n_p and not n_r:
        return "absent"
    return "ok"


def _apply_worst(row: dict[str, Any], diagonal_mm: float) -> None:
    """Replace a failed row's metrics by their worst-case values (in place)."""
    for k in list(row):
        if k in WORST_VALUES:
            row[k] = WORST_VALUES[k]
        elif k in DISTANCE_METRICS:
            row[k] = diagonal_mm


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path,
    *,
    names: Mapping[int, str] | None = None,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    convention: str = "deepmind",
    nsd_tolerance_mm: float | Mapping[int, float] = 2.0,
    failures: str = "worst",
    lesion_metrics: bool = False,
    resample: bool = False,
    spacing_from: str | None = None,
    metadata_csv: str | Path | None = None,
    group_by: str | None = None,
    images_dir: str | Path | None = None,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
    ignore_label: int | None = None,
    declared: Collection[int] | None = None,
) -> dict[str, Any]:
    """Evaluate every prediction against its reference; write CSV, JSON and HTML into ``out_dir``.

    Every reference case is evaluated: a missing or unreadable prediction file, an empty prediction of a class
    the reference has and a predicted class the reference lacks are *failures* (see the module docstring);
    ``failures="worst"`` (default) scores them with worst-case values (Dice 0, distances = the reference image
    diagonal in mm), ``failures="exclude"`` leaves them out of the means. Every per-class summary carries
    ``n_cases``, ``n_failed`` and ``n_absent``, every metric summary its ``n``. ``nsd_tolerance_mm`` is one
    tolerance or one per class. ``lesion_metrics`` adds lesion-wise F1/precision/recall, mean lesion Dice and
    panoptic quality per class (connected components, :func:`~medimg.metrics.segmentation.instance_metrics`).

    Returns the summary dictionary (also saved as ``summary.json``). ``metadata_csv`` + ``group_by`` add a
    subgroup breakdown of the mean Dice per case with the fairness gap (max - min group mean). ``images_dir``
    (optional) holds the intensity images, by case id, used as background of the worst-case overlays.
    ``ignore_label`` and ``declared``: see :func:`evaluate_rows`.
    """
    rows, summary, pairs = evaluate_rows(
        pred_dir,
        ref_dir,
        names=names,
        labels=labels,
        metrics=metrics,
        convention=convention,
        nsd_tolerance_mm=nsd_tolerance_mm,
        failures=failures,
        lesion_metrics=lesion_metrics,
        resample=resample,
        spacing_from=spacing_from,
        progress=progress,
        ignore_label=ignore_label,
        declared=declared,
    )
    finish_evaluation(
        rows,
        summary,
        pairs,
        out_dir,
        metadata_csv=metadata_csv,
        group_by=group_by,
        images_dir=images_dir,
        resample=resample,
        spacing_from=spacing_from,
    )
    return summary


def finish_evaluation(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    pairs: Sequence[tuple[str, Path, Path]],
    out_dir: str | Path,
    *,
    metadata_csv: str | Path | None,
    group_by: str | None,
    images_dir: str | Path | None,
    resample: bool,
    spacing_from: str | None,
) -> None:
    """The end of an evaluation, however its rows were computed (here, or case by case on Ray:
    ``medimg.scale``): the subgroup breakdown of the mean Dice per case when ``group_by`` is given (added to
    ``summary``), then ``per_case.csv``, ``summary.csv``, ``summary.json`` and ``report.html`` in ``out_dir``."""
    if group_by:
        meta_rows = _read_metadata(metadata_csv, group_by) if metadata_csv else {}
        mean_dice = _mean_dice_per_case(rows)
        in_meta = [c for c in mean_dice if c in meta_rows and math.isfinite(mean_dice[c])]
        if not in_meta:
            raise MedimgError(f"No case of the evaluation appears in the metadata CSV {str(metadata_csv)!r}.")
        summary["subgroups"] = {
            "column": group_by,
            **subgroup_breakdown([mean_dice[c] for c in in_meta], [meta_rows[c] for c in in_meta]),
        }
    _write_outputs(
        rows,
        summary,
        pairs,
        Path(out_dir),
        images_dir=Path(images_dir) if images_dir else None,
        resample=resample,
        spacing_from=spacing_from,
    )


def _write_outputs(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    pairs: Sequence[tuple[str, Path, Path]],
    out: Path,
    *,
    images_dir: Path | None,
    resample: bool,
    spacing_from: str | None,
) -> None:
    """Write ``per_case.csv``, ``summary.csv``, ``summary.json`` and ``report.html`` into ``out`` (created if
    needed)."""
    if not out.exists():
        out.mkdir(parents=True)
    _write_csv(rows, out / "per_case.csv")
    _write_csv(summary_table(summary), out / "summary.csv")
    _write_json(summary, out / "summary.json")
    from medimg.report.evaluation import write_report

    write_report(
        rows,
        summary,
        out / "report.html",
        pairs=pairs,
        images_dir=images_dir,
        resample=resample,
        spacing_from=spacing_from,
    )


def summary_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per class for ``summary.csv``: n_cases, n_failed, n_absent, then mean, std, 95 % CI and the
    number of values in the mean (``<metric>_n``) of every summarised metric."""
    out: list[dict[str, Any]] = []
    for lab, c in summary["classes"].items():
        row: dict[str, Any] = {
            "label": lab,
            "name": c["name"],
            "n_cases": c["n_cases"],
            "n_failed": c["n_failed"],
            "n_absent": c["n_absent"],
            "failure_policy": summary["failure_policy"],
        }
        for m, st in c.items():
            if isinstance(st, dict) and "n" in st:
                row[f"{m}_mean"] = st.get("mean", math.nan)
                row[f"{m}_std"] = st.get("std", math.nan)
                row[f"{m}_ci95_low"] = st.get("ci95_low", math.nan)
                row[f"{m}_ci95_high"] = st.get("ci95_high", math.nan)
                row[f"{m}_n"] = st["n"]
        out.append(row)
    return out


def evaluate_rows(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    names: Mapping[int, str] | None = None,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    convention: str = "deepmind",
    nsd_tolerance_mm: float | Mapping[int, float] = 2.0,
    failures: str = "worst",
    lesion_metrics: bool = False,
    resample: bool = False,
    spacing_from: str | None = None,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
    ignore_label: int | None = None,
    declared: Collection[int] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, Path, Path]]]:
    """The computation behind :func:`evaluate_folders` without writing anything: per-(case, class) rows (with a
    ``status``: ok, absent or a failure reason), the summary, and the matched ``(case, pred, ref)`` pairs.

    ``ignore_label`` (nnU-Net's ``ignore``: unannotated voxels of the references): those voxels are set to
    background in both maps before measuring, so no metric counts them; it is never a class, each row gets
    ``ignored_voxels`` and the summary ``ignore_label``. ``declared`` (the classes of a dataset.json): a reference
    holding any other value (besides 0 and the ignore label) is an error."""
    if failures not in FAILURE_POLICIES:
        raise MedimgError(f"Unknown failure policy {failures!r}; use --failures worst or --failures exclude.")
    if convention not in CONVENTIONS:
        raise MedimgError(f"Unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}.")
    pred_p, ref_p = Path(pred_dir), Path(ref_dir)
    pairs, missing, extra = match_cases(pred_p, ref_p)
    class_names: dict[int, str] = dict(names or {})
    ref_index = index_cases(ref_p)
    cases: list[tuple[str, Path | None, Path]] = sorted(
        [(c, p, r) for c, p, r in pairs] + [(c, None, ref_index[c]) for c in missing], key=lambda t: t[0]
    )
    iterator = progress(cases, "evaluating") if progress else cases
    import medimg

    per_case: dict[str, dict[int, dict[str, Any]]] = {}
    ignored_per_case: dict[str, int] = {}
    diagonals: dict[str, float] = {}
    errors: dict[str, str] = {}
    seg_metrics = tuple(m for m in metrics if m not in LESION_METRICS)
    allowed = (set(declared) | {0} | ({int(ignore_label)} if ignore_label is not None else set())) if declared else None
    for case, pp, rp in iterator:
        ref = medimg.read_labels(rp)
        if allowed is not None and set(ref.labels) - allowed:
            raise MedimgError(
                f"Reference {rp.name!r} holds label value(s) {sorted(set(ref.labels) - allowed)} that dataset.json "
                f"does not declare (classes {sorted(set(declared or ()))}, ignore label {ignore_label}). Declare them "
                '(as "ignore" if they mark unannotated voxels) or fix the reference.'
            )
        diagonals[case] = image_diagonal_mm(ref)
        pred: LabelMap | None = None
        if pp is not None:
            try:
                pred = align_to_reference(medimg.read_labels(pp), ref, case, resample, spacing_from)
            except GeometryError:
                raise
            except MedimgError as e:
                errors[case] = str(e)
        for lab in (ref, pred):
            if lab is not None:
                for k, v in lab.names.items():
                    class_names.setdefault(k, v)
        p_arr = pred.array if pred is not None else np.zeros(ref.shape, dtype=np.uint8)
        n_ignored = 0
        if ignore_label is not None:
            ignored = ref.array == ignore_label
            n_ignored = ignored_per_case[case] = int(np.count_nonzero(ignored))
            if n_ignored:  # unannotated voxels: background in both maps, so no metric counts them
                ref = ref.with_array(np.where(ignored, 0, ref.array).astype(ref.array.dtype))
                p_arr = np.where(ignored, 0, p_arr).astype(p_arr.dtype)
        if labels is None:
            present = sorted(({int(v) for v in np.unique(ref.array)} | {int(v) for v in np.unique(p_arr)}) - {0})
            present = [v for v in present if v != ignore_label]
        else:
            present = sorted(int(v) for v in labels)
            if ignore_label is not None and int(ignore_label) in present:
                raise MedimgError(f"The ignore label {ignore_label} is not a class; leave it out of the labels.")
        if isinstance(nsd_tolerance_mm, Mapping):
            lacking = [v for v in present if v not in nsd_tolerance_mm]
            if lacking:
                every = ",".join(
                    f"{v}={nsd_tolerance_mm.get(v, 2.0):g}" for v in sorted(set(present) | set(nsd_tolerance_mm))
                )
                raise MedimgError(
                    f"Case {case!r} has class(es) {lacking} without an NSD tolerance in --nsd-tolerance "
                    f"{_tol_text(nsd_tolerance_mm)!r}; give one for every class (e.g. '{every}') or a single value."
                )
        res = segmentation_metrics(
            p_arr,
            ref.array,
            spacing=ref.spacing,
            labels=present,
            metrics=seg_metrics,
            convention=convention,  # type: ignore[arg-type]
            nsd_tolerance_mm=nsd_tolerance_mm,
        )
        case_rows: dict[int, dict[str, Any]] = {}
        for c, vals in res.items():
            row: dict[str, Any] = {"case": case, "label": c, "name": "", "status": _status(vals), **vals}
            if ignore_label is not None:
                row["ignored_voxels"] = n_ignored
            if lesion_metrics:
                row.update(_lesion_values(p_arr == c, ref.array == c, ref.spacing))
            if row["status"] == "empty_prediction" and pp is None:
                row["status"] = "missing_prediction"
            elif row["status"] == "empty_prediction" and case in errors:
                row["status"] = "unreadable_prediction"
            if row["status"] in ("missing_prediction", "unreadable_prediction") and failures == "exclude":
                for key in list(row):
                    if key not in ("case", "label", "name", "status", "volume_ref_ml", "ignored_voxels"):
                        row[key] = math.nan
            case_rows[c] = row
        per_case[case] = case_rows
    all_labels = sorted({c for rows_ in per_case.values() for c in rows_})
    absent_vals = _absent_values(all_labels, seg_metrics, convention, nsd_tolerance_mm, lesion_metrics)
    rows: list[dict[str, Any]] = []
    for case in sorted(per_case):
        for c in all_labels:
            row = per_case[case].get(c) or {"case": case, "label": c, "name": "", "status": "absent", **absent_vals[c]}
            if ignore_label is not None:
                row.setdefault("ignored_voxels", ignored_per_case.get(case, 0))
            if failures == "worst" and row["status"] in FAILURE_REASONS:
                _apply_worst(row, diagonals[case])
            row["name"] = class_names.get(c, f"label_{c}")
            rows.append(row)
    pairs = [t for t in pairs if t[0] not in errors]  # unreadable predictions: nothing to draw
    all_metrics = tuple(metrics) + (LESION_METRICS if lesion_metrics else ())
    summary = _summary(
        rows, all_metrics, convention, nsd_tolerance_mm, failures, missing, extra, class_names, diagonals, errors
    )
    summary["lesion_metrics"] = lesion_metrics
    if ignore_label is not None:
        summary["ignore_label"] = int(ignore_label)
    return rows, summary, pairs


def _tol_text(tol: float | Mapping[int, float]) -> str:
    if isinstance(tol, Mapping):
        return ",".join(f"{k}={v:g}" for k, v in sorted(tol.items()))
    return f"{tol:g}"


def _absent_values(
    labels: Sequence[int],
    metrics: Sequence[str],
    convention: str,
    tol: float | Mapping[int, float],
    lesion: bool,
) -> dict[int, dict[str, Any]]:
    """The convention's values of a class that neither map holds (computed, not hard-coded)."""
    out: dict[int, dict[str, Any]] = {}
    z = np.zeros((3, 3, 3), dtype=np.uint8)
    for c in labels:
        vals: dict[str, Any] = segmentation_metrics(
            z,
            z,
            labels=[c],
            metrics=metrics,
            convention=convention,  # type: ignore[arg-type]
            nsd_tolerance_mm=tol,
        )[c]
        if lesion:
            vals.update(_lesion_values(z > 0, z > 0, (1.0, 1.0, 1.0)))
        out[c] = vals
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _write_json(obj: Mapping[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


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


def failure_policy_text(failures: str) -> str:
    """One sentence saying how failed cases enter the numbers (printed and written into every report)."""
    if failures == "worst":
        return (
            "failed cases (missing/unreadable prediction file, empty prediction of a class the reference has, "
            "predicted class the reference lacks) get worst-case values: Dice/IoU/recall/NSD 0, distances = the "
            "reference image diagonal in mm"
        )
    return "failed cases are excluded: missing files contribute nothing and non-finite distances are left out"


def _summary(
    rows: list[dict[str, Any]],
    metrics: Sequence[str],
    convention: str,
    tol: float | Mapping[int, float],
    failures: str,
    missing: list[str],
    extra: list[str],
    names: Mapping[int, str],
    diagonals: Mapping[str, float],
    errors: Mapping[str, str],
) -> dict[str, Any]:
    classes: dict[str, Any] = {}
    fails: list[dict[str, Any]] = []
    for lab in sorted({r["label"] for r in rows}):
        sel = [r for r in rows if r["label"] == lab]
        failed = [r for r in sel if r["status"] in FAILURE_REASONS]
        by_reason = {k: sum(r["status"] == k for r in failed) for k in FAILURE_REASONS}
        classes[str(lab)] = {
            "name": names.get(lab, f"label_{lab}"),
            "n_cases": len(sel),
            "n_failed": len(failed),
            "n_absent": sum(r["status"] == "absent" for r in sel),
            "failures_by_reason": {k: v for k, v in by_reason.items() if v},
            **{m: summarize([r[m] for r in sel]) for m in metrics if m in sel[0]},
        }
        for r in failed:
            entry: dict[str, Any] = {"case": r["case"], "label": lab, "reason": r["status"]}
            if failures == "worst":
                entry["worst_distance_mm"] = diagonals[r["case"]]
            if r["case"] in errors:
                entry["error"] = errors[r["case"]]
            fails.append(entry)
    per_case = _mean_dice_per_case(rows)
    worst = sorted((c for c in per_case if math.isfinite(per_case[c])), key=lambda c: per_case[c])[:5]
    return {
        "convention": convention,
        "nsd_tolerance_mm": {str(k): v for k, v in tol.items()} if isinstance(tol, Mapping) else tol,
        "failure_policy": failures,
        "failure_policy_text": failure_policy_text(failures),
        "n_cases": len(per_case),
        "n_failed_cases": len({f["case"] for f in fails}),
        "missing_predictions": missing,
        "unreadable_predictions": sorted(errors),
        "unmatched_predictions": extra,
        "classes": classes,
        "failures": fails,
        "mean_dice_per_case": per_case,
        "worst_cases": [{"case": c, "mean_dice": per_case[c]} for c in worst],
    }


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
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


def compare_folders(
    pred_dirs: Sequence[str | Path],
    ref_dir: str | Path,
    out_dir: str | Path,
    *,
    method_names: Sequence[str] | None = None,
    compare_metrics: Sequence[str] = tuple(COMPARE_METRICS),
    n_boot: int = 10000,
    seed: int = 0,
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Compare two methods' predictions on the same references.

    Each method is evaluated as by :func:`evaluate_folders` (same failure policy; full outputs in
    ``out_dir/<method>/``). Then, per class and for the per-case mean over classes, for each metric of
    ``compare_metrics`` (dice, hd95, assd, nsd by default): the mean of each method, the mean paired difference
    A - B with its paired-bootstrap 95 % CI and p-value, the Wilcoxon signed-rank p, wins per method (by the
    metric's direction: higher Dice/NSD, lower distances), and each method's ``n_failed``. Cases are paired by
    case id; pairs with a non-finite value (possible only with ``failures="exclude"``) are dropped and ``n``
    says how many remain. Writes ``comparison.json``, ``comparison.csv`` and ``comparison.html``.
    """
    if len(pred_dirs) != 2:
        raise MedimgError(
            f"compare takes exactly two prediction folders (--pred A --pred B); got {len(pred_dirs)}. Compare "
            "more methods pairwise, one `medimg compare` per pair."
        )
    unknown = [m for m in compare_metrics if m not in COMPARE_METRICS and m not in LESION_METRICS]
    if unknown:
        raise MedimgError(
            f"Unknown comparison metric(s) {unknown}; use some of {', '.join(tuple(COMPARE_METRICS) + LESION_METRICS)}"
            " (lesion metrics need --lesion-metrics)."
        )
    if any(m in LESION_METRICS for m in compare_metrics) and not evaluate_kwargs.get("lesion_metrics"):
        raise MedimgError("Comparing lesion metrics needs them computed: add --lesion-metrics.")
    paths = [Path(p) for p in pred_dirs]
    if method_names is None:
        method_names = [p.name or str(p) for p in paths]
        if method_names[0] == method_names[1]:
            method_names = [f"A_{method_names[0]}", f"B_{method_names[1]}"]
    if len(method_names) != 2 or method_names[0] == method_names[1]:
        raise MedimgError(f"Two distinct method names are needed (got {list(method_names)}).")
    out = Path(out_dir)
    if not out.exists():
        out.mkdir(parents=True)
    report_kwargs = {k: evaluate_kwargs.pop(k) for k in ("images_dir",) if k in evaluate_kwargs}
    failures = evaluate_kwargs.get("failures", "worst")
    evals: list[dict[tuple[str, int], dict[str, Any]]] = []
    summaries: list[dict[str, Any]] = []
    for name, p in zip(method_names, paths, strict=True):
        rows, summary, pairs = evaluate_rows(p, ref_dir, **evaluate_kwargs)
        _write_outputs(
            rows,
            summary,
            pairs,
            out / name,
            images_dir=report_kwargs.get("images_dir"),
            resample=bool(evaluate_kwargs.get("resample", False)),
            spacing_from=evaluate_kwargs.get("spacing_from"),
        )
        evals.append({(r["case"], int(r["label"])): r for r in rows})
        summaries.append(summary)
    cases = sorted({k[0] for k in evals[0]} | {k[0] for k in evals[1]})
    labels = sorted({k[1] for k in evals[0]} | {k[1] for k in evals[1]})
    names = {int(k): v["name"] for s in summaries for k, v in s["classes"].items()}
    table: list[dict[str, Any]] = []
    for metric in compare_metrics:
        higher = COMPARE_METRICS.get(metric, True)
        groups: list[tuple[str, str, list[float], list[float], list[int]]] = []
        for c in labels:
            a = [float(evals[0].get((k, c), {}).get(metric, math.nan)) for k in cases]
            b = [float(evals[1].get((k, c), {}).get(metric, math.nan)) for k in cases]
            n_failed = [sum(evals[i].get((k, c), {}).get("status") in FAILURE_REASONS for k in cases) for i in (0, 1)]
            groups.append((str(c), names.get(c, f"label_{c}"), a, b, n_failed))
        if len(labels) > 1:
            mean_a = [
                _nanmean([float(evals[0][(k, c)].get(metric, math.nan)) for c in labels if (k, c) in evals[0]])
                for k in cases
            ]
            mean_b = [
                _nanmean([float(evals[1][(k, c)].get(metric, math.nan)) for c in labels if (k, c) in evals[1]])
                for k in cases
            ]
            n_failed = [sum(g[4][i] for g in groups) for i in (0, 1)]
            groups.append(("all", "mean over classes", mean_a, mean_b, n_failed))
        for lab, cname, a, b, n_failed in groups:
            entry: dict[str, Any] = {
                "class": lab,
                "name": cname,
                "metric": metric,
                "higher_is_better": higher,
                "n_cases": len(cases),
                f"n_failed_{method_names[0]}": n_failed[0],
                f"n_failed_{method_names[1]}": n_failed[1],
            }
            keep = np.isfinite(a) & np.isfinite(b)
            entry[f"mean_{method_names[0]}"] = float(np.mean(np.asarray(a)[keep])) if keep.any() else math.nan
            entry[f"mean_{method_names[1]}"] = float(np.mean(np.asarray(b)[keep])) if keep.any() else math.nan
            if int(keep.sum()) >= 2:
                cmp = paired_comparison(a, b, n_boot=n_boot, seed=seed, higher_is_better=higher)
                entry.update(
                    n=cmp["n"],
                    mean_difference=cmp["mean_difference"],
                    ci95_low=cmp["ci95"][0],
                    ci95_high=cmp["ci95"][1],
                    bootstrap_p=cmp["bootstrap_p"],
                    bootstrap_p_text=format_p(cmp["bootstrap_p"]),
                    wilcoxon_p=cmp["wilcoxon_p"],
                    wilcoxon_p_text=format_p(cmp["wilcoxon_p"]),
                    **{f"{method_names[0]}_better": cmp["a_better"], f"{method_names[1]}_better": cmp["b_better"]},
                    ties=cmp["ties"],
                )
            else:
                entry.update(n=int(keep.sum()), note="fewer than two cases with finite values in both methods")
            table.append(entry)
    result = {
        "methods": {
            name: {"predictions": str(p), "n_cases": s["n_cases"], "n_failed_cases": s["n_failed_cases"]}
            for name, p, s in zip(method_names, paths, summaries, strict=True)
        },
        "reference": str(ref_dir),
        "difference": f"{method_names[0]} - {method_names[1]}",
        "convention": summaries[0]["convention"],
        "failure_policy": failures,
        "failure_policy_text": failure_policy_text(failures),
        "n_boot": n_boot,
        "seed": seed,
        "cases": cases,
        "comparisons": table,
    }
    _write_json(result, out / "comparison.json")
    _write_csv(table, out / "comparison.csv")
    from medimg.report.evaluation import write_comparison_report

    write_comparison_report(result, out / "comparison.html")
    return result


def _nanmean(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    return float(np.mean(a[np.isfinite(a)])) if np.isfinite(a).any() else math.nan
