"""Training the 3D promptable network (:mod:`medimg.interactive.promptable3d`) with simulated 3D interactions.

Each sample imitates one moment of a 3D session, on the crop the model would use at that moment:

- a **box** start (70 %): the structure's 3D bounding box (exact or jittered by up to 10 % of its extent), the crop
  around it with a random context (x 1.2-1.9) and shift; the previous mask is none (60 %), or a badly perturbed
  ground truth with 1-4 corrective clicks at the centres of its largest error regions (the CVPR 2025 interactive
  challenge's click rule);
- a **correction without a box** (15 %): a perturbed previous mask, an opening click at the structure's core and
  1-4 corrective clicks;
- a **lone click** (15 %): one click in the structure's deep part and the ``LONE_MM`` window the model uses then.

In 30 % of the batches the box starts without a previous mask take the network's own prediction as their previous
mask and a corrective click at the centre of its largest error (1-2 rounds, as in RITM). Everything after the
crop is simulated on the network's cube; axes are permuted and mirrored at random (the crop is resampled per axis,
so orientation carries no meaning), intensities get a random gamma and noise. Loss: BCE + soft Dice; AdamW,
cosine over a wall-clock budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medimg.interactive.network import IN_CHANNELS_3D, PromptUNet
from medimg.interactive.promptable3d import (
    LONE_MAX,
    LONE_MM,
    MIN_SIDE,
    SIZE,
    Promptable3DModel,
    Prompts3,
    Roi3,
    crop,
    draw_balls,
    encode,
    normalise,
    roi_around,
)
from medimg.interactive.train import _loss, family_pools, optimiser_step, set_warm_cosine_lr, write_training_log


@dataclass
class Task3:
    """A 3D training target: ``image`` (float32) and ``mask`` (bool) on one grid, ``spacing`` in mm."""

    image: np.ndarray
    mask: np.ndarray
    family: str
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    _bbox: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        if self._bbox is None:
            idx = np.argwhere(self.mask)
            self._bbox = (idx.min(0), idx.max(0))
        return self._bbox


def cut_around(
    image: np.ndarray, mask: np.ndarray, family: str, spacing: tuple[float, ...], min_voxels: int = 8
) -> Task3 | None:
    """A task holding only the part of the volume a session on ``mask`` can reach (its box, enlarged by 70 % of
    its extent and at least half the lone-click window per side); None for masks under ``min_voxels``."""
    if int(mask.sum()) < min_voxels:
        return None
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0)
    sp = np.asarray(spacing, float)
    margin = np.maximum(np.ceil(0.7 * (hi - lo + 1)), np.ceil(np.minimum(LONE_MM / sp, LONE_MAX) / 2)).astype(int)
    a, b = np.maximum(0, lo - margin), np.minimum(np.array(mask.shape), hi + margin + 1)
    sl = tuple(slice(int(x), int(y)) for x, y in zip(a, b, strict=True))
    sp3 = (float(sp[0]), float(sp[1]), float(sp[2]))
    return Task3(np.ascontiguousarray(image[sl], np.float32), np.ascontiguousarray(mask[sl]), family, sp3)


def error_centre(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The challenge's corrective click: the centre (deepest voxel) of the largest connected error region;
    positive where the error is missed structure. None without error."""
    err = pred != gt
    if not err.any():
        return None
    lab, _ = ndimage.label(err)
    sizes = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(sizes)) + 1
    comp = lab == k
    idx = np.argwhere(comp)
    lo, hi = idx.min(0), idx.max(0) + 1
    sub = np.pad(comp[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], 1)
    d = ndimage.distance_transform_edt(sub)[1:-1, 1:-1, 1:-1]
    c = np.array(np.unravel_index(int(np.argmax(d)), d.shape)) + lo
    return c.astype(float), bool(gt[tuple(c)])


def _ball(shape: tuple[int, ...], c: np.ndarray, r: float) -> np.ndarray:
    g = np.ogrid[tuple(slice(0, n) for n in shape)]
    return np.asarray(sum((gi - ci) ** 2 for gi, ci in zip(g, c, strict=True)) <= r * r)


def perturb(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong previous mask (3D): eroded or dilated, shifted, a ball cut out or added at the boundary,
    a leak, or only a slab of it."""
    r = rng.random()
    size = float(np.cbrt(g.sum()))
    k = max(1, int(rng.uniform(0.05, 0.3) * size))
    if r < 0.2:
        out = ndimage.binary_erosion(g, iterations=k)
        return out if out.any() else g.copy()
    if r < 0.4:
        return ndimage.binary_dilation(g, iterations=k)
    if r < 0.5:
        shift = np.round(rng.uniform(-0.25, 0.25, 3) * size).astype(int)
        return np.roll(g, tuple(int(v) for v in shift), axis=(0, 1, 2))
    if r < 0.6:  # a slab: as if only a few slices had been segmented
        ax = int(rng.integers(3))
        idx = np.flatnonzero(np.moveaxis(g, ax, 0).any((1, 2)))
        a = int(rng.integers(idx.min(), idx.max() + 1))
        w = max(1, int(rng.uniform(0.1, 0.5) * len(idx)))
        keep = np.zeros(g.shape, bool)
        sl = [slice(None)] * 3
        sl[ax] = slice(a, a + w)
        keep[tuple(sl)] = True
        return g & keep
    edge = np.argwhere(g & ~ndimage.binary_erosion(g))
    if len(edge) == 0:
        return g.copy()
    c = edge[rng.integers(len(edge))]
    blob = _ball(g.shape, c, max(2.0, rng.uniform(0.2, 0.7) * size))
    return (g & ~blob) if r < 0.8 else (g | blob)


def _deep_point(m: np.ndarray, rng: np.random.Generator, frac: float = 0.5) -> np.ndarray:
    d = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1, 1:-1]
    cand = np.argwhere(d >= frac * d.max())
    return cand[rng.integers(len(cand))].astype(float)


@dataclass
class _Sample:
    x: torch.Tensor  # (5, S, S, S)
    y: np.ndarray  # (S, S, S) bool
    iterate: bool  # may take RITM rounds (a box start without a previous mask)


def make_sample(task: Task3, size: int, rng: np.random.Generator) -> _Sample | None:
    """One simulated interaction on ``task`` (see the module docstring); None when the crop misses the target."""
    shape = tuple(int(n) for n in task.mask.shape)
    lo, hi = task.bbox()
    ext = (hi - lo + 1).astype(float)
    r = rng.random()
    pos_pts: list[np.ndarray] = []
    box = None
    if r < 0.15:  # lone click
        c = _deep_point(task.mask, rng)
        win = np.clip(np.round(LONE_MM * rng.uniform(0.75, 1.25) / np.asarray(task.spacing)), MIN_SIDE, LONE_MAX)
        roi = roi_around(c - (win - 1) / 2, c + (win - 1) / 2, shape, context=1.0)
        pos_pts.append(c)
        mode = "lone"
    else:
        jit = rng.uniform(0, 0.1) if rng.random() < 0.5 else 0.0
        blo = lo + np.round(rng.uniform(-1, 1, 3) * jit * ext)
        bhi = hi + np.round(rng.uniform(-1, 1, 3) * jit * ext)
        blo, bhi = np.clip(np.minimum(blo, hi), 0, None), np.clip(np.maximum(bhi, lo), None, np.array(shape) - 1)
        shift = rng.uniform(-0.1, 0.1, 3) * ext
        roi = roi_around(blo + shift, bhi + shift, shape, context=float(rng.uniform(1.2, 1.9)))
        mode = "box" if r < 0.85 else "correct"
        if mode == "box":
            box = (blo, bhi)
    fill = float(task.image.min())
    img = normalise(crop(task.image, roi, size, fill=fill))
    gt = (crop(task.mask.astype(np.float32), roi, size) > 0.5).numpy()
    if not gt.any():
        return None
    ident = Roi3((0, 0, 0), (size, size, size))
    pos = [roi.to_crop(p, size) for p in pos_pts]
    neg: list[np.ndarray] = []
    box_c = None if box is None else tuple(roi.to_crop(np.stack(box), size))
    prev = None
    if mode == "correct" or (mode == "box" and rng.random() < 0.4):
        prev = perturb(gt, rng)
        if mode == "correct":
            pos.append(_deep_point(gt, rng, 0.3)[None])
        for _ in range(int(rng.integers(1, 5))):
            ec = error_centre(prev, gt)
            if ec is None:
                break
            (pos if ec[1] else neg).append(ec[0][None])
            prev = prev.copy()  # later clicks: at the next error, as if this one had been fixed
            ball = _ball(gt.shape, ec[0], 3.0)
            prev[ball] = gt[ball]
    z = np.zeros((0, 3))
    p3 = Prompts3(
        np.concatenate(pos).reshape(-1, 3) if pos else z,
        np.concatenate(neg).reshape(-1, 3) if neg else z,
        None if box_c is None else (np.asarray(box_c[0]), np.asarray(box_c[1])),
    )
    prev_t = None if prev is None else torch.from_numpy(prev.astype(np.float32))
    x = encode(img, p3, prev_t, ident, size)
    return _Sample(x, gt, iterate=mode == "box" and prev is None)


def augment(x: torch.Tensor, y: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Random axis permutation and mirroring (image, prompts and target alike), gamma and noise on the image."""
    perm = [int(v) for v in rng.permutation(3)]
    x = x.permute(0, *(p + 1 for p in perm))
    y = np.transpose(y, perm)
    flips = [a for a in range(3) if rng.random() < 0.5]
    if flips:
        x = x.flip([a + 1 for a in flips])
        y = np.flip(y, tuple(flips))
    x = x.contiguous()
    x[0] = x[0].clamp(0, 1) ** float(np.exp(rng.uniform(-0.4, 0.4)))
    if rng.random() < 0.3:
        x[0] = (x[0] + torch.randn_like(x[0]) * float(rng.uniform(0.01, 0.06))).clamp(0, 1)
    return x, np.ascontiguousarray(y)


def draw_batch(
    by_family: dict[str, list[Task3]], fams: list[str], w: np.ndarray, size: int, n: int, rng: np.random.Generator
) -> list[_Sample]:
    out: list[_Sample] = []
    while len(out) < n:
        fam = fams[int(rng.choice(len(fams), p=w))]
        ts = by_family[fam]
        s = make_sample(ts[int(rng.integers(len(ts)))], size, rng)
        if s is not None:
            x, y = augment(s.x, s.y, rng)
            out.append(_Sample(x, y, s.iterate))
    return out


def train_promptable3d(
    tasks: list[Task3],
    time_budget: float = 1200.0,
    out_dir: str | Path | None = None,
    size: int = SIZE,
    batch_size: int = 4,
    lr: float = 2e-3,
    widths: tuple[int, ...] = (12, 24, 48, 96),
    family_weights: dict[str, float] | None = None,
    seed: int = 0,
    threads: int | None = None,
    init: Promptable3DModel | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Promptable3DModel, dict[str, Any]]:
    """Train a 3D promptable network for ``time_budget`` seconds of wall-clock on ``tasks`` (CPU).

    Families are drawn with equal probability unless ``family_weights`` says otherwise; ``init`` continues from a
    model's weights. Returns the model and a summary; with ``out_dir`` the model folder (promptable3d.json,
    promptable3d.pt in float16) and training_log.csv are written there."""
    if not tasks:
        raise ValueError("No training tasks.")
    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    by_family, fams, w = family_pools(tasks, family_weights)
    net = init.net if init is not None else PromptUNet(widths, IN_CHANNELS_3D, dims=3)
    widths = tuple(net.widths)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    step, run_loss, samples = 0, 0.0, 0
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= time_budget:
            break
        cur_lr = set_warm_cosine_lr(opt, lr, step, 50, elapsed / time_budget)
        batch = draw_batch(by_family, fams, w, size, batch_size, rng)
        x = torch.stack([s.x for s in batch])
        y_np = np.stack([s.y for s in batch])
        its = [i for i, s in enumerate(batch) if s.iterate]
        if its and rng.random() < 0.3:  # RITM: the network's own result, then a click at its largest error
            net.eval()
            for _ in range(int(rng.integers(1, 3))):
                with torch.no_grad():
                    pred = (net(x[its]) > 0)[:, 0].numpy()
                for j, i in enumerate(its):
                    c = error_centre(pred[j], y_np[i])
                    x[i, 4] = torch.from_numpy(pred[j].astype(np.float32))
                    if c is not None:
                        draw_balls(x[i, 1 if c[1] else 2], c[0][None])
            net.train()
        y = torch.from_numpy(y_np.astype(np.float32))[:, None]
        loss = _loss(net(x), y)
        optimiser_step(opt, net, loss)
        step += 1
        samples += len(batch)
        run_loss = loss.item() if step == 1 else 0.97 * run_loss + 0.03 * loss.item()
        if step % 25 == 0:
            entry = {"step": step, "seconds": round(time.perf_counter() - t0, 1), "loss": round(run_loss, 4)}
            entry["lr"] = round(cur_lr, 6)
            log.append(entry)
            if progress:
                progress(entry)
    seconds = time.perf_counter() - t0
    summary = {
        "steps": step,
        "samples": samples,
        "seconds": round(seconds, 1),
        "time_budget_s": time_budget,
        "batch_size": batch_size,
        "size": size,
        "lr": lr,
        "seed": seed,
        "widths": list(widths),
        "threads": torch.get_num_threads(),
        "continued_from": None if init is None else init.meta.get("training", {}).get("steps"),
        "families": {f: len(by_family[f]) for f in fams},
        "final_loss": round(run_loss, 4),
    }
    model = Promptable3DModel(net.eval(), size, {"training": summary})
    if out_dir is not None:
        out = Path(out_dir)
        model.save(out)
        write_training_log(out, log)
    return model, summary
