"""Interaction simulator for evaluation: clicks at the centre of the largest error region, boxes around the target,
iterative sessions that feed the previous result back (through the session's accumulated prompts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from medimg.interactive.prompts import Box, Click
from medimg.interactive.session import InteractiveSession


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.sum(a & b)) / s


def _deepest(region: np.ndarray) -> tuple[tuple[int, ...], float]:
    """The voxel farthest from the region's boundary (the image border counts as boundary) and that distance."""
    padded = np.pad(region, 1)
    dist = ndimage.distance_transform_edt(padded)[tuple(slice(1, -1) for _ in region.shape)]
    idx = np.unravel_index(int(np.argmax(dist)), region.shape)
    return tuple(int(v) for v in idx), float(dist[idx])


def next_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """The corrective click: at the deepest point of the larger error (false negatives -> positive click, false
    positives -> negative click); None when there is no error."""
    fn, fp = gt & ~pred, pred & ~gt
    best: tuple[float, tuple[int, ...], bool] | None = None
    for err, positive in ((fn, True), (fp, False)):
        if err.any():
            pt, d = _deepest(err)
            if best is None or d > best[0]:
                best = (d, pt, positive)
    return None if best is None else Click(best[1], best[2])


def bounding_box(gt: np.ndarray, jitter: float = 0.0, rng: np.random.Generator | None = None) -> Box:
    """The target's bounding box, optionally with each side moved by up to ``jitter`` x its extent."""
    idx = np.argwhere(gt)
    lo, hi = idx.min(0).astype(float), idx.max(0).astype(float)
    if jitter and rng is not None:
        ext = hi - lo + 1
        lo += rng.uniform(-jitter, jitter, lo.shape) * ext
        hi += rng.uniform(-jitter, jitter, hi.shape) * ext
    shape = np.array(gt.shape) - 1
    return Box(
        tuple(int(v) for v in np.clip(np.round(lo), 0, shape)), tuple(int(v) for v in np.clip(np.round(hi), 0, shape))
    )


def simulate(
    make_session: Callable[[], InteractiveSession], gt: np.ndarray, n: int = 10, start: str = "click"
) -> dict[str, Any]:
    """Run ``n`` interactions: the first is a click at the target's centre (``start="click"``) or its bounding box
    (``"box"``), the others corrective clicks from :func:`next_click`. Returns Dice and latency after each."""
    gt = np.asarray(gt, bool)
    s = make_session()
    dices: list[float] = []
    lat: list[float] = []
    first = next_click(np.zeros_like(gt), gt) if start == "click" else bounding_box(gt)
    prompt = first
    for _ in range(n):
        if prompt is None:
            dices.append(dices[-1] if dices else 1.0)
            lat.append(0.0)
            continue
        t0 = time.perf_counter()
        m = s.add(prompt)
        lat.append(time.perf_counter() - t0)
        dices.append(dice(m, gt))
        prompt = next_click(m, gt)
    return {"dice": dices, "latency_s": lat}
