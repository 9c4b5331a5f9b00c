"""The medimg command line: output, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.data import sample

from conftest import DATA

runner = CliRunner()


def test_info_json_reports_geometry_and_labels() -> None:
    r = runner.invoke(app, ["info", str(sample("hippocampus")[1]), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["shape"] == [35, 51, 35] and s["spacing_mm"] == [1.0, 1.0, 1.0] and s["orientation"] == "RAS"
    labels = {lab["value"]: lab for lab in s["labels"]}
    img = medimg.read_labels(sample("hippocampus")[1])
    assert labels[1]["voxels"] == int((img.array == 1).sum())
    assert labels[2]["volume_ml"] == (img.array == 2).sum() / 1000.0


def test_info_tables_and_dicom_folder() -> None:
    r = runner.invoke(app, ["info", str(DATA / "ct_dicom_gap"), "--allow-irregular"])
    assert r.exit_code == 0, r.output
    assert "DICOM series" in r.output and "CT" in r.output


def test_error_exit_code_2_without_traceback(tmp_path: Path) -> None:
    r = runner.invoke(app, ["info", str(DATA / "ct_dicom_gap")])
    assert r.exit_code == 2
    assert "missing slice" in r.output and "Traceback" not in r.output
    bad = tmp_path / "x.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    r = runner.invoke(app, ["convert", str(bad), str(tmp_path / "y.nrrd")])
    assert r.exit_code == 2 and "CorruptFileError" in r.output
    assert not (tmp_path / "y.nrrd").exists()


def test_debug_shows_traceback() -> None:
    r = runner.invoke(app, ["--debug", "info", str(DATA / "ct_dicom_gap")])
    assert r.exit_code != 0 and r.exception is not None


def test_convert_dicom_to_nifti_and_names(ct3: Path, tmp_path: Path) -> None:
    out = tmp_path / "ct.nii.gz"
    r = runner.invoke(app, ["convert", str(ct3), str(out)])
    assert r.exit_code == 0, r.output
    assert np.array_equal(medimg.read(out).array, medimg.read(ct3).array)
    seg = tmp_path / "lab.seg.nrrd"
    r = runner.invoke(app, ["convert", str(sample("hippocampus")[1]), str(seg), "--names", "1=anterior,2=posterior"])
    assert r.exit_code == 0, r.output
    assert medimg.read(seg).names == {1: "anterior", 2: "posterior"}  # type: ignore[attr-defined]


def test_resample_command(tmp_path: Path) -> None:
    out = tmp_path / "r.nii.gz"
    r = runner.invoke(app, ["resample", str(sample("ct")[0]), str(out), "--spacing", "6"])
    assert r.exit_code == 0, r.output
    img = medimg.read(out)
    assert img.spacing == (6.0, 6.0, 6.0) and img.shape == (61, 50, 15)
    lab_out = tmp_path / "l.nii.gz"
    r = runner.invoke(app, ["resample", str(sample("ct")[1]), str(lab_out), "--reference", str(out), "--labels"])
    assert r.exit_code == 0, r.output
    assert medimg.read(lab_out).same_geometry(img)
    r = runner.invoke(app, ["resample", str(sample("ct")[0]), str(out)])
    assert r.exit_code == 2 and "exactly one" in r.output


def test_demo(tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    files = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"hippocampus_labels.seg.nrrd", "ct_overlay.png", "ct_image_1.5mm.nii.gz"} <= files
    assert {"hippocampus_segmentation.nii.gz", "hippocampus_segmentation_overlay.png"} <= files
    assert "Dice vs the manual label" in r.output
    assert {"pneumoniamnist_probabilities.csv", "pneumoniamnist_explain.png"} <= files
    assert "16 validation chest X-rays: accuracy" in r.output
    assert {"interactive_mask.nii.gz", "interactive_overlay.png"} <= files and "click 3" in r.output
    overlay = medimg.read(tmp_path / "demo" / "hippocampus_overlay.png")
    assert overlay.n_channels == 3 and overlay.shape == (35, 51)
