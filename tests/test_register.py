"""Registration: known affine and smooth deformations recovered, inverse round trips, world coordinates across
different grids, save/load, label fusion, CLI — on the hippocampus and CT_2D_head fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import DimensionError, MedimgError
from medimg.image import Image, LabelMap
from medimg.register import Transform, register_deformable, register_linear
from medimg.register.api import register
from medimg.register.fusion import majority_vote, staple, weighted_vote
from medimg.transforms import reorient

from conftest import DATA

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("torch")
runner = CliRunner()
HIPPO = DATA / "hippocampus"


def _case(cid: str) -> tuple[Image, LabelMap]:
    return (
        medimg.read(HIPPO / "imagesTr" / f"{cid}.nii.gz"),
        medimg.read_labels(HIPPO / "labelsTr" / f"{cid}.nii.gz"),
    )


def _interior_points(img: Image, margin: int = 8, step: int = 4) -> np.ndarray:
    axes = [np.arange(margin, s - margin, step) for s in img.shape[: img.ndim]]
    idx = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, img.ndim)
    return np.array([img.index_to_world(i) for i in idx])


def test_known_affine_is_recovered_to_subvoxel() -> None:
    fixed, _ = _case("hippocampus_001")
    known = sitk.AffineTransform(3)
    c, s = np.cos(np.radians(6)), np.sin(np.radians(6))
    known.SetMatrix((1.04 * c, -s, 0.0, s, 0.97 * c, 0.0, 0.0, 0.0, 1.02))
    known.SetTranslation((1.5, -2.0, 1.0))
    known.SetCenter(tuple(fixed.index_to_world(np.array(fixed.shape) / 2)))
    moving = Transform(known).apply(fixed, fixed, "bspline")  # moving(x) = fixed(known(x))
    found, rep = register_linear(fixed, moving, "affine", "ncc", iterations=300, sampling=1.0)
    pts = _interior_points(fixed)
    # found maps fixed -> moving points, i.e. approximately known^-1
    back = Transform(known).transform_points(found.transform_points(pts))
    err = np.linalg.norm(back - pts, axis=1)
    assert np.median(err) < 0.5 and rep["kind"] == "affine"


def _smooth_field(img: Image, amp: float = 2.0) -> Image:
    x, y, z = np.meshgrid(*[np.linspace(0, np.pi, s) for s in img.shape], indexing="ij")
    u = np.stack(
        [amp * np.sin(y) * np.sin(z), amp * 0.5 * np.sin(x) * np.sin(z), 0.5 * amp * np.sin(x) * np.sin(y)], -1
    )
    return Image(u, img.spacing, img.origin, img.direction)


def test_known_smooth_deformation_is_recovered() -> None:
    fixed, _ = _case("hippocampus_003")
    known = Transform(None, _smooth_field(fixed))
    moving = known.apply(fixed, fixed, "bspline")  # moving(x) = fixed(x + u(x))
    found, rep = register_deformable(fixed, moving, None, levels=(2, 1), iterations=(80, 60), smoothness=0.5)
    pts = _interior_points(fixed)
    comp = known.transform_points(found.transform_points(pts))  # should be ~identity
    err0 = np.linalg.norm(known.transform_points(pts) - pts, axis=1)
    err = np.linalg.norm(comp - pts, axis=1)
    assert np.median(err) < 0.5 * np.median(err0) and np.median(err) < 0.8
    assert rep["folding_percent"] == 0.0


def test_transform_then_inverse_returns_the_points_and_image() -> None:
    fixed, _ = _case("hippocampus_001")
    lin = sitk.Euler3DTransform((17.0, 25.0, 17.0), 0.05, -0.03, 0.08, (1.0, 2.0, -1.5))
    for t in (Transform(lin), Transform(None, _smooth_field(fixed, 1.5)), Transform(lin, _smooth_field(fixed, 1.5))):
        pts = _interior_points(fixed)
        back = t.inverse().transform_points(t.transform_points(pts))
        assert np.max(np.linalg.norm(back - pts, axis=1)) < 0.05
    t = Transform(lin)
    there = t.apply(fixed, fixed, "bspline")
    again = t.inverse().apply(there, fixed, "bspline")
    inner = (slice(8, -8),) * 3
    rel = np.abs(again.array[inner] - fixed.array[inner]).mean() / np.abs(fixed.array[inner]).mean()
    assert rel < 0.05


def test_world_coordinates_across_different_grids() -> None:
    fixed, labels = _case("hippocampus_001")
    other = reorient(fixed, "LPI")  # same physical image, different direction / origin / array order
    other = Image(other.array, (1.0, 1.0, 1.0), other.origin, other.direction)
    assert not np.allclose(other.direction, fixed.direction)
    same = Transform().apply(other, fixed, "nearest")
    np.testing.assert_array_equal(same.array, fixed.array)
    t, _ = register_linear(fixed, other, "rigid", "ncc", sampling=1.0)
    pts = _interior_points(fixed)
    assert np.median(np.linalg.norm(t.transform_points(pts) - pts, axis=1)) < 0.3
    res = register(fixed, other, "rigid", moving_labels=reorient(labels, "LPI"), fixed_labels=labels)
    assert all(v["dice"] > 0.95 for v in res.report["labels"].values())


def test_bad_pairs_give_clear_errors() -> None:
    fixed, _ = _case("hippocampus_001")
    flat = Image(np.zeros((30, 30), np.float32))
    with pytest.raises(DimensionError, match="3D and moving image 2D"):
        register_linear(fixed, flat)
    with pytest.raises(MedimgError, match="empty or constant"):
        register_deformable(fixed, fixed.with_array(np.zeros(fixed.shape, np.float32)))
    nan = fixed.with_array(np.where(np.arange(fixed.array.size).reshape(fixed.shape) == 5, np.nan, fixed.array))
    with pytest.raises(MedimgError, match="NaN"):
        register(fixed, nan)
    with pytest.raises(MedimgError, match="Unknown method"):
        register(fixed, fixed, "syn")


def test_save_load_roundtrip_and_itk_files(tmp_path: Path) -> None:
    fixed, _ = _case("hippocampus_001")
    t = Transform(sitk.Euler3DTransform((17.0, 25.0, 17.0), 0.05, 0.0, 0.1, (1.0, 0.0, 2.0)), _smooth_field(fixed))
    t.save(tmp_path / "tr")
    assert {p.name for p in (tmp_path / "tr").iterdir()} == {"linear.tfm", "displacement.nii.gz", "transform.json"}
    back = Transform.load(tmp_path / "tr")
    pts = _interior_points(fixed)
    np.testing.assert_allclose(back.transform_points(pts), t.transform_points(pts), atol=1e-4)
    lin_only = Transform.load(tmp_path / "tr" / "linear.tfm")  # an ITK file that ANTs / Slicer read too
    np.testing.assert_allclose(lin_only.transform_points(pts), Transform(t.linear).transform_points(pts), atol=1e-9)
    with pytest.raises(MedimgError, match=r"no transform\.json"):
        Transform.load(tmp_path)


def test_deformable_pair_improves_dice_and_writes_outputs(tmp_path: Path) -> None:
    fixed, flab = _case("hippocampus_004")
    moving, mlab = _case("hippocampus_006")
    r = runner.invoke(
        app,
        [
            "register",
            str(HIPPO / "imagesTr/hippocampus_004.nii.gz"),
            str(HIPPO / "imagesTr/hippocampus_006.nii.gz"),
            "-o",
            str(tmp_path / "out"),
            "--moving-labels",
            str(HIPPO / "labelsTr/hippocampus_006.nii.gz"),
            "--fixed-labels",
            str(HIPPO / "labelsTr/hippocampus_004.nii.gz"),
        ],
    )
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "warped.nii.gz",
        "warped_labels.nii.gz",
        "transform",
        "jacobian.nii.gz",
        "metrics.json",
        "checkerboard.png",
        "overlay.png",
    } <= names
    rep = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert rep["folding_percent"] < 0.1
    assert all(v["dice"] > v["dice_before"] + 0.05 and v["dice"] > 0.8 for v in rep["labels"].values())
    warped = medimg.read(tmp_path / "out" / "warped.nii.gz")
    medimg.image.check_same_geometry(warped, fixed)  # geometry of the fixed grid, exactly
    r = runner.invoke(
        app,
        [
            "warp",
            str(HIPPO / "labelsTr/hippocampus_006.nii.gz"),
            "-t",
            str(tmp_path / "out/transform"),
            "-r",
            str(HIPPO / "imagesTr/hippocampus_004.nii.gz"),
            "-o",
            str(tmp_path / "w.nii.gz"),
            "--labels",
        ],
    )
    assert r.exit_code == 0, r.output
    again = medimg.read_labels(tmp_path / "w.nii.gz")
    ref = medimg.read_labels(tmp_path / "out" / "warped_labels.nii.gz")
    assert np.mean(again.array == ref.array) > 0.999
    _ = (moving, mlab, flab)


def test_2d_pair_registers() -> None:
    fixed = medimg.read(DATA / "CT_2D_head_fixed.mha")
    moving = medimg.read(DATA / "CT_2D_head_moving.mha")
    res = register(fixed, moving, "deformable")

    def ncc(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    f = fixed.array.astype(np.float64)
    before = ncc(f, Transform().apply(moving, fixed).array)
    after = ncc(f, res.warped.array)
    assert after > before + 0.04 and res.report["folding_percent"] < 0.1 and res.jacobian is not None


def test_fusion_rules() -> None:
    a = np.zeros((6, 6, 4), np.uint8)
    a[1:4, 1:4] = 1
    b = a.copy()
    b[3, 3] = 0
    c = a.copy()
    c[4, 4] = 2
    labs = [LabelMap(x) for x in (a, b, c)]
    np.testing.assert_array_equal(majority_vote(labs).array, a)
    np.testing.assert_array_equal(staple(labs).array, a)
    img = Image(a.astype(np.float32))
    np.testing.assert_array_equal(weighted_vote(img, [img, img, img], labs).array, a)


def test_bundled_learned_network_registers_an_unseen_pair(tmp_path: Path) -> None:
    from medimg.register.learned import LearnedRegistration, register_learned, train_learned

    fixed, flab = _case("hippocampus_004")  # not among the network's training cases
    moving, mlab = _case("hippocampus_006")
    net = LearnedRegistration("hippocampus_flow")
    res = register(fixed, moving, "learned", fixed_labels=flab, moving_labels=mlab)
    labels = res.report["labels"]
    assert np.mean([v["dice"] for v in labels.values()]) > np.mean([v["dice_before"] for v in labels.values()]) + 0.1
    assert res.report["folding_percent"] < 0.1
    refined, rep = register_learned(fixed, moving, net, refine=True)
    assert rep["refined"] and rep["folding_percent"] < 0.1 and refined.field is not None
    # a few training steps write a loadable model
    info = train_learned([fixed, moving, _case("hippocampus_008")[0]], tmp_path / "flow", 2.0, size=(40, 56, 40))
    assert info["steps"] >= 1 and LearnedRegistration(tmp_path / "flow").info["grid"] == [40, 56, 40]
    with pytest.raises(MedimgError, match="not a learned-registration model"):
        LearnedRegistration(tmp_path)


def test_atlas_segmentation_fuses_propagated_labels() -> None:
    from medimg.register.fusion import atlas_segmentation

    target, tlab = _case("hippocampus_004")
    atlases = [_case(c) for c in ("hippocampus_001", "hippocampus_006", "hippocampus_008")]
    fused, warped = atlas_segmentation(target, atlases, lambda f, m: register_linear(f, m, "affine")[0], "majority")
    medimg.image.check_same_geometry(fused, target)
    assert len(warped) == 3
    from medimg.metrics import segmentation_metrics

    d = segmentation_metrics(fused, tlab, labels=[1, 2], metrics=("dice",))
    assert all(d[k]["dice"] > 0.6 for k in (1, 2))
    with pytest.raises(MedimgError, match="Unknown fusion"):
        atlas_segmentation(target, atlases, lambda f, m: Transform(), "vote")
