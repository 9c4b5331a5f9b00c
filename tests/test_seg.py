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
from medimg.seg import Predictor, Trainer, check_dataset, fingerprint, load_dataset, make_plan, make_split
from medimg.seg.predict import export_torchscript, largest_component

from conftest import DATA

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
    assert r.exit_code == 2 and "No model" in r.output


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
