"""Diffusion generators (medimg.generate, `medimg generate`): the bundled PneumoniaMNIST generator's samples are
classified as the class asked for, training writes a working model folder, mask-conditioned outputs keep the
mask's geometry and form a segmentation dataset, and bad requests fail before anything is written."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import medimg
from medimg.classify import ClassifierModel, load_npz
from medimg.classify.data import load_folder
from medimg.cli import app
from medimg.generate import GeneratorError, load_class_data, load_generator, load_mask_data, sample, train_generator
from medimg.generate.diffusion import alpha_bar, ddim_sample
from medimg.generate.unet import DiffusionUNet
from medimg.image import Image, LabelMap
from medimg.ops import Context, run

DATA = Path(__file__).parent / "data"
NPZ = DATA / "pneumoniamnist_subset.npz"
HIPPO = DATA / "hippocampus"
runner = CliRunner()


def _text(r: object) -> str:
    """The command's output with the console's line wrapping undone."""
    return " ".join(r.output.split())  # type: ignore[attr-defined]


def test_schedule_and_network_shapes() -> None:
    t = torch.linspace(0, 1, 11)
    ab = alpha_bar(t)
    assert ab[0] > 0.9999 and ab[-1] < 1e-4 and bool(torch.all(ab[1:] < ab[:-1]))
    net = DiffusionUNet(1, (8, 16), n_classes=2, cond_channels=3, blocks=1)
    x = torch.randn(2, 1, 12, 16)
    out = net(x, torch.rand(2), torch.tensor([0, 2]), torch.zeros(2, 3, 12, 16))
    assert out.shape == x.shape
    # a fresh network predicts v = 0 (zero-initialised output): DDIM then returns its clipped x0 = sqrt(ab) x_t
    g = torch.Generator().manual_seed(0)
    img = ddim_sample(net, (2, 1, 12, 16), torch.tensor([0, 1]), None, steps=3, guidance=2.0, generator=g)
    assert img.shape == (2, 1, 12, 16) and float(img.abs().max()) <= 1.0


@pytest.fixture(scope="module")
def bundled_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "samples"
    r = runner.invoke(
        app,
        ["generate", "-m", "pneumoniamnist", "--class", "normal", "--class", "pneumonia", "-n", "40", "-o", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "40 images (20 normal, 20 pneumonia)" in _text(r)
    return out


def test_bundled_generator_samples_are_classified_as_requested(bundled_samples: Path) -> None:
    data = load_folder(bundled_samples, bundled_samples / "labels.csv")
    assert data.images.shape == (40, 1, 28, 28) and data.classes == ["normal", "pneumonia"]
    p = ClassifierModel("pneumoniamnist").predict_proba(data.images, force=True)
    acc = float((p.argmax(1) == data.labels).mean())
    # benchmarks/generate_pneumoniamnist.py measures this on 1000 samples; 40 samples give a noisier figure
    assert acc >= 0.75, acc
    real = load_npz(NPZ, "train")
    # the samples look like the data: mean brightness and contrast near the real images'
    assert abs(data.images.mean() - real.images.mean()) < 25
    assert 0.5 < data.images.std() / real.images.std() < 1.5
    # different seeds give different images; the same seed the same
    assert len({a.tobytes() for a in data.images}) == 40


def test_same_seed_same_images() -> None:
    net, info = load_generator("pneumoniamnist")
    a = sample(net, info, 3, 1, steps=5, seed=7)
    b = sample(net, info, 3, 1, steps=5, seed=7)
    c = sample(net, info, 3, 1, steps=5, seed=8)
    assert a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_train_class_conditional_writes_a_working_model(tmp_path: Path) -> None:
    data = load_class_data(NPZ, "train")
    info = train_generator(data, tmp_path / "m", time_budget_s=60, max_steps=40, widths=(8, 16), batch_size=16)
    assert info["training"]["steps"] == 40 and info["names"] == data.names
    header = next(csv.reader((tmp_path / "m" / "training_log.csv").open()))
    assert header == ["step", "seconds", "lr", "loss"]
    net, info2 = load_generator(tmp_path / "m")
    imgs = sample(net, info2, 4, [0, 1, 0, 1], steps=4)
    assert imgs.shape == (4, 1, 28, 28) and imgs.dtype == np.uint8


def test_generate_train_operation_and_cli_refusals(tmp_path: Path) -> None:
    out = tmp_path / "model"
    r = runner.invoke(
        app,
        ["generate", "train", str(NPZ), "-o", str(out), "--max-steps", "30", "--batch-size", "8", "--json"],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["mode"] == "class" and res["steps"] == 30 and res["names"] == ["0", "1"]
    assert (out / "model.json").exists() and (out / "model.pt").exists()
    # an existing model folder is never overwritten
    r = runner.invoke(app, ["generate", "train", str(NPZ), "-o", str(out), "--max-steps", "5"])
    assert r.exit_code == 2 and "already exists" in _text(r)
    # unknown class: the error lists the model's classes
    r = runner.invoke(app, ["generate", "-m", str(out), "--class", "tumour", "-n", "2", "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "0, 1" in _text(r) and not (tmp_path / "s").exists()
    # no class given; a mask given to a class model
    r = runner.invoke(app, ["generate", "-m", str(out), "-n", "2", "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "--class" in _text(r)
    r = runner.invoke(app, ["generate", "-m", str(out), "--mask", str(NPZ), "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "class-conditional" in _text(r) and not (tmp_path / "s").exists()
    # a classifier is not a generator: the error says which command takes it
    r = runner.invoke(app, ["generate", "-m", "pneumoniamnist_missing", "--class", "0", "-o", str(tmp_path / "s")])
    assert r.exit_code == 2 and "generate train" in _text(r)


def _slice_dataset(root: Path) -> Path:
    """A 2D segmentation dataset of middle slices of the hippocampus fixture (real MR, labels 1 and 2), padded to
    one size, as NIfTI with a non-trivial geometry."""
    ds = root / "slices"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    for f in sorted((HIPPO / "labelsTr").iterdir()):
        case = f.name.replace(".nii.gz", "")
        img = medimg.read(HIPPO / "imagesTr" / f.name)
        lab = medimg.read_labels(f)
        z = int(np.argmax((np.asarray(lab.array) > 0).sum(axis=(0, 1))))
        for dz in (-1, 0, 1):
            a = np.zeros((40, 56), np.float32)
            m = np.zeros((40, 56), np.uint8)
            sa = np.asarray(img.array)[:40, :56, z + dz]
            a[: sa.shape[0], : sa.shape[1]] = sa
            m[: sa.shape[0], : sa.shape[1]] = np.asarray(lab.array)[:40, :56, z + dz]
            geo = dict(spacing=(1.0, 1.0), origin=(3.0, -7.0), direction=np.eye(2))
            medimg.write(Image(a, **geo), ds / "imagesTr" / f"{case}z{dz + 1}_0000.nii.gz")
            medimg.write(LabelMap(m, **geo), ds / "labelsTr" / f"{case}z{dz + 1}.nii.gz")
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MR"},
                "labels": {"background": 0, "anterior": 1, "posterior": 2},
                "file_ending": ".nii.gz",
            }
        )
    )
    return ds


def test_mask_conditioned_model_keeps_geometry_and_writes_a_dataset(tmp_path: Path) -> None:
    from medimg.seg.dataset import load_dataset

    ds = _slice_dataset(tmp_path)
    data = load_mask_data(ds)
    assert data.images.shape == (15, 1, 56, 40) and data.names == ["background", "anterior", "posterior"]
    r = run(
        "generate_train",
        {
            "data": str(ds),
            "output": str(tmp_path / "m"),
            "max_steps": 20,
            "widths": [8, 16],
            "batch_size": 8,
            "size": [28, 20],
        },
    )
    assert r.mode == "mask" and r.size == [28, 20]
    # a mask on an oblique, anisotropic grid of another size
    lab = medimg.read_labels(ds / "labelsTr" / "hippocampus_001z1.nii.gz")
    c, s_ = np.cos(0.3), np.sin(0.3)
    odd = LabelMap(
        np.asarray(lab.array)[:37],
        spacing=(0.8, 1.7),
        origin=(12.5, -40.0),
        direction=np.array([[c, -s_], [s_, c]]),
        names={1: "anterior", 2: "posterior"},
    )
    medimg.write(odd, tmp_path / "odd_mask.nii.gz")
    events: list[dict] = []
    res = run(
        "generate",
        {
            "model": str(tmp_path / "m"),
            "output": str(tmp_path / "pairs"),
            "mask": str(tmp_path / "odd_mask.nii.gz"),
            "n": 2,
            "steps": 3,
        },
        Context(on_event=events.append),
    )
    assert res.n_images == 2 and res.mode == "mask" and events[-1] == {"masks": 1, "of": 1}
    out = load_dataset(tmp_path / "pairs")
    assert len(out.cases) == 2 and out.labels[2] == "posterior"
    for case in out.cases:
        g, m = medimg.read(case.images[0]), medimg.read_labels(case.label)
        assert g.shape == odd.shape and np.array_equal(np.asarray(m.array), np.asarray(odd.array))
        for im in (g, m):
            np.testing.assert_allclose(im.spacing, odd.spacing)
            np.testing.assert_allclose(im.origin, odd.origin)
            np.testing.assert_allclose(im.direction, odd.direction, atol=1e-6)
    # a label the model does not know: refused before anything is written
    bad = LabelMap(np.full((20, 20), 5, np.uint8))
    medimg.write(bad, tmp_path / "bad.nii.gz")
    with pytest.raises(GeneratorError, match=r"labels 0\.\.2"):
        run(
            "generate",
            {"model": str(tmp_path / "m"), "output": str(tmp_path / "x"), "mask": str(tmp_path / "bad.nii.gz")},
        )
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_mask_data_of_several_sizes_needs_a_size(tmp_path: Path) -> None:
    ds = _slice_dataset(tmp_path)
    case = "hippocampus_003z0"
    for sub, name, cls in (("imagesTr", f"{case}_0000.nii.gz", Image), ("labelsTr", f"{case}.nii.gz", LabelMap)):
        im = medimg.read(ds / sub / name) if cls is Image else medimg.read_labels(ds / sub / name)
        medimg.write(cls(np.asarray(im.array)[:30, :50], spacing=im.spacing), ds / sub / name)
    with pytest.raises(GeneratorError, match="--size ROWSxCOLS"):
        load_mask_data(ds)
    data = load_mask_data(ds, size=(28, 20))
    assert data.images.shape == (15, 1, 28, 20) and data.masks is not None and data.masks.shape == (15, 28, 20)
    assert set(np.unique(data.masks)) <= {0, 1, 2}


def test_encoder_fid_separates_real_from_noise(tmp_path: Path) -> None:
    from medimg.image import Image as Img

    real = load_npz(NPZ, "train").images[:, 0].astype(np.uint8)
    rng = np.random.default_rng(0)
    for name, arrs in (("a", real[:60]), ("b", real[60:120]), ("noise", rng.integers(0, 255, (60, 28, 28)))):
        (tmp_path / name).mkdir()
        for i, a in enumerate(arrs):
            medimg.write(Img(np.ascontiguousarray(a.astype(np.uint8).T), ndim=2), tmp_path / name / f"{i:03d}.png")

    def encoder_space(b: str) -> Any:
        params = {"set_a": str(tmp_path / "a"), "set_b": str(tmp_path / b), "spaces": ["pixels"]}
        res = run("gen_metrics", {**params, "encoder": "pneumoniamnist", "pairs": 20})
        assert [s.fid for s in res.spaces if s.space == "pixels"] == [None]
        return next(s for s in res.spaces if s.space.startswith("encoder"))

    enc_same, enc_noise = encoder_space("b"), encoder_space("noise")
    assert enc_same.n_features == 256 and enc_same.fid is not None and enc_noise.fid is not None
    assert enc_noise.fid > 5 * enc_same.fid and enc_noise.kid > enc_same.kid


def test_models_list_shows_the_bundled_generator() -> None:
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    from medimg.cli.models import all_models

    rows = [m for m in all_models() if m["task"].startswith("generation")]
    assert [m["name"] for m in rows] == ["pneumoniamnist"]
    assert rows[0]["licence"] == "CC BY 4.0" and rows[0]["labels"] == "normal, pneumonia"
    assert rows[0]["usage"].startswith("medimg generate -m pneumoniamnist --class")
