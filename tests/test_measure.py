"""`medimg measure ellipse`: exact on a drawn ellipse on an oblique anisotropic grid, equal to HC18's own head
circumferences on its annotations, and refusing what it cannot measure in mm."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.image import LabelMap
from medimg.measure import MeasureError, fit_ellipse
from medimg.ops import run

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def _ellipse_mask(
    shape: tuple[int, int],
    spacing: tuple[float, float],
    c: tuple[float, float],
    a: float,
    b: float,
    theta: float,
    direction: np.ndarray,
) -> LabelMap:
    """A filled ellipse (centre ``c`` in world mm, semi-axes ``a``, ``b`` mm, angle ``theta`` to world x) drawn on
    a grid with ``spacing`` and ``direction`` (origin 0)."""
    i, j = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    w = np.stack([i * spacing[0], j * spacing[1]], -1) @ direction.T
    u = (w[..., 0] - c[0]) * math.cos(theta) + (w[..., 1] - c[1]) * math.sin(theta)
    v = -(w[..., 0] - c[0]) * math.sin(theta) + (w[..., 1] - c[1]) * math.cos(theta)
    m = ((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.uint8) * 3
    return LabelMap(m, spacing=spacing, origin=(0.0, 0.0), direction=direction)


def test_exact_on_a_drawn_ellipse_on_an_oblique_anisotropic_grid() -> None:
    r = math.radians(20)
    d = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    lab = _ellipse_mask((400, 260), (0.4, 0.7), (40.0, 110.0), 45.0, 28.0, math.radians(35), d)
    f = fit_ellipse(lab, 3)
    assert f.center_mm == pytest.approx((40.0, 110.0), abs=0.05)
    assert f.semi_axes_mm == pytest.approx((45.0, 28.0), abs=0.1)
    assert f.angle_deg == pytest.approx(35.0, abs=0.3)
    true_c = math.pi * (3 * (45 + 28) - math.sqrt((3 * 45 + 28) * (45 + 3 * 28)))
    assert f.circumference_mm == pytest.approx(true_c, rel=2e-3)
    assert not f.touches_border and not f.outline and f.rms_residual_mm < 0.2 and f.elliptical
    # cut by the field of view: fitted to the visible outline, flagged
    cut = LabelMap(np.asarray(lab.array)[:, :150], spacing=lab.spacing, direction=lab.direction)
    g = fit_ellipse(cut)
    assert g.touches_border and g.circumference_mm == pytest.approx(true_c, rel=0.01)


@pytest.mark.parametrize(("name", "pixel_mm", "hc_mm"), [("002", 0.062032562715, 68.75), ("007", 0.109361850697, 62.8)])
def test_hc18_annotations_give_the_challenge_head_circumference(name: str, pixel_mm: float, hc_mm: float) -> None:
    path = DATA / "hc18" / f"{name}_HC_Annotation.png"
    r = runner.invoke(app, ["measure", "ellipse", str(path), "--spacing", str(pixel_mm), "--json"])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads(r.stdout)
    assert res["outline"] is True and res["spacing_mm"] == [pixel_mm, pixel_mm] and res["elliptical"] is True
    assert res["circumference_mm"] == pytest.approx(hc_mm, abs=0.05)
    # the filled head gives the outline's outer edge: a little larger
    a = np.asarray(medimg.read(path).array)
    from scipy import ndimage

    filled = LabelMap(ndimage.binary_fill_holes(a > 0).astype(np.uint8), spacing=(pixel_mm, pixel_mm))
    assert hc_mm < fit_ellipse(filled).circumference_mm < hc_mm + 2.0


def test_refusals(tmp_path: Path) -> None:
    png = DATA / "hc18" / "002_HC_Annotation.png"
    r = runner.invoke(app, ["measure", "ellipse", str(png)])
    assert r.exit_code == 2 and "--spacing" in " ".join(r.output.split())
    r = runner.invoke(app, ["measure", "ellipse", str(png), "--spacing", "abc"])
    assert r.exit_code == 2 and "pixel size in mm" in " ".join(r.output.split())
    with pytest.raises(MeasureError, match="labels present: \\[255\\]"):
        run("measure_ellipse", {"mask": str(png), "label": 2, "spacing": [0.1]})
    vol = DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    with pytest.raises(MeasureError, match="2D structure"):
        run("measure_ellipse", {"mask": str(vol)})


def test_a_structure_that_is_not_an_ellipse_is_flagged(tmp_path: Path) -> None:
    """An ellipse with a neighbouring blob attached (what a segmentation that took in another structure gives): the
    fit still returns numbers, but says the outline is not an ellipse, and the CLI warns."""
    lab = _ellipse_mask((300, 300), (0.2, 0.2), (30.0, 30.0), 15.0, 11.0, 0.0, np.eye(2))
    arr = np.asarray(lab.array).copy()
    arr[150:230, 140:200] = np.maximum(arr[150:230, 140:200], 3)  # a 16 x 12 mm block stuck to one side
    blob = LabelMap(arr, spacing=lab.spacing)
    assert not fit_ellipse(blob, 3).elliptical and fit_ellipse(lab, 3).elliptical
    medimg.write(blob, tmp_path / "blob.nii.gz")
    r = runner.invoke(app, ["measure", "ellipse", str(tmp_path / "blob.nii.gz")])
    assert r.exit_code == 0 and "not an ellipse" in " ".join(r.output.split())
