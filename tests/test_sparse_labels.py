"""Sparse annotations with nnU-Net's ``ignore`` label: the sparse-dataset tool (benchmarks/sparse_labels.py),
patch sampling and loss on sparse labels, evaluation/metrics that skip ignored voxels (``--ignore-label``,
``--dataset-json``), and the errors for undeclared values."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.metrics import segmentation_metrics
from medimg.seg import Trainer, check_dataset, load_dataset, make_split
from medimg.seg.train import prepare_cache

from conftest import DATA

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from sparse_labels import annotated_slices, main, make_sparse_dataset, sparsify  # noqa: E402
from test_seg import tiny_plan  # noqa: E402

runner = CliRunner()
LAB = DATA / "hippocampus" / "labelsTr" / "hippocampus_003.nii.gz"


@pytest.fixture
def sparse_ds(tmp_path: Path) -> Path:
    out = tmp_path / "sparse"
    make_sparse_dataset(DATA / "hippocampus", out, 3, 1, {1: "anterior", 2: "posterior"}, keep_full={"hippocampus_008"})
    return out


def test_sparsify_keeps_k_whole_slices_on_the_same_grid() -> None:
    lab = medimg.read_labels(LAB)
    sparse, st = sparsify(lab, 3, 1, ignore=3)
    assert sparse.same_geometry(lab) and sparse.shape == lab.shape
    kept = [j for j in range(lab.shape[1]) if np.any(sparse.array[:, j, :] != 3)]
    assert kept == st["slices"] and len(kept) == 3
    for j in kept:  # an annotated slice is the full original slice (background included)
        assert np.array_equal(sparse.array[:, j, :], lab.array[:, j, :])
    others = np.delete(sparse.array, kept, axis=1)
    assert np.all(others == 3)
    fg_slices = np.flatnonzero(np.any(lab.array > 0, axis=(0, 2)))
    assert fg_slices[0] <= kept[0] and kept[-1] <= fg_slices[-1]  # spread over the structure, not the volume
    assert st["label_voxels"] == int((lab.array > 0).sum())
    assert st["label_voxels_kept"] == int((lab.array[:, kept, :] > 0).sum())
    assert 0 < st["label_voxels_kept"] < st["label_voxels"]
    assert annotated_slices(np.zeros((4, 6, 5), np.uint8), 3, 1) == [3]  # no structure: the middle slice
    with pytest.raises(MedimgError, match="above every class"):
        sparsify(lab, 3, 1, ignore=2)


def test_sparse_dataset_tool_report_and_bad_inputs(sparse_ds: Path, tmp_path: Path) -> None:
    meta = json.loads((sparse_ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3}
    rep = json.loads((sparse_ds / "sparse_report.json").read_text())
    assert rep["sparse_cases"] == 4 and rep["full_cases"] == 1
    assert rep["fraction_label_voxels_kept"] == pytest.approx(rep["label_voxels_kept"] / rep["label_voxels"])
    assert 0.02 < rep["fraction_label_voxels_kept"] < 0.3
    full = medimg.read_labels(sparse_ds / "labelsTr" / "hippocampus_008.nii.gz")
    assert np.array_equal(full.array, medimg.read_labels(DATA / "hippocampus/labelsTr/hippocampus_008.nii.gz").array)
    src_img = DATA / "hippocampus" / "imagesTr" / "hippocampus_003.nii.gz"
    assert (sparse_ds / "imagesTr" / "hippocampus_003_0000.nii.gz").read_bytes() == src_img.read_bytes()
    ds = load_dataset(sparse_ds)
    assert ds.ignore_label == 3 and ds.n_classes == 3
    assert all(r["problems"] == [] for r in check_dataset(ds))
    # the command line: an existing output is refused and nothing else is made
    assert main([str(DATA / "hippocampus"), str(sparse_ds), "--slices", "2"]) == 2
    assert main([str(DATA / "hippocampus"), str(tmp_path / "x"), "--keep-full", "nope"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()
    assert main([str(DATA / "hippocampus"), str(tmp_path / "y"), "--slices", "1", "--axis", "2"]) == 0
    assert json.loads((tmp_path / "y" / "sparse_report.json").read_text())["sparse_cases"] == 5


def test_patch_sampling_and_loss_on_sparse_labels(sparse_ds: Path, tmp_path: Path) -> None:
    ds = load_dataset(sparse_ds)
    plan = tiny_plan(sparse_ds)
    assert plan["ignore_label"] == 3
    split = make_split([c.case_id for c in ds.cases], 0.2, 0)
    tr = Trainer(ds, plan, tmp_path / "m", split, 3600, 1)
    cache = prepare_cache(ds, plan, tmp_path / "m" / "pre", split["train"])
    for cid in split["train"]:
        fg = cache.fg[cid]
        assert set(fg) <= {1, 2} and fg  # foreground oversampling picks annotated structure voxels only
        lab = cache.labels[cid]
        for c, coords in fg.items():
            assert np.all(lab[tuple(coords.T)] == c)
    img, lab = tr.sample_batch(cache, split["train"], 2, 1.0)  # every patch centred on annotated foreground
    assert ((lab == 1) | (lab == 2)).any(dim=tuple(range(1, lab.dim()))).all()
    assert (lab == 3).any()  # and they hold ignored voxels too
    # the loss: no gradient reaches the network's output at ignored voxels, and those outputs do not matter
    tr.net.train()
    out = tr.net(img)
    out.retain_grad()
    loss = tr.loss(out, lab)
    loss.backward()
    grad = out.grad
    assert grad is not None and torch.isfinite(loss)
    ign = (lab == 3).unsqueeze(1)
    if grad.dim() == lab.dim() + 2:  # deep supervision heads
        ign = ign.unsqueeze(1)
    assert float(grad.masked_select(ign.expand_as(grad)).abs().max()) == 0.0
    assert float(grad.masked_select(~ign.expand_as(grad)).abs().max()) > 0.0
    scrambled = torch.where(ign.expand_as(out), torch.randn_like(out) * 100, out.detach())
    assert float(tr.loss(scrambled, lab).detach()) == pytest.approx(float(loss.detach()), abs=1e-6)


def test_undeclared_values_are_errors(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    make_sparse_dataset(DATA / "hippocampus", d, 3, 1)
    meta = json.loads((d / "dataset.json").read_text())
    del meta["labels"]["ignore"]  # value 3 in the label maps but not declared
    (d / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(d)
    rows = check_dataset(ds)
    assert all("[3] not declared" in " ".join(r["problems"]) and "'ignore'" in " ".join(r["problems"]) for r in rows)
    split = make_split([c.case_id for c in ds.cases], 0.2, 0)
    with pytest.raises(MedimgError, match='declared as "ignore"'):
        prepare_cache(ds, tiny_plan(d), tmp_path / "pre", split["train"])


def test_metrics_skip_ignored_voxels() -> None:
    ref = medimg.read_labels(LAB)
    sparse, _ = sparsify(ref, 3, 1, ignore=3)
    pred = ref.array.copy()
    outside = sparse.array == 3
    pred[outside & (ref.array == 0)] = 1  # wrong everywhere it is not annotated
    pred[outside & (ref.array > 0)] = 0
    m = segmentation_metrics(pred, sparse.array, labels=[1, 2], metrics=("dice",), ignore_label=3)
    assert m[1]["dice"] == 1.0 and m[2]["dice"] == 1.0
    assert m[1]["fp_voxels"] == 0 and m[1]["fn_voxels"] == 0
    auto = segmentation_metrics(pred, sparse.array, metrics=("dice",), ignore_label=3)
    assert set(auto) == {1, 2}  # the ignore value is never a class
    plain = segmentation_metrics(pred, sparse.array, labels=[1, 2], metrics=("dice",))
    assert plain[1]["dice"] < 0.2  # without the ignore label the unannotated voxels count
    with pytest.raises(MedimgError, match="not a class"):
        segmentation_metrics(pred, sparse.array, labels=[1, 3], ignore_label=3)


def test_evaluate_ignore_label_and_dataset_json(sparse_ds: Path, tmp_path: Path) -> None:
    ref_dir, pred_dir = sparse_ds / "labelsTr", tmp_path / "pred"
    pred_dir.mkdir()
    for f in sorted((DATA / "hippocampus" / "labelsTr").iterdir()):
        full = medimg.read_labels(f)
        sparse = medimg.read_labels(ref_dir / f.name)
        arr = full.array.copy()
        arr[(sparse.array == 3) & (full.array == 0)] = 2  # errors only where the reference is unannotated
        medimg.write(full.with_array(arr), pred_dir / f.name)
    out = tmp_path / "ev"
    r = runner.invoke(
        app, ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(out), "--ignore-label", "3"]
    )
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["ignore_label"] == 3 and set(s["classes"]) == {"1", "2"}
    assert s["classes"]["1"]["dice"]["mean"] == 1.0 and s["classes"]["2"]["dice"]["mean"] == 1.0
    per_case = (out / "per_case.csv").read_text().splitlines()
    assert "ignored_voxels" in per_case[0] and len(per_case) == 1 + 2 * 5
    # from dataset.json: same numbers, class names from it
    out2 = tmp_path / "ev2"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(pred_dir),
            "--ref",
            str(ref_dir),
            "-o",
            str(out2),
            "--dataset-json",
            str(sparse_ds / "dataset.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["ignore_label"] == 3 and s2["classes"]["2"]["name"] == "posterior"
    assert s2["classes"]["2"]["dice"]["mean"] == 1.0
    # without it, the ignore value is scored as a class and the errors count
    out3 = tmp_path / "ev3"
    r = runner.invoke(app, ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(out3)])
    s3 = json.loads((out3 / "summary.json").read_text())
    assert "3" in s3["classes"] and s3["classes"]["2"]["dice"]["mean"] < 0.9
    # bad inputs: conflicting ignore labels; a reference value dataset.json does not declare
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(pred_dir),
            "--ref",
            str(ref_dir),
            "-o",
            str(tmp_path / "e4"),
            "--ignore-label",
            "4",
            "--dataset-json",
            str(sparse_ds / "dataset.json"),
        ],
    )
    assert r.exit_code == 2 and "differs" in r.output and not (tmp_path / "e4").exists()
    meta = json.loads((sparse_ds / "dataset.json").read_text())
    del meta["labels"]["ignore"]
    (tmp_path / "no_ignore.json").write_text(json.dumps(meta))
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(pred_dir),
            "--ref",
            str(ref_dir),
            "-o",
            str(tmp_path / "e5"),
            "--dataset-json",
            str(tmp_path / "no_ignore.json"),
        ],
    )
    assert r.exit_code == 2 and "does not declare" in " ".join(r.output.split()) and not (tmp_path / "e5").exists()
    shutil.rmtree(out3)


def test_orthogonal_slices_one_per_axis() -> None:
    """``axis=-1``: slice i cuts axis i % 3 through the middle of the structure's extent along it; everything else
    is the ignore label, and the kept voxels are exactly the union of the three planes."""
    lab = medimg.read_labels(DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    out, st = sparsify(lab, 3, -1, 3)
    arr = np.asarray(out.array)
    planes = np.zeros(arr.shape, bool)
    for ax, s in enumerate(st["slices"]):
        assert s == annotated_slices(lab.array, 1, ax)[0]
        index = [slice(None)] * 3
        index[ax] = s
        planes[tuple(index)] = True
    np.testing.assert_array_equal(arr[planes], lab.array[planes])
    assert np.all(arr[~planes] == 3)
    assert st["voxels_annotated"] == int(planes.sum())
    with pytest.raises(MedimgError, match="orthogonal"):
        sparsify(lab, 3, -2, 3)
