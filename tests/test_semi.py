"""Semi-supervised training (`medimg train --unlabeled DIR --method mean-teacher`) on real hippocampus cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.seg import load_dataset, train_model
from medimg.seg.plan import fingerprint, make_plan

from conftest import DATA

HIPPO = DATA / "hippocampus"
CT = Path(medimg.__file__).parent / "data" / "samples" / "ct_small_image.nii.gz"
runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    """3 labelled cases and 2 unlabelled images (the other two cases' images, labels left out)."""
    ds, u = tmp_path / "ds", tmp_path / "unlabelled"
    for sub in ("imagesTr", "labelsTr"):
        (ds / sub).mkdir(parents=True)
    u.mkdir()
    for c in ("001", "003", "004"):
        for sub in ("imagesTr", "labelsTr"):
            shutil.copy(HIPPO / sub / f"hippocampus_{c}.nii.gz", ds / sub)
    for c in ("006", "008"):
        shutil.copy(HIPPO / "imagesTr" / f"hippocampus_{c}.nii.gz", u)
    return ds, u


def _tiny_plan(ds_dir: Path) -> dict:
    plan = make_plan(fingerprint(load_dataset(ds_dir)))
    plan["network"]["filters"] = [4, 8, 16, 32][: len(plan["network"]["filters"])]
    plan["training"]["iterations_per_epoch"] = 2
    plan["training"]["precision"] = "fp32"
    return plan


def test_mean_teacher_trains_and_saves_the_teacher(tmp_path: Path, data: tuple[Path, Path]) -> None:
    import torch

    ds_dir, u = data
    out = tmp_path / "m"
    info = train_model(
        load_dataset(ds_dir),
        out,
        time_budget_s=600,
        split={"train": ["hippocampus_001", "hippocampus_003"], "val": ["hippocampus_004"]},
        plan=_tiny_plan(ds_dir),
        max_iterations=4,
        unlabeled=u,
        method="mean-teacher",
    )
    assert info["semi_supervised"]["method"] == "mean-teacher" and info["semi_supervised"]["n_unlabeled"] == 2
    assert info["iterations"] == 4
    assert len(list((out / "preprocessed_unlabeled").glob("*.npy"))) == 2
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    saved = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v.float()) for k, v in ck["teacher"].items())  # model.pt is the teacher
    assert any(not torch.equal(ck["teacher"][k], v) for k, v in ck["net"].items())  # the EMA differs from the student
    img = HIPPO / "imagesTr" / "hippocampus_006.nii.gz"
    from medimg.seg.predict import Predictor

    pred = Predictor(out)([medimg.read(img)])
    src = medimg.read(img)
    assert pred.shape == src.shape and np.allclose(pred.spacing, src.spacing) and np.allclose(pred.origin, src.origin)


def test_consistency_weight_ramps_up_to_its_maximum(tmp_path: Path, data: tuple[Path, Path]) -> None:
    from medimg.seg.semi import MeanTeacherTrainer, unlabeled_images

    ds_dir, u = data
    tr = MeanTeacherTrainer(
        load_dataset(ds_dir),
        _tiny_plan(ds_dir),
        tmp_path / "m",
        {"train": ["hippocampus_001"], "val": ["hippocampus_003"]},
        60.0,
        unlabeled=unlabeled_images(u, 1),
    )
    tr.total_iterations = 100
    w = []
    for it in (0, 5, 10, 20, 50):
        tr.iteration = it
        w.append(tr.consistency_weight())
    assert w == sorted(w) and w[0] < 0.01 * tr.consistency and w[3] == w[4] == pytest.approx(tr.consistency)


def test_unlabelled_images_outside_the_domain_are_refused(tmp_path: Path, data: tuple[Path, Path]) -> None:
    ds_dir, u = data
    shutil.copy(CT, u / "ct.nii.gz")
    out = tmp_path / "m"
    with pytest.raises(MedimgError, match="outside the labelled data's domain") as e:
        train_model(
            load_dataset(ds_dir),
            out,
            time_budget_s=60,
            split={"train": ["hippocampus_001", "hippocampus_003"], "val": ["hippocampus_004"]},
            plan=_tiny_plan(ds_dir),
            max_iterations=2,
            unlabeled=u,
        )
    assert "ct.nii.gz" in str(e.value) and "--unlabeled" in str(e.value)
    assert not out.exists()  # nothing half-made is left


def test_bad_semi_supervised_input_is_refused(tmp_path: Path, data: tuple[Path, Path]) -> None:
    ds_dir, u = data
    out = tmp_path / "m"
    empty = tmp_path / "empty"
    empty.mkdir()
    for extra, msg in (
        (["--unlabeled", str(tmp_path / "nope")], "does not exist"),
        (["--unlabeled", str(empty)], "No image"),
        (["--unlabeled", str(u), "--method", "cps"], "mean-teacher, self-training, copy-paste"),
        (["--method", "self-training"], "or a sparse dataset"),
        (["--unlabeled", str(u), "--devices", "2"], "drop --devices"),
    ):
        r = runner.invoke(app, ["train", str(ds_dir), "-o", str(out), *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert msg in " ".join(r.output.split()), (extra, r.output)
        assert not out.exists()
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "--unlabeled" in r.output and "--method" in r.output


@pytest.mark.parametrize("method", ["self-training", "copy-paste"])
def test_pseudo_label_methods_train_on_confident_predictions(
    tmp_path: Path, data: tuple[Path, Path], method: str
) -> None:
    from medimg.seg.semi import PseudoLabelTrainer, unlabeled_images

    ds_dir, u = data
    plan = _tiny_plan(ds_dir)
    tr = PseudoLabelTrainer(
        load_dataset(ds_dir),
        plan,
        tmp_path / "m",
        {"train": ["hippocampus_001", "hippocampus_003"], "val": ["hippocampus_004"]},
        600.0,
        max_iterations=10,
        unlabeled=unlabeled_images(u, 1),
        copy_paste=method == "copy-paste",
    )
    tr.confidence = 0.0  # an untrained net: keep every prediction so the patches hold labels
    res = tr.run(resume=False)
    assert res["iterations"] == 10
    # pseudo-labels at 40 % and again at 70 % of the 10 iterations
    assert [r["iteration"] for r in res["pseudo_label_rounds"]] == [4, 7]
    assert tr.pseudo is not None and len(tr.pseudo.images) == 2
    for uid, lab in tr.pseudo.labels.items():
        assert lab.shape == tr.pseudo.images[uid].shape[1:]
        assert set(np.unique(lab)) <= {0, 1, 2}
    # training batches now hold pseudo-labelled (or mixed) patches; validation batches stay labelled
    from medimg.seg.train import prepare_cache

    cache = prepare_cache(tr.ds, plan, tmp_path / "m" / "preprocessed", ["hippocampus_001", "hippocampus_003"])
    img, lab = tr.sample_batch(cache, tr.split["train"], 4, 0.5)
    assert img.shape[0] == lab.shape[0] == 4 and tuple(img.shape[2:]) == tuple(plan["patch_size"])
    mixed = tr._mix(
        (np.zeros((1, *tr.patch), np.float32), np.zeros(tr.patch, np.int16)),
        (np.ones((1, *tr.patch), np.float32), np.ones(tr.patch, np.int16)),
        inward=True,
    )
    frac = float((mixed[1] == 0).mean())
    assert frac == pytest.approx(np.prod([round(p * 2 / 3) for p in tr.patch]) / np.prod(tr.patch))
    assert np.array_equal(mixed[0][0] == 0, mixed[1] == 0)  # image and label pasted alike


def test_self_training_fills_the_ignored_voxels_of_a_sparse_dataset(tmp_path: Path, data: tuple[Path, Path]) -> None:
    import json

    ds_dir, _ = data
    from medimg.image import LabelMap

    for p in (ds_dir / "labelsTr").glob("*.nii.gz"):  # keep the middle third of axis 1 annotated, the rest ignored
        lab = medimg.read_labels(p)
        arr = np.full(lab.shape, 3, np.uint8)
        n = lab.shape[1]
        arr[:, n // 3 : 2 * n // 3] = lab.array[:, n // 3 : 2 * n // 3]
        medimg.write(LabelMap(arr, lab.spacing, lab.origin, lab.direction), p)
    (ds_dir / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3},
                "file_ending": ".nii.gz",
                "numTraining": 3,
            }
        )
    )
    out = tmp_path / "m"
    info = train_model(
        load_dataset(ds_dir),
        out,
        time_budget_s=600,
        split={"train": ["hippocampus_001", "hippocampus_003"], "val": ["hippocampus_004"]},
        plan=_tiny_plan(ds_dir),
        max_iterations=6,
        method="self-training",
    )
    semi = info["semi_supervised"]
    assert semi["method"] == "self-training" and semi["n_unlabeled"] == 0 and semi["unlabeled"] is None
    assert [r["iteration"] for r in semi["pseudo_label_rounds"]] == [3, 5]  # 40 % and 70 % of 6 (rounded up)
    r = runner.invoke(app, ["train", str(ds_dir), "-o", str(tmp_path / "m2"), "--method", "mean-teacher"])
    assert r.exit_code == 2 and "needs --unlabeled" in " ".join(r.output.split())
    assert not (tmp_path / "m2").exists()


def test_copy_paste_is_the_default_with_unlabeled_images(tmp_path: Path, data: tuple[Path, Path]) -> None:
    ds_dir, u = data
    info = train_model(
        load_dataset(ds_dir),
        tmp_path / "m",
        time_budget_s=600,
        split={"train": ["hippocampus_001", "hippocampus_003"], "val": ["hippocampus_004"]},
        plan=_tiny_plan(ds_dir),
        max_iterations=3,
        unlabeled=u,
    )
    semi = info["semi_supervised"]
    assert semi["method"] == "copy-paste" and semi["n_unlabeled"] == 2
    assert [r["iteration"] for r in semi["pseudo_label_rounds"]] == [2]  # 40 % and 70 % of 3 both fall due at 2
