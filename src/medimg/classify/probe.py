"""Evaluating representations: frozen-feature linear probe, k-NN, and fine-tuning with a fraction of the labels.

The linear probe is an L2-regularised multinomial logistic regression on standardised frozen features, fitted
with L-BFGS; its regularisation strength is chosen by 3-fold cross-validation on the labelled training subset
only. The k-NN probe votes with the ``k`` most cosine-similar training features, weighted by
``exp(similarity / 0.07)`` (as in Wu et al., 2018). Label fractions are stratified, seeded subsets of the training
split, the same for every encoder compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.classify.augment import normalize, resize
from medimg.classify.data import ClassificationData
from medimg.classify.networks import ResNetEncoder
from medimg.errors import MedimgError


def extract_features(
    encoder: ResNetEncoder, images: np.ndarray, input_size: Sequence[int], batch_size: int = 256
) -> np.ndarray:
    """Pooled encoder features ``(n, d)`` of raw images ``(n, c, *spatial)``."""
    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = normalize(resize(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])), input_size))
            out.append(encoder.embed(x).float().numpy())
    return np.concatenate(out)


def label_subset(data: ClassificationData, fraction: float, seed: int = 0) -> np.ndarray:
    """Seeded stratified indices of ``fraction`` of ``data`` (at least 2 per class present)."""
    if not 0 < fraction <= 1:
        raise MedimgError(f"Label fraction must be in (0, 1]; got {fraction}.")
    if fraction == 1:
        return np.arange(len(data))
    rng = np.random.default_rng(seed)
    key = data.labels.argmax(1) if data.multilabel else data.labels
    idx: list[int] = []
    for c in np.unique(key):
        members = rng.permutation(np.nonzero(key == c)[0])
        idx += list(members[: max(2, round(len(members) * fraction))])
    return np.sort(np.asarray(idx, np.int64))


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> torch.Tensor:
    w = torch.zeros(x.shape[1] + 1, n_classes, dtype=torch.float64, requires_grad=True)
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    n_classes: int,
    l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Probabilities ``(n_test, n_classes)`` of a logistic regression on standardised features, and the L2
    strength chosen by 3-fold cross-validation (log-loss)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    xt = torch.as_tensor((train_x - mu) / sd, dtype=torch.float64)
    xs = torch.as_tensor((test_x - mu) / sd, dtype=torch.float64)
    yt = torch.as_tensor(train_y, dtype=torch.long)
    rng = np.random.default_rng(seed)
    folds = rng.permutation(len(xt)) % 3
    best, best_l2 = np.inf, float(l2_grid[0])
    if len(xt) >= 9 and len(l2_grid) > 1:
        for l2 in l2_grid:
            nll = 0.0
            for f in range(3):
                tr, va = folds != f, folds == f
                w = _fit_logreg(xt[tr], yt[tr], n_classes, l2)
                z = torch.cat([xt[va], torch.ones(int(va.sum()), 1, dtype=xt.dtype)], 1) @ w
                nll += float(F.cross_entropy(z, yt[va], reduction="sum"))
            if nll < best:
                best, best_l2 = nll, float(l2)
    w = _fit_logreg(xt, yt, n_classes, best_l2)
    z = torch.cat([xs, torch.ones(len(xs), 1, dtype=xs.dtype)], 1) @ w
    return torch.softmax(z, 1).numpy(), best_l2


def knn_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, k: int = 20, tau: float = 0.07
) -> np.ndarray:
    """Probabilities ``(n_test, n_classes)`` of a similarity-weighted k-NN vote on L2-normalised features."""
    a = F.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    b = F.normalize(torch.as_tensor(test_x, dtype=torch.float32), dim=1)
    sim = b @ a.t()
    kk = min(k, len(a))
    top, idx = sim.topk(kk, dim=1)
    w = torch.exp(top / tau)
    onehot = F.one_hot(torch.as_tensor(train_y, dtype=torch.long)[idx], n_classes).float()
    votes = (onehot * w[..., None]).sum(1)
    return (votes / votes.sum(1, keepdim=True)).numpy()


def metrics_with_ci(labels: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUROC, accuracy and ECE (binary: positive class = column 1) with 95 % percentile bootstrap CIs over
    images."""
    from medimg.metrics.classification import auroc, expected_calibration_error

    def stats(ix: np.ndarray) -> tuple[float, float, float]:
        y, p = labels[ix], probs[ix]
        if p.shape[1] == 2:
            return (
                auroc(y, p[:, 1]),
                float(np.mean((p[:, 1] >= 0.5) == (y == 1))),
                expected_calibration_error(y, p[:, 1]),
            )
        aucs = [auroc(y == c, p[:, c]) for c in range(p.shape[1])]
        return float(np.nanmean(aucs)), float(np.mean(p.argmax(1) == y)), expected_calibration_error(y, p)

    point = stats(np.arange(len(labels)))
    rng = np.random.default_rng(seed)
    boots = np.array([stats(rng.integers(0, len(labels), len(labels))) for _ in range(n_boot)])
    out: dict[str, Any] = {"n": len(labels)}
    for j, name in enumerate(("auroc", "accuracy", "ece")):
        out[name] = float(point[j])
        out[f"{name}_ci95"] = [float(np.nanquantile(boots[:, j], 0.025)), float(np.nanquantile(boots[:, j], 0.975))]
    return out


def probe_encoder(
    encoder: ResNetEncoder,
    input_size: Sequence[int],
    train: ClassificationData,
    test: ClassificationData,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    n_boot: int = 1000,
) -> list[dict[str, Any]]:
    """Linear-probe and k-NN results per label fraction on ``test`` (multi-class data only)."""
    if train.multilabel:
        raise MedimgError("The probes support multi-class labels; train one binary probe per class for multi-label.")
    ftr = extract_features(encoder, train.images, input_size)
    fte = extract_features(encoder, test.images, input_size)
    k = len(train.classes)
    rows = []
    for frac in fractions:
        ix = label_subset(train, frac, seed)
        p_lin, l2 = linear_probe(ftr[ix], train.labels[ix], fte, k, seed=seed)
        p_knn = knn_probe(ftr[ix], train.labels[ix], fte, k)
        rows.append(
            {
                "fraction": frac,
                "n_labels": len(ix),
                "probe": "linear",
                "l2": l2,
                **metrics_with_ci(test.labels, p_lin, n_boot, seed),
            }
        )
        rows.append(
            {"fraction": frac, "n_labels": len(ix), "probe": "knn", **metrics_with_ci(test.labels, p_knn, n_boot, seed)}
        )
    return rows
