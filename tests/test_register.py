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


def _sitk_transform_from_folder(folder: Path, dim: int) -> object:
    """Build the transform from the files alone, as a user of plain SimpleITK would (transform.json's order:
    ITK's CompositeTransform applies the last added first, so the files are added in reverse)."""
    desc = json.loads((folder / "transform.json").read_text())
    comp = sitk.CompositeTransform(dim)
    for part in reversed(desc["order"]):
        if part["type"] == "linear":
            comp.AddTransform(sitk.ReadTransform(str(folder / part["file"])))
        else:
            fld = sitk.ReadImage(str(folder / part["file"]))
            comp.AddTransform(sitk.DisplacementFieldTransform(sitk.Cast(fld, sitk.sitkVectorFloat64)))
    return comp


def _sitk_one_hot(moving_labels: Path, fixed: Path, tx: object) -> np.ndarray:
    """One-hot linear label warping with SimpleITK only (each label's indicator resampled linearly, largest wins)."""
    mv, fx = sitk.ReadImage(str(moving_labels)), sitk.ReadImage(str(fixed))
    values = np.unique(sitk.GetArrayFromImage(mv))
    maps = [
        sitk.GetArrayFromImage(
            sitk.Resample(sitk.Cast(mv == int(v), sitk.sitkFloat32), fx, tx, sitk.sitkLinear, float(v == 0))
        )
        for v in values
    ]
    return values[np.argmax(np.stack(maps), axis=0)].T


def test_saved_field_is_an_itk_vector_field_that_simpleitk_applies_identically(tmp_path: Path) -> None:
    import nibabel as nib

    from medimg.register.api import write_outputs

    fixed, _ = _case("hippocampus_004")
    moving, mlab = _case("hippocampus_006")
    res = register(fixed, moving, "deformable", moving_labels=mlab, levels=(2, 1), iterations=(20, 10))
    write_outputs(res, fixed, tmp_path / "out")
    tdir = tmp_path / "out" / "transform"
    hdr = nib.load(tdir / "displacement.nii.gz").header
    assert int(hdr["intent_code"]) == 1007 and list(hdr["dim"][:6]) == [5, 36, 52, 38, 1, 3]
    assert hdr.get_data_dtype() == np.float32
    fld = sitk.ReadImage(str(tdir / "displacement.nii.gz"))
    assert fld.GetNumberOfComponentsPerPixel() == 3 and fld.GetPixelID() == sitk.sitkVectorFloat32
    tx = _sitk_transform_from_folder(tdir, 3)
    fixed_p, mlab_p = HIPPO / "imagesTr/hippocampus_004.nii.gz", HIPPO / "labelsTr/hippocampus_006.nii.gz"
    nn = sitk.Resample(sitk.ReadImage(str(mlab_p)), sitk.ReadImage(str(fixed_p)), tx, sitk.sitkNearestNeighbor, 0)
    warp_args = ["warp", str(mlab_p), "-t", str(tdir), "-r", str(fixed_p), "-o", str(tmp_path / "nn.nii.gz")]
    r = runner.invoke(app, [*warp_args, "--labels", "--interpolation", "nearest"])
    assert r.exit_code == 0, r.output
    ours_nn = medimg.read_labels(tmp_path / "nn.nii.gz").array
    assert np.mean(ours_nn == sitk.GetArrayFromImage(nn).T) >= 0.999
    ours = medimg.read_labels(tmp_path / "out" / "warped_labels.nii.gz").array
    assert np.mean(_sitk_one_hot(mlab_p, fixed_p, tx) == ours) >= 0.999
    # the field matters: the linear part alone disagrees with medimg's result
    lin_only = sitk.Resample(
        sitk.ReadImage(str(mlab_p)),
        sitk.ReadImage(str(fixed_p)),
        sitk.ReadTransform(str(tdir / "linear.tfm")),
        sitk.sitkNearestNeighbor,
        0,
    )
    assert np.mean(ours_nn == sitk.GetArrayFromImage(lin_only).T) < 0.995
    # fields written by earlier versions (a plain 4D float64 NIfTI) still load
    medimg.write(res.transform.field.with_array(res.transform.field.array.astype(np.float64)), tmp_path / "old.nii.gz")
    old = Transform(res.transform.linear, Transform.load(tmp_path / "old.nii.gz").field)
    np.testing.assert_array_equal(old.apply_labels(mlab, fixed, "nearest").array, ours_nn)


def test_ants_applies_the_saved_transform_in_the_documented_order(tmp_path: Path) -> None:
    ants = pytest.importorskip("ants")
    from medimg.register.api import write_outputs

    fixed, _ = _case("hippocampus_004")
    moving, mlab = _case("hippocampus_006")
    res = register(fixed, moving, "deformable", moving_labels=mlab, levels=(2, 1), iterations=(20, 10))
    write_outputs(res, fixed, tmp_path / "out")
    tdir = tmp_path / "out" / "transform"
    files = json.loads((tdir / "transform.json").read_text())["ants_transformlist"]
    assert files == ["displacement.nii.gz", "linear.tfm"]
    fx = ants.image_read(str(HIPPO / "imagesTr/hippocampus_004.nii.gz"))
    mv = ants.image_read(str(HIPPO / "labelsTr/hippocampus_006.nii.gz"))
    ours = medimg.read_labels(tmp_path / "out" / "warped_labels.nii.gz").array

    def agree(order: list[str]) -> float:
        out = ants.apply_transforms(
            fx,
            mv,
            transformlist=[str(tdir / f) for f in order],
            interpolator="genericLabel",
            whichtoinvert=[False] * len(order),
        )
        ants.image_write(out, str(tmp_path / "ants.nii.gz"))
        return float(np.mean(medimg.read_labels(tmp_path / "ants.nii.gz").array == ours))

    assert agree(files) >= 0.999
    assert agree(files[::-1]) < 0.995 and agree(["linear.tfm"]) < 0.995


def test_2d_register_then_warp_end_to_end(tmp_path: Path) -> None:
    fixed_p, moving_p = DATA / "CT_2D_head_fixed.mha", DATA / "CT_2D_head_moving.mha"
    r = runner.invoke(app, ["register", str(fixed_p), str(moving_p), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    tdir = tmp_path / "out" / "transform"
    field = medimg.read(tdir / "displacement.nii.gz")
    assert field.ndim == 2 and field.n_channels == 2 and field.array.dtype == np.float32
    r = runner.invoke(
        app, ["warp", str(moving_p), "-t", str(tdir), "-r", str(fixed_p), "-o", str(tmp_path / "w.nii.gz")]
    )
    assert r.exit_code == 0, r.output
    warped = medimg.read(tmp_path / "out" / "warped.nii.gz").array
    again = medimg.read(tmp_path / "w.nii.gz").array
    assert again.shape == (256, 256) and np.allclose(again, warped, atol=1e-2 * np.ptp(warped))
    # plain SimpleITK reads the 2D field as a 2D vector image and reproduces the warp
    fld = sitk.ReadImage(str(tdir / "displacement.nii.gz"))
    assert fld.GetDimension() == 2 and fld.GetNumberOfComponentsPerPixel() == 2
    out = sitk.Resample(
        sitk.Cast(sitk.ReadImage(str(moving_p)), sitk.sitkFloat32),
        sitk.ReadImage(str(fixed_p)),
        _sitk_transform_from_folder(tdir, 2),
        sitk.sitkLinear,
        float(np.min(medimg.read(moving_p).array)),
    )
    assert np.mean(np.abs(sitk.GetArrayFromImage(out).T - warped) <= 1e-3 * np.ptp(warped)) >= 0.999


def test_deformable_levels_are_reported_and_full_resolution_runs_them_all(tmp_path: Path) -> None:
    fixed, _ = _case("hippocampus_004")
    moving, _ = _case("hippocampus_006")
    _, rep = register_deformable(fixed, moving, None, iterations=(5, 5, 5), max_voxels=5000)
    assert rep["levels_run"] == [4] and [d["factor"] for d in rep["levels_skipped"]] == [2, 1]
    assert rep["field_grid"] == [9, 13, 10] and rep["full_resolution"] is False
    assert "max_voxels 5000" in rep["levels_note"] and "--full-resolution" in rep["levels_note"]
    _, rep = register_deformable(fixed, moving, None, iterations=(5, 5, 5), max_voxels=None)
    assert rep["levels_run"] == [4, 2, 1] and rep["levels_skipped"] == [] and rep["full_resolution"] is True
    args = [str(HIPPO / "imagesTr/hippocampus_004.nii.gz"), str(HIPPO / "imagesTr/hippocampus_006.nii.gz")]
    r = runner.invoke(app, ["register", *args, "-o", str(tmp_path / "a"), "--max-voxels", "5000"])
    assert r.exit_code == 0, r.output
    assert "levels run: 4" in r.output and "--full-resolution" in r.output
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["levels_run"] == [4]
    r = runner.invoke(app, ["register", *args, "-o", str(tmp_path / "b"), "--max-voxels", "5000", "--full-resolution"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert rep["levels_run"] == [4, 2, 1] and rep["full_resolution"] is True


def _assert_refused(tmp_path: Path, f: Path, m: Path, cases: tuple[tuple[list[str], str], ...]) -> None:
    """``medimg register F M -o OUT EXTRA`` exits 2 with ``msg`` and writes no OUT, for each ``(EXTRA, msg)``."""
    for extra, msg in cases:
        out = tmp_path / "r"
        r = runner.invoke(app, ["register", str(f), str(m), "-o", str(out), *extra])
        assert r.exit_code == 2 and msg in " ".join(r.output.split()) and not out.exists()


def test_linear_stage_choice(tmp_path: Path) -> None:
    """--linear none skips the linear stage (images already aligned); bad values and other methods are refused."""
    f, m = DATA / "CT_2D_head_fixed.mha", DATA / "CT_2D_head_moving.mha"
    res = register(medimg.read(f), medimg.read(m), "deformable", linear_kind="none", levels=(2,), iterations=(5,))
    assert res.report["linear"]["kind"] == "none" and res.warped.same_geometry(medimg.read(f))
    _assert_refused(
        tmp_path,
        f,
        m,
        (
            (["--linear", "similarity"], "--linear must be affine, rigid or none"),
            (["--method", "affine", "--linear", "none"], "--linear sets the linear stage"),
        ),
    )


def test_fast_preset_runs_one_coarse_level_and_still_improves_the_pair(tmp_path: Path) -> None:
    """--speed fast: one coarse deformable level chosen from the grid size, a shorter linear stage, still better
    than no registration and than the affine stage alone on a hippocampus pair; learned + fast and bad values
    refused before anything is written."""
    from medimg.register.deformable import fast_options
    from medimg.register.linear import fast_linear_options

    assert fast_options((216, 256, 10))["levels"] == (4,)  # 54 x 64 x 10 >= 4000 voxels
    assert fast_options((36, 52, 38))["levels"] == (2,)  # 4x would be 9 x 13 x 10 < 4000
    assert fast_options((35, 48, 32))["levels"] == (2,)  # 18 x 24 x 16
    assert fast_options((20, 20))["levels"] == (1,)
    assert fast_linear_options((216, 256, 10))["sampling"] < 0.05  # about 20 000 samples
    assert fast_linear_options((36, 52, 38))["sampling"] == 0.25
    fixed, flab = _case("hippocampus_004")
    moving, mlab = _case("hippocampus_006")
    fast = register(fixed, moving, "deformable", fixed_labels=flab, moving_labels=mlab, speed="fast")
    aff = register(fixed, moving, "affine", fixed_labels=flab, moving_labels=mlab, speed="fast")
    rep = fast.report
    assert rep["speed"] == "fast" and rep["levels_run"] == [2] and rep["deformable"]["iterations"] == [8]
    assert rep["linear"]["iterations"] <= 30 and rep["folding_percent"] < 0.1
    for k, v in rep["labels"].items():
        assert v["dice"] > v["dice_before"] + 0.05 and v["dice"] > aff.report["labels"][k]["dice"]
    medimg.image.check_same_geometry(fast.warped, fixed)
    f, m = HIPPO / "imagesTr/hippocampus_004.nii.gz", HIPPO / "imagesTr/hippocampus_006.nii.gz"
    _assert_refused(
        tmp_path,
        f,
        m,
        (
            (["--speed", "turbo"], "--speed must be default or fast"),
            (["--method", "learned", "--speed", "fast"], "--speed fast applies to rigid, affine and deformable"),
        ),
    )
    with pytest.raises(MedimgError, match="Unknown speed"):
        register(fixed, moving, speed="turbo")
