"""The 3D promptable network (medimg.interactive.promptable3d / train3d) and the session's 3D engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medimg
from medimg.errors import MedimgError
from medimg.interactive import InteractiveSession
from medimg.interactive.network import IN_CHANNELS_3D, PromptUNet
from medimg.interactive.promptable3d import (
    LONE_MM,
    Promptable3DModel,
    Prompts3,
    Roi3,
    choose_roi,
    crop,
    encode,
    paste,
    roi_around,
)
from medimg.interactive.prompts import Box, Click, PromptError
from medimg.interactive.simulate import dice
from medimg.interactive.train3d import Task3, cut_around, error_centre, make_sample, perturb, train_promptable3d

DATA = Path(__file__).parent / "data"
HELD = DATA / "hippocampus_heldout"


def _challenge(session: InteractiveSession, gt: np.ndarray, clicks: int = 5) -> list[float]:
    """The challenge protocol: the tight 3D box, then clicks at the centre of the largest error region."""
    idx = np.argwhere(gt)
    pred = session.add_box(tuple(idx.min(0)), tuple(idx.max(0)))
    out = [dice(pred, gt)]
    for _ in range(clicks):
        c = error_centre(pred, gt)
        if c is None:
            break
        pred = session.add_click(tuple(int(v) for v in c[0]), c[1])
        out.append(dice(pred, gt))
    return out


def test_network_3d_shapes_and_config() -> None:
    net = PromptUNet((4, 8), IN_CHANNELS_3D, dims=3)
    y = net(torch.zeros(1, IN_CHANNELS_3D, 16, 16, 16))
    assert y.shape == (1, 1, 16, 16, 16)
    assert net.config() == {"widths": [4, 8], "in_channels": IN_CHANNELS_3D, "dims": 3}
    assert "dims" not in PromptUNet((4, 8)).config()  # 2D configs unchanged
    with pytest.raises(ValueError):
        PromptUNet((4, 8), dims=4)


def test_crop_and_paste_round_trip() -> None:
    rng = np.random.default_rng(0)
    vol = rng.random((30, 20, 10)).astype(np.float32)
    roi = Roi3((5, -2, 3), (16, 16, 16))  # reaches outside the image along y
    t = crop(vol, roi, 16, fill=-1.0)
    assert t.shape == (16, 16, 16)
    assert torch.allclose(t[:, 2:, :7], torch.from_numpy(vol[5:21, 0:14, 3:10]))
    assert float(t[0, 0, 0]) == -1.0
    vals, sl = paste(t, roi, vol.shape)
    assert np.allclose(vals, vol[sl])
    # a click maps to the crop voxel it lies in, per axis
    assert np.allclose(roi.to_crop(np.array([[5, -2, 3]]), 16), [[0, 0, 0]])
    big = Roi3((0, 0, 0), (96, 48, 24))
    assert np.allclose(big.to_crop(np.array([[95, 47, 23]]), 48), [[47.25, 47, 46.5]])


def test_roi_and_prompt_encoding() -> None:
    shape = (60, 60, 40)
    roi = roi_around(np.array([20, 20, 10]), np.array([29, 39, 19]), shape)
    assert roi.side == (15, 30, 15) and roi.lo[0] <= 20 and roi.lo[0] + roi.side[0] > 29
    p = Prompts3.from_prompts([Box((20, 20, 10), (29, 39, 19)), Click((25, 30, 15)), Click((21, 21, 11), False)], shape)
    assert p.box is not None and len(p.pos) == 1 and len(p.neg) == 1
    x = encode(torch.zeros(48, 48, 48), p, None, roi, 48)
    assert x.shape == (IN_CHANNELS_3D, 48, 48, 48)
    assert x[1].sum() > 0 and x[2].sum() > 0 and x[4].sum() == 0
    box_part = x[3].nonzero()
    assert box_part.min(0).values.tolist()[0] > 0 and box_part.max(0).values.tolist()[0] < 47  # context around it
    with pytest.raises(PromptError):
        Prompts3.from_prompts([Click((60, 0, 0))], shape)
    # a lone click: a LONE_MM window, more voxels along a finer axis
    lone = choose_roi(shape, Prompts3.from_prompts([Click((30, 30, 20))], shape), None, (1.0, 1.0, 2.0))
    assert lone is not None and lone.side[0] == round(LONE_MM) and lone.side[2] == round(LONE_MM / 2)
    # only negative clicks and no mask: nothing to segment
    assert choose_roi(shape, Prompts3.from_prompts([Click((3, 3, 3), False)], shape), None, (1, 1, 1)) is None


def test_error_centre_is_the_challenge_click() -> None:
    gt = np.zeros((30, 30, 30), bool)
    gt[5:25, 5:25, 5:25] = True
    pred = gt.copy()
    pred[5:25, 5:25, 5:15] = False  # a large miss
    pred[0:3, 0:3, 0:3] = True  # a small false positive
    pt, positive = error_centre(pred, gt)
    assert positive and gt[tuple(pt.astype(int))] and not pred[tuple(pt.astype(int))]
    assert abs(pt[2] - 9.5) <= 1 and 9 <= pt[0] <= 20  # mid-depth of the missed slab, away from its sides
    assert error_centre(gt, gt) is None


def test_simulated_samples_are_consistent() -> None:
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(40, 40, 40)).astype(np.float32)
    m = np.zeros(vol.shape, bool)
    m[12:28, 10:30, 15:25] = True
    vol[m] += 3
    task = cut_around(vol, m, "test", (1.0, 1.0, 1.0))
    assert task is not None and task.mask.sum() == m.sum()
    assert cut_around(vol, np.zeros(vol.shape, bool), "test", (1, 1, 1)) is None
    for _ in range(20):
        s = make_sample(task, 24, rng)
        assert s is not None and s.x.shape == (IN_CHANNELS_3D, 24, 24, 24) and s.y.shape == (24, 24, 24)
        assert s.y.any() and float(s.x[0].min()) >= 0 and float(s.x[0].max()) <= 1
        if s.iterate:
            assert s.x[3].sum() > 0 and s.x[4].sum() == 0  # a box start without a previous mask
    for _ in range(10):
        p = perturb(m, rng)
        assert p.shape == m.shape and p.dtype == bool


def test_training_runs_and_the_model_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(32, 32, 32)).astype(np.float32)
    m = np.zeros(vol.shape, bool)
    m[8:20, 10:22, 9:17] = True
    vol[m] += 2
    task = Task3(vol, m, "toy")
    model, summary = train_promptable3d([task], time_budget=3, out_dir=tmp_path, size=16, widths=(4, 8), seed=0)
    assert summary["steps"] >= 1 and (tmp_path / "promptable3d.json").is_file()
    loaded = Promptable3DModel.load(tmp_path)
    assert loaded.size == 16
    box = [Box((8, 10, 9), (19, 21, 16))]
    a = model.segment(vol, box)
    b = loaded.segment(vol, box)
    assert a.shape == vol.shape and dice(a, b) > 0.95  # float16 weights
    assert not a[:8].any()  # clipped to the box
    with pytest.raises(MedimgError, match=r"promptable3d\.json"):
        Promptable3DModel.load(DATA)


def test_engine_choice_and_errors(tmp_path: Path) -> None:
    im = medimg.read(HELD / "imagesTr" / "hippocampus_389.nii.gz")
    auto = InteractiveSession(im)
    assert auto.engine == "auto"  # volumes: decided by the first interaction
    auto.add_box((5, 5, 4), (26, 42, 26))
    assert auto.engine == "3d" and not auto.refine_3d  # a 3D box first: the 3D network
    by_click = InteractiveSession(im)
    by_click.add_click((17, 25, 17))
    assert by_click.engine == "slices" and by_click.refine_3d  # a click first: slice propagation (+ walker)
    by_box2d = InteractiveSession(im)
    by_box2d.add_box((5, 5), (26, 42))  # a 2D box on a volume spans every slice, but gives no 3D extent
    assert by_box2d.engine == "slices"
    s = InteractiveSession(im, engine="slices")
    assert s.engine == "slices" and s.refine_3d
    thick = medimg.Image(im.array, spacing=(1.0, 1.0, 8.0))
    assert not InteractiveSession(thick, engine="slices").refine_3d
    assert InteractiveSession(im, engine="3d").model is InteractiveSession(im, engine="3d").model  # loaded once
    assert InteractiveSession(medimg.Image(im.array[:, :, 10])).engine == "2d"
    with pytest.raises(MedimgError, match="choose 3d or slices"):
        InteractiveSession(im, engine="volume")
    with pytest.raises(MedimgError, match="needs a 3D promptable model"):
        from medimg.interactive.promptable import PromptableModel

        InteractiveSession(im, model=PromptableModel.load(), engine="3d")


@pytest.mark.parametrize("case", ["hippocampus_389", "hippocampus_394"])
def test_bundled_3d_model_on_held_out_hippocampus(case: str) -> None:
    """The challenge protocol on volumes the 3D network never saw: the box alone and box + 5 clicks."""
    im = medimg.read(HELD / "imagesTr" / f"{case}.nii.gz")
    gt = medimg.read_labels(HELD / "labelsTr" / f"{case}.nii.gz").array > 0
    s = InteractiveSession(im, engine="3d")
    curve = _challenge(s, gt)
    # measured 2026-12-05: 0.524 -> 0.589 and 0.538 -> 0.611 (the benchmark's 20 held-out cases: 0.505 -> 0.579)
    assert curve[0] >= 0.45, curve
    assert curve[-1] >= 0.55 and curve[-1] > curve[0], curve
    lab = s.label_map()  # geometry is the image's
    assert lab.spacing == im.spacing and lab.origin == im.origin and np.allclose(lab.direction, im.direction)
    assert max(s.latencies) < 5.0  # generous: a loaded CI machine; the benchmark reports the real figure


def test_bundled_3d_model_on_held_out_lesion() -> None:
    im = medimg.read(DATA / "breast1_image.nrrd")
    gt = medimg.read_labels(DATA / "breast1_label.nrrd").array > 0
    curve = _challenge(InteractiveSession(im, engine="3d"), gt)
    assert curve[-1] >= 0.6, curve


def test_zoom_out_when_the_object_leaves_the_crop() -> None:
    """A lone click in the liver (held-out CHAOS volume): the first 40 mm window cuts the organ, so the crop grows
    and the network runs again; the result reaches beyond the first window."""
    from scipy import ndimage

    im = medimg.read(DATA / "chaos" / "heldout" / "chaos_08.nii.gz")
    liver = medimg.read_labels(DATA / "chaos" / "heldout" / "chaos_08_label.nii.gz").array == 1
    core = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(liver))), liver.shape)
    s = InteractiveSession(im, engine="3d")
    pred = s.add_click(tuple(int(v) for v in core))
    crops = s.model.last_crops
    assert len(crops) > 1
    first = np.zeros(liver.shape, bool)
    first[crops[0].inside(liver.shape)] = True
    assert (pred & ~first).any() and pred[tuple(int(v) for v in core)]


def test_3d_corrections_act_one_way() -> None:
    """With a mask to refine, a negative click only removes voxels and a positive click only adds them."""
    from scipy import ndimage

    im = medimg.read(DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz")
    gt = medimg.read_labels(DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz").array > 0
    s = InteractiveSession(im, engine="3d", initial_mask=gt)
    core = tuple(int(v) for v in np.unravel_index(np.argmax(ndimage.distance_transform_edt(gt)), gt.shape))
    cut = s.add_click(core, positive=False).copy()
    assert not cut[core] and not (cut & ~gt).any() and 0 < (gt & ~cut).sum() < 0.5 * gt.sum()
    np.testing.assert_array_equal(s.undo(), gt)
    ring = ndimage.binary_dilation(gt, iterations=2) & ~gt
    out = tuple(int(v) for v in np.argwhere(ring)[len(np.argwhere(ring)) // 2])
    grown = s.add_click(out)
    assert grown[out] and not (gt & ~grown).any() and grown.sum() < 1.5 * gt.sum()


def test_cli_interact_engine(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medimg.cli import app

    runner = CliRunner()
    src = HELD / "imagesTr" / "hippocampus_389.nii.gz"
    out = tmp_path / "m.nii.gz"
    r = runner.invoke(app, ["interact", str(src), "--box", "5,5,4,26,42,26", "--click", "15,25,15", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "3d engine" in " ".join(r.output.split())
    lab = medimg.read_labels(out)
    assert lab.array.any() and lab.spacing == medimg.read(src).spacing
    r = runner.invoke(app, ["interact", str(src), "--click", "15,25,15", "--engine", "slices", "-o", str(out)])
    assert r.exit_code == 0 and "slices engine" in " ".join(r.output.split())
    r = runner.invoke(
        app, ["interact", str(src), "--click", "15,25,15", "--engine", "volume", "-o", str(tmp_path / "x.nii.gz")]
    )
    assert r.exit_code != 0 and "--engine 3d" in " ".join(r.output.split()) and not (tmp_path / "x.nii.gz").exists()
