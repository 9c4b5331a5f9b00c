"""``medimg evaluate`` on real label maps: matching, outputs, geometry checks, subgroups."""

from __future__ import annotations

import csv
import json
from pathlib import Path

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
