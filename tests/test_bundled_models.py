"""The bundled task models (fetal-head, nodule, malignancy, vessels) on real held-out files from tests/data: each
segments or classifies what it was trained for, in one command, and refuses what it was not trained on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.image import Image
from medimg.measure import ellipse_mask, fit_ellipse
from medimg.metrics import segmentation_metrics
from medimg.registry import bundled

from conftest import DATA

runner = CliRunner()
HC = DATA / "hc18"


def text(r: object) -> str:
    return " ".join(r.output.split())  # type: ignore[attr-defined]


def centre_line_ellipse(annotation: Path, spacing: float) -> medimg.LabelMap:
    """HC18's reference head: the inside of the drawn outline's centre line (as the model was trained)."""
    grid = Image((np.asarray(medimg.read(annotation).array) > 0).astype(np.uint8), ndim=2)
    return medimg.LabelMap(ellipse_mask(fit_ellipse(grid), grid), spacing=(spacing, spacing))


def test_models_list_shows_the_task_models() -> None:
    names = {m.name for m in bundled()}
    assert {"fetal-head", "hippocampus"} <= names
    r = runner.invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.output)}
    assert rows["fetal-head"]["licence"] == "CC BY 4.0"
    for m in bundled():
        weights = m.path / "model.pt"
        if weights.exists():
            assert weights.stat().st_size <= 10 * 1024**2, m.name  # every bundled model <= 10 MB


def test_fetal_head_segments_and_measures_a_held_out_image(tmp_path: Path) -> None:
    px = 0.143367443766  # HC18's pixel size of 338_HC (pixel_size_and_HC.csv); reference HC 169.0 mm
    out = tmp_path / "head.nii.gz"
    r = runner.invoke(
        app, ["segment", str(HC / "338_HC.png"), "-m", "fetal-head", "--input-spacing", f"{px},{px}", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    mask = medimg.read_labels(out)
    assert mask.shape == (800, 540) and mask.spacing == pytest.approx((px, px), rel=1e-6)
    ref = centre_line_ellipse(HC / "338_HC_Annotation.png", px)
    assert segmentation_metrics(mask, ref, labels=[1], metrics=("dice",))[1]["dice"] >= 0.95
    r = runner.invoke(app, ["measure", "ellipse", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["circumference_mm"] == pytest.approx(169.0, abs=3.0)


def test_fetal_head_failure_on_a_small_early_head_is_flagged_by_the_measurement(tmp_path: Path) -> None:
    """007_HC (a 63 mm head) is one of the held-out images the model gets wrong (it takes in a larger round
    structure); the ellipse fit says the outline is not an ellipse instead of reporting a confident circumference."""
    px = 0.109361850697
    out = tmp_path / "head.nii.gz"
    r = runner.invoke(
        app, ["segment", str(HC / "007_HC.png"), "-m", "fetal-head", "--input-spacing", f"{px},{px}", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["measure", "ellipse", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["elliptical"] is False


def test_fetal_head_refuses_unknown_spacing_and_other_images(tmp_path: Path) -> None:
    out = tmp_path / "x.nii.gz"
    r = runner.invoke(app, ["segment", str(HC / "338_HC.png"), "-m", "fetal-head", "-o", str(out)])
    assert r.exit_code != 0 and "--input-spacing" in text(r) and not out.exists()
    mri = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    r = runner.invoke(app, ["segment", str(mri), "-m", "fetal-head", "-o", str(out)])
    assert r.exit_code != 0 and "outside the domain" in text(r) and not out.exists()


LIDC = DATA / "lidc"
NODULES = ["LIDC-IDRI-0014_R_1", "LIDC-IDRI-0024_R_2", "LIDC-IDRI-0024_R_3", "LIDC-IDRI-0051_R_2"]


def test_nodule_segments_held_out_crops_on_their_own_grid(tmp_path: Path) -> None:
    r = runner.invoke(app, ["segment", str(LIDC / "images"), "-m", "nodule", "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    for c in NODULES:
        img = medimg.read(LIDC / "images" / f"{c}.nii.gz")
        out = medimg.read_labels(tmp_path / "out" / f"{c}.nii.gz")
        ref = medimg.read_labels(LIDC / "masks" / f"{c}.nii.gz")
        assert out.same_geometry(img, atol=0)
        assert segmentation_metrics(out, ref, labels=[1], metrics=("dice",))[1]["dice"] >= 0.8, c


def test_nodule_refuses_a_whole_scan_and_mri(tmp_path: Path) -> None:
    out = tmp_path / "x.nii.gz"
    crop = medimg.read(LIDC / "images" / "LIDC-IDRI-0024_R_2.nii.gz")
    # a CT volume with the field of view of a chest scan (350 mm), not a crop around a nodule
    big = Image(np.full((500, 500, 40), -800, np.int16), spacing=(0.7, 0.7, 2.5), meta={"modality": "CT"})
    s0, s1, s2 = crop.shape
    big.array[:s0, :s1, :s2] = crop.array
    medimg.write(big, tmp_path / "chest.nii.gz")
    r = runner.invoke(app, ["segment", str(tmp_path / "chest.nii.gz"), "-m", "nodule", "-o", str(out)])
    assert r.exit_code != 0 and "outside the domain" in text(r) and not out.exists()
    mri = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    r = runner.invoke(app, ["segment", str(mri), "-m", "nodule", "-o", str(out)])
    assert r.exit_code != 0 and "outside the domain" in text(r) and not out.exists()


def test_malignancy_classifies_crops_on_its_physical_grid(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["classify", "predict", str(LIDC / "images"), "-m", "malignancy", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = {row["id"].removesuffix(".nii.gz"): row for row in csv.DictReader(out.open())}
    assert sorted(rows) == NODULES  # crops of different sizes and spacings, each resampled onto the 1 mm grid
    for row in rows.values():
        p = float(row["p_malignant"])
        assert 0 <= p <= 1 and abs(p + float(row["p_benign"]) - 1) < 1e-5
    # the two crops rated malignant score above the small benign one
    assert min(float(rows[c]["p_malignant"]) for c in ("LIDC-IDRI-0024_R_2", "LIDC-IDRI-0051_R_2")) > float(
        rows["LIDC-IDRI-0024_R_3"]["p_malignant"]
    )


def test_malignancy_refuses_mri_and_pictures(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    mri = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    r = runner.invoke(app, ["classify", "predict", str(mri), "-m", "malignancy", "-o", str(out)])
    assert r.exit_code != 0 and "outside the domain" in text(r) and "intensity percentile" in text(r)
    r = runner.invoke(app, ["classify", "predict", str(HC / "338_HC.png"), "-m", "malignancy", "-o", str(out)])
    assert r.exit_code != 0 and "3D images" in text(r)
    assert not out.exists()


CHASE = DATA / "chasedb1"


def test_vessels_segments_an_rgb_photograph_as_well_as_a_second_annotator(tmp_path: Path) -> None:
    out = tmp_path / "v.nii.gz"
    r = runner.invoke(app, ["segment", str(CHASE / "Image_06L.jpg"), "-m", "vessels", "-o", str(out)])
    assert r.exit_code == 0, r.output
    pred = medimg.read_labels(out)
    first = medimg.LabelMap((np.asarray(medimg.read(CHASE / "Image_06L_1stHO.png").array) > 0).astype(np.uint8))
    second = medimg.LabelMap((np.asarray(medimg.read(CHASE / "Image_06L_2ndHO.png").array) > 0).astype(np.uint8))
    assert pred.shape == first.shape == (999, 960)

    def dice(a: medimg.LabelMap) -> float:
        return segmentation_metrics(a, first, labels=[1], metrics=("dice",))[1]["dice"]

    human = dice(second)
    assert 0.7 < human < 0.85  # the second annotator against the first: the human level on this image
    assert dice(pred) >= 0.8 and dice(pred) > human


def test_vessels_refuses_a_grey_image(tmp_path: Path) -> None:
    out = tmp_path / "v.nii.gz"
    r = runner.invoke(app, ["segment", str(HC / "338_HC.png"), "-m", "vessels", "-o", str(out)])
    assert r.exit_code != 0 and "channel" in text(r) and not out.exists()


def test_abdomen_segments_a_held_out_volume_with_sides_kept(tmp_path: Path) -> None:
    """A CHAOS test volume (16 central slices; never trained on): every organ found, on the input's exact grid, and
    the right kidney on the patient's right (smaller world x in LPS), the left kidney on the left."""
    from scipy import ndimage

    src = DATA / "chaos" / "heldout" / "chaos_08.nii.gz"
    out = tmp_path / "organs.nii.gz"
    r = runner.invoke(app, ["segment", str(src), "-m", "abdomen", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert all(n in text(r) for n in ("liver", "right_kidney", "left_kidney", "spleen"))
    img, seg = medimg.read(src), medimg.read_labels(out)
    ref = medimg.read_labels(DATA / "chaos" / "heldout" / "chaos_08_label.nii.gz")
    assert seg.same_geometry(img, atol=0)
    m = segmentation_metrics(seg, ref, labels=[1, 2, 3, 4], metrics=("dice",))
    assert m[1]["dice"] > 0.85 and min(m[k]["dice"] for k in (2, 3, 4)) > 0.6, m
    x = {k: img.index_to_world([ndimage.center_of_mass(seg.array == k)])[0][0] for k in (2, 3)}
    assert x[2] + 50 < x[3]  # about 15 cm apart; a left/right swap would put the right kidney far to the left


def test_abdomen_refuses_ct_and_brain_mri(tmp_path: Path) -> None:
    out = tmp_path / "x.nii.gz"
    ct = LIDC / "images" / "LIDC-IDRI-0024_R_2.nii.gz"
    for src in (ct, DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"):
        r = runner.invoke(app, ["segment", str(src), "-m", "abdomen", "-o", str(out)])
        assert r.exit_code != 0 and "outside the domain" in text(r) and not out.exists()
