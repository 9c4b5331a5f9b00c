"""FRD (medimg.frd, the ``frd`` operation and ``medimg frd``) on real chest X-rays (PneumoniaMNIST subset in
tests/data): properties, argument order, out-of-distribution scoring, bad inputs.

Agreement with frd-score itself is measured by benchmarks/frd_compare.py (it needs frd-score's own environment);
the per-feature agreement with pyradiomics is tests/test_radiomics.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import GeometryError
from medimg.frd import (
    FeatureSet,
    FRDInputError,
    bootstrap_ci,
    compute_frd,
    features,
    frd_from_features,
    load_set,
    ood_scores,
    squared_frechet,
)
from medimg.ops import Context, run

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def _xrays() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(DATA / "pneumoniamnist_subset.npz")
    x, y = d["train_images"], d["train_labels"].ravel()
    return x[y == 0], x[y == 1]


def _write(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images):
        PILImage.fromarray(np.clip(np.round(im), 0, 255).astype(np.uint8)).save(folder / f"{k:03d}.png")
    return folder


N = 30


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    normal, pneu = _xrays()
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("frd")
    out = {
        "a": _write(root / "a", normal[:N]),
        "a2": _write(root / "a2", normal[N : 2 * N]),
        "pneu": _write(root / "pneu", pneu[:N]),
    }
    for s in (8, 25, 60):
        noisy = normal[N : 2 * N].astype(np.float64) + rng.normal(0, s, normal[N : 2 * N].shape)
        out[f"noise{s}"] = _write(root / f"noise{s}", noisy)
    return out


@pytest.fixture(scope="module")
def feats(sets: dict[str, Path]) -> dict[tuple[str, str], FeatureSet]:
    """Features of every set, v1 and v0, extracted once."""
    return {(k, v): features(load_set(p, version=v), v) for k, p in sets.items() for v in ("v1", "v0")}


def _frd(feats: dict[tuple[str, str], FeatureSet], a: str, b: str, v: str = "v1") -> float:
    return frd_from_features(feats[(a, v)].values, feats[(b, v)].values, v)[0]  # type: ignore[arg-type]


def test_identical_sets_give_zero_distance(sets: dict[str, Path], feats: dict[tuple[str, str], FeatureSet]) -> None:
    for v in ("v1", "v0"):
        d2, nf = squared_frechet(feats[("a", v)].values, feats[("a", v)].values, v)
        assert abs(d2) < 1e-3 and nf > 50  # rounding only: the covariance traces are ~nf
    op = run("frd", {"set_a": str(sets["a"]), "set_b": str(sets["a"])})
    assert abs(op.squared_distance) < 1e-3  # type: ignore[attr-defined]
    d2_other = squared_frechet(feats[("a", "v1")].values, feats[("a2", "v1")].values)[0]
    assert d2_other > 1.0


def test_frd_grows_with_a_planted_shift(feats: dict[tuple[str, str], FeatureSet]) -> None:
    """Same-class images (a2) are closer to A than noisier copies of them, and the noisier the farther."""
    vals = [_frd(feats, "a", k) for k in ("a2", "noise8", "noise25", "noise60")]
    assert vals == sorted(vals), vals
    assert vals[-1] - vals[0] > 1.0
    v0 = [_frd(feats, "a", k, "v0") for k in ("a2", "noise25", "noise60")]
    assert v0 == sorted(v0), v0


def test_argument_order(feats: dict[tuple[str, str], FeatureSet]) -> None:
    """v1 z-scores both sets with A's statistics, so FRD(A, B) != FRD(B, A); v0 normalises over both (symmetric)."""
    assert abs(_frd(feats, "a", "pneu") - _frd(feats, "pneu", "a")) > 1e-3
    assert _frd(feats, "a", "pneu", "v0") == pytest.approx(_frd(feats, "pneu", "a", "v0"), rel=1e-6)


def test_bootstrap_ci_and_ood(feats: dict[tuple[str, str], FeatureSet]) -> None:
    fa, fb, fin = feats[("a", "v1")], feats[("noise60", "v1")], feats[("a2", "v1")]
    value = _frd(feats, "a", "noise60")
    lo, hi = bootstrap_ci(fa.values, fb.values, "v1", 20, seed=1)
    assert lo < hi and lo - 1.0 < value < hi + 1.0
    noisy, thr = ood_scores(fa.values, fb.values, fb.images)
    clean, _ = ood_scores(fa.values, fin.values, fin.images)
    assert thr > 0 and len(noisy) == N
    assert sum(s.outlier for s in noisy) >= 0.75 * N  # heavy noise: most flagged
    assert sum(s.outlier for s in clean) <= 0.25 * N  # same distribution: few flagged
    assert np.median([s.z for s in noisy]) > np.median([s.z for s in clean])


def test_spacing_of_the_files_is_used(tmp_path: Path) -> None:
    """v1 resamples to 2 mm: the same pixels with another pixel size give other features (geometry is read,
    not assumed)."""
    normal, _ = _xrays()
    for sp, name in ((1.0, "one"), (0.5, "half")):
        (tmp_path / name).mkdir()
        for k in range(3):
            medimg.write(
                medimg.Image(normal[k].T.astype(np.float32), spacing=(sp, sp)), tmp_path / name / f"{k}.nii.gz"
            )
    a = load_set(tmp_path / "one")
    b = load_set(tmp_path / "half")
    assert a[0].spacing == (1.0, 1.0, 1.0) and b[0].spacing == (0.5, 0.5, 1.0)
    fa, fb = features(a), features(b)
    i = fa.names.index("diagnostics_Mask-interpolated_VoxelNum")
    assert fa.values[0, i] == 14 * 14 and fb.values[0, i] == 7 * 7


def test_cli_json_and_masks(sets: dict[str, Path], feats: dict[tuple[str, str], FeatureSet], tmp_path: Path) -> None:
    masks = tmp_path / "m"
    masks.mkdir()
    m = np.zeros((28, 28), np.uint8)
    m[4:24, 4:24] = 255
    for k in range(N):
        PILImage.fromarray(m).save(masks / f"{k:03d}.png")
    args = ["frd", str(sets["a"]), str(sets["pneu"]), "--masks", str(masks), "--masks", str(masks), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["version"] == "v1" and d["n_a"] == N and d["n_b"] == N and d["value"] > 0
    assert d["provenance"]["operation"] == "frd"
    assert abs(d["value"] - _frd(feats, "a", "pneu")) > 1e-3  # the masks changed the region
    r = runner.invoke(app, ["frd", str(sets["a"]), str(sets["pneu"]), "--masks", str(masks)])
    assert r.exit_code == 2 and "twice" in r.output


def test_bad_inputs(sets: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FRDInputError, match="no images"):
        compute_frd(empty, sets["a"])
    mixed = tmp_path / "mixed"
    _write(mixed, _xrays()[0][:2])
    medimg.write(medimg.Image(np.zeros((8, 8, 8), np.float32)), mixed / "vol.nii.gz")
    with pytest.raises(FRDInputError, match="mixes 2D and 3D"):
        load_set(mixed)
    few = tmp_path / "few_masks"
    _write(few, np.zeros((3, 28, 28)) + 1)
    with pytest.raises(FRDInputError, match="one mask per image"):
        load_set(sets["a"], few)
    wrong = tmp_path / "wrong_shape"
    _write(wrong, np.ones((N, 20, 20)))
    with pytest.raises(GeometryError, match="grid"):
        load_set(sets["a"], wrong)
    r = runner.invoke(app, ["frd", str(sets["a"]), str(empty)])
    assert r.exit_code == 2 and "no images" in r.output
    r = runner.invoke(app, ["frd", str(sets["a"]), str(sets["pneu"]), "--version", "v2"])
    assert r.exit_code == 2 and "v0 or v1" in r.output
    with pytest.raises(Exception, match="outside the allowed"):
        run("frd", {"set_a": str(sets["a"]), "set_b": str(sets["pneu"])}, Context(roots=[tmp_path]))


def test_degenerate_features_are_named_and_can_be_dropped(tmp_path: Path) -> None:
    """Set A all 28x28 (the 2 mm grid is even: wavelet detail-band means are rounding noise, ~1e-16), set B
    27x27 (odd grid, wrap padding: the means are real numbers). frd-score's v1 z-scores B by A's noise SD."""
    normal, _ = _xrays()
    a = _write(tmp_path / "a", normal[:12])
    b = _write(tmp_path / "b", normal[12:24, :27, :27])
    res = compute_frd(a, b, "v1")[0]
    assert "wavelet-HH_firstorder_Mean" in res.degenerate
    kept = res.value
    dropped = compute_frd(a, b, "v1", drop_degenerate=True)[0]
    assert dropped.n_features == res.n_features - len(res.degenerate)
    assert kept > dropped.value + 20  # noise-divided-by-noise z-scores dominate the kept value
    assert math.isfinite(dropped.value)
