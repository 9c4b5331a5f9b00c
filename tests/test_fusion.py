"""Label fusion (medimg.fusion, the ``fuse`` operation, ``medimg fuse``): majority vote and its tie rule,
STAPLE equal to SimpleITK's on real CHASE_DB1 annotators, planted rater quality recovered on 3D hippocampus labels,
multi-label STAPLE, geometry kept, mismatched grids refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import GeometryError, MedimgError
from medimg.fusion import fuse, majority_vote, simulate_raters, staple_binary
from medimg.image import LabelMap
from medimg.interop import to_sitk
from medimg.ops import run

from conftest import DATA

runner = CliRunner()
CHASE = [DATA / "Image_01L_1stHO.png", DATA / "Image_01L_2ndHO.png"]
HIPPO = DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"


def _oblique_labels(arr: np.ndarray) -> LabelMap:
    c, s = np.cos(0.4), np.sin(0.4)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]])
    return LabelMap(arr, (0.7, 1.1, 2.5), (-12.5, 30.25, 7.0), direction)


def test_majority_vote_ties_go_to_the_smallest_value_and_labels_are_kept() -> None:
    a = np.array([[1, 2, 0, 3], [2, 2, 1, 0]], np.uint8)
    b = np.array([[1, 3, 2, 3], [2, 0, 1, 0]], np.uint8)
    c = np.array([[0, 3, 1, 1], [2, 0, 0, 0]], np.uint8)
    fused, ties = majority_vote([a, b, c])
    # [0,0]: 1,1,0 -> 1; [0,1]: 2,3,3 -> 3; [0,2]: 0,2,1 three-way tie -> 0; [0,3]: 3,3,1 -> 3
    # [1,0]: 2; [1,1]: 2,0,0 -> 0; [1,2]: 1,1,0 -> 1; [1,3]: 0
    assert fused.tolist() == [[1, 3, 0, 3], [2, 0, 1, 0]] and ties == 1
    two, ties2 = majority_vote([a, b])  # two raters: every disagreement is a tie -> smallest value
    assert two.tolist() == [[1, 2, 0, 3], [2, 0, 1, 0]] and ties2 == 3
    res = fuse([LabelMap(a), LabelMap(b), LabelMap(c)], "majority")
    assert res.labels == [1, 2, 3] and res.tie_voxels == 1
    # rater quality for majority is measured against the fused map: rater c has 1 of the 2 fused 3s
    assert res.raters[2].labels[3].sensitivity == pytest.approx(0.5)
    assert res.raters[1].labels[3].sensitivity == pytest.approx(1.0)


def test_staple_equals_simpleitk_on_chasedb1_annotators() -> None:
    maps = [medimg.read_labels(p) for p in CHASE]
    res = fuse(maps, "staple", names=["1st", "2nd"])
    f = sitk.STAPLEImageFilter()
    w = sitk.GetArrayFromImage(f.Execute([to_sitk(m) for m in maps])).T
    est = staple_binary([m.array == 1 for m in maps])
    assert est.iterations == f.GetElapsedIterations()
    np.testing.assert_allclose(est.sensitivity, f.GetSensitivity(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(est.specificity, f.GetSpecificity(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(est.probability, w, rtol=0, atol=1e-9)
    assert np.array_equal(res.fused.array == 1, w > 0.5)
    sens = [r.labels[1].sensitivity for r in res.raters]
    assert min(sens) > 0.8 and max(sens) < 0.95 and sens[0] != sens[1]  # real, distinct annotators
    # the fused map keeps the grid. With two raters and a small prior (vessels ~6 % of the image) a voxel only
    # one annotator marked stays below W = 0.5, so STAPLE's map is their intersection here
    assert res.fused.shape == maps[0].shape and res.fused.same_geometry(maps[0])
    inter = (maps[0].array == 1) & (maps[1].array == 1)
    union = (maps[0].array == 1) | (maps[1].array == 1)
    assert np.array_equal(res.fused.array == 1, inter)
    disputed = est.probability[union & ~inter]
    assert disputed.size > 1000 and disputed.min() > 0.0 and disputed.max() < 0.5


def test_staple_recovers_planted_rater_quality_on_3d_labels() -> None:
    truth = medimg.read_labels(HIPPO)
    binary = truth.with_array((truth.array > 0).astype(np.uint8))
    planted_s, planted_q = [0.95, 0.85, 0.7], [0.995, 0.99, 0.98]
    raters = simulate_raters(binary, planted_s, planted_q, seed=3)
    res = fuse(raters, "staple")
    for r, s, q in zip(res.raters, planted_s, planted_q, strict=True):
        assert r.labels[1].sensitivity == pytest.approx(s, abs=0.03)
        assert r.labels[1].specificity == pytest.approx(q, abs=0.003)

    # STAPLE's fused map is closer to the truth than the worst rater and than the majority vote
    def dice(a: np.ndarray) -> float:
        t = binary.array == 1
        return 2 * float((a & t).sum()) / float(a.sum() + t.sum())

    d_staple = dice(res.fused.array == 1)
    d_major = dice(fuse(raters, "majority").fused.array == 1)
    assert d_staple > dice(raters[2].array == 1) + 0.05 and d_staple >= d_major - 1e-9


def test_multilabel_staple_and_multi_staple_keep_geometry(tmp_path: Path) -> None:
    truth = medimg.read_labels(HIPPO)
    truth = _oblique_labels(truth.array)  # an oblique grid with anisotropic spacing: any flip would show
    raters = simulate_raters(truth, [0.95, 0.9, 0.8], [0.999, 0.998, 0.995], seed=1)
    for method in ("staple", "multi-staple", "majority"):
        res = fuse(raters, method)
        assert res.labels == [1, 2]
        assert res.fused.same_geometry(truth) and res.fused.shape == truth.shape
        for c in (1, 2):
            t, f = truth.array == c, res.fused.array == c
            assert 2 * (t & f).sum() / (t.sum() + f.sum()) > 0.9, (method, c)
    ms = fuse(raters, "multi-staple")
    sens = [r.labels[2].sensitivity for r in ms.raters]
    assert sens == sorted(sens, reverse=True) and sens[0] == pytest.approx(0.95, abs=0.03)
    st = fuse(raters, "staple")
    assert st.probability is not None and st.probability.array.shape == (*truth.shape, 2)
    # through the operation: files on disk have the raters' exact geometry
    paths = []
    for i, r in enumerate(raters):
        paths.append(str(tmp_path / f"r{i}.nii.gz"))
        medimg.write(r, paths[-1])
    out, prob, js = tmp_path / "fused.nii.gz", tmp_path / "w.nii.gz", tmp_path / "raters.json"
    res_op = run(
        "fuse",
        {"inputs": paths, "output": str(out), "method": "staple", "probability": str(prob), "raters_json": str(js)},
    )
    back = medimg.read_labels(out)
    assert back.same_geometry(truth) and np.array_equal(back.array, st.fused.array)
    w = medimg.read(prob)
    assert w.same_geometry(truth) and w.n_channels == 2
    d = json.loads(js.read_text())
    assert [r["name"] for r in d["raters"]] == ["r0.nii.gz", "r1.nii.gz", "r2.nii.gz"]
    assert d["labels"] == [1, 2] and res_op.provenance is not None and len(res_op.provenance.inputs) == 3


def test_mismatched_grids_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    a = medimg.read_labels(HIPPO)
    b = LabelMap(a.array, (1.0, 1.0, 1.5), a.origin, a.direction)
    pa, pb = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    medimg.write(a, pa)
    medimg.write(b, pb)
    out = tmp_path / "fused.nii.gz"
    with pytest.raises(GeometryError, match="medimg resample"):
        run("fuse", {"inputs": [str(pa), str(pb)], "output": str(out)})
    assert not out.exists()
    r = runner.invoke(app, ["fuse", str(pa), str(pb), "-o", str(out), "--raters-json", str(tmp_path / "j.json")])
    assert r.exit_code == 2 and "resample" in r.output and "--reference" in r.output
    assert not out.exists() and not (tmp_path / "j.json").exists()
    # the advice works: resample b onto a's grid with the suggested command, then fusion succeeds
    fixed = tmp_path / "b_on_a.nii.gz"
    r = runner.invoke(app, ["resample", str(pb), str(fixed), "--reference", str(pa), "--labels"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["fuse", str(pa), str(fixed), "-o", str(out), "--method", "majority"])
    assert r.exit_code == 0, r.output
    assert medimg.read_labels(out).same_geometry(a)


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MedimgError, match="at least two"):
        fuse([medimg.read_labels(CHASE[0])], "staple")
    with pytest.raises(MedimgError, match="Unknown fusion method"):
        fuse([medimg.read_labels(p) for p in CHASE], "mean")
    args = ["fuse", *map(str, CHASE), "-o", str(tmp_path / "f.png")]
    r = runner.invoke(app, [*args, "--method", "majority", "--probability", str(tmp_path / "p.nii.gz")])
    assert r.exit_code == 2 and "--method staple" in r.output and not (tmp_path / "f.png").exists()
    r = runner.invoke(app, [*args, "--probability", str(tmp_path / "p.png")])
    assert r.exit_code == 2 and ".nii.gz" in r.output and not (tmp_path / "f.png").exists()
    r = runner.invoke(app, [*args, "--method", "vote"])
    assert r.exit_code == 2 and not (tmp_path / "f.png").exists()
    r = runner.invoke(app, ["fuse", str(CHASE[0]), "-o", str(tmp_path / "f.png")])
    assert r.exit_code == 2


def test_cli_fuses_2d_png_masks_with_json(tmp_path: Path) -> None:
    out = tmp_path / "fused.png"
    r = runner.invoke(app, ["fuse", *map(str, CHASE), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["method"] == "staple" and d["labels"] == [1] and d["iterations"]["1"] > 0
    assert [x["name"] for x in d["raters"]] == [CHASE[0].name, CHASE[1].name]
    fused = medimg.read_labels(out)
    first = medimg.read_labels(CHASE[0])
    assert fused.same_geometry(first) and d["fused_voxels"]["1"] == int((fused.array == 1).sum())
