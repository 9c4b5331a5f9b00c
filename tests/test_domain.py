"""Models refuse input outside the domain they were trained on (issue 13, section 1), unless forced, and the
output's provenance records it."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.classify import ClassifierModel
from medimg.classify.data import load_npz
from medimg.cli import app
from medimg.domain import ImageDomain
from medimg.errors import MedimgError, OutOfDomainError
from medimg.seg import Predictor, resolve_model

from conftest import DATA, SHARED, needs_shared

runner = CliRunner()


def flat(text: str) -> str:
    """Console output with Rich's line wrapping undone."""
    return " ".join(text.split())


HIPPO = DATA / "hippocampus" / "imagesTr"


def _grey_png(array2d: np.ndarray, path: Path) -> Path:
    from PIL import Image as PILImage

    a = np.asarray(array2d, dtype=np.float64)
    a = (255 * (a - a.min()) / max(np.ptp(a), 1e-9)).astype(np.uint8)
    PILImage.fromarray(a).save(path)
    return path


def test_bundled_segmentation_model_records_its_domain() -> None:
    pred = Predictor(resolve_model("hippocampus"))
    d = pred.domain
    assert isinstance(d, ImageDomain) and d.dims == 3 and d.modality == "MR"
    assert d.spacing_min_mm == d.spacing_max_mm == 1.0
    assert 20 < d.extent_min_mm[0] < d.extent_max_mm[2] < 80  # crops of a few cm, not whole heads


def test_segment_refuses_a_large_mr_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    r = runner.invoke(app, ["segment", str(DATA / "breast1_image.nrrd"), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert "OutOfDomainError" in r.output and "--force" in r.output and "1 mm voxels" in flat(r.output)
    assert not out.exists()


def test_segment_refuses_2d_and_forced_run_is_recorded(tmp_path: Path) -> None:
    r = runner.invoke(app, ["segment", str(DATA / "CT_2D_head_fixed.mha"), "-o", str(tmp_path / "x.nii.gz")])
    assert r.exit_code == 2 and "2D" in r.output
    out = tmp_path / "forced.nii.gz"
    r = runner.invoke(app, ["segment", str(DATA / "breast1_image.nrrd"), "-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert "forced outside the model's domain" in flat(r.output)
    prov = medimg.read(out).meta["provenance"]
    assert prov["domain"]["forced"] is True and not prov["domain"]["in_domain"] and prov["domain"]["differences"]
    assert prov["model"] == "hippocampus" and len(prov["inputs"][0]["sha256"]) == 64
    # the record is a NIfTI comment extension that other readers see and keep the image readable
    ext = nib.load(out).header.extensions
    assert any(e.get_code() == 6 and b"medimg-provenance" in e.get_content() for e in ext)


def test_in_domain_hippocampus_runs_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "h.seg.nrrd"
    r = runner.invoke(app, ["segment", str(HIPPO / "hippocampus_001.nii.gz"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    dom = medimg.read(out).meta["provenance"]["domain"]
    assert dom == {"checked": True, "in_domain": True, "forced": False, "differences": []}


def test_ct_intensities_refused_even_at_the_right_size() -> None:
    """A hippocampus-sized crop of CT (air at -1000 HU) is refused for what it contains, not its size."""
    pred = Predictor(resolve_model("hippocampus"))
    img = medimg.read(HIPPO / "hippocampus_001.nii.gz")
    ct = img.with_array(np.where(img.array > np.median(img.array), 40.0, -1000.0).astype(np.float32))
    with pytest.raises(OutOfDomainError, match="lowest intensity in training"):
        pred(ct)
    lab = pred(ct, force=True)
    assert lab.meta["provenance"]["domain"]["forced"]


def test_library_predictor_refuses_unless_forced() -> None:
    big = medimg.read(DATA / "breast1_image.nrrd")
    pred = Predictor(resolve_model("hippocampus"))
    with pytest.raises(OutOfDomainError, match="outside the domain of model 'hippocampus'"):
        pred(big)
    assert Predictor(resolve_model("hippocampus"), force=True)(big).shape == big.shape


def test_predict_folder_refuses_some_cases_and_names_outputs_by_case(tmp_path: Path) -> None:
    inp = tmp_path / "imagesTs"
    inp.mkdir()
    shutil.copy(HIPPO / "hippocampus_001.nii.gz", inp / "hippocampus_001_0000.nii.gz")
    shutil.copy(DATA / "breast1_image.nrrd", inp / "breast1_0000.nrrd")
    out = tmp_path / "pred"
    r = runner.invoke(app, ["predict", "-m", "hippocampus", "-i", str(inp), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert "breast1: refused" in r.output and "1 of 2 case(s) refused" in flat(r.output)
    assert sorted(p.name for p in out.iterdir()) == ["hippocampus_001.nii.gz"]  # nnU-Net naming, no _0000
    assert "hippocampus_001: anterior" in r.output  # a line per case
    r = runner.invoke(app, ["predict", "-m", "hippocampus", "-i", str(inp), "-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["breast1.nrrd", "hippocampus_001.nii.gz"]  # format kept


def test_predict_fill_nonfinite(tmp_path: Path) -> None:
    img = medimg.read(HIPPO / "hippocampus_001.nii.gz")
    a = img.array.astype(np.float32)
    a[3, 4, 5] = np.nan
    src = medimg.write(img.with_array(a), tmp_path / "nan.nii.gz")
    r = runner.invoke(app, ["segment", str(src), "-o", str(tmp_path / "s.nii.gz")])
    assert r.exit_code == 2 and "--fill-nonfinite" in r.output
    r = runner.invoke(app, ["segment", str(src), "-o", str(tmp_path / "s.nii.gz"), "--fill-nonfinite", "0"])
    assert r.exit_code == 0, r.output


def test_classifier_accepts_its_validation_images_and_refuses_other_modalities(tmp_path: Path) -> None:
    m = ClassifierModel("pneumoniamnist")
    assert m.domain is not None and m.domain.n_train > 1000
    val = load_npz(DATA / "pneumoniamnist_subset.npz", "val")
    recs = m.check_domain(val.images)
    assert all(r["in_domain"] for r in recs), max(r["score"] for r in recs)
    brain = medimg.read(HIPPO / "hippocampus_001.nii.gz").array[:, :, 17].T
    ct = np.asarray(medimg.read(DATA / "CT_2D_head_fixed.mha").array, np.float32).T
    for a in (brain, ct):
        with pytest.raises(OutOfDomainError, match="outside the domain of classifier 'pneumoniamnist'"):
            m.predict_proba(a[None, None].astype(np.float32))
    p = m.predict_proba(ct[None, None], force=True)
    assert p.shape == (1, 2) and not m.last_domain[0]["in_domain"] and m.last_domain[0]["forced"]


def test_classify_predict_cli_refuses_and_force_marks_rows(tmp_path: Path) -> None:
    png = _grey_png(np.asarray(medimg.read(DATA / "CT_2D_head_fixed.mha").array).T, tmp_path / "ct_slice.png")
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["classify", "predict", str(png), "-m", "pneumoniamnist", "-o", str(out)])
    assert r.exit_code == 2 and "--force" in r.output and not out.exists()
    r = runner.invoke(app, ["classify", "predict", str(png), "-m", "pneumoniamnist", "-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    header, row = out.read_text().splitlines()
    assert header.endswith("in_domain,domain_score") and ",false," in row


def test_rgb_photo_needs_a_channel_choice_then_is_refused_by_the_xray_classifier(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    rgb = np.zeros((64, 80, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 80)[None, :]
    rgb[20:40, 30:50] = (200, 30, 30)
    png = tmp_path / "photo.png"
    PILImage.fromarray(rgb).save(png)
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["classify", "predict", str(png), "-m", "pneumoniamnist", "-o", str(out)])
    assert r.exit_code == 2 and "--channel grey" in flat(r.output)
    r = runner.invoke(
        app, ["classify", "predict", str(png), "-m", "pneumoniamnist", "-o", str(out), "--channel", "grey"]
    )
    assert r.exit_code == 2 and "OutOfDomainError" in r.output


def test_interact_channel_option(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    rgb = np.zeros((60, 60, 3), np.uint8)
    rgb[20:40, 20:40] = (220, 200, 180)
    png = tmp_path / "rgb.png"
    PILImage.fromarray(rgb).save(png)
    out = tmp_path / "m.png"
    # every channel: the random walker reads them all; region growing reads one and says how to pick it
    r = runner.invoke(app, ["interact", str(png), "-o", str(out), "--click", "30,30", "--method", "random_walker"])
    assert r.exit_code == 0, r.output
    assert medimg.read_labels(out).voxel_counts()[1] == 400
    r = runner.invoke(app, ["interact", str(png), "-o", str(out), "--click", "30,30", "--method", "region_growing"])
    assert r.exit_code == 2 and "--channel" in r.output
    r = runner.invoke(
        app,
        ["interact", str(png), "-o", str(out), "--click", "30,30", "--method", "random_walker", "--channel", "grey"],
    )
    assert r.exit_code == 0, r.output
    assert medimg.read_labels(out).voxel_counts()[1] == 400


@needs_shared
def test_every_shared_hippocampus_image_is_in_domain() -> None:
    dom = Predictor(resolve_model("hippocampus")).domain
    assert dom is not None
    bad = {}
    for f in sorted((SHARED / "hippocampus" / "imagesTr").glob("*.nii.gz")):
        diff = dom.differences([medimg.read(f)])
        if diff:
            bad[f.name] = diff
    assert not bad


@needs_shared
def test_every_shared_out_of_domain_volume_is_refused() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from domain_guard import families

    dom = Predictor(resolve_model("hippocampus")).domain
    assert dom is not None
    accepted = []
    n = 0
    for family, files in families(SHARED).items():
        for f in files:
            img = medimg.read(f, **({"key": "image"} if f.suffix == ".h5" else {}))
            n += 1
            if not dom.differences([img]):
                accepted.append(f"{family}: {f.name}")
    assert n >= 15 and not accepted


@needs_shared
def test_domain_guard_benchmark_table_holds() -> None:
    """The table in docs/domain.md: 0 refusals in domain (hippocampus, PneumoniaMNIST val), every other family
    refused by both bundled models."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from domain_guard import classifier_rows, segmentation_rows

    for rows in (segmentation_rows(SHARED)[0], classifier_rows(SHARED)[0]):
        for r in rows:
            if r["in_domain"] and "train" not in r["family"]:
                assert r["refused"] == 0, r
            elif not r["in_domain"]:
                assert r["n"] > 0 and r["refused"] == r["n"], r


def test_folder_outputs_keep_the_input_format() -> None:
    """predict on a folder writes labels in the input's format (PNG in -> PNG out), never in a lossy one."""
    from medimg.cli.predict import group_cases, output_ext

    assert output_ext(DATA / "Image_01L_1stHO.png", None) == ".png"
    assert output_ext(DATA / "breast1_image.nrrd", None) == ".nrrd"
    assert output_ext(HIPPO / "hippocampus_001.nii.gz", None) == ".nii.gz"
    assert output_ext(DATA / "CT_2D_head_fixed.mha", None) == ".mha"
    assert output_ext(Path("photo.jpg"), None) == ".png"
    assert output_ext(DATA / "ct_dicom_gap" / "7136", None) == ".nii.gz"
    assert output_ext(DATA / "Image_01L_1stHO.png", "nii.gz") == ".nii.gz"
    cases = group_cases([Path("a_0000.nii.gz"), Path("a_0001.nii.gz"), Path("b_0000.nii.gz"), Path("b_0001.nii.gz")], 2)
    assert cases == {
        "a": [Path("a_0000.nii.gz"), Path("a_0001.nii.gz")],
        "b": [Path("b_0000.nii.gz"), Path("b_0001.nii.gz")],
    }
    with pytest.raises(MedimgError, match="model takes 2 channel"):
        group_cases([Path("a_0000.nii.gz"), Path("b_0000.nii.gz"), Path("b_0001.nii.gz")], 2)
