"""``medimg evaluate`` on real label maps: matching, outputs, geometry checks, subgroups."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.data import sample
from medimg.evaluate import evaluate_folders
from medimg.metrics import segmentation_metrics

runner = CliRunner()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    lab = medimg.read_labels(sample("hippocampus")[1])
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for i, shift in enumerate([(0, 0, 0), (1, 0, 0), (0, 2, 0)]):
        medimg.write(lab, ref / f"case{i}.nii.gz")
        moved = ndimage.shift(lab.array, shift, order=0)
        medimg.write(lab.with_array(moved), pred / f"case{i}.nii.gz")
    medimg.write(lab, ref / "case9.nii.gz")  # no prediction for it
    (tmp_path / "meta.csv").write_text("case,scanner\ncase0,A\ncase1,B\ncase2,B\n")
    return pred, ref


def test_evaluate_outputs(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(pred),
            "--ref",
            str(ref),
            "-o",
            str(out),
            "--labels",
            "1=anterior,2=posterior",
            "--metadata",
            str(tmp_path / "meta.csv"),
            "--group-by",
            "scanner",
        ],
    )
    assert r.exit_code == 0, r.output
    with open(out / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # case9 has no prediction: it is evaluated as a failure (2 rows), not dropped
    assert len(rows) == 8 and {row["name"] for row in rows} == {"anterior", "posterior"}
    assert {row["status"] for row in rows if row["case"] == "case9"} == {"missing_prediction"}
    case0 = [row for row in rows if row["case"] == "case0"]
    assert all(float(row["dice"]) == 1.0 for row in case0)
    # the CSV agrees with a direct call
    lab = medimg.read_labels(ref / "case1.nii.gz")
    direct = segmentation_metrics(medimg.read_labels(pred / "case1.nii.gz"), lab)
    row = next(row for row in rows if row["case"] == "case1" and row["label"] == "2")
    assert float(row["hd95"]) == pytest.approx(direct[2]["hd95"], rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing_predictions"] == ["case9"] and summary["n_cases"] == 4
    assert summary["worst_cases"][0] == {"case": "case9", "mean_dice": 0.0}
    assert summary["worst_cases"][1]["case"] in ("case1", "case2")
    assert summary["subgroups"]["worst_group"] == "B" and summary["subgroups"]["fairness_gap"] > 0
    html = (out / "report.html").read_text()
    assert "<svg" in html and "data:image/png;base64" in html and "Fairness gap" in html


def test_geometry_mismatch_and_resample(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    lab = medimg.read_labels(ref / "case0.nii.gz")
    from medimg.transforms import resample_to_spacing

    medimg.write(resample_to_spacing(lab, 0.5), pred / "case0.nii.gz")
    r = runner.invoke(app, ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(tmp_path / "o1")])
    assert r.exit_code == 2 and "--resample" in r.output
    summary = evaluate_folders(pred, ref, tmp_path / "o2", resample=True)
    assert summary["classes"]["1"]["dice"]["max"] == pytest.approx(1.0)


def test_spacing_from_reference(tmp_path: Path) -> None:
    ref_img = medimg.read_labels(sample("hippocampus")[1])
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    medimg.write(ref_img, tmp_path / "r" / "a.nii.gz")
    np.savez(tmp_path / "p" / "a.npz", image=ref_img.array.T)  # a prediction saved without geometry
    s = evaluate_folders(tmp_path / "p", tmp_path / "r", tmp_path / "o", spacing_from="ref")
    assert s["classes"]["2"]["dice"]["mean"] == 1.0


def test_no_matching_cases(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    medimg.write(medimg.read_labels(sample("hippocampus")[1]), tmp_path / "r" / "a.nii.gz")
    r = runner.invoke(
        app, ["evaluate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "-o", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "same case id" in r.output


# --- failures are counted, never hidden (issue 13, section 2) ---------------------------------------------------

HIPPO = Path(__file__).parent / "data" / "hippocampus" / "labelsTr"


@pytest.fixture
def hippo_preds(tmp_path: Path) -> tuple[Path, Path]:
    """Predictions = the 5 real hippocampus references shifted by one voxel; structure 1 deleted from the first
    prediction, and the last prediction file removed."""
    pred = tmp_path / "pred"
    pred.mkdir()
    refs = sorted(HIPPO.glob("*.nii.gz"))
    for i, f in enumerate(refs):
        lab = medimg.read_labels(f)
        moved = ndimage.shift(lab.array, (1, 0, 0), order=0)
        if i == 0:
            moved[moved == 1] = 0
        if i != len(refs) - 1:
            medimg.write(lab.with_array(moved), pred / f.name)
    return pred, HIPPO


def _direct(pred: Path, ref: Path, **kw: Any) -> dict[str, dict[int, dict[str, float]]]:
    out = {}
    for f in sorted(pred.glob("*.nii.gz")):
        out[f.name.split(".")[0]] = segmentation_metrics(medimg.read_labels(f), medimg.read_labels(ref / f.name), **kw)
    return out


def _diagonal(f: Path) -> float:
    lab = medimg.read_labels(f)
    return float(np.linalg.norm(np.asarray(lab.shape) * np.asarray(lab.spacing)))


def test_failures_get_worst_case_values(hippo_preds: tuple[Path, Path], tmp_path: Path) -> None:
    """A deleted structure and a missing file are failures: Dice 0 and distances = image diagonal enter the means,
    and n / n_failed are in the console table, the JSON, the CSV and the HTML."""
    pred, ref = hippo_preds
    out = tmp_path / "out"
    r = runner.invoke(app, ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "5 cases (2 with a failure)" in r.output and "failed" in r.output
    s = json.loads((out / "summary.json").read_text())
    c1, c2 = s["classes"]["1"], s["classes"]["2"]
    assert (c1["n_cases"], c1["n_failed"], c2["n_failed"]) == (5, 2, 1)
    assert c1["failures_by_reason"] == {"missing_prediction": 1, "empty_prediction": 1}
    assert c1["dice"]["n"] == 5 and c1["hd95"]["n"] == 5 and c1["hd95"]["n_nonfinite"] == 0
    direct = _direct(pred, ref)
    ok = [direct[c][1] for c in ("hippocampus_003", "hippocampus_004", "hippocampus_006")]
    first, last = sorted(ref.glob("*.nii.gz"))[0], sorted(ref.glob("*.nii.gz"))[-1]
    assert c1["dice"]["mean"] == pytest.approx(sum(m["dice"] for m in ok) / 5)
    expected_hd95 = (sum(m["hd95"] for m in ok) + _diagonal(first) + _diagonal(last)) / 5
    assert c1["hd95"]["mean"] == pytest.approx(expected_hd95)
    assert c1["hd95"]["mean"] > 20  # the old mean over the 3 finite cases was 1.0 mm
    with open(out / "per_case.csv", newline="") as f:
        rows = {(row["case"], row["label"]): row for row in csv.DictReader(f)}
    assert rows[("hippocampus_008", "2")]["status"] == "missing_prediction"
    assert float(rows[("hippocampus_001", "1")]["assd"]) == pytest.approx(_diagonal(first), rel=1e-5)
    with open(out / "summary.csv", newline="") as f:
        table = {row["label"]: row for row in csv.DictReader(f)}
    assert (table["1"]["n_cases"], table["1"]["n_failed"], table["1"]["hd95_n"]) == ("5", "2", "5")
    html = (out / "report.html").read_text()
    assert "<th>failed</th>" in html and "Failures (3)" in html and "missing_prediction" in html


def test_failures_exclude_is_explicit(hippo_preds: tuple[Path, Path], tmp_path: Path) -> None:
    """--failures exclude reproduces the old means, and still says how many values entered each mean."""
    pred, ref = hippo_preds
    r = runner.invoke(
        app, ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(tmp_path / "o"), "--failures", "exclude"]
    )
    assert r.exit_code == 0, r.output
    assert "(n=3)" in r.output and "(n=4)" in r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    c1 = s["classes"]["1"]
    direct = _direct(pred, ref)
    finite = [m[1]["hd95"] for m in direct.values() if np.isfinite(m[1]["hd95"])]
    assert c1["n_failed"] == 2 and c1["hd95"]["n"] == 3 and c1["dice"]["n"] == 4
    assert c1["hd95"]["mean"] == pytest.approx(np.mean(finite))
    assert c1["dice"]["mean"] == pytest.approx(np.mean([m[1]["dice"] for m in direct.values()]))


def test_unreadable_and_unexpected_predictions_are_failures(tmp_path: Path) -> None:
    pred, ref = tmp_path / "p", tmp_path / "r"
    pred.mkdir()
    ref.mkdir()
    a, b = sorted(HIPPO.glob("*.nii.gz"))[:2]
    for f in (a, b):
        (ref / f.name).write_bytes(f.read_bytes())
    (pred / a.name).write_bytes(a.read_bytes()[:200])  # truncated file
    lab = medimg.read_labels(b)
    arr = lab.array.copy()
    arr[0:3, 0:3, 0:3] = 3  # a class the reference does not have
    medimg.write(lab.with_array(arr), pred / b.name)
    s = evaluate_folders(pred, ref, tmp_path / "o")
    assert s["unreadable_predictions"] == [a.name.split(".")[0]]
    assert s["classes"]["1"]["failures_by_reason"] == {"unreadable_prediction": 1}
    c3 = s["classes"]["3"]
    assert c3["failures_by_reason"] == {"not_in_reference": 1} and c3["n_absent"] == 1
    assert c3["hd95"]["max"] == pytest.approx(_diagonal(b))
    assert "error" in next(f for f in s["failures"] if f["reason"] == "unreadable_prediction")


def test_absent_class_is_not_a_failure(tmp_path: Path) -> None:
    """A class in neither map is 'absent': NaN (left out) under deepmind, Dice 1 (counted) under metricsreloaded."""
    f = sorted(HIPPO.glob("*.nii.gz"))[0]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / f.name).write_bytes(f.read_bytes())
    for conv, n_dice, mean in (("deepmind", 0, None), ("metricsreloaded", 5, 1.0)):
        s = evaluate_folders(
            tmp_path / "p", HIPPO.parent / "labelsTr", tmp_path / conv, labels=[1, 2, 5], convention=conv
        )
        c5 = s["classes"]["5"]
        assert c5["n_failed"] == 0 and c5["n_absent"] == 5 and c5["dice"]["n"] == n_dice
        assert c5["dice"].get("mean") == mean
        # the four references without a prediction file are failures of classes 1 and 2, not of class 5
        assert s["classes"]["1"]["n_failed"] == 4


def test_repeated_pred_is_rejected(hippo_preds: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = hippo_preds
    r = runner.invoke(
        app, ["evaluate", "--pred", str(pred), "--pred", str(ref), "--ref", str(ref), "-o", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "medimg compare" in " ".join(r.output.split())
    assert not (tmp_path / "o").exists()


def test_compare_two_methods(hippo_preds: tuple[Path, Path], tmp_path: Path) -> None:
    """compare: paired difference with bootstrap CI and Wilcoxon p, per class and over classes, failures counted."""
    pred_b, ref = hippo_preds
    pred_a = tmp_path / "exact"
    pred_a.mkdir()
    for f in sorted(ref.glob("*.nii.gz")):
        (pred_a / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", "--ref", str(ref), "--pred", str(pred_a), "--pred", str(pred_b), "-o", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "comparison.json").read_text())
    e = next(x for x in res["comparisons"] if x["class"] == "1" and x["metric"] == "dice")
    direct_b = _direct(pred_b, ref)
    dice_b = [direct_b[c][1]["dice"] for c in sorted(direct_b)] + [0.0]  # the missing file scores 0
    assert e["n"] == 5 and e["n_failed_exact"] == 0 and e["n_failed_pred"] == 2
    assert e["mean_difference"] == pytest.approx(1.0 - np.mean(dice_b))
    assert e["exact_better"] == 5 and e["ci95_low"] > 0 and 0 < e["bootstrap_p"] <= 1
    assert e["wilcoxon_p"] == pytest.approx(0.0625)  # smallest two-sided exact p for n = 5
    hd = next(x for x in res["comparisons"] if x["class"] == "all" and x["metric"] == "hd95")
    assert hd["higher_is_better"] is False and hd["exact_better"] == 5 and hd["mean_difference"] < 0
    assert (out / "exact" / "summary.json").is_file() and "Wilcoxon p" in (out / "comparison.html").read_text()
    r2 = runner.invoke(
        app,
        [
            "compare",
            "--ref",
            str(ref),
            "--pred",
            str(pred_a),
            "--pred",
            str(pred_b),
            "-o",
            str(tmp_path / "c2"),
            "--lesion-metrics",
            "--metrics",
            "lesion_f1",
            "--method-names",
            "ref,shifted",
        ],
    )
    assert r2.exit_code == 0, r2.output
    f1 = json.loads((tmp_path / "c2" / "comparison.json").read_text())["comparisons"][0]
    assert f1["metric"] == "lesion_f1" and f1["n"] == 5 and f1["n_failed_shifted"] == 2 and f1["ref_better"] >= 2
    r1 = runner.invoke(app, ["compare", "--ref", str(ref), "--pred", str(pred_a), "-o", str(tmp_path / "c1")])
    assert r1.exit_code == 2 and "exactly two --pred" in " ".join(r1.output.split())


def test_p_values_never_zero() -> None:
    from medimg.metrics.stats import format_p, paired_comparison

    a = np.random.default_rng(0).random(40)
    cmp = paired_comparison(a + 0.1, a)
    assert 0 < cmp["bootstrap_p"] < 1e-3 and cmp["wilcoxon_p"] > 0
    assert format_p(cmp["wilcoxon_p"]) == "< 1e-4" and format_p(0.0) == "< 1e-4" and format_p(0.0123) == "0.012"


def test_per_class_nsd_tolerance_and_lesion_metrics(tmp_path: Path) -> None:
    from medimg.metrics.segmentation import instance_metrics

    (tmp_path / "p").mkdir()
    f = sorted(HIPPO.glob("*.nii.gz"))[1]
    lab = medimg.read_labels(f)
    moved = ndimage.shift(lab.array, (2, 1, 0), order=0)
    medimg.write(lab.with_array(moved), tmp_path / "p" / f.name)
    ref1 = tmp_path / "r"
    ref1.mkdir()
    (ref1 / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "o"
    args = ["evaluate", "--pred", str(tmp_path / "p"), "--ref", str(ref1), "-o", str(out)]
    r = runner.invoke(app, [*args, "--nsd-tolerance", "1=1.0,2=3.0", "--lesion-metrics"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    d1 = segmentation_metrics(lab.with_array(moved), lab, nsd_tolerance_mm={1: 1.0, 2: 3.0})
    assert s["nsd_tolerance_mm"] == {"1": 1.0, "2": 3.0}
    assert s["classes"]["1"]["nsd"]["mean"] == pytest.approx(d1[1]["nsd"])
    assert s["classes"]["2"]["nsd"]["mean"] == pytest.approx(d1[2]["nsd"])
    assert d1[1]["nsd"] != pytest.approx(d1[2]["nsd"])
    inst = instance_metrics(moved == 2, lab.array == 2)
    assert s["classes"]["2"]["lesion_f1"]["mean"] == pytest.approx(inst["f1"])
    assert s["classes"]["2"]["panoptic_quality"]["mean"] == pytest.approx(inst["panoptic_quality"])
    with open(out / "per_case.csv", newline="") as fh:
        assert {"lesion_f1", "panoptic_quality", "lesion_mean_dice"} <= set(next(csv.reader(fh)))
    bad = runner.invoke(app, [*args, "--nsd-tolerance", "1=1.0"])
    msg = " ".join(bad.output.split())
    assert bad.exit_code == 2 and "without an NSD tolerance" in msg and "'1=1,2=2'" in msg
