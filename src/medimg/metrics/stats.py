"""Statistics for evaluation tables: summaries, bootstrap confidence intervals, paired comparisons, subgroups."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medimg.errors import MedimgError


def bootstrap_ci(
    values: npt.ArrayLike,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over finite ``values`` (seeded)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    if v.size == 1:
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    stats = np.apply_along_axis(statistic, 1, v[idx]) if statistic is not np.mean else v[idx].mean(axis=1)
    return (float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2)))


def summarize(values: npt.ArrayLike, ci: bool = True, seed: int = 0) -> dict[str, float]:
    """n, mean, std, median, quartiles, min, max over finite values, count of non-finite, 95 % bootstrap CI."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    out: dict[str, float] = {"n": int(finite.size), "n_nonfinite": int(v.size - finite.size)}
    if finite.size:
        out.update(
            mean=float(finite.mean()),
            std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            median=float(np.median(finite)),
            q1=float(np.quantile(finite, 0.25)),
            q3=float(np.quantile(finite, 0.75)),
            min=float(finite.min()),
            max=float(finite.max()),
        )
        if ci:
            out["ci95_low"], out["ci95_high"] = bootstrap_ci(finite, seed=seed)
    return out


def format_p(p: float, floor: float = 1e-4) -> str:
    """A p-value as text: ``"< 1e-4"`` below ``floor`` (never ``"0.0"``), else 2 significant digits."""
    if not math.isfinite(p):
        return "n/a"
    if p < floor:
        return f"< {floor:.0e}".replace("e-0", "e-")
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def paired_comparison(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    n_boot: int = 10000,
    seed: int = 0,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """Compare two methods on the same cases: mean difference (a - b) with a paired-bootstrap 95 % CI and
    two-sided bootstrap p-value, and the Wilcoxon signed-rank test. Pairs with a non-finite value are dropped.

    The bootstrap p-value is ``min(1, 2 (k + 1) / (n_boot + 1))`` with ``k`` the number of resampled mean
    differences on the far side of 0 (Davison & Hinkley's +1 correction), so it is never 0: with 10 000
    resamples the smallest reportable value is about 2e-4. ``a_better``/``b_better`` count the cases where
    each method wins by the metric's direction (``higher_is_better=False`` for distances).
    """
    from scipy.stats import wilcoxon

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise MedimgError(f"Paired comparison needs the same number of cases ({x.shape} vs {y.shape}).")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    if d.size < 2:
        raise MedimgError("Paired comparison needs at least two cases with finite values in both methods.")
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    k = int(min(np.sum(boots <= 0), np.sum(boots >= 0)))
    p_boot = float(min(1.0, 2 * (k + 1) / (n_boot + 1)))
    if np.all(d == 0):
        w_stat, w_p = 0.0, 1.0
    else:
        res = wilcoxon(d)
        w_stat, w_p = float(res.statistic), float(res.pvalue)
    wins = d > 0 if higher_is_better else d < 0
    losses = d < 0 if higher_is_better else d > 0
    return {
        "n": int(d.size),
        "mean_difference": float(d.mean()),
        "ci95": (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))),
        "bootstrap_p": p_boot,
        "wilcoxon_statistic": w_stat,
        "wilcoxon_p": w_p,
        "a_better": int(np.sum(wins)),
        "b_better": int(np.sum(losses)),
        "ties": int(np.sum(d == 0)),
    }


def subgroup_breakdown(values: Sequence[float], groups: Sequence[Any]) -> dict[str, Any]:
    """Per-group summaries and the fairness gap (max - min of the group means)."""
    if len(values) != len(groups):
        raise MedimgError("values and groups must have the same length.")
    by: dict[str, list[float]] = {}
    for v, g in zip(values, groups, strict=True):
        by.setdefault(str(g), []).append(float(v))
    per = {g: summarize(v, ci=False) for g, v in sorted(by.items())}
    means = [s["mean"] for s in per.values() if "mean" in s]
    gap = float(max(means) - min(means)) if len(means) > 1 else math.nan
    worst = min(per, key=lambda g: per[g].get("mean", math.inf)) if per else None
    return {"groups": per, "fairness_gap": gap, "worst_group": worst}


def per_class_summary(rows: Sequence[Mapping[str, Any]], metric: str, class_key: str = "label") -> dict[Any, dict]:
    """Summaries of ``metric`` for each class over per-case rows (dicts with ``class_key`` and ``metric``)."""
    by: dict[Any, list[float]] = {}
    for r in rows:
        by.setdefault(r[class_key], []).append(float(r[metric]))
    return {c: summarize(v) for c, v in sorted(by.items())}
