"""A classifier's physical input grid (medimg.classify.grid): image files resampled to a fixed spacing and field of
view, so physical size survives; recorded in model.json and applied again at prediction."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.classify import ClassifierModel, load_folder
from medimg.classify.grid import make_grid, numpy_shape, on_grid
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.image import Image

runner = CliRunner()
GRID = make_grid([1.0, 1.0, 1.0], [24, 24, 24], -1000.0)


def ball(radius_mm: float, spacing: tuple[float, float, float], shape: tuple[int, int, int], **geo: object) -> Image:
    """A CT-like crop: a ball of +40 HU (soft tissue) in air (-1000 HU), centred in the image."""
    idx = np.indices(shape, dtype=np.float64)
    c = (np.asarray(shape, np.float64) - 1) / 2
    d2 = sum(((idx[a] - c[a]) * spacing[a]) ** 2 for a in range(3))
    arr = np.where(d2 <= radius_mm**2, 40, -1000).astype(np.int16)
    return Image(arr, spacing=spacing, ndim=3, **geo)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spacing,shape",
    [((0.7, 0.7, 2.5), (44, 44, 12)), ((0.9, 0.9, 1.25), (40, 40, 30)), ((1.0, 1.0, 1.0), (30, 30, 30))],
)
def test_grid_keeps_physical_size_whatever_the_input_spacing(spacing: tuple, shape: tuple) -> None:
    a = on_grid(ball(6.0, spacing, shape), GRID)
    assert a.shape == (1, 24, 24, 24)
    volume = float((a[0] > -480).sum())  # 1 mm^3 voxels
    assert volume == pytest.approx(4 / 3 * np.pi * 6.0**3, rel=0.12)
    # centred: the ball's centre of mass is the grid's centre
    com = np.array(np.nonzero(a[0] > -480)).mean(axis=1)
    assert np.allclose(com, 11.5, atol=0.6)
    # outside the crop (thin in z for the first case) is air, the pad value
    assert a.min() == -1000


def test_grid_follows_the_image_direction_and_origin() -> None:
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    plain = ball(5.0, (0.8, 0.8, 2.0), (40, 40, 16))
    moved = ball(5.0, (0.8, 0.8, 2.0), (40, 40, 16), origin=(120.0, -40.0, 300.0), direction=rot)
    assert np.array_equal(on_grid(plain, GRID) > -480, on_grid(moved, GRID) > -480)


def test_grid_refuses_unknown_spacing_and_wrong_dimensions(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    medimg.write(Image(np.zeros((30, 30), np.uint8), ndim=2), png)
    with pytest.raises(MedimgError, match="spacing is unknown"):
        on_grid(medimg.read(png), make_grid([1, 1], [16, 16]))
    with pytest.raises(MedimgError, match="3D images"):
        on_grid(medimg.read(png), GRID)
    with pytest.raises(MedimgError, match="positive"):
        make_grid([1, 0, 1], [8, 8, 8])
    assert numpy_shape(make_grid([1, 2, 3], [10, 20, 30])) == (30, 20, 10)


def _crops(folder: Path, n: int, seed: int) -> None:
    """Small (3 mm) vs large (9 mm) balls at assorted spacings and crop sizes; labels by size."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for i in range(n):
            big = i % 2
            sp = (float(rng.uniform(0.6, 1.0)),) * 2 + (float(rng.choice([1.25, 2.5])),)
            shape = (int(30 / sp[0]), int(30 / sp[0]), int(24 / sp[2]))
            medimg.write(ball(9.0 if big else 3.0, sp, shape), folder / f"n{i}.nii.gz")
            w.writerow([f"n{i}.nii.gz", "large" if big else "small"])


def test_cli_trains_on_a_grid_and_predicts_files_on_it(tmp_path: Path) -> None:
    _crops(tmp_path / "train", 24, 0)
    _crops(tmp_path / "test", 8, 1)
    model = tmp_path / "model"
    grid = ["--grid-spacing", "1,1,1", "--grid-size", "24,24,24", "--grid-pad", "-1000"]
    r = runner.invoke(
        app, ["classify", "train", str(tmp_path / "train"), "-o", str(model), "--time-budget", "20s", *grid]
    )
    assert r.exit_code == 0, r.output
    info = json.loads((model / "model.json").read_text())
    assert info["grid"] == GRID and info["input_size"] == [24, 24, 24]
    out = tmp_path / "probs.csv"
    r = runner.invoke(app, ["classify", "predict", str(tmp_path / "test"), "-m", str(model), "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8
    # the two sizes differ only physically: the grid model tells them apart
    right = sum(row["predicted"] == row["label"] for row in rows)
    assert right >= 7, rows
    # arrays not on the grid are refused with what to give instead
    m = ClassifierModel(model)
    with pytest.raises(MedimgError, match="Give image files with their spacing"):
        m.predict_proba(np.zeros((1, 1, 30, 30, 30), np.float32))
    # grid options go together
    r = runner.invoke(
        app, ["classify", "train", str(tmp_path / "train"), "-o", str(tmp_path / "m2"), "--grid-size", "8,8,8"]
    )
    assert r.exit_code != 0 and "go together" in " ".join(r.output.split())
    assert not (tmp_path / "m2").exists()


def test_folder_on_grid_loads_mixed_shapes(tmp_path: Path) -> None:
    _crops(tmp_path / "d", 4, 2)
    with pytest.raises(MedimgError, match="resample"):
        load_folder(tmp_path / "d", tmp_path / "d" / "labels.csv")
    d = load_folder(tmp_path / "d", tmp_path / "d" / "labels.csv", grid=GRID)
    assert d.images.shape == (4, 1, 24, 24, 24)
