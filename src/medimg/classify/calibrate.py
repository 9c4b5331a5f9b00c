"""Temperature scaling (Guo et al., 2017): one scalar ``T > 0`` dividing the logits, fitted by minimising the
negative log-likelihood on a held-out split. It changes confidence, never the ranking (AUROC) or the argmax."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _nll(z: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(z, y)
    return F.cross_entropy(z, y)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, multilabel: bool = False) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` (or per-class sigmoids for multi-label),
    searched over ``log T`` with L-BFGS from ``T = 1``; returns 1.0 when the split is empty or degenerate."""
    if len(logits) == 0:
        return 1.0
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64 if multilabel else torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _nll(z / log_t.exp(), y, multilabel)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        return 1.0
    with torch.no_grad():  # never worse than no scaling on the fitting split
        if _nll(z / t, y, multilabel) > _nll(z, y, multilabel):
            return 1.0
    return float(min(max(t, 0.05), 20.0))
