"""The bundled task models (fetal-head, nodule, malignancy, vessels) on real held-out files from tests/data: each
segments or classifies what it was trained for, in one command, and refuses what it was not trained on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.image import Image
from medimg.measure import fit_ellipse
from medimg.metrics import segmentation_metrics
from medimg.registry import bundled

from conftest import DATA

runner = CliRunner()
HC = DATA / "hc18"


def text(r: object) -> str:
    return " ".join(r.output.split())  # type: ignore[attr-defined]


def centre_line_ellipse(annotation: Path, spacing: float) -> medimg.LabelMap:
    """HC18's reference head: the inside of the drawn outline's centre line (as the model was trained)."""
    ann = np.asarray(medimg.read(annotation).array) > 0
    fit = fit_ellipse(Image(ann.astype(np.uint8), ndim=2))
    (c0, c1), (a, b), th = fit.center_mm, fit.semi_axes_mm, math.radians(fit.angle_deg)
    i, j = np.meshgrid(np.arange(ann.shape[0]), np.arange(ann.shape[1]), indexing="ij")
    u = (i - c0) * math.cos(th) + (j - c1) * math.sin(th)
    v = -(i - c0) * math.sin(th) + (j - c1) * math.cos(th)
    return medimg.LabelMap(((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.uint8), spacing=(spacing, spacing))


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


def test_fetal_head_refuses_unknown_spacing_and_other_images(tmp_path: Path) -> None:
    out = tmp_path / "x.nii.gz"
    r = runner.invoke(app, ["segment", str(HC / "338_HC.png"), "-m", "fetal-head", "-o", str(out)])
    assert r.exit_code != 0 and "--input-spacing" in text(r) and not out.exists()
    mri = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    r = runner.invoke(app, ["segment", str(mri), "-m", "fetal-head", "-o", str(out)])
    assert r.exit_code != 0 and "outside the domain" in text(r) and not out.exists()
