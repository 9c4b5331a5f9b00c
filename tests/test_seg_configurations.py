"""Segmentation configurations (2d beside 3d_fullres, chosen by validation), left/right-aware mirroring and the
whole-image intensity floor of MR domains, on real CHAOS abdominal MR volumes (tests/data/chaos: three training
volumes at half the in-plane resolution, 2.5 x 2.5 x 7.7 mm)."""

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
from medimg.seg import Predictor, fingerprint, load_dataset, make_plan, train_model
from medimg.seg.plan import configurations_for, slice_axis

from conftest import DATA

torch = pytest.importorskip("torch")
runner = CliRunner()
CHAOS = DATA / "chaos"


@pytest.fixture(scope="module")
def chaos_fp() -> dict:
    return fingerprint(load_dataset(CHAOS))


def test_thick_slices_plan_a_2d_configuration(chaos_fp: dict) -> None:
    fp = chaos_fp
    assert fp["median_spacing"] == pytest.approx([2.5, 2.5, 7.7], abs=1e-3)
    assert slice_axis(fp) == 2 and configurations_for(fp) == ["3d_fullres", "2d"]
    p3, p2 = make_plan(fp), make_plan(fp, configuration="2d")
    assert p3["configuration"] == "3d_fullres" and "slice_axis" not in p3
    assert p2["configuration"] == "2d" and p2["slice_axis"] == 2
    assert p2["patch_size"][2] == 1 and p2["patch_size"][0] >= 96  # whole (or nearly whole) slices
    assert all(len(k) == 2 for k in p2["network"]["kernel_sizes"])  # a 2D network
    assert p2["augmentation"]["rotation_plane"] == [0, 1]
    # liver/right_kidney/left_kidney/spleen: never mirrored across the patient's left-right axis (index axis 0)
    assert fp["lr_axes"] == [0, 0, 0]
    assert p3["augmentation"]["mirror_axes"] == [1, 2] and p2["augmentation"]["mirror_axes"] == [1]
    with pytest.raises(MedimgError, match="3d_fullres or 2d"):
        make_plan(fp, configuration="2.5d")


def test_hippocampus_is_3d_only_and_mirrored_on_every_axis() -> None:
    fp = fingerprint(load_dataset(DATA / "hippocampus"))
    assert configurations_for(fp) == ["3d_fullres"]
    assert make_plan(fp)["augmentation"]["mirror_axes"] == [0, 1, 2]


def test_left_right_axis_follows_the_direction_matrix(tmp_path: Path) -> None:
    """The same volumes stored with index axes 0 and 1 swapped (direction columns swapped, world geometry equal):
    the left-right axis is now index axis 1, and that is the one not mirrored."""
    ds = tmp_path / "swapped"
    for sub in ("imagesTr", "labelsTr"):
        (ds / sub).mkdir(parents=True)
        for f in sorted((CHAOS / sub).glob("*.nii.gz")):
            img = medimg.read_labels(f) if sub == "labelsTr" else medimg.read(f)
            arr = np.ascontiguousarray(np.swapaxes(img.array, 0, 1))
            d = np.asarray(img.direction)[:, [1, 0, 2]]
            sw = Image(arr, np.asarray(img.spacing)[[1, 0, 2]], img.origin, d)
            medimg.write(sw, ds / sub / f.name)
            assert np.allclose(sw.index_to_world([[3, 5, 2]]), img.index_to_world([[5, 3, 2]]))
    shutil.copy(CHAOS / "dataset.json", ds / "dataset.json")
    fp = fingerprint(load_dataset(ds))
    assert fp["lr_axes"] == [1, 1, 1]
    assert make_plan(fp)["augmentation"]["mirror_axes"] == [0, 2]


def test_slice_net_equals_the_2d_network_on_each_slice() -> None:
    from medimg.seg.nets import SliceNet

    torch.manual_seed(0)
    net2d = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 1))
    x = torch.randn(2, 2, 5, 6, 7)
    for k in range(3):
        y = SliceNet(net2d, k)(x)
        assert y.shape == (2, 4, 5, 6, 7)
        for i in range(x.shape[2 + k]):
            want = net2d(x.select(2 + k, i))
            assert torch.allclose(y.select(2 + k, i), want, atol=1e-6)


def test_in_plane_augmentation_keeps_slices_apart() -> None:
    """With rotation_plane, rotation and scaling stay inside each slice: changing one slice changes nothing else."""
    from medimg.seg.train import augment_batch

    cfg = {"p_spatial": 1.0, "rotation_deg": 30.0, "scale": [0.8, 1.2], "rotation_plane": [0, 1]}
    img = torch.rand(2, 1, 24, 20, 4)
    lab = (img[:, 0] > 0.5).long()
    a, la = augment_batch(img.clone(), lab.clone(), cfg, np.random.default_rng(1), 3)
    img2 = img.clone()
    img2[:, :, :, :, 3] = 0
    b, _ = augment_batch(img2, lab.clone(), cfg, np.random.default_rng(1), 3)
    assert not torch.equal(a, img)  # it did transform
    assert torch.equal(a[..., :3], b[..., :3]) and not torch.equal(a[..., 3], b[..., 3])
    assert set(la.unique().tolist()) <= {0, 1}


@pytest.fixture(scope="module")
def two_config_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cfg") / "model"
    ds = load_dataset(CHAOS)
    ids = sorted(c.case_id for c in ds.cases)
    info = train_model(
        ds,
        out,
        time_budget_s=60,
        max_iterations=4,
        split={"train": ids[:2], "val": ids[2:]},
        configurations=["auto"],
    )
    return out, info


def test_both_configurations_trained_and_the_better_kept(two_config_model: tuple[Path, dict]) -> None:
    out, info = two_config_model
    assert set(info["configurations"]) == {"3d_fullres", "2d"}
    best = max(info["configurations"], key=lambda c: info["configurations"][c]["validation_mean_dice"])
    assert info["configuration"] == best
    stored = json.loads((out / "model.json").read_text())
    assert stored["configuration"] == best and set(stored["configurations"]) == {"3d_fullres", "2d"}
    assert json.loads((out / "plan.json").read_text())["configuration"] == best
    for c in ("3d_fullres", "2d"):  # each candidate is a complete model folder of its own
        sub = out / "configurations" / c
        assert (sub / "model.pt").exists() and json.loads((sub / "plan.json").read_text())["configuration"] == c
    assert (out / "model.pt").read_bytes() == (out / "configurations" / best / "model.pt").read_bytes()
    # each candidate trained on its share of the budget, and the folder's total is what they spent together
    assert stored["time_budget_s"] == 60
    assert stored["iterations"] == info["configurations"][best]["iterations"] == 4


def test_the_2d_configuration_predicts_on_the_input_grid(two_config_model: tuple[Path, dict]) -> None:
    """A 2D-configuration model segments a whole volume slice by slice; the output has the input's exact geometry
    (an oblique copy too), and mirroring TTA flips only the planned axes."""
    out, _ = two_config_model
    pred = Predictor(out / "configurations" / "2d")
    img = medimg.read(sorted((CHAOS / "imagesTr").glob("*.nii.gz"))[0])
    seg = pred(img)
    assert seg.shape == img.shape and seg.same_geometry(img)
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = Image(img.array, img.spacing, (10.0, -5.0, 3.0), np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]))
    seg2 = pred(oblique)
    assert seg2.same_geometry(oblique) and np.array_equal(seg2.array, seg.array)
    calls: list[int] = []
    pred.progress = lambda items, what: calls.append(len(items)) or items
    pred.probabilities([img], tta=True)
    pred.probabilities([img], tta=False)
    assert pred.plan["augmentation"]["mirror_axes"] == [1]
    assert calls[0] == 2 * calls[1]  # identity + the one mirrored axis (not 2**3 = 8 passes)


def test_rerun_resumes_and_conflicts_are_refused(two_config_model: tuple[Path, dict], tmp_path: Path) -> None:
    out, info = two_config_model
    ds = load_dataset(CHAOS)
    ids = sorted(c.case_id for c in ds.cases)
    split = {"train": ids[:2], "val": ids[2:]}
    again = train_model(ds, out, time_budget_s=60, max_iterations=4, split=split, configurations=["auto"])
    assert again["configuration"] == info["configuration"]
    assert again["configurations"] == info["configurations"]  # nothing retrained
    one = tmp_path / "one"
    train_model(ds, one, time_budget_s=60, max_iterations=2, split=split, configurations=["2d"])
    with pytest.raises(MedimgError, match="holds a 2d model"):
        train_model(ds, one, time_budget_s=60, max_iterations=2, split=split, configurations=["3d_fullres"])


def test_cli_configurations(tmp_path: Path) -> None:
    out = tmp_path / "m"
    r = runner.invoke(app, ["train", str(CHAOS), "-o", str(out), "--configurations", "4d", "--time-budget", "5s"])
    msg = " ".join(r.output.split())
    assert r.exit_code == 2 and "auto, 3d_fullres, 2d" in msg
    assert not out.exists()  # nothing left behind
    plan = tmp_path / "plan.json"
    r = runner.invoke(app, ["plan", str(CHAOS), "-o", str(plan), "--configuration", "2d"])
    assert r.exit_code == 0 and "2d, patch" in " ".join(r.output.split())
    r = runner.invoke(
        app, ["train", str(CHAOS), "-o", str(out), "--plan", str(plan), "--configurations", "2d", "--time-budget", "5s"]
    )
    assert r.exit_code == 2 and "--plan fixes the configuration" in " ".join(r.output.split())


def test_mr_domain_floor_covers_the_background(chaos_fp: dict) -> None:
    """CHAOS's organs are all brighter than 0 but every image is 0 around the body: the model must accept its own
    training images, and still refuse CT (air at -1000 HU)."""
    from medimg.domain import ImageDomain

    dom = ImageDomain.from_fingerprint(chaos_fp, "CHAOS", "MR")
    img = medimg.read(sorted((CHAOS / "imagesTr").glob("*.nii.gz"))[0])
    assert (img.array == 0).mean() > 0.1 and chaos_fp["foreground_intensity"][0]["min"] > 0
    assert dom.differences([img]) == []
    ct = Image(img.array.astype(np.float32) * 2 - 1000, img.spacing, img.origin, img.direction)
    assert any("below" in d for d in dom.differences([ct]))
