"""Active learning (``medimg al next``, :mod:`medimg.active`): every strategy ranks real hippocampus cases with the
bundled model, deterministically; entropy prefers corrupted images; coreset avoids duplicates; out-of-domain images
are refused and listed; bad input gives clear errors; the CLI's --json output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import medimg
from medimg.active import STRATEGIES, Candidate, group_images, k_center_greedy, rank_cases
from medimg.errors import MedimgError
from medimg.ops import Context, run
from medimg.ops.base import InvalidParametersError

from conftest import DATA

HIPPO = DATA / "hippocampus"
CT = Path(medimg.__file__).parent / "data" / "samples" / "ct_small_image.nii.gz"


@pytest.fixture(scope="module")
def pred():  # type: ignore[no-untyped-def]
    from medimg.seg import Predictor, resolve_model

    return Predictor(resolve_model("hippocampus"))


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test hippocampus set with labels for 001 and 003 only: 004, 006, 008 are unlabelled."""
    d = tmp_path_factory.mktemp("al") / "hippo"
    shutil.copytree(HIPPO, d)
    for cid in ("004", "006", "008"):
        (d / "labelsTr" / f"hippocampus_{cid}.nii.gz").unlink()
    return d


def _cands(*cids: str) -> list[Candidate]:
    return [Candidate(f"hippocampus_{c}", [HIPPO / "imagesTr" / f"hippocampus_{c}.nii.gz"]) for c in cids]


def test_every_strategy_ranks_real_cases_deterministically(pred) -> None:  # type: ignore[no-untyped-def]
    pool, labelled = _cands("004", "006"), _cands("001")
    net = pred.net
    results = {}
    for strategy in STRATEGIES:
        r = rank_cases(pred, pool, strategy, 1, labelled=labelled, seed=3, passes=2)
        results[strategy] = r
        assert sorted(c.case_id for c in r.ranked) == ["hippocampus_004", "hippocampus_006"], strategy
        assert [c.rank for c in r.ranked] == [1, 2] and not r.refused
        assert all(np.isfinite(c.score) for c in r.ranked)
        if strategy not in ("random", "hybrid"):
            assert r.ranked[0].score >= r.ranked[1].score, strategy
        if strategy in ("entropy", "tta", "mc-dropout"):
            assert all(c.score > 0 for c in r.ranked), strategy  # real uncertainty near the hippocampus
    assert "no dropout layers" in " ".join(results["mc-dropout"].notes)
    # seeded: random repeats with its seed and changes with another; mc-dropout's masks are re-seeded per case,
    # so a case's score is the same whatever else is in the pool
    again = rank_cases(pred, pool, "random", 1, seed=3).ranked
    assert [(c.case_id, c.score) for c in again] == [(c.case_id, c.score) for c in results["random"].ranked]
    other = rank_cases(pred, pool, "random", 1, seed=4).ranked
    assert [c.score for c in other] != [c.score for c in again]
    mc = {c.case_id: c.score for c in results["mc-dropout"].ranked}
    assert rank_cases(pred, pool[1:], "mc-dropout", 1, seed=3, passes=2).ranked[0].score == mc["hippocampus_006"]
    # hybrid's score is the entropy, coreset's details carry it too: one deterministic pass, the same figures
    ent = {c.case_id: c.score for c in results["entropy"].ranked}
    assert {c.case_id: c.score for c in results["hybrid"].ranked} == ent
    assert {c.case_id: c.details["entropy"] for c in results["coreset"].ranked} == ent
    # the Predictor is left as it was: network restored, no dropout hook left (the entropy is unchanged)
    assert pred.net is net
    assert rank_cases(pred, pool[:1], "entropy", 1).ranked[0].score == ent["hippocampus_004"]


def test_entropy_ranks_corrupted_copies_above_the_clean_case(pred, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img = medimg.read(HIPPO / "imagesTr" / "hippocampus_001.nii.gz")
    a = img.array.astype(np.float32)
    noisy = a + np.random.default_rng(0).normal(0, 0.6 * a.std(), a.shape).astype(np.float32)
    medimg.write(img.with_array(a), tmp_path / "clean.nii.gz")
    medimg.write(img.with_array(noisy), tmp_path / "noisy.nii.gz")
    medimg.write(img.with_array(ndimage.gaussian_filter(a, 1.5)), tmp_path / "blurred.nii.gz")
    r = rank_cases(pred, group_images(tmp_path), "entropy", 2)
    assert not r.refused  # corrupted, but still inside the model's domain
    assert [c.case_id for c in r.ranked][-1] == "clean"
    assert r.ranked[-1].score < min(c.score for c in r.ranked[:2])


def test_coreset_does_not_pick_a_duplicate_twice(pred, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # 006 is the most uncertain case, so an entropy ranking would put it and its copy on top
    for cid in ("004", "006", "008"):
        shutil.copy(HIPPO / "imagesTr" / f"hippocampus_{cid}.nii.gz", tmp_path / f"hippocampus_{cid}.nii.gz")
    shutil.copy(HIPPO / "imagesTr" / "hippocampus_006.nii.gz", tmp_path / "copy_of_006.nii.gz")
    pool = group_images(tmp_path)
    r = rank_cases(pred, pool, "coreset", 2, labelled=_cands("001"))
    ent = sorted(r.ranked, key=lambda c: -c.details["entropy"])  # what an entropy ranking would pick
    assert {"hippocampus_006", "copy_of_006"} == {c.case_id for c in ent[:2]}
    top2 = {c.case_id for c in r.top(2)}
    assert not {"hippocampus_006", "copy_of_006"} <= top2
    assert r.ranked[-1].score == pytest.approx(0.0, abs=1e-9)  # the duplicate comes last, at distance 0
    assert r.ranked[-1].case_id in ("hippocampus_006", "copy_of_006")
    # k-center greedy itself: centres are respected and a duplicate point is picked last
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [1.0, 0.0]])
    order, dists = k_center_greedy(pts, np.array([[4.0, 0.0]]))
    assert order == [0, 2, 3, 1] and dists == [4.0, 1.0, 1.0, 0.0]


def test_out_of_domain_images_are_refused_and_listed(ds: Path, tmp_path: Path) -> None:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    shutil.copy(CT, folder / "ct_small.nii.gz")
    shutil.copy(HIPPO / "imagesTr" / "hippocampus_004.nii.gz", folder / "new_004.nii.gz")
    res = run("al_next", {"dataset": str(ds), "unlabeled": str(folder), "strategy": "random", "n": 5}, Context())
    assert [c.case_id for c in res.proposed] == ["new_004"]  # type: ignore[attr-defined]
    refused = res.refused  # type: ignore[attr-defined]
    assert [r.case_id for r in refused] == ["ct_small"]
    assert any("spacing" in x for x in refused[0].reasons) and res.n_unlabelled == 2  # type: ignore[attr-defined]
    assert any("refused" in n for n in res.notes)  # type: ignore[attr-defined]


def test_bad_input_gives_clear_errors(ds: Path, tmp_path: Path, pred) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MedimgError, match=r"No unlabelled cases to rank.*--unlabeled"):
        run("al_next", {"dataset": str(HIPPO), "strategy": "random"}, Context())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedimgError, match="No unlabelled cases"):
        run("al_next", {"dataset": str(ds), "unlabeled": str(empty)}, Context())
    for n in (0, -3):
        with pytest.raises(MedimgError, match="at least 1"):
            run("al_next", {"dataset": str(ds), "strategy": "random", "n": n}, Context())
    with pytest.raises(InvalidParametersError, match="strategy"):
        run("al_next", {"dataset": str(ds), "strategy": "uncertainty"}, Context())
    with pytest.raises(MedimgError, match=r"Unknown strategy 'bald'.*entropy"):
        rank_cases(pred, _cands("004"), "bald", 1)
    with pytest.raises(MedimgError, match="at least 2 passes"):
        rank_cases(pred, _cands("004"), "tta", 1, passes=1)
    out = tmp_path / "ranking.txt"
    with pytest.raises(MedimgError, match=r"\.csv or \.json"):
        run("al_next", {"dataset": str(ds), "strategy": "random", "output": str(out)}, Context())
    assert not out.exists()


def test_cli_json_and_csv(ds: Path, tmp_path: Path) -> None:
    from medimg.cli import app

    runner = CliRunner()
    out = tmp_path / "ranking.json"
    args = ["al", "next", str(ds), "--strategy", "random", "-n", "2", "--seed", "7", "--json", "-o", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["strategy"] == "random" and res["n_unlabelled"] == 3 and res["n_labelled"] == 2
    assert [c["rank"] for c in res["proposed"]] == [1, 2]
    assert res["provenance"]["operation"] == "al_next" and res["files"] == [str(out)]
    doc = json.loads(out.read_text())
    assert [c["case_id"] for c in doc["ranking"]][:2] == [c["case_id"] for c in res["proposed"]]
    assert sorted(c["case_id"] for c in doc["ranking"]) == ["hippocampus_004", "hippocampus_006", "hippocampus_008"]
    csv_out = tmp_path / "ranking.csv"
    r = runner.invoke(app, ["al", "next", str(ds), "-s", "random", "-n", "1", "--seed", "7", "-o", str(csv_out)])
    assert r.exit_code == 0, r.output
    rows = csv_out.read_text().splitlines()
    assert rows[0].startswith("rank,case_id,score") and len(rows) == 4
    assert rows[1].split(",")[1] == res["proposed"][0]["case_id"]  # same seed, same order
    r = runner.invoke(app, ["al", "next", str(ds), "-n", "0"])
    assert r.exit_code == 2 and "at least 1" in r.output


def test_dataset_without_any_label_yet(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    for cid in ("004", "008"):
        shutil.copy(HIPPO / "imagesTr" / f"hippocampus_{cid}.nii.gz", tmp_path / "imagesTr")
    res = run("al_next", {"dataset": str(tmp_path), "strategy": "random", "n": 1, "seed": 1}, Context())
    assert res.n_labelled == 0 and res.n_ranked == 2 and len(res.proposed) == 1  # type: ignore[attr-defined]
    with pytest.raises(MedimgError, match="not a dataset folder"):
        run("al_next", {"dataset": str(tmp_path / "imagesTr"), "strategy": "random"}, Context())
