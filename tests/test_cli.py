"""The medimg command line: output, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.data import sample
from medimg.errors import DicomSeriesError

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
    assert overlay.n_channels == 3 and min(overlay.shape) >= 512  # readable figure (a 35 x 51 slice enlarged)


def test_version_and_debug_anywhere_on_the_line() -> None:
    from medimg.cli._common import lift_global_options

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"medimg {medimg.__version__}"
    for args in (["info", str(DATA / "ct_dicom_gap"), "--debug"], ["info", "--debug", str(DATA / "ct_dicom_gap")]):
        r = runner.invoke(app, args)
        assert isinstance(r.exception, DicomSeriesError), r.output  # the traceback is raised, not a usage error
    assert lift_global_options(["info", "x", "--threads", "3", "--debug", "--", "--debug"]) == [
        "--threads",
        "3",
        "--debug",
        "info",
        "x",
        "--",
        "--debug",
    ]
    assert lift_global_options(["segment", "x", "--threads=2", "-o", "y"]) == ["--threads=2", "segment", "x", "-o", "y"]


_THREADS_PROBE = """
import ctypes, json, os, sys
torch_first = sys.argv[1] == "torch-first"
if torch_first:
    import torch
from medimg.cli import app
try:
    app(sys.argv[2:], standalone_mode=False)
except SystemExit:
    pass
import torch, SimpleITK as sitk
blas = []
for lib in {l.split()[-1] for l in open("/proc/self/maps") if "openblas" in l.split()[-1].lower()}:
    h = ctypes.CDLL(lib)
    for sym in ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_"):
        if hasattr(h, sym):
            blas.append(getattr(h, sym)())
            break
print(json.dumps({"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
                  "itk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), "blas": blas,
                  "omp_env": os.environ.get("OMP_NUM_THREADS")}))
"""


def _threads_probe(order: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    import os
    import subprocess
    import sys

    e = {k: v for k, v in os.environ.items() if "NUM_THREADS" not in k}
    r = subprocess.run(
        [sys.executable, "-c", _THREADS_PROBE, order, *args],
        capture_output=True,
        text=True,
        env={**e, **(env or {})},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_threads_option_and_env_reach_torch_itk_and_blas() -> None:
    """--threads after the command (torch imported before the CLI ran) and MEDIMG_NUM_THREADS (torch and SimpleITK
    imported only afterwards, as the commands do) both set torch intra/inter-op, ITK and NumPy's OpenBLAS."""
    info = ["info", str(sample("hippocampus")[1])]
    got = _threads_probe("torch-first", [*info, "--threads", "1"])
    assert got["torch"] == 1 and got["interop"] == 1 and got["itk"] == 1 and got["omp_env"] == "1"
    assert got["blas"] and set(got["blas"]) == {1}
    got = _threads_probe("torch-after", info, {"MEDIMG_NUM_THREADS": "1"})
    assert got["torch"] == 1 and got["interop"] == 1 and got["itk"] == 1 and set(got["blas"]) == {1}
    got = _threads_probe("torch-after", info, {"OMP_NUM_THREADS": "1"})  # no --threads: a user's OMP setting holds
    assert got["torch"] == 1 and got["interop"] == 1 and got["itk"] == 1
    r = runner.invoke(app, ["info", str(sample("hippocampus")[1]), "--threads", "0"])
    assert r.exit_code == 2 and "at least 1" in r.output


def _all_command_paths() -> list[list[str]]:
    import typer.main

    paths: list[list[str]] = [[]]

    def walk(cmd: object, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append([*path, name])
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_help_shows_readable_metavars_everywhere() -> None:
    """No Python types (<bool>, <str>, <path>, <list[str]>, {arg}) in any help; flags show no metavar."""
    import re

    paths = _all_command_paths()
    assert len(paths) > 25
    for path in paths:
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
        assert r.exit_code == 0, (path, r.output)
        bad = re.findall(r"<(?:bool|str|int|float|path|file|dir|list\[[a-z]+\])>|\{[a-z_]+\}", r.output)
        assert not bad, (path, bad)
        for line in r.output.splitlines():
            if re.search(r"--help\s", line):
                assert re.search(r"--help\s+Show this message", line), (path, line)
    r = runner.invoke(app, ["segment", "--help"], env={"COLUMNS": "250"})
    assert re.search(r"--tta\s+Mirroring", r.output)  # a flag: no metavar
    assert re.search(r"--output\s+-o\s+PATH\s", r.output) and re.search(r"--model\s+-m\s+TEXT\s", r.output)
    # the argument's row: "IMAGE  PATH" (typer >= 0.21) or "images  IMAGE" (typer 0.20, pinned for Flower)
    assert "Usage: medimg segment [OPTIONS] IMAGE" in r.output
    assert re.search(r"IMAGE\s+PATH\s|images\s+IMAGE\s", r.output)
    r = runner.invoke(app, ["--help"], env={"COLUMNS": "250"})
    assert re.search(r"--threads\s+N\s", r.output) and re.search(r"--debug\s+Show", r.output)


def test_models_list_every_bundled_model_with_licence() -> None:
    r = runner.invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows: dict[str, dict] = {}
    for m in json.loads(r.stdout):  # pneumoniamnist is a classifier and a generator: the classifier comes first
        rows.setdefault(m["name"], m)
    gens = [m for m in json.loads(r.stdout) if m["task"].startswith("generation")]
    assert [(m["name"], m["licence"]) for m in gens] == [("pneumoniamnist", "CC BY 4.0")]
    assert {n: rows[n]["licence"] for n in ("hippocampus", "pneumoniamnist", "hippocampus_flow", "promptable")} == {
        "hippocampus": "CC BY-SA 4.0",
        "pneumoniamnist": "CC BY 4.0",
        "hippocampus_flow": "CC BY-SA 4.0",
        "promptable": "CC BY-SA 4.0",
    }
    assert rows["hippocampus_flow"]["task"].startswith("registration")
    assert rows["promptable"]["task"].startswith("interactive")
    assert "medimg classify predict" in rows["pneumoniamnist"]["usage"]
    r = runner.invoke(app, ["models", "list"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "licence" in r.output and "hippocampus_flow" in r.output and "promptable" in r.output
    r = runner.invoke(app, ["models", "info", "hippocampus_flow"])
    assert r.exit_code == 0 and json.loads(r.stdout)["licence"] == "CC BY-SA 4.0"
    r = runner.invoke(app, ["models", "info", "pneumoniamnist"])
    assert r.exit_code == 0 and json.loads(r.stdout)["task"] == "classification"
    r = runner.invoke(app, ["models", "info", "pneumoniamnist", "--kind", "generation"])
    assert r.exit_code == 0 and json.loads(r.stdout)["mode"] == "class"


def test_volumes_folder_csv_names_2d_and_single_file(tmp_path: Path) -> None:
    import csv

    import nibabel as nib

    labels = DATA / "hippocampus" / "labelsTr"
    out = tmp_path / "volumes.csv"
    r = runner.invoke(app, ["volumes", str(labels), "-o", str(out), "--names", "1=anterior,2=posterior"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    files = sorted(labels.glob("*.nii.gz"))
    assert [row["file"] for row in rows] == [f.name for f in files]
    for row, f in zip(rows, files, strict=True):
        img: Any = nib.load(str(f))
        a, vox = np.asarray(img.dataobj), float(np.prod(img.header.get_zooms()[:3]))
        assert float(row["anterior_mL"]) == pytest.approx((a == 1).sum() * vox / 1000, abs=1e-6)
        assert float(row["posterior_mL"]) == pytest.approx((a == 2).sum() * vox / 1000, abs=1e-6)
    assert "anterior (mL)" in r.output and "hippocampus_001" in r.output
    # a 2D mask: area in mm^2 with the given pixel spacing; one file, names from --names
    png = DATA / "Image_01L_1stHO.png"
    out2 = tmp_path / "area.csv"
    r = runner.invoke(app, ["volumes", str(png), "--input-spacing", "0.5,0.5", "--names", "1=vessel", "-o", str(out2)])
    assert r.exit_code == 0, r.output
    (row,) = list(csv.DictReader(out2.open()))
    assert float(row["vessel_mm2"]) == pytest.approx(int((medimg.read_labels(png).array > 0).sum()) * 0.25)
    assert "(mm²)" in r.output
    # DICOM SEG: columns named by the file's own segment names
    r = runner.invoke(app, ["volumes", str(DATA / "highdicom" / "seg_image_ct_binary.dcm"), "-o", str(out2)])
    assert r.exit_code == 0, r.output
    assert "first segment_mL" in out2.read_text().splitlines()[0]
    # a missing output folder fails before anything is measured, and nothing is written
    r = runner.invoke(app, ["volumes", str(labels), "-o", str(tmp_path / "no" / "v.csv")])
    assert r.exit_code == 2 and "does not exist" in " ".join(r.output.split()) and not (tmp_path / "no").exists()
