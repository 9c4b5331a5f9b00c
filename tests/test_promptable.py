"""The learned promptable model: simulator (random clicks, scribbles), the bundled weights on real images in 2D and
3D, awkward prompts, training a small model, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.interactive import Box, Click, InteractiveSession, PromptError, Scribble, simulate
from medimg.interactive.promptable import (
    PromptableModel,
    SlicePrompts,
    _implicit_positive,
    _without_hit,
    bundled_models,
)
from medimg.interactive.simulate import SCRIBBLE_KINDS, bounding_box, dice, random_click, simulate_scribble
from medimg.interactive.synthetic import blob_tasks, superpixel_tasks
from medimg.interactive.train import train_promptable

from conftest import DATA

runner = CliRunner()


@pytest.fixture(scope="module")
def model() -> PromptableModel:
    return PromptableModel.load(None)  # the bundled weights, from the package, offline


@pytest.fixture(scope="module")
def lesion() -> tuple[medimg.Image, np.ndarray]:
    img = medimg.read(DATA / "breast1_image.nrrd")
    return img, medimg.read_labels(DATA / "breast1_label.nrrd").array > 0


@pytest.fixture(scope="module")
def hippo() -> tuple[medimg.Image, np.ndarray]:
    img = medimg.read(DATA / "hippocampus" / "imagesTr" / "hippocampus_004.nii.gz")
    return img, medimg.read_labels(DATA / "hippocampus" / "labelsTr" / "hippocampus_004.nii.gz").array == 2


def test_random_clicks_and_scribbles_lie_in_their_regions(hippo: tuple) -> None:
    _, gt3 = hippo
    z = int(np.argmax(gt3.sum((0, 1))))
    gt = gt3[:, :, z]
    rng = np.random.default_rng(0)
    pred = np.zeros_like(gt)
    pred[:5] = True
    for _ in range(20):
        c = random_click(pred, gt, rng)
        assert c is not None and (gt[c.point] if c.positive else pred[c.point] and not gt[c.point])
    assert random_click(gt, gt, rng) is None
    for kind in SCRIBBLE_KINDS:
        for seed in range(5):
            strokes = simulate_scribble(gt, np.random.default_rng(seed), kind=kind, z=z)
            assert strokes and all(len(s.points[0]) == 3 for s in strokes)
            pts = np.array([p for s in strokes for p in s.points])
            assert np.all(gt[pts[:, 0], pts[:, 1]])  # every stroke vertex is inside the structure
    b = bounding_box(gt, 0.1, rng)
    assert all(0 <= v < s for v, s in zip(b.lo + b.hi, gt.shape * 2, strict=True))


def test_bundled_model_is_listed_and_loads_offline(model: PromptableModel) -> None:
    names = [m["name"] for m in bundled_models()]
    assert "promptable" in names
    assert model.meta["training"]["steps"] > 100 and model.size == 96
    card = Path(bundled_models()[0]["path"]) / "model_card.md"
    assert card.is_file() and "trained on" in card.read_text().lower()


def test_2d_session_on_an_unseen_lesion_improves_with_clicks(model: PromptableModel, lesion: tuple) -> None:
    img, gt3 = lesion
    z = int(np.argmax(gt3.sum((0, 1))))
    image, gt = img.array[:, :, z].astype(np.float32), gt3[:, :, z]
    r = simulate(lambda: InteractiveSession(image, "learned", model), gt, 5, "box")
    assert r["dice"][-1] >= r["dice"][0] - 0.02 and r["dice"][-1] > 0.6
    assert max(r["latency_s"]) < 2.0  # generous: speed is measured in benchmarks/interactive_benchmark.py


def test_3d_prompt_on_one_slice_segments_the_volume(model: PromptableModel, hippo: tuple) -> None:
    img, gt = hippo
    s = InteractiveSession(img, "learned", model)
    c = Click(tuple(int(v) for v in np.argwhere(gt)[len(np.argwhere(gt)) // 2]))
    m = s.add(c)
    assert (m.sum((0, 1)) > 0).sum() >= 4  # a click on one slice gives a multi-slice result
    r = simulate(lambda: InteractiveSession(img, "learned", model), gt, 5, "click")
    assert r["dice"][-1] > 0.4 and r["dice"][-1] > r["dice"][0]
    # a negative click on a slice outside the structure removes what is there, and the mask changes on no other
    # slice that was already right
    s2 = InteractiveSession(img, "learned", model, refine_3d=False)  # propagation alone leaks past the end here
    m = s2.add(c).copy()
    extra = [z for z in range(gt.shape[2]) if m[:, :, z].any() and not gt[:, :, z].any()]
    assert extra
    z = extra[0]
    pt = np.argwhere(m[:, :, z])[0]
    m2 = s2.add_click((int(pt[0]), int(pt[1]), z), positive=False)
    assert m2[:, :, z].sum() < m[:, :, z].sum()
    np.testing.assert_array_equal(s2.undo(), m)


def test_3d_random_walker_refinement(model: PromptableModel, hippo: tuple) -> None:
    img, gt = hippo
    assert InteractiveSession(img, "learned", model).refine_3d  # 1 mm isotropic: on by default
    thick = medimg.Image(img.array, spacing=(1.0, 1.0, 8.0))
    assert not InteractiveSession(thick, "learned", model).refine_3d  # thick slices: propagation alone
    runs = {
        ref: simulate(lambda ref=ref: InteractiveSession(img, "learned", model, refine_3d=ref), gt, 5, "click")
        for ref in (False, True)
    }
    assert runs[True]["dice"][-1] > 0.6 and runs[True]["dice"][-1] > runs[False]["dice"][-1]


def test_awkward_prompts_with_the_learned_method(model: PromptableModel, lesion: tuple) -> None:
    img, gt3 = lesion
    z = int(np.argmax(gt3.sum((0, 1))))
    image = img.array[:, :, z].astype(np.float32)
    pt = tuple(int(v) for v in np.argwhere(gt3[:, :, z])[0])
    s = InteractiveSession(image, "learned", model)
    with pytest.raises(PromptError, match="outside the image"):
        s.add_click((image.shape[0] + 3, 2))
    with pytest.raises(PromptError, match="empty"):
        s.add_box((5, 5), (5, 30))
    assert s.prompts == []
    m = s.add(Scribble((pt,)))  # a one-pixel scribble acts as a click
    assert m.shape == image.shape and m.dtype == bool
    s.add_click(pt, positive=False)  # contradictory: a negative click on the positive one — no crash
    s.add_click(pt, positive=True)
    assert len(s.prompts) == 3 and s.undo().shape == image.shape
    s3 = InteractiveSession(img, "learned", model)
    s3.add_box((0, 0, 0), (image.shape[0] - 1, image.shape[1] - 1, img.shape[2] - 1))  # a box around everything
    assert s3.mask.shape == img.shape
    bad = img.array.astype(np.float32).copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(medimg.MedimgError, match="NaN"):
        InteractiveSession(bad, "learned", model)


def test_training_a_small_model_saves_and_loads(tmp_path: Path, lesion: tuple) -> None:
    img, _ = lesion
    rng = np.random.default_rng(0)
    image = img.array[:, :, 9].astype(np.float32)
    tasks = superpixel_tasks(image, rng, 4) + blob_tasks(image, rng, 3)
    assert tasks and all(t.mask.any() and t.mask.shape == image.shape for t in tasks)
    _, summary = train_promptable(tasks, time_budget=3.0, out_dir=tmp_path / "m", batch_size=4, seed=1)
    assert summary["steps"] >= 1 and (tmp_path / "m" / "training_log.csv").is_file()
    back = PromptableModel.load(tmp_path / "m")
    m = InteractiveSession(image, "learned", back).add_box((10, 10), (40, 60))
    assert m.shape == image.shape and not m[:10].any()  # nothing outside the box
    with pytest.raises(medimg.MedimgError, match="promptable"):
        PromptableModel.load(tmp_path)


def test_cli_interact_learned_keeps_geometry(tmp_path: Path, lesion: tuple) -> None:
    img, gt = lesion
    src = DATA / "breast1_image.nrrd"
    out = tmp_path / "mask.nii.gz"
    b = bounding_box(gt)  # a 3D box around the lesion
    r = runner.invoke(app, ["interact", str(src), "--box", ",".join(str(v) for v in b.lo + b.hi), "-o", str(out)])
    assert r.exit_code == 0, r.output
    m = medimg.read_labels(out)
    medimg.image.check_same_geometry(m, img)
    assert dice(m.array > 0, gt) > 0.5
    two_d = tmp_path / "slice.nii.gz"
    z = int(np.argmax(gt.sum((0, 1))))
    medimg.write(medimg.Image(img.array[:, :, z].astype(np.float32)), two_d)
    pts = np.argwhere(gt[:, :, z])
    a, c = pts[0], pts[-1]
    r = runner.invoke(app, ["interact", str(two_d), "--scribble", f"{a[0]},{a[1]};{c[0]},{c[1]}", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert medimg.read_labels(out).array.shape == gt.shape[:2]
    r = runner.invoke(app, ["interact", str(two_d), "--scribble", "neg", "-o", str(out)])
    assert r.exit_code == 2 and "no points" in r.output
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "promptable" in r.output


def test_jittered_box_and_box_start(model: PromptableModel, lesion: tuple) -> None:
    img, gt3 = lesion
    z = int(np.argmax(gt3.sum((0, 1))))
    gt = gt3[:, :, z]
    r = simulate(lambda: InteractiveSession(img.array[:, :, z], "learned", model), gt, 3, "box_jitter", seed=3)
    assert len(r["dice"]) == 3 and r["dice"][-1] > 0.4
    assert isinstance(bounding_box(gt), Box)


def test_negative_click_at_a_masks_core_means_not_here() -> None:
    before = np.zeros((40, 40), bool)
    before[5:15, 5:15] = True  # part A
    before[20:36, 20:36] = True  # part B
    core = SlicePrompts(np.zeros((0, 2)), np.array([[28.0, 28.0]]), np.zeros((0, 2)), np.zeros((0, 2)), None)
    assert _implicit_positive(core, before) is None  # at B's core: the structure is not here
    left = _without_hit(before, core)
    assert left[5:15, 5:15].all() and not left[20:36, 20:36].any()  # only the part that was hit goes
    edge = SlicePrompts(np.zeros((0, 2)), np.array([[20.0, 28.0]]), np.zeros((0, 2)), np.zeros((0, 2)), None)
    trimmed = _implicit_positive(edge, before)
    assert trimmed is not None and len(trimmed.pos_clicks) == 1  # at an edge: trim, keep the core
    x, y = trimmed.pos_clicks[0].astype(int)
    assert before[x, y]


def test_training_with_worker_processes(tmp_path: Path, lesion: tuple) -> None:
    img, _ = lesion
    image = img.array[:, :, 9].astype(np.float32)
    tasks = superpixel_tasks(image, np.random.default_rng(0), 4)
    _, summary = train_promptable(tasks, time_budget=4.0, batch_size=4, workers=1, widths=(4, 8, 8, 8, 8))
    assert summary["steps"] >= 1 and summary["workers"] == 1 and summary["widths"] == [4, 8, 8, 8, 8]
