"""Self-configuring segmentation: dataset checks, planning, training steps, exact resume, prediction geometry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.image import Image
from medimg.seg import Predictor, Trainer, check_dataset, fingerprint, load_dataset, make_plan, make_split
from medimg.seg.dataset import export_nnunet
from medimg.seg.plan import preprocess_image
from medimg.seg.predict import export_torchscript, largest_component

from conftest import DATA, SHARED, needs_shared

torch = pytest.importorskip("torch")
runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    d = tmp_path / "Task04"
    shutil.copytree(DATA / "hippocampus", d)
    (d / "dataset.json").write_text(
        json.dumps(
            {
                "name": "hippo-tiny",
                "labels": {"0": "background", "1": "anterior", "2": "posterior"},
                "modality": {"0": "MRI"},
            }
        )
    )
    return d


def tiny_plan(ds_path: Path) -> dict:
    ds = load_dataset(ds_path)
    plan = make_plan(fingerprint(ds))
    plan["network"]["filters"] = [8, 16, 32, 32]
    plan["batch_size"] = 2
    plan["training"].update(iterations_per_epoch=2, precision="fp32", val_patches=2)
    return plan


def test_load_and_check_dataset(dataset: Path) -> None:
    ds = load_dataset(dataset)
    assert len(ds.cases) == 5 and ds.labels == {0: "background", 1: "anterior", 2: "posterior"}
    rows = check_dataset(ds)
    assert all(r["problems"] == [] for r in rows)
    r = runner.invoke(app, ["dataset", "check", str(dataset)])
    assert r.exit_code == 0 and "no problems" in r.output


def test_bad_datasets_are_reported(dataset: Path) -> None:
    (dataset / "labelsTr" / "hippocampus_003.nii.gz").unlink()
    lab = medimg.read_labels(dataset / "labelsTr" / "hippocampus_004.nii.gz")
    medimg.write(
        medimg.LabelMap(lab.array, (2.0, 1.0, 1.0), lab.origin, lab.direction),
        dataset / "labelsTr" / "hippocampus_004.nii.gz",
    )
    lab6 = medimg.read_labels(dataset / "labelsTr" / "hippocampus_006.nii.gz")
    arr = lab6.array.copy()
    arr[0, 0, 0] = 7
    medimg.write(lab6.with_array(arr), dataset / "labelsTr" / "hippocampus_006.nii.gz")
    rows = {r["case"]: r["problems"] for r in check_dataset(load_dataset(dataset))}
    assert rows["hippocampus_003"] == ["no label file"]
    assert any("spacing" in p for p in rows["hippocampus_004"])
    assert any("[7] not declared" in p for p in rows["hippocampus_006"])
    r = runner.invoke(app, ["dataset", "check", str(dataset)])
    assert r.exit_code == 1 and "3 case(s) with problems" in r.output
    with pytest.raises(MedimgError, match="imagesTr"):
        load_dataset(dataset / "imagesTr")


def test_plan_is_readable_and_consistent(dataset: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["plan", str(dataset), "-o", str(tmp_path / "plan.json")])
    assert r.exit_code == 0, r.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["target_spacing"] == [1.0, 1.0, 1.0] and not plan["resample"]
    total = np.prod(np.asarray(plan["network"]["strides"]), axis=0)
    assert all(p % t == 0 for p, t in zip(plan["patch_size"], total, strict=True))
    assert plan["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}


def _trainer(dataset: Path, out: Path, iterations: int) -> Trainer:
    ds = load_dataset(dataset)
    split = make_split([c.case_id for c in ds.cases], 0.2, 0)
    return Trainer(ds, tiny_plan(dataset), out, split, time_budget_s=3600, max_iterations=iterations)


def test_training_steps_lower_the_loss(dataset: Path, tmp_path: Path) -> None:
    tr = _trainer(dataset, tmp_path / "m", 12)
    res = tr.run()
    losses = [e["train_loss"] for e in res["log"]]
    assert res["iterations"] == 12 and len(losses) == 6
    assert np.mean(losses[-2:]) < np.mean(losses[:2])


def test_resume_after_kill_gives_identical_state(dataset: Path, tmp_path: Path) -> None:
    straight = _trainer(dataset, tmp_path / "a", 8)
    straight.run()

    class Killed(Exception):
        pass

    def kill(entry: dict) -> None:
        if entry["iteration"] == 4:
            raise Killed

    interrupted = _trainer(dataset, tmp_path / "b", 8)
    interrupted.on_epoch = kill
    with pytest.raises(Killed):
        interrupted.run()
    resumed = _trainer(dataset, tmp_path / "b", 8)
    resumed.run(resume=True)
    sa, sb = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert straight.rng.bit_generator.state == resumed.rng.bit_generator.state


def test_predict_restores_geometry_and_exports(dataset: Path, tmp_path: Path) -> None:
    tr = _trainer(dataset, tmp_path / "m", 4)
    tr.run()
    (tmp_path / "m" / "model.json").write_text(json.dumps({"name": "tiny", "precision": "fp32"}))
    pred = Predictor(tmp_path / "m")
    img = medimg.read(dataset / "imagesTr" / "hippocampus_001.nii.gz")
    from medimg.transforms import reorient

    odd = reorient(img, "PIL")
    odd.origin = (12.5, -3.25, 40.0)
    out = pred(odd)
    assert out.shape == odd.shape and out.spacing == odd.spacing and out.origin == odd.origin
    assert np.array_equal(out.direction, odd.direction)
    assert out.names == {1: "anterior", 2: "posterior"}
    ts = export_torchscript(tmp_path / "m", tmp_path / "m.ts")
    assert np.array_equal(Predictor(tmp_path / "m", torchscript=ts)(odd).array, out.array)


def test_predict_resampling_plan_restores_grid(dataset: Path, tmp_path: Path) -> None:
    plan = tiny_plan(dataset)
    plan.update(resample=True, target_spacing=[1.5, 1.5, 1.5])
    ds = load_dataset(dataset)
    tr = Trainer(ds, plan, tmp_path / "r", make_split([c.case_id for c in ds.cases], 0.2, 0), 3600, 2)
    tr.run()
    img = medimg.read(dataset / "imagesTr" / "hippocampus_003.nii.gz")
    out = Predictor(tmp_path / "r")(img)
    assert out.same_geometry(img, atol=0) and out.array.dtype == np.uint8


def test_resize_plan_trains_on_a_fixed_grid_and_predicts_on_the_input_grid(dataset: Path, tmp_path: Path) -> None:
    """``make_plan(fp, resize_to=...)``: every case resampled to one voxel grid over its own extent (ultrasound-style
    collections); the prediction still lands on the input's exact grid, whatever its geometry."""
    ds = load_dataset(dataset)
    plan = make_plan(fingerprint(ds), resize_to=[32, 32, 32])
    assert plan["resize_to"] == [32, 32, 32] and plan["patch_size"] == [32, 32, 32] and plan["resample"] is False
    plan["network"]["filters"] = [8, 16, 32, 32]
    plan["network"]["strides"] = plan["network"]["strides"][:4]
    plan["network"]["kernel_sizes"] = plan["network"]["kernel_sizes"][:4]
    plan["network"]["deep_supervision"] = 1
    plan["batch_size"] = 2
    plan["training"].update(iterations_per_epoch=2, precision="fp32", val_patches=2)
    img = medimg.read(dataset / "imagesTr" / "hippocampus_003.nii.gz")
    arr, grid = preprocess_image([img], plan)
    assert arr.shape == (1, 32, 32, 32)
    # the network grid covers the image's own extent: outer voxel edges coincide
    ext_in = np.asarray(img.spacing) * np.asarray(img.shape)
    assert np.allclose(np.asarray(grid.spacing) * 32, ext_in)
    assert np.allclose(grid.index_to_world([-0.5] * 3), img.index_to_world([-0.5] * 3))
    tr = Trainer(ds, plan, tmp_path / "z", make_split([c.case_id for c in ds.cases], 0.2, 0), 3600, 2)
    tr.run()
    from medimg.transforms import reorient

    odd = reorient(img, "PIL")
    odd.origin = (7.0, -2.0, 31.5)
    out = Predictor(tmp_path / "z")(odd)
    assert out.same_geometry(odd, atol=0)
    with pytest.raises(MedimgError, match="resize_to"):
        make_plan(fingerprint(ds), resize_to=[32, 32])


def test_resample_to_shape_keeps_extent_and_world_positions() -> None:
    from medimg.transforms.spatial import resample_to_shape

    rot = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    arr = np.zeros((40, 30, 12), np.float32)
    arr[25:29, 10:13, 4:7] = 100.0
    img = Image(arr, spacing=(0.5, 0.8, 2.5), origin=(10.0, -5.0, 3.0), direction=rot)
    out = resample_to_shape(img, (20, 24, 30))
    assert out.shape == (20, 24, 30)
    assert np.allclose(np.asarray(out.spacing) * np.asarray(out.shape), np.asarray(img.spacing) * np.asarray(img.shape))
    assert np.array_equal(out.direction, img.direction)

    # the bright block's centre of mass stays at the same world position
    def com(im: Image) -> np.ndarray:
        idx = np.argwhere(im.array > 50).mean(axis=0)
        return np.asarray(im.index_to_world(idx))

    assert np.allclose(com(out), com(img), atol=0.6)


def test_bspline_resampling_of_a_two_slice_crop_stays_finite() -> None:
    """ITK's cubic B-spline returns NaN along an axis with fewer than 4 samples; LIDC has 2-slice nodule crops, which
    were silently turned into garbage when cast back to int16. Such images are interpolated linearly instead."""
    from medimg.transforms.spatial import resample_to_spacing

    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 400, (44, 44, 2)).astype(np.int16)
    img = Image(arr, spacing=(0.78, 0.78, 2.5))
    out = resample_to_spacing(img, (0.7, 0.7, 1.25), "bspline")
    assert out.shape == (49, 49, 4) and out.array.dtype == np.int16
    assert arr.min() <= out.array.min() and out.array.max() <= arr.max()


def test_largest_component() -> None:
    a = np.zeros((10, 10), np.uint8)
    a[1:3, 1:3] = 1
    a[5:9, 5:9] = 1
    a[0, 9] = 2
    out = largest_component(a, [1])
    assert out[1, 1] == 0 and out[6, 6] == 1 and out[0, 9] == 2


def test_bad_model_folder(tmp_path: Path) -> None:
    with pytest.raises(MedimgError, match="not a medimg model folder"):
        Predictor(tmp_path)
    r = runner.invoke(
        app, ["segment", str(DATA / "breast1_image.nrrd"), "-o", str(tmp_path / "x.nii.gz"), "-m", "no-such-model"]
    )
    assert r.exit_code == 2 and "No segmentation model" in r.output


def test_bundled_model_segments_the_sample_offline(tmp_path: Path) -> None:
    from medimg.data import sample
    from medimg.metrics import segmentation_metrics

    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "hippocampus" in r.output
    img_path, lab_path = sample("hippocampus")
    out = tmp_path / "seg.seg.nrrd"
    r = runner.invoke(app, ["segment", str(img_path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "anterior" in r.output and "mL" in r.output
    seg = medimg.read(out)
    ref = medimg.read_labels(lab_path)
    assert seg.same_geometry(ref, atol=0)
    dice = segmentation_metrics(seg, ref, labels=[1, 2], metrics=("dice",))
    assert dice[1]["dice"] > 0.8 and dice[2]["dice"] > 0.8  # hippocampus_001 is a held-out case of the model


def test_predict_folder(tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(DATA / "hippocampus" / "imagesTr", src)
    r = runner.invoke(
        app, ["predict", "-m", "hippocampus", "-i", str(src), "-o", str(tmp_path / "out"), "--ext", ".nii.gz", "--tta"]
    )
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "out").iterdir())) == 5


def test_grouped_split_keeps_patients_together() -> None:
    ids = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 11) for f in (1, 2)]
    split = make_split(ids, 0.2, 0, group_pattern=r"patient\d+")
    val_patients = {i.split("_")[0] for i in split["val"]}
    train_patients = {i.split("_")[0] for i in split["train"]}
    assert len(val_patients) == 2 and not val_patients & train_patients and len(split["val"]) == 4


def test_hdf5_import_keeps_spacing_unknown(tmp_path: Path) -> None:
    import h5py

    from medimg.seg.dataset import import_hdf5

    src = tmp_path / "h5"
    src.mkdir()
    lab = medimg.read_labels(DATA / "hippocampus" / "labelsTr" / "hippocampus_003.nii.gz").array
    img = medimg.read(DATA / "hippocampus" / "imagesTr" / "hippocampus_003.nii.gz").array
    for name in ("patient001_frame01", "patient001_frame02"):
        with h5py.File(src / f"{name}.h5", "w") as f:
            f["image"] = img.T.astype(np.float32)  # stored (z, y, x) like the ACDC copy
            f["label"] = lab.T
    ds = import_hdf5(src, tmp_path / "ds", labels={1: "anterior", 2: "posterior"})
    assert len(ds.cases) == 2 and ds.labels[2] == "posterior"
    rows = check_dataset(ds)
    assert all(r["warnings"] == ["spacing unknown (1.0 assumed)"] and r["problems"] == [] for r in rows)
    assert fingerprint(ds)["spacing_known"] is False
    assert np.array_equal(medimg.read_labels(ds.cases[0].label).array, lab)


def test_predict_writes_probabilities(tmp_path: Path) -> None:
    from medimg.data import sample

    out = tmp_path / "seg.nii.gz"
    r = runner.invoke(
        app, ["predict", "-m", "hippocampus", "-i", str(sample("hippocampus")[0]), "-o", str(out), "--probabilities"]
    )
    assert r.exit_code == 0, r.output
    prob = medimg.read(tmp_path / "seg_probabilities.nii.gz")
    seg = medimg.read_labels(out)
    assert prob.n_channels == 3 and prob.same_geometry(seg, atol=1e-6)
    assert np.allclose(prob.array.sum(axis=-1), 1.0, atol=1e-4)
    assert np.array_equal(np.argmax(prob.array, axis=-1), seg.array)


# ---------------------------------------------------------------------------------------------------------------
# nnU-Net conventions: the ignore label, splits_final.json, export to an nnU-Net v2 raw dataset folder


def _paint_ignore(lab: np.ndarray, value: int = 3) -> np.ndarray:
    """Paint ``value`` over the first four z slices and over every other foreground voxel along x of the first
    half of the image (so that ignored voxels lie in background and in both classes)."""
    out = lab.copy()
    out[:, :, :4] = value
    half = out.shape[0] // 2
    fg = out[:half] > 0
    fg[::2] = False
    out[:half][fg] = value
    return out


@pytest.fixture
def ignore_dataset(tmp_path: Path) -> Path:
    """tests/data/hippocampus as an nnU-Net v2 dataset with an ignore label (3) painted into every label map."""
    d = tmp_path / "Dataset004_HippoIgnore"
    shutil.copytree(DATA / "hippocampus", d)
    for f in sorted((d / "labelsTr").iterdir()):
        lab = medimg.read_labels(f)
        medimg.write(lab.with_array(_paint_ignore(lab.array)), f)
    (d / "dataset.json").write_text(
        json.dumps(
            {
                "name": "hippo-ignore",
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3},
                "numTraining": 5,
                "file_ending": ".nii.gz",
            }
        )
    )
    return d


def test_ignore_label_is_not_a_class(ignore_dataset: Path) -> None:
    ds = load_dataset(ignore_dataset)
    assert ds.labels == {0: "background", 1: "anterior", 2: "posterior"} and ds.ignore_label == 3
    assert ds.n_classes == 3
    assert all(r["problems"] == [] for r in check_dataset(ds))  # 3 is declared (as ignore), not an unknown value
    fp = fingerprint(ds)
    assert set(fp["class_voxels"]) == {"1", "2"} and fp["ignore_label"] == 3
    plan = make_plan(fp)
    assert plan["labels"] == {"0": "background", "1": "anterior", "2": "posterior"} and plan["ignore_label"] == 3
    r = runner.invoke(app, ["dataset", "check", str(ignore_dataset)])
    assert r.exit_code == 0 and "ignore label 3" in " ".join(r.output.split())
    r = runner.invoke(app, ["plan", str(ignore_dataset), "-o", str(ignore_dataset / "plan.json")])
    assert r.exit_code == 0 and "ignore label 3" in " ".join(r.output.split())
    assert json.loads((ignore_dataset / "plan.json").read_text())["ignore_label"] == 3
    bad = json.loads((ignore_dataset / "dataset.json").read_text())
    bad["labels"] = {"background": 0, "ignore": 1, "anterior": 2}
    (ignore_dataset / "dataset.json").write_text(json.dumps(bad))
    with pytest.raises(MedimgError, match="highest label value"):
        load_dataset(ignore_dataset)


def test_loss_ignores_ignored_voxels(ignore_dataset: Path) -> None:
    plan = tiny_plan(ignore_dataset)
    ds = load_dataset(ignore_dataset)
    tr = Trainer(ds, plan, ignore_dataset / "m", make_split([c.case_id for c in ds.cases], 0.2, 0), 3600, 1)
    assert tr.n_classes == 3 and tr.ignore_label == 3
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 12, 10, 8), generator=gen)
    target[:, :4] = 3  # ignored voxels
    ignored = (target == 3).unsqueeze(1)
    for shape in ((2, 3, 12, 10, 8), (2, 2, 3, 12, 10, 8)):  # plain and deep-supervision outputs
        logits = torch.randn(shape, generator=gen, requires_grad=True)
        loss = tr.loss(logits, target)
        loss.backward()
        grad = logits.grad
        assert grad is not None and torch.isfinite(loss)
        mask = ignored if len(shape) == 5 else ignored.unsqueeze(1)
        assert float(grad.masked_select(mask.expand_as(grad)).abs().max()) == 0.0  # no gradient where ignored
        changed = logits.detach().clone()
        noise = torch.randn(shape, generator=gen) * 50
        changed = torch.where(mask, noise, changed)  # anything at all under the ignored voxels
        assert float(tr.loss(changed, target)) == float(loss)
        # ... and they are not merely counted as background
        as_background = tr.loss(logits.detach(), target.masked_fill(target == 3, 0))
        assert abs(float(as_background) - float(loss)) > 1e-3
    # pseudo-Dice: voxels under the ignore label are not counted
    img = torch.randn(2, 1, 40, 56, 40, generator=gen)
    lab = torch.full((2, 40, 56, 40), 3)
    assert np.isnan(tr.pseudo_dice([(img, lab)]))  # every voxel ignored: no foreground to score at all


def test_training_with_ignore_label(ignore_dataset: Path, tmp_path: Path) -> None:
    from medimg.seg import train_model

    ds = load_dataset(ignore_dataset)
    split = make_split([c.case_id for c in ds.cases], 0.2, 0)
    info = train_model(
        ds, tmp_path / "m", time_budget_s=3600, split=split, plan=tiny_plan(ignore_dataset), max_iterations=2
    )
    assert info["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}
    assert set(info["validation_dice"]) == {"1", "2"}
    val = json.loads((tmp_path / "m" / "validation.json").read_text())
    assert val["ignore_label"] == 3 and all(n > 0 for n in val["ignored_voxels"].values())
    pred = Predictor(tmp_path / "m")
    assert pred.n_classes == 3 and pred.names == {1: "anterior", 2: "posterior"}
    # the model folder records its training domain (even when trained from a given plan)
    assert (tmp_path / "m" / "domain.json").exists() and pred.domain is not None
    assert pred.domain.dims == 3 and pred.domain.spacing_min_mm == 1.0
    out = pred(medimg.read(ds.case(split["val"][0]).images[0]))
    assert set(np.unique(out.array)) <= {0, 1, 2}


def test_validation_metrics_exclude_ignored_voxels(tmp_path: Path) -> None:
    """The bundled model, told that 3 is the ignore label, validated on cases whose every disagreement with the
    prediction is painted 3: Dice must be exactly 1 (without the exclusion it is well below)."""
    from medimg.metrics import segmentation_metrics
    from medimg.seg import validate
    from medimg.seg.model import BUNDLED_DIR

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR / "hippocampus", model)
    plan = json.loads((model / "plan.json").read_text())
    plan["ignore_label"] = 3
    (model / "plan.json").write_text(json.dumps(plan))
    d = tmp_path / "ds"
    shutil.copytree(DATA / "hippocampus", d)
    pred = Predictor(model)
    pred.plan = {**pred.plan, "postprocessing": {"largest_component": []}}
    ids = ["hippocampus_003", "hippocampus_006"]
    unmasked = []
    for cid in ids:
        img = medimg.read(d / "imagesTr" / f"{cid}.nii.gz")
        ref = medimg.read_labels(d / "labelsTr" / f"{cid}.nii.gz")
        out = pred(img)
        wrong = out.array != ref.array
        assert wrong.any() and (ref.array[~wrong] > 0).any()
        painted = ref.with_array(np.where(wrong, 3, ref.array).astype(ref.array.dtype))
        unmasked.append(segmentation_metrics(out, painted, labels=[1, 2], metrics=("dice",)))
        medimg.write(painted, d / "labelsTr" / f"{cid}.nii.gz")
    (d / "dataset.json").write_text(
        json.dumps(
            {"labels": {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3}, "channel_names": {"0": "MRI"}}
        )
    )
    res = validate(model, load_dataset(d), ids)
    assert res["dice_without_postprocessing"] == {"1": 1.0, "2": 1.0}
    assert all(res["per_case"][cid][c]["dice"] == 1.0 for cid in ids for c in ("1", "2"))
    # what counting them would have given (false positives under the painted voxels)
    assert min(m[c]["dice"] for m in unmasked for c in (1, 2)) < 0.97


def test_size_mismatch_is_a_clear_error_and_leaves_no_model(dataset: Path, tmp_path: Path) -> None:
    for cid in ("hippocampus_004", "hippocampus_008"):
        f = dataset / "labelsTr" / f"{cid}.nii.gz"
        lab = medimg.read_labels(f)
        medimg.write(lab.with_array(np.ascontiguousarray(lab.array[:-3])), f)
    r = runner.invoke(app, ["plan", str(dataset), "-o", str(tmp_path / "plan.json")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    text = " ".join(r.output.split())
    assert "hippocampus_004" in text and "hippocampus_008" in text and f"medimg dataset check {dataset}" in text
    assert not (tmp_path / "plan.json").exists()
    out = tmp_path / "models" / "hippo"
    r = runner.invoke(app, ["train", str(dataset), "-o", str(out), "--time-budget", "5s"])
    assert r.exit_code == 2 and "hippocampus_004" in r.output and "dataset check" in " ".join(r.output.split())
    assert not (tmp_path / "models").exists()  # neither the model folder nor the parent this run created
    (tmp_path / "p.json").write_text(json.dumps(tiny_plan(DATA / "hippocampus")))
    r = runner.invoke(app, ["train", str(dataset), "-o", str(out), "--plan", str(tmp_path / "p.json")])
    assert r.exit_code == 2 and "hippocampus_008" in r.output and not (tmp_path / "models").exists()
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["train", str(dataset), "-o", str(out), "--time-budget", "5s"])
    assert r.exit_code == 2 and [p.name for p in out.iterdir()] == ["notes.txt"]  # only what this run made goes
    r = runner.invoke(app, ["dataset", "check", str(dataset)])  # and the suggested command names both cases
    assert r.exit_code == 1 and "hippocampus_004" in r.output and "hippocampus_008" in r.output


def test_rerun_with_larger_budget_continues_training(dataset: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(tiny_plan(dataset)))
    out = tmp_path / "m"

    def train(budget: str) -> tuple[str, dict]:
        r = runner.invoke(
            app, ["train", str(dataset), "-o", str(out), "--plan", str(plan_file), "--time-budget", budget]
        )
        assert r.exit_code == 0, r.output
        return " ".join(r.output.split()), json.loads((out / "model.json").read_text())

    _, first = train("3s")
    assert first["iterations"] >= 1  # time-limited: how many depends on the machine's load
    weights = (out / "model.pt").read_bytes()
    text, same = train("3s")
    assert "already trained to this budget" in text and same == first
    assert (out / "model.pt").read_bytes() == weights  # nothing retrained, nothing re-saved
    text, longer = train("8s")
    assert "continuing training from iteration" in text and "8 s budget" in text
    assert longer["iterations"] > first["iterations"] and longer["time_budget_s"] == 8.0
    assert longer["training_seconds"] > first["training_seconds"]
    if longer["iterations"] >= 2:  # one log row per epoch of 2 iterations, across both runs
        rows = (out / "training_log.csv").read_text().splitlines()
        assert len(rows) - 1 == longer["iterations"] // 2  # one log row per epoch of 2 iterations, across both runs
    text, _ = train("2s")
    assert "the 2 s budget is already spent" in text and "--no-resume" in text


def test_splits_final_json(dataset: Path, tmp_path: Path) -> None:
    from medimg.seg.train import load_split

    ids = [c.case_id for c in load_dataset(dataset).cases]
    folds = [{"train": ids[:3] + ids[4:], "val": [ids[3]]}, {"train": ids[1:], "val": [ids[0]]}]
    (dataset / "splits_final.json").write_text(json.dumps(folds))
    assert load_split(dataset / "splits_final.json", 1, ids) == folds[1]
    with pytest.raises(MedimgError, match=r"choose one with --fold 0\.\.1"):
        load_split(dataset / "splits_final.json", None, ids)
    with pytest.raises(MedimgError, match=r"--fold must be in 0\.\.1"):
        load_split(dataset / "splits_final.json", 5, ids)
    (tmp_path / "bad.json").write_text(json.dumps([{"train": ["nope"], "val": [ids[0]]}]))
    with pytest.raises(MedimgError, match="not labelled cases of the dataset: nope"):
        load_split(tmp_path / "bad.json", 0, ids)
    (tmp_path / "plan.json").write_text(json.dumps(tiny_plan(dataset)))
    r = runner.invoke(
        app,
        [
            "train",
            str(dataset),
            "-o",
            str(tmp_path / "m"),
            "--fold",
            "1",
            "--plan",
            str(tmp_path / "plan.json"),
            "--time-budget",
            "1s",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "fold 1 of" in " ".join(r.output.split())
    assert json.loads((tmp_path / "m" / "split.json").read_text()) == folds[1]
    r = runner.invoke(app, ["train", str(dataset), "-o", str(tmp_path / "m2"), "--split", str(tmp_path / "bad.json")])
    assert r.exit_code == 2 and "nope" in r.output and not (tmp_path / "m2").exists()


def _nnunet_check(folder: Path) -> dict:
    """The checks of nnU-Net v2's verify_dataset_integrity (nnunetv2 2.8.1), on an exported raw dataset folder:
    required dataset.json keys, numTraining, a label per case, consecutive labels with ignore as the highest,
    label values, channel count, image/label shape and spacing (read with SimpleITK, nnU-Net's reader for .nii.gz)."""
    import re

    import SimpleITK as sitk

    meta = json.loads((folder / "dataset.json").read_text())
    assert {"labels", "channel_names", "numTraining", "file_ending"} <= set(meta)
    fe = meta["file_ending"]
    files = sorted(p.name for p in (folder / "imagesTr").iterdir() if p.name.endswith(fe))
    ids = sorted({f[: -len(fe) - 5] for f in files})
    assert len(ids) == meta["numTraining"]
    labels = meta["labels"]
    assert labels["background"] == 0
    expected = sorted(v for k, v in labels.items() if k != "ignore")
    if "ignore" in labels:
        assert labels["ignore"] == max(expected) + 1
        expected.append(labels["ignore"])
    assert all(np.diff(expected) == 1) and expected[0] == 0
    for cid in ids:
        chans = [f for f in files if re.fullmatch(re.escape(cid) + r"_\d{4}" + re.escape(fe), f)]
        assert len(chans) == len(meta["channel_names"])
        seg = sitk.ReadImage(str(folder / "labelsTr" / f"{cid}{fe}"))
        arr = sitk.GetArrayFromImage(seg)
        assert np.issubdtype(arr.dtype, np.integer) and set(np.unique(arr).tolist()) <= set(expected)
        for ch in chans:
            im = sitk.ReadImage(str(folder / "imagesTr" / ch))
            assert im.GetSize() == seg.GetSize() and np.allclose(im.GetSpacing(), seg.GetSpacing())
            assert np.allclose(im.GetOrigin(), seg.GetOrigin()) and np.allclose(im.GetDirection(), seg.GetDirection())
            assert not np.isnan(sitk.GetArrayFromImage(im)).any()
    return meta


def test_export_nnunet(ignore_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "nnUNet_raw" / "Dataset004_HippoIgnore"
    out.parent.mkdir()
    r = runner.invoke(app, ["dataset", "export-nnunet", str(ignore_dataset), str(out)])
    assert r.exit_code == 0, r.output
    assert "nnUNetv2_plan_and_preprocess -d 4" in " ".join(r.output.split())
    meta = _nnunet_check(out)
    assert meta["labels"] == {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3}
    assert meta["channel_names"] == {"0": "MRI"} and meta["numTraining"] == 5
    assert sorted(p.name for p in (out / "imagesTr").iterdir())[0] == "hippocampus_001_0000.nii.gz"
    src = medimg.read_labels(ignore_dataset / "labelsTr" / "hippocampus_001.nii.gz")
    exported = medimg.read_labels(out / "labelsTr" / "hippocampus_001.nii.gz")
    assert np.array_equal(src.array, exported.array) and exported.same_geometry(src, atol=1e-6)
    back = load_dataset(out)  # medimg reads its own export, ignore label included
    assert back.ignore_label == 3 and len(back.cases) == 5
    r = runner.invoke(app, ["dataset", "export-nnunet", str(ignore_dataset), str(out)])
    assert r.exit_code == 2 and "not empty" in " ".join(r.output.split())


def test_export_nnunet_renumbers_and_refuses_broken_datasets(dataset: Path, tmp_path: Path) -> None:
    for f in (dataset / "labelsTr").iterdir():  # labels 0, 1, 5 (no dataset.json): nnU-Net needs 0, 1, 2
        lab = medimg.read_labels(f)
        medimg.write(lab.with_array(np.where(lab.array == 2, 5, lab.array).astype(np.uint8)), f)
    (dataset / "dataset.json").unlink()
    meta = export_nnunet(load_dataset(dataset), tmp_path / "Dataset005_X")
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_5": 2}
    assert meta["medimg_label_mapping"] == {"0": 0, "1": 1, "5": 2}
    _nnunet_check(tmp_path / "Dataset005_X")
    f = dataset / "labelsTr" / "hippocampus_004.nii.gz"
    lab = medimg.read_labels(f)
    medimg.write(lab.with_array(np.ascontiguousarray(lab.array[:-2])), f)
    with pytest.raises(MedimgError, match=r"hippocampus_004.*medimg dataset check"):
        export_nnunet(load_dataset(dataset), tmp_path / "Dataset006_Y")
    assert sorted(p.name for p in tmp_path.iterdir() if "Dataset006" in p.name) == []


@needs_shared
def test_export_nnunet_chaos_float_labels(tmp_path: Path) -> None:
    """CHAOS MR (nnU-Net-style, float64 label maps): exported labels are integer and nnU-Net's checks pass."""
    ds = load_dataset(SHARED / "chaos_mr")
    ds.cases = ds.cases[:3]
    meta = export_nnunet(ds, tmp_path / "Dataset010_CHAOS")
    assert meta["labels"] == {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    _nnunet_check(tmp_path / "Dataset010_CHAOS")
    assert ds.cases[0].label is not None
    src = medimg.read_labels(ds.cases[0].label)
    out = medimg.read_labels(tmp_path / "Dataset010_CHAOS" / "labelsTr" / f"{ds.cases[0].case_id}.nii.gz")
    assert out.array.dtype == np.uint8 and np.array_equal(out.array, src.array)


def test_ct_domain_takes_case_percentiles_from_the_fingerprint(dataset: Path) -> None:
    """The fingerprint's one pass over the data records each case's 1st/50th/99th percentile; a CT domain is built
    from them (no second read), an MR one ignores them."""
    from medimg.domain import ImageDomain, percentile_record

    ds = load_dataset(dataset)
    fp = fingerprint(ds)
    arrays = [medimg.read(c.images[0]).array for c in ds.cases if c.label is not None]
    assert ImageDomain.from_fingerprint(fp, "x", "CT").case_percentiles == percentile_record(arrays)
    assert ImageDomain.from_fingerprint(fp, "x", "MR").case_percentiles is None
