"""Training the promptable network on a bank of 2D tasks (image slice + target mask) with simulated interactions.

Each training sample imitates one moment of a real session (all on the network's crop):

- the crop: the whole image (as for a first click), or the target's bounding box enlarged x1.3-2.4 and shifted
  (as the inference crop around a previous mask), or — in *propagation* samples — the inference crop around the
  mask of a neighbouring slice;
- the opening prompts: a click deep inside the target, a jittered box, or a scribble (line / centreline /
  contour, deformed, sometimes broken; sometimes with a negative scribble outside), plus 0-3 random clicks;
- the previous mask: none, the model's own prediction after 1-2 simulated corrective rounds (computed with the
  current weights, as in RITM), a perturbed ground truth (eroded, dilated, a part cut or added) with a corrective
  click, or — for propagation — the neighbouring slice's mask with no clicks at all.

Loss: binary cross-entropy + soft Dice. AdamW, warm-up then cosine decay over the wall-clock ``time_budget``,
bf16 autocast. Synthetic tasks (superpixels and random blobs on real images, :mod:`medimg.interactive.synthetic`)
teach the network that "the structure" is whatever the prompts say.
"""

from __future__ import annotations

import copy
import csv
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medimg.interactive.network import IN_CHANNELS, PromptUNet, with_channel_stem
from medimg.interactive.promptable import (
    PromptableModel,
    Roi,
    SlicePrompts,
    crop,
    encode,
    image_crop,
    roi_around,
    stack_channels,
    whole_image_roi,
)
from medimg.interactive.prompts import rasterize_scribble
from medimg.interactive.simulate import next_click, simulate_scribble


@dataclass
class Task:
    """One 2D target: ``image`` (float32, any intensity range; (x, y) or (x, y, channels)), ``mask`` (bool, (x, y)),
    the dataset ``family`` it comes from, and the target's masks on neighbouring slices with those slices' images (for
    propagation samples; same length)."""

    image: np.ndarray
    mask: np.ndarray
    family: str
    neighbours: tuple[np.ndarray, ...] = field(default_factory=tuple)
    neighbour_images: tuple[np.ndarray, ...] = field(default_factory=tuple)


def _deep_point(m: np.ndarray, rng: np.random.Generator, frac: float = 0.5) -> np.ndarray:
    d = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    cand = np.argwhere(d >= frac * d.max())
    return cand[rng.integers(len(cand))].astype(float)


def _random_roi(task: Task, rng: np.random.Generator) -> Roi:
    shape = (int(task.mask.shape[0]), int(task.mask.shape[1]))
    if rng.random() < 0.25:
        return whole_image_roi(shape)
    idx = np.argwhere(task.mask)
    lo, hi = idx.min(0).astype(float), idx.max(0).astype(float)
    ext = hi - lo + 1
    shift = rng.uniform(-0.15, 0.15, 2) * ext
    return roi_around(lo + shift, hi + shift, shape, context=float(rng.uniform(1.3, 2.4)))


def _perturb(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong previous mask, from slightly to badly wrong: eroded or dilated by 5-40 % of the target's
    size, shifted, shrunk to a blob around one interior point, a blob cut out or added at the boundary, or a
    large leak into the surroundings."""
    r = rng.random()
    size = math.sqrt(g.sum())
    k = max(1, int(rng.uniform(0.05, 0.4) * size))
    if r < 0.2:
        return ndimage.binary_erosion(g, iterations=k)
    if r < 0.4:
        return ndimage.binary_dilation(g, iterations=k)
    if r < 0.5:
        shift = np.round(rng.uniform(-0.3, 0.3, 2) * size).astype(int)
        return np.roll(g, tuple(shift), axis=(0, 1))
    xx, yy = np.ogrid[: g.shape[0], : g.shape[1]]
    if r < 0.6:
        c = _deep_point(g, rng, 0.2)
        rad = max(1.5, rng.uniform(0.1, 0.35) * size)
        return g & ((xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= rad**2)
    edge = np.argwhere(g ^ ndimage.binary_erosion(g))
    if len(edge) == 0:
        return g.copy()
    c = edge[rng.integers(len(edge))]
    rad = max(2.0, rng.uniform(0.15, 0.6) * size)
    blob = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= rad**2
    return (g & ~blob) if r < 0.8 else (g | blob)


def _corrective(pred: np.ndarray, g: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool] | None:
    fn, fp = g & ~pred, pred & ~g
    if not fn.any() and not fp.any():
        return None
    if rng.random() < 0.7:  # centre of the larger error, as in evaluation
        c = next_click(pred, g)
        assert c is not None
        return np.array(c.point, float), c.positive
    pos = bool(rng.random() < fn.sum() / (fn.sum() + fp.sum()))
    cand = np.argwhere(fn if pos else fp)
    return cand[rng.integers(len(cand))].astype(float), pos


def _add_click(sp: SlicePrompts, pt: np.ndarray, positive: bool) -> None:
    if positive:
        sp.pos_clicks = np.concatenate([sp.pos_clicks, pt[None]])
    else:
        sp.neg_clicks = np.concatenate([sp.neg_clicks, pt[None]])


def _opening(g: np.ndarray, rng: np.random.Generator) -> SlicePrompts:
    sp = SlicePrompts.empty()
    r = rng.random()
    if r < 0.4:
        _add_click(sp, _deep_point(g, rng, float(rng.uniform(0.2, 0.8))), True)
    elif r < 0.65:
        idx = np.argwhere(g)
        lo, hi = idx.min(0).astype(float), idx.max(0).astype(float)
        ext = hi - lo + 1
        j = 0.08 * ext
        sp.box = (lo + rng.uniform(-j, j), hi + rng.uniform(-j, j))
    else:
        strokes = simulate_scribble(g, rng)
        pts = [rasterize_scribble(s, g.shape) for s in strokes]
        sp.pos_strokes = np.concatenate(pts).astype(float) if pts else np.zeros((0, 2))
        if rng.random() < 0.3:
            ring = ndimage.binary_dilation(g, iterations=6) & ~ndimage.binary_dilation(g, iterations=2)
            neg = simulate_scribble(ring, rng, kind="centreline")
            if neg:
                sp.neg_strokes = np.concatenate([rasterize_scribble(s, g.shape) for s in neg]).astype(float)
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.3 else 0):
        if rng.random() < 0.6:
            cand = np.argwhere(g)
            _add_click(sp, cand[rng.integers(len(cand))].astype(float), True)
        else:
            ring = ndimage.binary_dilation(g, iterations=5) & ~g
            cand = np.argwhere(ring)
            if len(cand):
                _add_click(sp, cand[rng.integers(len(cand))].astype(float), False)
    return sp


@dataclass
class _Sample:
    image: torch.Tensor  # the image channels (C, S, S), each scaled to [0, 1]
    target: np.ndarray
    prompts: SlicePrompts
    prev: np.ndarray | None
    iterate: bool
    ref: torch.Tensor | None = None


def make_sample(task: Task, size: int, rng: np.random.Generator) -> _Sample | None:
    """One training sample (crop, prompts, previous mask) from a task; None when the crop misses the target."""
    shape = (int(task.mask.shape[0]), int(task.mask.shape[1]))
    nbs = [i for i, n in enumerate(task.neighbours) if n.any()]
    fill = float(task.image.min()) if task.image.ndim == 2 else None
    if nbs and (rng.random() < 0.4 or not task.mask.any()):  # propagation from a neighbouring slice
        i = nbs[int(rng.integers(len(nbs)))]
        nb = task.neighbours[i]
        idx = np.argwhere(nb)
        roi = roi_around(idx.min(0), idx.max(0), shape)
        g = crop(task.mask.astype(np.float32), roi, size).numpy() > 0.5
        prev = crop(nb.astype(np.float32), roi, size).numpy() > 0.5
        img = image_crop(task.image, roi, size, fill)[1]
        ref = image_crop(task.neighbour_images[i], roi, size, fill)[0] if task.neighbour_images else None
        sp = SlicePrompts.empty()
        if not g.any() and prev.any() and rng.random() < 0.3:  # a negative click on a slice past the structure
            _add_click(sp, _deep_point(prev, rng), False)
        return _Sample(img, g, sp, prev, False, ref)
    if not task.mask.any():
        return None
    roi = _random_roi(task, rng)
    lone_click = rng.random() < 0.2
    if lone_click:  # as inference does for a lone click: a 48 / 96 / 192-pixel window centred on it
        pt = _deep_point(task.mask, rng, float(rng.uniform(0.2, 0.8)))
        roi = roi_around(pt, pt, shape, context=float(48 * 2 ** int(rng.integers(0, 3))))
    g = crop(task.mask.astype(np.float32), roi, size).numpy() > 0.5
    if g.sum() < 3:
        return None
    img = image_crop(task.image, roi, size, fill)[1]
    if lone_click:
        sp = SlicePrompts.empty()
        _add_click(sp, roi.to_crop(pt[None], size)[0], True)
        return _Sample(img, g, sp, None, False)
    sp = _opening(g, rng)
    r = rng.random()
    if r < 0.3:
        return _Sample(img, g, sp, None, False)
    if r < 0.7:
        return _Sample(img, g, sp, None, True)
    if r < 0.82:  # a leaking previous mask corrected by negative clicks only
        prev = g | _perturb(g, rng)
        if prev.sum() > g.sum():
            sp = SlicePrompts.empty()
            c = _corrective(prev, g, rng)
            if c is not None:
                _add_click(sp, c[0], False)
            return _Sample(img, g, sp, prev, False)
    prev = _perturb(g, rng)
    pred = prev.copy()
    for _ in range(int(rng.integers(1, 4))):  # 1-3 corrective clicks on that mask
        c = _corrective(pred, g, rng)
        if c is None:
            break
        _add_click(sp, *c)
        cpt = tuple(int(v) for v in c[0])
        lab, _ = ndimage.label(g ^ pred)
        pred[lab == lab[cpt]] = c[1]  # assume that error is fixed: the next click goes elsewhere
    return _Sample(img, g, sp, prev, False)


def _inputs(samples: list[_Sample], size: int) -> torch.Tensor:
    ident = Roi((0, 0), size)
    out = []
    for s in samples:
        prev = None if s.prev is None else torch.from_numpy(s.prev.astype(np.float32))
        out.append(encode(s.image.mean(0), s.prompts, prev, ident, size, s.ref))
    return torch.stack(out)


def colourise(chans: torch.Tensor, target: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """A multi-channel version (2-4 channels) of a grey crop (1, S, S) for teaching the channel stem: each channel
    is the crop through its own random contrast (gamma, sometimes inverted, as T1 vs T2), with a smooth gain field
    and noise; in 40 % of the samples the ``target`` shows in one channel only (elsewhere it is filled in from its
    surroundings, as a lesion that is new at the second visit)."""
    g = chans[0].numpy().astype(np.float64)
    n = int(rng.integers(2, 5))
    only = int(rng.integers(n)) if rng.random() < 0.4 and target.any() else -1
    filled = g
    if only >= 0:
        keep = ndimage.binary_dilation(target, iterations=2)
        w = ndimage.gaussian_filter((~keep).astype(float), 6.0)
        filled = np.where(keep, ndimage.gaussian_filter(g * ~keep, 6.0) / np.maximum(w, 1e-3), g)
    out = []
    for c in range(n):
        v = g if only < 0 or c == only else filled
        v = np.clip(v, 0, 1) ** float(np.exp(rng.uniform(-0.7, 0.7)))
        if rng.random() < 0.35:
            v = 1 - v
        gain = ndimage.zoom(rng.uniform(0.8, 1.2, (3, 3)), np.array(g.shape) / 3, order=1)[: g.shape[0], : g.shape[1]]
        v = v * gain + rng.normal(0, rng.uniform(0, 0.06), g.shape)
        lo, hi = np.percentile(v, [1, 99])
        out.append(np.clip((v - lo) / (hi - lo + 1e-6), 0, 1))
    return torch.from_numpy(np.stack(out).astype(np.float32))


@dataclass
class _Batch:
    """A batch for the network: inputs ``x`` (B, IN_CHANNELS, S, S), targets ``y`` (B, 1, S, S), and the samples
    whose previous mask is still to come from the network (RITM-style rounds) with their rows ``iterate`` in ``x``
    (left empty: they are encoded after the rounds)."""

    x: torch.Tensor
    y: torch.Tensor
    iterate: list[int]
    its: list[_Sample]
    ch: torch.Tensor  # the image channels (B, C_max, S, S), padded, and which are real (B, C_max)
    valid: torch.Tensor


def _draw_batch(
    by_family: dict[str, list[Task]],
    fams: list[str],
    w: np.ndarray,
    size: int,
    n: int,
    rng: np.random.Generator,
    colour_p: float = 0.0,
) -> _Batch:
    samples: list[_Sample] = []
    while len(samples) < n:
        fam = fams[int(rng.choice(len(fams), p=w))]
        pool = by_family[fam]
        s = make_sample(pool[int(rng.integers(len(pool)))], size, rng)
        if s is not None:
            if colour_p > 0 and s.image.shape[0] == 1 and s.ref is None and rng.random() < colour_p:
                s.image = colourise(s.image, s.target, rng)
            samples.append(s)
    iterate = [i for i, s in enumerate(samples) if s.iterate]
    ready = [i for i, s in enumerate(samples) if not s.iterate]
    x = torch.zeros(n, IN_CHANNELS, size, size)
    if ready:
        x[ready] = _inputs([samples[i] for i in ready], size)
    y = torch.from_numpy(np.stack([s.target for s in samples]).astype(np.float32))[:, None]
    ch, valid = stack_channels([s.image for s in samples])
    return _Batch(x, y, iterate, [samples[i] for i in iterate], ch, valid)


# sample generation in worker processes (forked: they inherit the task bank through this module-level state)
_WORKER_STATE: dict[str, Any] = {}


def _worker_init() -> None:
    torch.set_num_threads(1)


_Shipped = tuple[np.ndarray, np.ndarray, list[int], list[_Sample], np.ndarray, np.ndarray]


def _worker_batch(seed: int) -> _Shipped:
    st = _WORKER_STATE
    b = _draw_batch(
        st["by_family"], st["fams"], st["w"], st["size"], st["n"], np.random.default_rng(seed), st["colour_p"]
    )
    for s in b.its:  # plain arrays travel between processes; tensors would need shared-memory handles
        s.image = s.image.numpy()  # type: ignore[assignment]
        s.ref = None if s.ref is None else s.ref.numpy()  # type: ignore[assignment]
    return b.x.numpy(), b.y.numpy(), b.iterate, b.its, b.ch.numpy(), b.valid.numpy()


def _from_worker(res: _Shipped) -> _Batch:
    x, y, iterate, its, ch, valid = res
    for s in its:
        s.image = torch.from_numpy(np.asarray(s.image))
        s.ref = None if s.ref is None else torch.from_numpy(np.asarray(s.ref))
    return _Batch(torch.from_numpy(x), torch.from_numpy(y), iterate, its, torch.from_numpy(ch), torch.from_numpy(valid))


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice per sample (2D or 3D batches: every axis after the batch one)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dims = tuple(range(1, p.ndim))
    inter = (p * target).sum(dims)
    dice = 1 - (2 * inter + 1) / (p.sum(dims) + target.sum(dims) + 1)
    return bce + dice.mean()


def set_warm_cosine_lr(opt: torch.optim.Optimizer, lr: float, step: int, warmup: int, frac: float) -> float:
    """Set and return the learning rate at ``step`` of a wall-clock budget ``frac`` used: linear warm-up over
    ``warmup`` steps, cosine decay from ``lr`` to 0 over the budget."""
    cur = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
    for gr in opt.param_groups:
        gr["lr"] = cur
    return cur


def optimiser_step(opt: torch.optim.Optimizer, net: torch.nn.Module, loss: torch.Tensor) -> None:
    """Backpropagate ``loss``, clip the gradient norm at 5 and step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    opt.step()


def family_pools(
    tasks: list[Any], family_weights: dict[str, float] | None
) -> tuple[dict[str, list[Any]], list[str], np.ndarray]:
    """Tasks grouped by ``family``, the sorted family names and their drawing probabilities (weight 1 unless
    ``family_weights`` says otherwise)."""
    by_family: dict[str, list[Any]] = {}
    for t in tasks:
        by_family.setdefault(t.family, []).append(t)
    fams = sorted(by_family)
    w = np.array([(family_weights or {}).get(f, 1.0) for f in fams], float)
    return by_family, fams, w / w.sum()


def write_training_log(out: Path, log: list[dict[str, Any]]) -> None:
    """``training_log.csv`` (step, seconds, loss, lr) in the model folder ``out``."""
    with open(out / "training_log.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["step", "seconds", "loss", "lr"])
        wr.writeheader()
        wr.writerows(log)


def train_promptable(
    tasks: list[Task],
    time_budget: float = 600.0,
    out_dir: str | Path | None = None,
    size: int = 96,
    batch_size: int = 16,
    lr: float = 2e-3,
    widths: tuple[int, ...] = (8, 16, 32, 64, 128),
    family_weights: dict[str, float] | None = None,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    workers: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    init: PromptableModel | None = None,
    stem: int = 0,
    colour_p: float = 0.0,
) -> tuple[PromptableModel, dict[str, Any]]:
    """Train a promptable network for ``time_budget`` seconds of wall-clock on ``tasks``.

    Families are sampled with equal probability unless ``family_weights`` says otherwise (tasks within a family
    uniformly). Returns the model and a summary (steps, seconds, families); with ``out_dir`` the model folder
    (promptable.json, promptable.pt in float16) and training_log.csv are written there.

    ``device`` is a torch device ("cpu", "cuda"); ``workers`` > 0 draws the samples in that many forked worker
    processes (for a machine with more cores than the 2 this project budgets for; 0: in this process).

    ``init``: start from this model's weights (fine-tuning; ``widths`` is then the model's); ``stem`` > 0 gives a
    grey network a per-channel stem of that many features (:func:`~medimg.interactive.network.with_channel_stem`)
    so that it reads any number of channels; ``colour_p``: the fraction of grey samples turned into 2-4 channel
    ones by :func:`colourise` (tasks whose images have channels are used as they are)."""
    if not tasks:
        raise ValueError("No training tasks.")
    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    by_family, fams, w = family_pools(tasks, family_weights)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    pool = None
    pending: deque[Any] = deque()
    if workers > 0:
        import multiprocessing as mp

        _WORKER_STATE.update(by_family=by_family, fams=fams, w=w, size=size, n=batch_size, colour_p=colour_p)
        pool = mp.get_context("fork").Pool(workers, initializer=_worker_init)
        seeds = itertools.count(seed * 1_000_003 + 1)
    if init is not None:
        net = copy.deepcopy(init.net)
        widths = net.widths
        if size != init.size:
            raise ValueError(f"size={size}, but the model to fine-tune works on {init.size}-pixel crops.")
        if stem and net.stem is not None and stem != net.stem_features:
            raise ValueError(f"stem={stem}, but the model to fine-tune has a stem of {net.stem_features} features.")
    else:
        net = PromptUNet(widths)
    if stem and net.stem is None:
        net = with_channel_stem(net, stem)
    net = net.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    step, run_loss = 0, 0.0
    try:
        while True:
            elapsed = time.perf_counter() - t0
            if elapsed >= time_budget:
                break
            frac = elapsed / time_budget
            cur_lr = set_warm_cosine_lr(opt, lr, step, 100, frac)
            if pool is not None:
                while len(pending) < 3 * workers:
                    pending.append(pool.apply_async(_worker_batch, (next(seeds),)))
                batch = _from_worker(pending.popleft().get())
            else:
                batch = _draw_batch(by_family, fams, w, size, batch_size, rng, colour_p)
            ch, valid = batch.ch.to(dev), batch.valid.to(dev)
            if batch.iterate:
                its = batch.its
                net.eval()
                rows = torch.tensor(batch.iterate, device=dev)
                for _ in range(int(rng.integers(1, 4))):
                    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
                        pred = (net(_inputs(its, size).to(dev), ch[rows], valid[rows]).float() > 0)[:, 0].cpu().numpy()
                    for s, pr in zip(its, pred, strict=True):
                        c = _corrective(pr, s.target, rng)
                        s.prev = pr
                        if c is not None:
                            _add_click(s.prompts, *c)
                net.train()
                batch.x[batch.iterate] = _inputs(its, size)
            x, y = batch.x.to(dev, non_blocking=True), batch.y.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = net(x, ch, valid)
            loss = _loss(logits.float(), y)
            optimiser_step(opt, net, loss)
            step += 1
            run_loss = loss.item() if step == 1 else 0.98 * run_loss + 0.02 * loss.item()
            if step % 50 == 0:
                entry = {
                    "step": step,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "loss": round(run_loss, 4),
                    "lr": round(cur_lr, 6),
                }
                log.append(entry)
                if progress:
                    progress(entry)
    finally:
        if pool is not None:
            pool.terminate()
    seconds = time.perf_counter() - t0
    summary = {
        "steps": step,
        "seconds": round(seconds, 1),
        "time_budget_s": time_budget,
        "batch_size": batch_size,
        "size": size,
        "lr": lr,
        "seed": seed,
        "widths": list(widths),
        "stem": net.stem_features,
        "init": None if init is None else init.meta.get("name", "given"),
        "colour_p": colour_p,
        "device": str(dev) if dev.type == "cpu" else f"{dev.type}: {torch.cuda.get_device_name(dev)}",
        "workers": workers,
        "families": {f: len(by_family[f]) for f in fams},
        "final_loss": round(run_loss, 4),
    }
    model = PromptableModel(net.cpu().eval(), size, {"training": summary})
    if out_dir is not None:
        out = Path(out_dir)
        model.save(out)
        write_training_log(out, log)
    return model, summary
