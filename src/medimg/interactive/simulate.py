"""Interaction simulator for training and evaluation: clicks at the centre of the largest error region or at random
in an error region, (jittered) boxes around the target, realistic scribbles (straight lines, centrelines and
contour strokes, smoothly deformed and broken), and iterative sessions that feed the previous result back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from medimg.interactive.prompts import Box, Click, Prompt, Scribble
from medimg.interactive.session import InteractiveSession

SCRIBBLE_KINDS = ("line", "centreline", "contour")


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


def random_click(pred: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> Click | None:
    """A click at a random voxel of a random error component (chosen with probability ~ its size), at least
    one voxel inside it where possible; positive for false negatives."""
    fn, fp = gt & ~pred, pred & ~gt
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if n_fn + n_fp == 0:
        return None
    positive = bool(rng.random() < n_fn / (n_fn + n_fp))
    err = fn if positive else fp
    inner = ndimage.binary_erosion(err)
    cand = np.argwhere(inner if inner.any() else err)
    return Click(tuple(int(v) for v in cand[rng.integers(len(cand))]), positive)


def _order_skeleton(skel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A path (n, 2) along a 2D skeleton: walk from an end point, always to an unvisited 8-neighbour."""
    pts = {tuple(p) for p in np.argwhere(skel)}
    nbrs = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b]

    def degree(p: tuple[int, int]) -> int:
        return sum((p[0] + a, p[1] + b) in pts for a, b in nbrs)

    ends = [p for p in pts if degree(p) == 1]
    start = ends[rng.integers(len(ends))] if ends else next(iter(pts))
    path, seen, cur = [start], {start}, start
    while True:
        nxt = [(cur[0] + a, cur[1] + b) for a, b in nbrs if (cur[0] + a, cur[1] + b) in pts - seen]
        if not nxt:
            break
        cur = nxt[rng.integers(len(nxt))]
        seen.add(cur)
        path.append(cur)
    return np.array(path, float)


def scribble_path(region: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """An undeformed stroke (n, 2) inside a 2D region: ``line`` (a chord through the region's deepest part),
    ``centreline`` (along its skeleton) or ``contour`` (an arc of its boundary, a few pixels inside)."""
    from skimage.measure import find_contours
    from skimage.morphology import skeletonize

    idx = np.argwhere(region)
    if len(idx) == 0:
        return np.zeros((0, 2))
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    if kind == "centreline" and len(idx) > 8:
        path = _order_skeleton(skeletonize(region), rng)
        if len(path) >= 3:
            return path
    if kind == "contour" and dist.max() >= 3:
        inner = dist >= min(3.0, dist.max() / 2)
        cs = find_contours(np.pad(inner, 1).astype(float), 0.5)
        if cs:
            c = max(cs, key=len) - 1
            n = len(c)
            frac = rng.uniform(0.3, 0.8)
            start = int(rng.integers(n))
            take = (start + np.arange(max(2, int(frac * n)))) % n
            return np.asarray(c[take])
    deep = np.argwhere(dist >= 0.5 * dist.max())
    centre = deep[rng.integers(len(deep))].astype(float)
    ang = rng.uniform(0, np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    half = 0.6 * np.sqrt(len(idx) / np.pi) * rng.uniform(0.5, 1.2)
    return centre + np.linspace(-half, half, max(3, int(2 * half)))[:, None] * d


def simulate_scribble(
    region: np.ndarray,
    rng: np.random.Generator,
    kind: str | None = None,
    positive: bool = True,
    deform: float = 0.04,
    p_break: float = 0.3,
    z: int | None = None,
) -> list[Scribble]:
    """Realistic scribbles inside a 2D ``region``: a stroke of ``kind`` (random when None), smoothly deformed
    by up to ``deform`` x the region's size, points that leave the region dropped, and with probability
    ``p_break`` broken into two strokes. ``z`` appends a slice index (for 3D volumes). Empty list if the region
    is empty."""
    kind = kind or SCRIBBLE_KINDS[int(rng.integers(len(SCRIBBLE_KINDS)))]
    path = scribble_path(region, kind, rng)
    if len(path) == 0:
        return []
    size = float(np.sqrt(region.sum()))
    if len(path) > 3 and deform > 0:
        noise = ndimage.gaussian_filter1d(rng.normal(size=(len(path), 2)), sigma=max(2.0, len(path) / 6), axis=0)
        noise /= np.abs(noise).max() + 1e-9
        path = path + noise * deform * size * rng.uniform(0.5, 1.0)
    pix = np.round(path).astype(int)
    ok = np.all((pix >= 0) & (pix < np.array(region.shape)), axis=1)
    ok[ok] = region[pix[ok, 0], pix[ok, 1]]
    strokes: list[np.ndarray] = []
    cur: list[np.ndarray] = []
    for p, good in zip(pix, ok, strict=True):
        if good:
            cur.append(p)
        elif cur:
            strokes.append(np.array(cur))
            cur = []
    if cur:
        strokes.append(np.array(cur))
    if not strokes:
        deep = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(region))), region.shape)
        strokes = [np.array([deep])]
    if rng.random() < p_break:
        longest = max(range(len(strokes)), key=lambda i: len(strokes[i]))
        s = strokes[longest]
        if len(s) >= 8:
            a = int(rng.integers(len(s) // 4, len(s) // 2))
            b = a + max(1, int(rng.uniform(0.1, 0.3) * len(s)))
            strokes[longest : longest + 1] = [s[:a], s[b:]] if b < len(s) else [s[:a]]
    out = []
    for s in strokes:
        if len(s) == 0:
            continue
        pts = s[:: max(1, len(s) // 24)]  # a stroke is a polyline of at most ~24 points
        if not np.array_equal(pts[-1], s[-1]):
            pts = np.concatenate([pts, s[-1:]])
        if z is not None:
            pts = np.concatenate([pts, np.full((len(pts), 1), z)], axis=1)
        out.append(Scribble(tuple(tuple(int(v) for v in p) for p in pts), positive))
    return out


def first_prompts(gt: np.ndarray, start: str, rng: np.random.Generator | None = None) -> list[Prompt]:
    """The opening interaction of a simulated session on target ``gt`` (2D or 3D): ``click`` (centre of the
    target), ``box`` (its bounding box; ``box_jitter`` a box with each side off by up to 10 %) or ``scribble``
    (a deformed stroke on the slice with the largest cross-section)."""
    rng = rng or np.random.default_rng(0)
    if start == "click":
        c = next_click(np.zeros_like(gt), gt)
        return [] if c is None else [c]
    if start == "box":
        return [bounding_box(gt)]
    if start == "box_jitter":
        return [bounding_box(gt, 0.1, rng)]
    if start == "scribble":
        if gt.ndim == 3:
            z = int(np.argmax(gt.sum((0, 1))))
            return list(simulate_scribble(gt[:, :, z], rng, z=z))
        return list(simulate_scribble(gt, rng))
    raise ValueError(f"Unknown start {start!r}; use click, box, box_jitter or scribble.")


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
    make_session: Callable[[], InteractiveSession],
    gt: np.ndarray,
    n: int = 10,
    start: str = "click",
    clicks: str = "centre",
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``n`` interactions: the first from :func:`first_prompts` (``start`` = click, box, box_jitter or
    scribble; a scribble broken in two counts as one interaction), the others corrective clicks — at the centre of
    the largest error (``clicks="centre"``) or at random in an error region (``"random"``). The session feeds its
    previous result back. Returns Dice and latency (s) after each interaction."""
    gt = np.asarray(gt, bool)
    rng = np.random.default_rng(seed)
    s = make_session()
    dices: list[float] = []
    lat: list[float] = []
    todo: list[Prompt] | None = first_prompts(gt, start, rng)
    for _ in range(n):
        if not todo:
            dices.append(dices[-1] if dices else 1.0)
            lat.append(0.0)
            continue
        t0 = time.perf_counter()
        m = s.add_many(todo)
        lat.append(time.perf_counter() - t0)
        dices.append(dice(m, gt))
        c = next_click(m, gt) if clicks == "centre" else random_click(m, gt, rng)
        todo = None if c is None else [c]
    return {"dice": dices, "latency_s": lat}
