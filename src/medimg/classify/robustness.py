"""Test-time corruption suite: how much a classifier loses under acquisition shifts.

Each corruption has five severities and is applied to raw images ``(n, c, *spatial)`` in their own intensity range
(``lo..hi``, the 0.5 and 99.5 percentiles of the whole set): results are clipped back into that range and, for
integer-valued data such as 8-bit PNGs, rounded, as a real 8-bit image would be.

- ``noise``: additive Gaussian noise, sigma = 3, 6, 10, 15, 22 % of the range;
- ``blur``: Gaussian blur, sigma = 1.5, 2.5, 3.5, 5, 7 % of the smallest side;
- ``contrast``: contrast reduced around the mean to 60, 40, 25, 15, 8 %;
- ``bias_field``: a smooth multiplicative field ``exp(a * p(x))`` (random low-order polynomial ``p`` in [-1, 1]),
  ``a`` = 0.15, 0.3, 0.45, 0.6, 0.8;
- ``jpeg``: JPEG compression at quality 60, 35, 20, 10, 5 (2D; 3D slice by slice);
- ``resolution``: downsampling by 1.5, 2, 2.5, 3, 4 and linear upsampling back.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.classify.augment import gaussian_blur
from medimg.errors import MedimgError

SEVERITIES = {
    "noise": (0.03, 0.06, 0.10, 0.15, 0.22),
    "blur": (0.015, 0.025, 0.035, 0.05, 0.07),
    "contrast": (0.6, 0.4, 0.25, 0.15, 0.08),
    "bias_field": (0.15, 0.3, 0.45, 0.6, 0.8),
    "jpeg": (60, 35, 20, 10, 5),
    "resolution": (1.5, 2.0, 2.5, 3.0, 4.0),
}
CORRUPTIONS = tuple(SEVERITIES)


def _jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def corrupt(images: np.ndarray, kind: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` ``(n, c, *spatial)`` with corruption ``kind`` at ``severity`` 1-5 (seeded)."""
    if kind not in SEVERITIES:
        raise MedimgError(f"Unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}.")
    if not 1 <= severity <= 5:
        raise MedimgError(f"Severity must be 1-5; got {severity}.")
    x = np.asarray(images, dtype=np.float32)
    level = SEVERITIES[kind][severity - 1]
    lo, hi = np.percentile(x, [0.5, 99.5])
    rng_width = float(hi - lo) or 1.0
    integer = bool(np.all(x == np.round(x)))
    rng = np.random.default_rng(seed)
    spatial = x.shape[2:]
    dims = len(spatial)
    if kind == "noise":
        y = x + rng.normal(0, level * rng_width, x.shape).astype(np.float32)
    elif kind == "blur":
        y = gaussian_blur(torch.from_numpy(x), level * min(spatial)).numpy()
    elif kind == "contrast":
        m = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
        y = m + (x - m) * level
    elif kind == "bias_field":
        grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in spatial], indexing="ij")
        y = np.empty_like(x)
        for i in range(len(x)):
            c = rng.uniform(-1, 1, size=(dims, 2))
            p = sum(c[d, 0] * grids[d] + c[d, 1] * (grids[d] ** 2 - 0.5) for d in range(dims))
            p = p / (np.abs(p).max() + 1e-6)
            y[i] = x[i] * np.exp(level * p)[None]
    elif kind == "jpeg":
        u8 = np.clip((x - lo) / rng_width * 255, 0, 255).round().astype(np.uint8)
        out = np.empty_like(u8)
        for idx in np.ndindex(*x.shape[: x.ndim - 2]):
            out[idx] = _jpeg(u8[idx], int(level))
        y = out.astype(np.float32) / 255 * rng_width + lo
    else:  # resolution
        t = torch.from_numpy(x)
        small = [max(2, round(s / level)) for s in spatial]
        mode = "bilinear" if dims == 2 else "trilinear"
        y = F.interpolate(
            F.interpolate(t, size=small, mode="area"), size=list(spatial), mode=mode, align_corners=False
        ).numpy()
    y = np.clip(y, min(lo, x.min()), max(hi, x.max()))
    return np.round(y) if integer else y.astype(np.float32)


def robustness_table(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """AUROC/accuracy (binary: positive = column 1; else macro AUROC, argmax accuracy) on clean images and under
    each corruption and severity, with the drop from clean. ``predict`` maps images to ``(n, k)`` probabilities."""
    from medimg.classify.train import evaluate_probabilities

    def score(imgs: np.ndarray) -> dict[str, float]:
        m = evaluate_probabilities(labels, predict(imgs), False)
        return {"auroc": m["auroc"], "accuracy": m["accuracy"]}

    clean = score(images)
    rows = [{"corruption": "none", "severity": 0, **clean, "auroc_drop": 0.0, "accuracy_drop": 0.0}]
    for kind in corruptions:
        for sev in severities:
            m = score(corrupt(images, kind, sev, seed))
            rows.append(
                {
                    "corruption": kind,
                    "severity": sev,
                    **m,
                    "auroc_drop": clean["auroc"] - m["auroc"],
                    "accuracy_drop": clean["accuracy"] - m["accuracy"],
                }
            )
    return rows
