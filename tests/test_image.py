"""The Image / LabelMap types and the geometry conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medimg import Image, LabelMap
from medimg.errors import DimensionError, GeometryError, LabelError, NonFiniteError
from medimg.image import check_same_geometry, direction_from_code, lps_to_ras, orientation_code

from conftest import DATA, asymmetric_image


def test_index_world_round_trip() -> None:
    img = asymmetric_image()
    idx = np.array([[0, 0, 0], [1, 2, 3], [6.5, 8, 4]])
    world = img.index_to_world(idx)
    assert np.allclose(world[0], img.origin)
    assert np.allclose(img.world_to_index(world), idx)
    # world = origin + D @ (spacing * index)
    expected = np.asarray(img.origin) + img.direction @ (np.asarray(img.spacing) * idx[1])
    assert np.allclose(world[1], expected)


def test_orientation_codes() -> None:
    assert orientation_code(np.eye(3)) == "LPS"
    assert orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    for code in ("RAS", "LPI", "ASL", "IRP"):
        assert orientation_code(direction_from_code(code)) == code
    with pytest.raises(GeometryError):
        direction_from_code("RRS")


def test_lps_ras_is_an_involution() -> None:
    a = np.arange(16, dtype=float).reshape(4, 4)
    assert np.array_equal(lps_to_ras(lps_to_ras(a)), a)


def test_invalid_geometry_rejected() -> None:
    with pytest.raises(GeometryError):
        Image(np.zeros((2, 2, 2)), (1, 0, 1))
    with pytest.raises(GeometryError):
        Image(np.zeros((2, 2, 2)), (1, 1, 1), direction=[[1, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(DimensionError):
        Image(np.zeros((2, 2, 2, 2, 2)), (1, 1, 1))


def test_spacing_unknown_is_explicit() -> None:
    img = Image(np.zeros((4, 5)))
    assert img.spacing == (1.0, 1.0) and not img.spacing_known
    assert Image(np.zeros((4, 5)), (0.5, 0.5)).spacing_known


def test_channels() -> None:
    img = Image(np.zeros((4, 5, 3), np.uint8), (1.0, 1.0))
    assert img.ndim == 2 and img.n_channels == 3 and img.is_multichannel
    with pytest.raises(DimensionError):
        img.require(scalar=True)
    assert img.channel(1).shape == (4, 5)


def test_labelmap_validation_and_volumes() -> None:
    lab = LabelMap(np.array([[[0, 1], [2, 2]]]), (2.0, 1.0, 5.0), names={1: "a"})
    assert lab.labels == [1, 2]
    assert lab.voxel_counts() == {1: 1, 2: 2}
    assert lab.volumes_ml() == {1: pytest.approx(0.01), 2: pytest.approx(0.02)}
    assert lab.name_of(2) == "label_2"
    with pytest.raises(LabelError):
        LabelMap(np.array([[0.5, 1.0]]))
    with pytest.raises(LabelError):
        LabelMap(np.array([[-1, 1]]))


def test_nonfinite_detected() -> None:
    img = Image(np.array([[1.0, np.nan], [np.inf, 0]]))
    with pytest.raises(NonFiniteError, match="1 NaN, 1"):
        img.check_finite()


def test_geometry_mismatch_message_names_the_difference() -> None:
    a = asymmetric_image()
    b = Image(a.array, (0.75, 1.25, 3.5), a.origin, a.direction)
    with pytest.raises(GeometryError, match="spacing"):
        check_same_geometry(a, b)


# ---------------------------------------------------------------- figures written at a readable size


def test_overlay_figure_readable_with_legend() -> None:
    """The 35 x 51 hippocampus slice becomes a >= 512 px figure: labels upsampled with nearest neighbour (only
    the exact class colours and their blends appear), a legend swatch per class and a title line."""
    import medimg
    from medimg.data import sample
    from medimg.report import overlay_slice
    from medimg.report.overlay import MIN_PANEL_PX

    img_path, lab_path = sample("hippocampus")
    image = medimg.read(img_path)
    labels = medimg.read_labels(lab_path, names={1: "anterior", 2: "posterior"})
    labels.colors = {1: (255, 0, 0), 2: (0, 0, 255)}
    fig = overlay_slice(image, labels)
    assert min(fig.shape) >= MIN_PANEL_PX and fig.n_channels == 3 and not fig.spacing_known
    rgb = np.swapaxes(fig.array, 0, 1)  # rows, cols, 3
    for color in ((255, 0, 0), (0, 0, 255)):  # outlines and legend swatches in the exact colour
        assert np.all(rgb == color, axis=-1).sum() > 100
    assert (rgb[:30] < 100).all(axis=-1).sum() > 200  # dark title text on the white band above the panel
    # nearest-neighbour labels: no pixel mixes the two class colours (blue and red both high)
    assert not np.any((rgb[..., 0] > 150) & (rgb[..., 2] > 150) & (rgb[..., 1] < 60))


def test_explanation_figure_readable(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from medimg.classify import ClassifierModel, load_npz
    from medimg.classify.explain import explanation_figure

    model = ClassifierModel("pneumoniamnist")
    data = load_npz(DATA / "pneumoniamnist_subset.npz", "val", ["normal", "pneumonia"])
    res = explanation_figure(model, data.images[0], tmp_path / "e.png")
    png = np.asarray(PILImage.open(tmp_path / "e.png").convert("RGB"))
    assert png.shape[0] >= 512 and png.shape[1] >= 3 * 512 and res["size"] == [png.shape[1], png.shape[0]]
    assert (png[:30] < 100).all(axis=-1).sum() > 200  # title text
    bar = png[:, -60:]  # the colour bar's yellow end sits at the right edge
    assert np.any((bar[..., 0] > 240) & (bar[..., 1] > 220) & (bar[..., 2] < 120))
