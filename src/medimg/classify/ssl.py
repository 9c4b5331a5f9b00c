"""Self-supervised pre-training of an encoder on unlabelled images, within a wall-clock budget.

Methods:

- ``simclr``: contrastive learning of two strongly augmented views per image (NT-Xent loss, temperature 0.2, a
  2-layer projection head), as in SimCLR (Chen et al., 2020).
- ``mae``: masked-image modelling for a CNN: 60 % of the patches (patch = 1/7 of the side) are replaced by zeros
  and a light decoder reconstructs the normalised image; the loss is the MSE on the masked patches only (as in MAE,
  He et al., 2022, adapted to a convolutional encoder).
- ``genesis``: restoration as in Models Genesis (Zhou et al., 2019) for 2D or 3D: non-linear intensity remapping
  (random monotonic Bezier curve), local pixel shuffling, in-painting and out-painting; the decoder restores the
  original image (MSE).

The output folder holds ``encoder.pt`` (encoder weights), ``encoder.json`` (encoder config, method, input size,
steps, seconds, loss curve) and ``pretrain_log.csv``; :func:`medimg.classify.train_classifier` (``init_encoder=``),
the probes and ``medimg classify train --init-encoder`` reuse it.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medimg.classify.augment import normalize, random_affine, resize, strong_views
from medimg.classify.networks import ReconstructionDecoder, ResNetEncoder, build_encoder, default_encoder_config
from medimg.errors import MedimgError

METHODS = ("simclr", "mae", "genesis")


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross-entropy of two batches of projections (positives: the same image's views)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(-1e9)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def patch_mask(shape: Sequence[int], ratio: float, rng: np.random.Generator, grid: int = 7) -> torch.Tensor:
    """A per-image binary mask ``(n, 1, *spatial)`` (1 = hidden) over a ``grid`` per axis of patches."""
    n, spatial = shape[0], list(shape[2:])
    g = [grid] * len(spatial)
    m = (rng.random((n, 1, *g)) < ratio).astype(np.float32)
    mt = torch.from_numpy(m)
    return F.interpolate(mt, size=spatial, mode="nearest")


def _bezier_remap(u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Models Genesis' non-linear transformation: a random monotonic cubic Bezier curve on [0, 1] intensities."""
    p1, p2 = rng.random(2), rng.random(2)
    t = np.linspace(0, 1, 1000)
    xs = 3 * (1 - t) ** 2 * t * p1[0] + 3 * (1 - t) * t**2 * p2[0] + t**3
    ys = 3 * (1 - t) ** 2 * t * p1[1] + 3 * (1 - t) * t**2 * p2[1] + t**3
    order = np.argsort(xs)
    out = np.interp(u, xs[order], ys[order])
    return 1 - out if rng.random() < 0.5 else out


def genesis_corrupt(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Models Genesis corruption of one ``(c, *spatial)`` image with intensities in [0, 1]."""
    y = x.copy()
    spatial = y.shape[1:]
    if rng.random() < 0.9:
        y = _bezier_remap(y, rng)
    if rng.random() < 0.5:  # local pixel shuffling in small blocks
        for _ in range(max(1, int(np.prod(spatial)) // 64)):
            bs = [int(rng.integers(1, max(2, s // 7) + 1)) for s in spatial]
            st = [int(rng.integers(0, s - b + 1)) for s, b in zip(spatial, bs, strict=True)]
            sl = tuple(slice(a, a + b) for a, b in zip(st, bs, strict=True))
            block = y[(slice(None), *sl)]
            flat = block.reshape(block.shape[0], -1)
            y[(slice(None), *sl)] = flat[:, rng.permutation(flat.shape[1])].reshape(block.shape)
    if rng.random() < 0.8:
        if rng.random() < 0.5:  # in-painting: random boxes filled with noise
            for _ in range(int(rng.integers(1, 4))):
                bs = [int(rng.integers(s // 6 + 1, s // 3 + 2)) for s in spatial]
                st = [int(rng.integers(0, max(1, s - b))) for s, b in zip(spatial, bs, strict=True)]
                sl = tuple(slice(a, a + b) for a, b in zip(st, bs, strict=True))
                y[(slice(None), *sl)] = rng.random(y[(slice(None), *sl)].shape)
        else:  # out-painting: keep one box, noise outside
            keep = y.copy()
            y = rng.random(y.shape).astype(y.dtype)
            bs = [int(rng.integers(s // 2, s - s // 8 + 1)) for s in spatial]
            st = [int(rng.integers(0, max(1, s - b))) for s, b in zip(spatial, bs, strict=True)]
            sl = tuple(slice(a, a + b) for a, b in zip(st, bs, strict=True))
            y[(slice(None), *sl)] = keep[(slice(None), *sl)]
    return y.astype(np.float32)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(2, x.ndim))
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo + 1e-6)


def pretrain(
    images: np.ndarray,
    out_dir: str | Path,
    method: str = "simclr",
    time_budget_s: float = 600.0,
    input_size: Sequence[int] | None = None,
    encoder_config: dict[str, Any] | None = None,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Pre-train an encoder on ``images`` ``(n, c, *spatial)`` (no labels) and write an encoder folder; returns
    ``encoder.json``'s contents."""
    if method not in METHODS:
        raise MedimgError(f"Unknown pre-training method {method!r}; choose one of {', '.join(METHODS)}.")
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim not in (4, 5) or len(imgs) < 2:
        raise MedimgError(f"Pre-training needs at least 2 images as (n, c, *spatial); got shape {imgs.shape}.")
    if not np.all(np.isfinite(imgs)):
        raise MedimgError("The pre-training images contain NaN or infinite values.")
    dims = imgs.ndim - 2
    size = list(input_size or imgs.shape[2:])
    enc_cfg = encoder_config or default_encoder_config(dims, imgs.shape[1], size)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    encoder: ResNetEncoder = build_encoder(enc_cfg)
    width = encoder.out_channels
    head: nn.Module
    if method == "simclr":
        head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, 128))
    else:
        head = ReconstructionDecoder(encoder, imgs.shape[1])
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4 if method != "simclr" else 1e-6)
    bs = min(batch_size, len(imgs))

    def loss_of(idx: np.ndarray) -> torch.Tensor:
        x = resize(torch.from_numpy(imgs[idx]), size)
        if method == "simclr":
            v1, v2 = strong_views(x, rng), strong_views(x, rng)
            return nt_xent(head(encoder.embed(v1)), head(encoder.embed(v2)))
        x = random_affine(x, rng, rotate_deg=10, translate=0.05)
        if method == "mae":
            target = normalize(x)
            m = patch_mask(x.shape, 0.6, rng)
            pred = head(encoder(target * (1 - m)), size)
            return (((pred.float() - target) ** 2) * m).sum() / (m.sum() * x.shape[1] + 1e-6)
        u = _minmax(x)
        corrupted = torch.from_numpy(np.stack([genesis_corrupt(a, rng) for a in u.numpy()]))
        pred = head(encoder(normalize(corrupted)), size)
        return F.mse_loss(torch.sigmoid(pred.float()), u)

    def step(idx: np.ndarray, lr_now: float) -> float:
        for g in opt.param_groups:
            g["lr"] = lr_now
        encoder.train()
        head.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    t0 = time.perf_counter()
    order, pos = rng.permutation(len(imgs)), 0
    losses: list[float] = []
    probe = 3
    for _ in range(probe):
        losses.append(step(order[pos : pos + bs], lr * 0.05))
        pos += bs
        if pos + bs > len(imgs):
            order, pos = rng.permutation(len(imgs)), 0
    step_s = (time.perf_counter() - t0) / probe
    total = max(probe + 1, int((time_budget_s - (time.perf_counter() - t0)) / step_s * 0.97) + probe)
    warm = max(1, total // 20)
    log: list[dict[str, Any]] = []
    s = probe
    while s < total and time.perf_counter() - t0 < time_budget_s:
        if pos + bs > len(imgs):
            order, pos = rng.permutation(len(imgs)), 0
        losses.append(step(order[pos : pos + bs], cosine_lr(s, total, lr, warm)))
        pos += bs
        s += 1
        if s % 20 == 0 or s == total:
            entry = {
                "step": s,
                "total_steps": total,
                "elapsed_s": round(time.perf_counter() - t0, 1),
                "loss": float(np.mean(losses[-20:])),
            }
            log.append(entry)
            if on_log:
                on_log(entry)
    import medimg
    from medimg.io._atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "task": "encoder",
        "method": method,
        "encoder": enc_cfg,
        "input_size": [int(v) for v in size],
        "normalization": "per-image z-score",
        "n_images": len(imgs),
        "batch_size": bs,
        "steps": s,
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": float(np.mean(losses[-20:])),
        "medimg_version": medimg.__version__,
        "seed": seed,
    }
    with atomic_path(out / "encoder.pt") as tmp:
        torch.save(encoder.state_dict(), tmp)
    with atomic_path(out / "encoder.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    with atomic_path(out / "pretrain_log.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "total_steps", "elapsed_s", "loss"])
        w.writeheader()
        w.writerows(log)
    return info
