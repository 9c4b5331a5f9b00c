"""Classification, registration and statistics metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from medimg import Image
from medimg.errors import DimensionError, MedimgError
from medimg.metrics.classification import auprc, auroc, classification_metrics, expected_calibration_error
from medimg.metrics.registration import jacobian_determinant, registration_metrics, target_registration_error
from medimg.metrics.stats import bootstrap_ci, paired_comparison, subgroup_breakdown, summarize


def brute_auroc(t: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[t == 1], s[t == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * t, 2)  # rounding creates ties
    assert auroc(t, s) == pytest.approx(brute_auroc(t, s))
    assert math.isnan(auroc(np.ones(5), np.arange(5)))


def test_auprc_known_values() -> None:
    # sorted scores: 0.9 (pos), 0.8 (neg), 0.7 (pos): AP = 0.5*1 + 0.5*(2/3)
    assert auprc([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 + 1 / 3)
    assert auprc([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)


def test_binary_metrics_and_calibration() -> None:
    t = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2])
    m = classification_metrics(t, p)
    assert m["confusion"] == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(np.mean((p - t) ** 2))
    assert sum(m["reliability"]["count"]) == 6


def test_calibration_improves_when_probabilities_match_frequencies() -> None:
    rng = np.random.default_rng(1)
    true_p = rng.random(5000)
    t = (rng.random(5000) < true_p).astype(int)
    overconfident = np.clip(0.5 + 2.0 * (true_p - 0.5), 0, 1)
    assert expected_calibration_error(t, true_p) < 0.03 < expected_calibration_error(t, overconfident)


def test_multiclass() -> None:
    t = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]])
    m = classification_metrics(t, p)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    with pytest.raises(MedimgError):
        classification_metrics([0, 3], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(MedimgError, match="NaN"):
        classification_metrics([0, 1], [0.5, np.nan])


def test_jacobian_of_known_fields() -> None:
    shape = (10, 12, 8)
    grid = np.stack(
        np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, (1.0, 2.0, 0.5), strict=True)], indexing="ij"), axis=-1
    )
    scale = Image(0.1 * grid, (1.0, 2.0, 0.5))  # u = 0.1 x  => J = 1.1^3
    assert np.allclose(jacobian_determinant(scale), 1.1**3)
    fold = Image(-2.0 * grid, (1.0, 2.0, 0.5))  # J = (-1)^3 < 0 everywhere
    m = registration_metrics(fold)
    assert m["folding_percent"] == 100.0
    ident = registration_metrics(np.zeros((6, 6, 2)), spacing=(1.0, 1.0))
    assert ident["folding_percent"] == 0.0 and ident["sdlogj"] == 0.0
    with pytest.raises(DimensionError):
        jacobian_determinant(np.zeros((5, 5, 5, 2)))


def test_tre() -> None:
    r = target_registration_error([[0, 0, 0], [1, 1, 1]], [[3, 4, 0], [1, 1, 1]])
    assert r["mean"] == 2.5 and r["max"] == 5.0


def test_stats() -> None:
    s = summarize([1.0, 2.0, 3.0, np.inf, np.nan])
    assert s["n"] == 3 and s["n_nonfinite"] == 2 and s["mean"] == 2.0
    lo, hi = bootstrap_ci(np.arange(100.0))
    assert lo < 49.5 < hi and hi - lo < 15
    rng = np.random.default_rng(0)
    a = rng.random(40)
    cmp = paired_comparison(a + 0.1, a)
    assert cmp["mean_difference"] == pytest.approx(0.1) and cmp["wilcoxon_p"] < 1e-6 and cmp["bootstrap_p"] < 0.01
    same = paired_comparison(a, a)
    assert same["wilcoxon_p"] == 1.0
    g = subgroup_breakdown([0.9, 0.8, 0.5, 0.7], ["a", "a", "b", "b"])
    assert g["fairness_gap"] == pytest.approx(0.25) and g["worst_group"] == "b"
