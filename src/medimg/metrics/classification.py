"""Classification metrics for binary and multi-class probabilities.

Inputs: ``y_true`` integer class labels ``(n,)``; ``y_prob`` either ``(n,)`` probabilities of the positive
class (binary) or ``(n, k)`` class probabilities (rows summing to 1). Multi-class AUROC/AUPRC are one-vs-rest
macro averages; accuracy uses the argmax; calibration (ECE, reliability) uses the top-class confidence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from medimg.errors import MedimgError


def _check(y_true: npt.ArrayLike, y_prob: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if t.ndim != 1 or p.shape[0] != t.shape[0] or p.ndim not in (1, 2):
        raise MedimgError(f"y_true must be (n,) and y_prob (n,) or (n, k); got {t.shape} and {p.shape}.")
    if not np.all(np.isfinite(p)):
        raise MedimgError("y_prob contains NaN or infinite values.")
    if np.any(p < 0) or np.any(p > 1):
        raise MedimgError("y_prob must hold probabilities in [0, 1].")
    if not np.all(t == np.round(t)) or t.min(initial=0) < 0:
        raise MedimgError("y_true must hold non-negative integer class labels.")
    return t.astype(np.int64), p


def auroc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve of a binary problem (Mann-Whitney U; ties count one half). NaN if one class."""
    t = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision (area under the precision-recall step curve, as scikit-learn computes it)."""
    t = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if t.sum() == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], t.size - 1]
    tps = np.cumsum(t_sorted)[distinct]
    fps = (distinct + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / t.sum()
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> dict[str, list[float]]:
    """Reliability-diagram data with equal-width confidence bins: per bin mean confidence, accuracy, count."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    conf, acc, count = [], [], []
    for b in range(n_bins):
        m = idx == b
        count.append(int(m.sum()))
        conf.append(float(confidence[m].mean()) if m.any() else math.nan)
        acc.append(float(correct[m].mean()) if m.any() else math.nan)
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "confidence": conf,
        "accuracy": acc,
        "count": count,
    }


def expected_calibration_error(y_true: npt.ArrayLike, y_prob: npt.ArrayLike, n_bins: int = 15) -> float:
    """ECE = sum over equal-width bins of (bin size / n) x |accuracy - mean confidence| (top-class confidence)."""
    t, p = _check(y_true, y_prob)
    conf, correct = _confidence(t, p)
    r = reliability(conf, correct, n_bins)
    n = t.size
    return float(
        sum(c / n * abs(a - f) for a, f, c in zip(r["accuracy"], r["confidence"], r["count"], strict=True) if c)
    )


def _confidence(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if p.ndim == 1:
        pred = (p >= 0.5).astype(np.int64)
        conf = np.where(pred == 1, p, 1 - p)
    else:
        pred = np.argmax(p, axis=1)
        conf = p[np.arange(p.shape[0]), pred]
    return conf, (pred == t).astype(np.float64)


def brier_score(y_true: npt.ArrayLike, y_prob: npt.ArrayLike) -> float:
    """Mean squared error between probabilities and one-hot truth (binary: (p - y)^2; multi-class: summed)."""
    t, p = _check(y_true, y_prob)
    if p.ndim == 1:
        return float(np.mean((p - t) ** 2))
    onehot = np.eye(p.shape[1])[t]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def classification_metrics(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike, threshold: float = 0.5, n_bins: int = 15
) -> dict[str, Any]:
    """AUROC, AUPRC, accuracy, balanced accuracy, sensitivity/specificity/F1 (binary: at ``threshold``;
    multi-class: macro averages), ECE, Brier score and reliability-diagram data."""
    t, p = _check(y_true, y_prob)
    out: dict[str, Any] = {"n": int(t.size)}
    if p.ndim == 1:
        if t.max(initial=0) > 1:
            raise MedimgError("Binary probabilities (n,) need labels 0/1; pass (n, k) probabilities for k classes.")
        pred = (p >= threshold).astype(np.int64)
        tp = int(np.sum((pred == 1) & (t == 1)))
        tn = int(np.sum((pred == 0) & (t == 0)))
        fp = int(np.sum((pred == 1) & (t == 0)))
        fn = int(np.sum((pred == 0) & (t == 1)))
        sens = tp / (tp + fn) if tp + fn else math.nan
        spec = tn / (tn + fp) if tn + fp else math.nan
        out.update(
            auroc=auroc(t, p),
            auprc=auprc(t, p),
            accuracy=(tp + tn) / t.size,
            balanced_accuracy=0.5 * (sens + spec),
            sensitivity=sens,
            specificity=spec,
            precision=tp / (tp + fp) if tp + fp else math.nan,
            f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
            threshold=threshold,
            confusion={"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        )
    else:
        k = p.shape[1]
        if t.max(initial=0) >= k:
            raise MedimgError(f"Label {int(t.max())} is outside the {k} probability columns.")
        pred = np.argmax(p, axis=1)
        recalls, f1s = [], []
        for c in range(k):
            tp = int(np.sum((pred == c) & (t == c)))
            fp = int(np.sum((pred == c) & (t != c)))
            fn = int(np.sum((pred != c) & (t == c)))
            if tp + fn:
                recalls.append(tp / (tp + fn))
            f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
        out.update(
            auroc=float(np.nanmean([auroc(t == c, p[:, c]) for c in range(k)])),
            auprc=float(np.nanmean([auprc(t == c, p[:, c]) for c in range(k)])),
            accuracy=float(np.mean(pred == t)),
            balanced_accuracy=float(np.mean(recalls)),
            f1=float(np.nanmean(f1s)),
        )
    conf, correct = _confidence(t, p)
    out["ece"] = expected_calibration_error(t, p, n_bins)
    out["brier"] = brier_score(t, p)
    out["reliability"] = reliability(conf, correct, n_bins)
    return out
