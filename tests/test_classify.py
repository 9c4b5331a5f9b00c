"""Classification: datasets and CSV errors, training steps, calibration, the bundled PneumoniaMNIST model, SSL
pre-training, probes, robustness corruptions and explanations — on real PneumoniaMNIST images
(tests/data/pneumoniamnist_subset.npz) and the hippocampus fixture."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medimg.classify import ClassificationData, ClassifierModel, DatasetError, load_folder, load_npz
from medimg.classify.calibrate import fit_temperature
from medimg.classify.data import drop_duplicates, from_segmentation, load_images
from medimg.classify.explain import explanation_figure, grad_cam, integrated_gradients
from medimg.classify.networks import Classifier, ResNetEncoder
from medimg.classify.probe import knn_probe, label_subset, linear_probe, probe_encoder
from medimg.classify.robustness import CORRUPTIONS, corrupt, robustness_table
from medimg.classify.ssl import pretrain
from medimg.classify.train import evaluate_probabilities, load_encoder, train_classifier
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.metrics.classification import expected_calibration_error

from conftest import DATA

torch = pytest.importorskip("torch")
runner = CliRunner()
NPZ = DATA / "pneumoniamnist_subset.npz"
CLASSES = ["normal", "pneumonia"]


@pytest.fixture(scope="module")
def train() -> ClassificationData:
    return load_npz(NPZ, "train", CLASSES)


@pytest.fixture(scope="module")
def val() -> ClassificationData:
    return load_npz(NPZ, "val", CLASSES)


@pytest.fixture(scope="module")
def bundled() -> ClassifierModel:
    return ClassifierModel("pneumoniamnist")


def test_load_npz(train: ClassificationData, val: ClassificationData) -> None:
    assert train.images.shape == (400, 1, 28, 28) and train.images.dtype == np.float32
    assert train.class_counts() == [120, 280] and val.class_counts() == [60, 140]
    assert train.dims == 2 and not train.multilabel
    with pytest.raises(DatasetError, match=r"no split 'test'.*splits: train, val"):
        load_npz(NPZ, "test")


def test_bad_npz(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a readable NPZ"):
        load_npz(bad)
    np.savez(bad, train_images=np.zeros((3, 8, 8)), train_labels=np.array([[0], [1.5], [1]]))
    with pytest.raises(DatasetError, match="row 1 is not a non-negative integer"):
        load_npz(bad)
    np.savez(bad, train_images=np.full((2, 8, 8), np.nan), train_labels=np.array([[0], [1]]))
    with pytest.raises(DatasetError, match="NaN"):
        load_npz(bad)


def _png_folder(tmp_path: Path, data: ClassificationData, n: int = 12) -> Path:
    folder = tmp_path / "pngs"
    folder.mkdir()
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for i in range(n):
            Image.fromarray(data.images[i, 0].astype(np.uint8)).save(folder / f"img{i}.png")
            w.writerow([f"img{i}.png", data.classes[int(data.labels[i])]])
    return folder


def test_folder_with_csv_matches_npz_orientation(tmp_path: Path, val: ClassificationData) -> None:
    folder = _png_folder(tmp_path, val)
    d = load_folder(folder, folder / "labels.csv")
    assert d.classes == CLASSES
    np.testing.assert_array_equal(d.images, val.images[:12])  # PNG pixels = NPZ rows/cols, no transposition
    np.testing.assert_array_equal(d.labels, val.labels[:12])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["img1.png", ""], "row 3: missing label"),
        (["nothere.png", "normal"], "row 3: image 'nothere.png' not found"),
        (["img0.png", "normal"], "row 3: image 'img0.png' is listed again .first on row 2"),
        (["img1.png", "normal", "x"], "row 3: 3 fields"),
    ],
)
def test_bad_csv_row_names_the_row(tmp_path: Path, val: ClassificationData, row: list[str], message: str) -> None:
    folder = _png_folder(tmp_path, val, 2)
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "label"], ["img0.png", "normal"], row])
    with pytest.raises(DatasetError, match=message):
        load_folder(folder, folder / "labels.csv")


def test_multilabel_csv_and_bad_value(tmp_path: Path, val: ClassificationData) -> None:
    folder = _png_folder(tmp_path, val, 3)
    (folder / "labels.csv").write_text("image,effusion,nodule\nimg0.png,1,0\nimg1.png,0,0\nimg2.png,1,1\n")
    d = load_folder(folder, folder / "labels.csv")
    assert d.multilabel and d.classes == ["effusion", "nodule"] and d.class_counts() == [2, 1]
    (folder / "labels.csv").write_text("image,effusion,nodule\nimg0.png,1,0\nimg1.png,yes,0\n")
    with pytest.raises(DatasetError, match="row 3: multi-label column 'effusion' must be 0 or 1"):
        load_folder(folder, folder / "labels.csv")


def test_duplicates_and_leakage_are_dropped(train: ClassificationData, val: ClassificationData) -> None:
    imgs = np.concatenate([train.images[:10], train.images[:2], val.images[:3]])
    labels = np.concatenate([train.labels[:10], train.labels[:2], val.labels[:3]])
    d = ClassificationData(imgs, labels, CLASSES)
    clean, rep = drop_duplicates(d, [val])
    assert rep == {
        "n_before": 15,
        "n_after": 10,
        "duplicates_dropped": 2,
        "conflicting_label_groups": 0,
        "leaked_into_held_out_dropped": 3,
    }
    np.testing.assert_array_equal(clean.images, train.images[:10])


def test_training_steps_lower_the_loss(train: ClassificationData) -> None:
    torch.manual_seed(0)
    net = Classifier(ResNetEncoder(2, 1, (8, 16, 32), (1, 1, 1)), 2)
    x = torch.from_numpy(train.images[:64])
    x = (x - x.mean()) / x.std()
    y = torch.as_tensor(train.labels[:64])
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_train_classifier_writes_a_working_model(
    tmp_path: Path, train: ClassificationData, val: ClassificationData
) -> None:
    info = train_classifier(train, tmp_path / "m", 20, config={"batch_size": 64, "precision": "fp32"})
    assert info["task"] == "classification" and info["steps"] > 10 and info["temperature"] > 0
    for f in ("model.pt", "model.json", "training_log.csv", "training_curve.svg"):
        assert (tmp_path / "m" / f).exists()
    m = ClassifierModel(tmp_path / "m")
    p = m.predict_proba(val.images)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-9)
    assert evaluate_probabilities(val.labels, p, False)["auroc"] > 0.85  # 20 s on 360 images


def test_bundled_model_runs_offline_and_is_accurate(bundled: ClassifierModel, val: ClassificationData) -> None:
    assert bundled.path.name == "pneumoniamnist" and bundled.classes == CLASSES
    p = bundled.predict_proba(val.images)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-9)
    m = evaluate_probabilities(val.labels, p, False)
    assert m["auroc"] > 0.97 and m["accuracy"] > 0.88
    # a single 2D image and a (n, h, w) stack are accepted; wrong shapes and NaNs are refused clearly
    np.testing.assert_allclose(bundled.predict_proba(val.images[0, 0]), p[:1], atol=1e-6)
    with pytest.raises(MedimgError, match="expects 2D images with 1 channel"):
        bundled.predict_proba(np.zeros((2, 3, 28, 28)))
    bad = val.images[:3].copy()
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(MedimgError, match=r"Image\(s\) \[1\] contain NaN"):
        bundled.predict_proba(bad)


def test_temperature_scaling_lowers_ece_on_held_out_half(bundled: ClassifierModel, val: ClassificationData) -> None:
    logits = bundled.logits(val.images)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(val))
    a, b = idx[:100], idx[100:]
    t = fit_temperature(logits[a], val.labels[a])
    p_raw = torch.softmax(torch.as_tensor(logits[b]), 1).numpy()
    p_cal = torch.softmax(torch.as_tensor(logits[b]) / t, 1).numpy()
    ece_raw = expected_calibration_error(val.labels[b], p_raw[:, 1])
    ece_cal = expected_calibration_error(val.labels[b], p_cal[:, 1])
    assert t > 1 and ece_cal < ece_raw
    np.testing.assert_array_equal(p_raw.argmax(1), p_cal.argmax(1))  # ranking and decisions unchanged


def test_cli_predict_bundled_writes_csv(tmp_path: Path) -> None:
    out = tmp_path / "probs.csv"
    r = runner.invoke(app, ["classify", "predict", "-m", "pneumoniamnist", str(NPZ), "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 200 and set(rows[0]) == {"id", "p_normal", "p_pneumonia", "predicted", "label"}
    assert all(abs(float(x["p_normal"]) + float(x["p_pneumonia"]) - 1) < 1e-5 for x in rows)
    acc = np.mean([x["predicted"] == x["label"] for x in rows])
    assert acc > 0.88
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "pneumoniamnist" in r.output and "AUROC" in r.output
    r = runner.invoke(app, ["classify", "predict", "-m", "hippocampus", str(NPZ), "-o", str(out)])
    assert r.exit_code == 2 and "not a classifier" in r.output


def test_cli_predict_png_folder_and_single_file(tmp_path: Path, val: ClassificationData) -> None:
    folder = _png_folder(tmp_path, val, 5)
    (folder / "labels.csv").unlink()
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["classify", "predict", "-m", "pneumoniamnist", str(folder), "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert [x["id"] for x in rows] == [f"img{i}.png" for i in range(5)] and "label" not in rows[0]
    d = load_images(folder / "img3.png")
    np.testing.assert_array_equal(d.images[0], val.images[3])


def test_explanations(bundled: ClassifierModel, val: ClassificationData, tmp_path: Path) -> None:
    img = val.images[int(np.nonzero(val.labels == 1)[0][0])]
    cam, cls = grad_cam(bundled, img)
    assert cam.shape == (28, 28) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    attr, cls2, gap = integrated_gradients(bundled, img, steps=128)
    logit_span = float(np.abs(bundled.logits(img[None])).max())
    assert cls2 == cls and attr.shape == (1, 28, 28) and gap < 0.02 * max(1.0, logit_span)
    res = explanation_figure(bundled, img, tmp_path / "e.png")
    png = np.asarray(Image.open(tmp_path / "e.png"))
    assert png.ndim == 3 and png.shape[1] > 2 * png.shape[0] and res["class"] in CLASSES
    r = runner.invoke(app, ["classify", "explain", str(NPZ), "-m", "pneumoniamnist", "--index", "999", "-o", "x.png"])
    assert r.exit_code == 2 and "outside the 200 image(s)" in r.output


def test_corruptions(val: ClassificationData, bundled: ClassifierModel) -> None:
    x = val.images[:20]
    for kind in CORRUPTIONS:
        diffs = [float(np.abs(corrupt(x, kind, s) - x).mean()) for s in (1, 3, 5)]
        assert diffs[0] > 0 and diffs[2] >= diffs[0], kind  # stronger severity, larger change
        y = corrupt(x, kind, 5)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255 and np.all(y == np.round(y))
    with pytest.raises(MedimgError, match="Unknown corruption"):
        corrupt(x, "fog", 1)
    rows = robustness_table(lambda x: bundled.predict_proba(x, force=True), val.images, val.labels, ["noise"], [1, 5])
    assert rows[0]["corruption"] == "none" and rows[2]["auroc"] < rows[0]["auroc"]


@pytest.mark.parametrize("method", ["simclr", "mae", "genesis"])
def test_pretrain_and_reuse_encoder(method: str, tmp_path: Path, train: ClassificationData) -> None:
    info = pretrain(train.images[:64], tmp_path / "enc", method, time_budget_s=3, batch_size=16)
    assert info["steps"] >= 3 and np.isfinite(info["final_loss"])
    cfg, state = load_encoder(tmp_path / "enc")
    enc = ResNetEncoder(**{k: cfg[k] for k in ("dims", "in_channels", "widths", "blocks", "stem_stride")})
    enc.load_state_dict(state)


def test_fine_tune_from_encoder_and_probe(tmp_path: Path, train: ClassificationData, val: ClassificationData) -> None:
    pretrain(train.images, tmp_path / "enc", "mae", time_budget_s=4, batch_size=64)
    info = train_classifier(
        train, tmp_path / "ft", 4, config={"batch_size": 64, "precision": "fp32"}, init_encoder=tmp_path / "enc"
    )
    assert info["encoder_init"] == str(tmp_path / "enc")
    rows = probe_encoder(ClassifierModel("pneumoniamnist").net.encoder, [28, 28], train, val, (0.1, 1.0), n_boot=50)
    lin = [r for r in rows if r["probe"] == "linear"]
    assert lin[0]["n_labels"] == 40 and lin[1]["n_labels"] == 400
    assert all(r["auroc"] > 0.9 and r["auroc_ci95"][0] <= r["auroc"] <= r["auroc_ci95"][1] for r in rows)


def test_probes_on_known_features() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 8)) + np.eye(3, 8)[y] * 3
    p, l2 = linear_probe(x[:200], y[:200], x[200:], 3)
    assert np.mean(p.argmax(1) == y[200:]) > 0.9 and l2 > 0
    q = knn_probe(x[:200], y[:200], x[200:], 3)
    np.testing.assert_allclose(q.sum(1), 1, rtol=1e-5)
    assert np.mean(q.argmax(1) == y[200:]) > 0.9
    d = ClassificationData(np.zeros((300, 1, 4, 4), np.float32), y, ["a", "b", "c"])
    sub = label_subset(d, 0.01)
    assert np.bincount(y[sub], minlength=3).min() >= 2


def test_structure_present_labels_from_segmentation(tmp_path: Path) -> None:
    from medimg.seg import load_dataset

    ds_dir = tmp_path / "hippo"
    shutil.copytree(DATA / "hippocampus", ds_dir)
    (ds_dir / "dataset.json").write_text(
        json.dumps({"name": "h", "labels": {"0": "background", "1": "anterior", "2": "posterior"}})
    )
    d = from_segmentation(load_dataset(ds_dir), (16, 24, 16))
    assert d.multilabel and d.classes == ["anterior", "posterior"] and d.images.shape == (5, 1, 16, 24, 16)
    assert np.all(d.labels == 1)
    info = train_classifier(d, tmp_path / "m3d", 3, val=d, config={"batch_size": 5, "precision": "fp32"})
    p = ClassifierModel(tmp_path / "m3d").predict_proba(d.images)
    assert info["dims"] == 3 and p.shape == (5, 2) and np.all((p >= 0) & (p <= 1))


def test_model_without_recorded_domain_gives_per_image_records(tmp_path: Path, val: ClassificationData) -> None:
    """A classifier folder from before domains were recorded: predictions run, and every image gets an
    unchecked domain record (not the previous call's records)."""
    import shutil

    from medimg.classify.predict import BUNDLED_DIR

    folder = tmp_path / "old"
    shutil.copytree(BUNDLED_DIR / "pneumoniamnist", folder)
    (folder / "domain.json").unlink()
    (folder / "domain.npz").unlink()
    m = ClassifierModel(folder)
    assert m.domain is None
    m.predict_proba(val.images[:3])
    assert len(m.last_domain) == 3 and not any(r["checked"] for r in m.last_domain)
