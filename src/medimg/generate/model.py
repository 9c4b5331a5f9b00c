"""Train, save, load and sample class- or mask-conditional 2D diffusion models.

A generator model folder holds ``model.pt`` (the EMA weights), ``model.json`` (kind ``medimg-diffusion``: mode,
classes or label names, image size, network widths, intensity mapping, training record) and ``training_log.csv``.

Array convention: images are ``(n, c, rows, cols)`` in numpy image order (as in :mod:`medimg.classify.data`);
intensities are mapped linearly from ``[low, high]`` (the model's ``intensity``) to [-1, 1] for the network and
back for the outputs. Masks are ``(n, rows, cols)`` integer label maps.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medimg.errors import MedimgError
from medimg.generate.diffusion import ddim_sample, training_loss
from medimg.generate.unet import DiffusionUNet
from medimg.precision import bf16_is_faster

KIND = "medimg-diffusion"
Mode = Literal["class", "mask"]


class GeneratorError(MedimgError):
    """Bad generator training data, model folder or sampling request."""


@dataclass
class GenData:
    """Training images for a generator: ``images`` ``(n, c, h, w)`` float32 in original units, plus class labels
    ``(n,)`` (mode ``class``) or masks ``(n, h, w)`` (mode ``mask``)."""

    images: np.ndarray
    mode: Mode
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    names: list[str] = field(default_factory=list)  # class names (class mode) or label names, 0 first (mask mode)
    ids: list[str] = field(default_factory=list)


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """``(n, c, h, w)`` -> ``(n, c, *size)`` (bilinear with antialiasing, or nearest for label maps)."""
    if tuple(a.shape[-2:]) == size:
        return a
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if nearest:
        r = torch.nn.functional.interpolate(t, size=size, mode="nearest-exact")
    else:
        r = torch.nn.functional.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return r.numpy()


def _default_size(shape: Sequence[int], multiple: int, max_side: int = 128) -> tuple[int, int]:
    """The images' size scaled so the longer side is at most ``max_side``, each side rounded to ``multiple``."""
    h, w = int(shape[0]), int(shape[1])
    s = min(1.0, max_side / max(h, w))
    return (max(multiple, round(h * s / multiple) * multiple), max(multiple, round(w * s / multiple) * multiple))


def load_class_data(path: str | Path, split: str = "train", labels_csv: str | Path | None = None) -> GenData:
    """Class-conditional training data: a MedMNIST-layout NPZ (``split``) or an image folder with a labels CSV."""
    from medimg.classify.data import load

    d = load(path, split, labels_csv)
    if d.multilabel:
        raise GeneratorError(f"{path}: multi-label data; a class-conditional generator needs one class per image.")
    if d.dims != 2:
        raise GeneratorError(f"{path}: {d.dims}D images; generators are 2D only for now (use 2D slices).")
    return GenData(d.images.astype(np.float32), "class", labels=d.labels.astype(np.int64), names=d.classes, ids=d.ids)


def load_mask_data(root: str | Path, progress: Any = None, size: tuple[int, int] | None = None) -> GenData:
    """Mask-conditional training data: a segmentation dataset (``imagesTr/`` + ``labelsTr/``) of 2D images (numpy
    image order; one channel). Images of several sizes need ``size`` ``(rows, cols)``: each image is then resampled
    to it (bilinear, anti-aliased; its mask nearest)."""
    import medimg
    from medimg.seg.dataset import load_dataset

    ds = load_dataset(root)
    cases = [c for c in ds.cases if c.label is not None]
    if not cases:
        raise GeneratorError(f"{root}: no labelled cases (labelsTr/ is empty).")
    if len(ds.channels) != 1:
        raise GeneratorError(f"{root}: {len(ds.channels)} channels; mask-conditional generators take one channel.")
    imgs, masks, ids = [], [], []
    it = progress(cases, "reading") if progress else cases
    for c in it:
        im = medimg.read(c.images[0])
        lab = medimg.read_labels(c.label) if c.label is not None else None
        a = np.asarray(im.array, np.float32)
        if a.ndim == 3 and im.ndim == 2:
            a = a.mean(axis=-1)  # colour stored as channels: use the luminance-like mean
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise GeneratorError(f"{c.images[0]}: a {a.ndim}D image; mask-conditional generators are 2D only.")
        m = np.asarray(lab.array if lab is not None else np.zeros_like(a), np.int64)
        if m.ndim == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        if m.shape != a.shape:
            raise GeneratorError(f"{c.case_id}: image {a.shape} and label {m.shape} differ in size.")
        imgs.append(a.T)
        masks.append(m.T)
        ids.append(c.case_id)
    shapes = {x.shape for x in imgs}
    if len(shapes) > 1:
        if size is None:
            raise GeneratorError(
                f"{root}: images of several sizes (rows x cols) {sorted(shapes)[:4]}; give --size ROWSxCOLS to train "
                "at one size (each image is resampled to it), or resample the images to one size first."
            )
        eight_bit = all(x.min() >= 0 and x.max() <= 255 and np.all(x == np.round(x)) for x in imgs)
        imgs = [_resize(x[None, None], size, nearest=False)[0, 0] for x in imgs]
        if eight_bit:  # keep 8-bit data 8-bit (the model then writes 8-bit PNGs like its inputs)
            imgs = [np.clip(np.round(x), 0, 255) for x in imgs]
        masks = [
            _resize(m[None, None].astype(np.float32), size, nearest=True)[0, 0].round().astype(np.int64) for m in masks
        ]
    names = [str(ds.labels.get(k, k)) for k in range(ds.n_classes)]
    return GenData(np.stack(imgs)[:, None], "mask", masks=np.stack(masks), names=names, ids=ids)


def intensity_range(images: np.ndarray) -> dict[str, Any]:
    """``low``/``high`` for the [-1, 1] mapping: 0-255 for 8-bit data, else the 0.5 / 99.5 percentiles."""
    a = images
    if a.min() >= 0 and a.max() <= 255 and np.all(a == np.round(a)) and a.max() > 1:
        return {"low": 0.0, "high": 255.0, "dtype": "uint8"}
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        raise GeneratorError("The training images are constant; nothing to learn.")
    return {"low": float(lo), "high": float(hi), "dtype": "float32"}


def to_unit(a: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """Original units -> [-1, 1] (clipped)."""
    lo, hi = intensity["low"], intensity["high"]
    return np.clip((a - lo) / (hi - lo) * 2 - 1, -1, 1).astype(np.float32)


def from_unit(a: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """[-1, 1] -> original units (``uint8`` for 8-bit models)."""
    lo, hi = intensity["low"], intensity["high"]
    x = (np.asarray(a, np.float64) + 1) / 2 * (hi - lo) + lo
    if intensity.get("dtype") == "uint8":
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x.astype(np.float32)


def one_hot(masks: np.ndarray, n: int) -> np.ndarray:
    """``(n, h, w)`` label maps -> ``(n, classes, h, w)`` float32 one-hot (labels >= ``n`` are refused)."""
    if masks.size and (masks.min() < 0 or masks.max() >= n):
        raise GeneratorError(f"Mask labels must lie in 0..{n - 1}; found {int(masks.min())}..{int(masks.max())}.")
    return np.eye(n, dtype=np.float32)[masks].transpose(0, 3, 1, 2).copy()


def _sampling_weights(labels: np.ndarray | None, n: int, balance: str) -> np.ndarray:
    """Per-image sampling probabilities: uniform, or class counts raised to 0.5 (``sqrt``) / 0 (``equal``)."""
    if labels is None or balance == "none":
        return np.full(n, 1.0 / n)
    counts = np.bincount(labels)
    power = {"sqrt": 0.5, "equal": 0.0}[balance]
    per_class = np.where(counts > 0, counts.astype(np.float64) ** power, 0.0)
    per_class = per_class / per_class.sum()
    w = per_class[labels] / counts[labels]
    return np.asarray(w / w.sum())


def train_generator(
    data: GenData,
    out: str | Path,
    time_budget_s: float = 600.0,
    max_steps: int | None = None,
    size: tuple[int, int] | None = None,
    widths: tuple[int, ...] = (32, 64, 128),
    blocks: int = 1,
    batch_size: int = 64,
    lr: float = 5e-4,
    cond_dropout: float = 0.15,
    balance: str = "sqrt",
    ema_decay: float = 0.999,
    bf16: bool | None = None,
    seed: int = 0,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Train a diffusion model on ``data`` for ``time_budget_s`` seconds of wall clock (or ``max_steps``) and write
    the model folder ``out``. The learning rate follows a warm-up and a cosine decay over the budget's elapsed
    fraction; the saved weights are an exponential moving average. Returns the model's ``model.json`` content."""
    if len(data.images) < 2:
        raise GeneratorError(f"{len(data.images)} training image(s); a generator needs at least 2 (better hundreds).")
    if balance not in ("none", "sqrt", "equal"):
        raise GeneratorError(f"balance {balance!r} is not known; use none, sqrt or equal.")
    out = Path(out)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    multiple = 2 ** (len(widths) - 1)
    hw = tuple(data.images.shape[-2:])
    if size is None:
        fits = hw[0] % multiple == 0 and hw[1] % multiple == 0 and max(hw) <= 128
        size = (int(hw[0]), int(hw[1])) if fits else _default_size(hw, multiple)
    size = (int(size[0]), int(size[1]))
    if size[0] % multiple or size[1] % multiple:
        raise GeneratorError(f"size {size[0]}x{size[1]}: both sides must be multiples of {multiple}.")
    intensity = intensity_range(data.images)
    x_all = torch.from_numpy(to_unit(_resize(data.images, size, nearest=False), intensity))
    n_cond = 0
    c_all: torch.Tensor | None = None
    y_all: torch.Tensor | None = None
    if data.mode == "class":
        assert data.labels is not None
        y_all = torch.from_numpy(data.labels.astype(np.int64))
        n_classes = len(data.names)
    else:
        assert data.masks is not None
        n_classes = 0
        n_cond = max(len(data.names), int(data.masks.max()) + 1)
        m = _resize(data.masks[:, None].astype(np.float32), size, nearest=True)[:, 0].round().astype(np.int64)
        c_all = torch.from_numpy(one_hot(m, n_cond))
    net = DiffusionUNet(x_all.shape[1], widths, n_classes=n_classes, cond_channels=n_cond, blocks=blocks)
    ema = DiffusionUNet(x_all.shape[1], widths, n_classes=n_classes, cond_channels=n_cond, blocks=blocks)
    ema.load_state_dict(net.state_dict())
    ema.eval()
    for p_ in ema.parameters():
        p_.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    weights = _sampling_weights(data.labels if data.mode == "class" else None, len(x_all), balance)
    gen = torch.Generator().manual_seed(seed)

    def batch() -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        idx = torch.from_numpy(rng.choice(len(x_all), size=min(batch_size, len(x_all)), p=weights))
        drop = torch.rand(len(idx), generator=gen) < cond_dropout
        y = c = None
        if y_all is not None:
            y = torch.where(drop, torch.full_like(y_all[idx], n_classes), y_all[idx])
        if c_all is not None:
            c = c_all[idx] * (~drop).float()[:, None, None, None]
        return x_all[idx], y, c

    def step(use_bf16: bool) -> float:
        x, y, c = batch()
        with torch.autocast("cpu", torch.bfloat16, enabled=use_bf16):
            loss = training_loss(net, x, y, c, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    if bf16 is None:  # pick the faster precision from two probe steps each (undone; not counted as training)
        bf16 = bf16_is_faster(step, (net, opt), timed_steps=1)
    out.mkdir(parents=True, exist_ok=True)
    log_rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    s = 0
    losses: list[float] = []
    warmup = 100
    while True:
        elapsed = time.perf_counter() - t_start
        frac = elapsed / time_budget_s if time_budget_s > 0 else 1.0
        if max_steps is not None:
            frac = max(frac, s / max_steps) if time_budget_s > 0 else s / max_steps
        if frac >= 1.0 or (max_steps is not None and s >= max_steps):
            break
        cur = lr * min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = cur
        losses.append(step(bool(bf16)))
        s += 1
        d = min(ema_decay, (1 + s) / (10 + s))
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters(), strict=True):
                pe.mul_(d).add_(pn.detach(), alpha=1 - d)
            for be, bn in zip(ema.buffers(), net.buffers(), strict=True):
                be.copy_(bn)
        if s % 50 == 0:
            row = {
                "step": s,
                "seconds": round(time.perf_counter() - t_start, 2),
                "lr": cur,
                "loss": float(np.mean(losses[-50:])),
            }
            log_rows.append(row)
            if on_log is not None:
                on_log(row)
    seconds = time.perf_counter() - t_start
    info: dict[str, Any] = {
        "task": "generation",
        "kind": KIND,
        "version": 1,
        "mode": data.mode,
        "names": list(data.names),
        "image_channels": int(x_all.shape[1]),
        "size": [int(size[0]), int(size[1])],
        "source_size": [int(hw[0]), int(hw[1])],
        "widths": list(widths),
        "blocks": blocks,
        "cond_channels": n_cond,
        "intensity": intensity,
        "training": {
            "source": source,
            "n_images": len(x_all),
            "class_counts": (
                np.bincount(data.labels, minlength=len(data.names)).tolist() if data.labels is not None else None
            ),
            "steps": s,
            "seconds": round(seconds, 1),
            "time_budget_s": time_budget_s,
            "batch_size": batch_size,
            "lr": lr,
            "cond_dropout": cond_dropout,
            "balance": balance,
            "ema_decay": ema_decay,
            "precision": "bf16" if bf16 else "fp32",
            "seed": seed,
            "final_loss": float(np.mean(losses[-50:])) if losses else None,
            "threads": torch.get_num_threads(),
        },
    }
    save_generator(ema, info, out)
    with (out / "training_log.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "seconds", "lr", "loss"])
        w.writeheader()
        w.writerows(log_rows)
    return info


def save_generator(net: DiffusionUNet, info: dict[str, Any], out: Path, half: bool = False) -> None:
    """Write ``model.pt`` (float16 when ``half``) and ``model.json``."""
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save(sd, out / "model.pt")
    (out / "model.json").write_text(json.dumps(info, indent=2) + "\n")


def load_generator(path: str | Path) -> tuple[DiffusionUNet, dict[str, Any]]:
    """A generator model folder -> (network in eval mode, its ``model.json``)."""
    from medimg.registry import find

    try:
        p = find(path, "generation")
    except MedimgError as e:
        raise GeneratorError(f"{e} Train one with `medimg generate train DATA -o MODEL`.") from None
    info = json.loads((p / "model.json").read_text())
    if info.get("kind") != KIND:
        raise GeneratorError(f"{p} holds a {info.get('kind', 'different')!r} model, not a medimg diffusion generator.")
    net = DiffusionUNet(
        info["image_channels"],
        tuple(info["widths"]),
        n_classes=len(info["names"]) if info["mode"] == "class" else 0,
        cond_channels=int(info.get("cond_channels", 0)),
        blocks=int(info["blocks"]),
    )
    sd = torch.load(p / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    net.eval()
    return net, info


def class_index(info: dict[str, Any], cls: str | int) -> int:
    """A class given by name or index -> its index; the error lists the model's classes."""
    names = [str(n) for n in info["names"]]
    if str(cls) in names:
        return names.index(str(cls))
    if isinstance(cls, int) or str(cls).lstrip("-").isdigit():
        i = int(cls)
        if 0 <= i < len(names):
            return i
    raise GeneratorError(
        f"Class {cls!r} is not one of this model's classes: {', '.join(names)} (or 0..{len(names) - 1})."
    )


def sample(
    net: DiffusionUNet,
    info: dict[str, Any],
    n: int,
    cls: int | Sequence[int] | np.ndarray | None = None,
    masks: np.ndarray | None = None,
    steps: int = 50,
    guidance: float = 2.0,
    seed: int = 0,
    batch_size: int = 256,
    on_batch: Callable[[int, int], None] | None = None,
    bf16: bool = True,
) -> np.ndarray:
    """``n`` images ``(n, c, h, w)`` in the model's units (uint8 for 8-bit models) at the model's size.

    Class mode: ``cls`` is one class index for all or one per image. Mask mode: ``masks`` ``(n, h, w)`` at the
    model's size. Seeds are per batch: the same ``seed`` and ``batch_size`` give the same images. ``bf16``: the
    network runs under bfloat16 autocast (about 3x faster on CPU; the images differ from float32 sampling by about
    0.1 % of the intensity range on average)."""
    if n < 1:
        raise GeneratorError("n must be at least 1.")
    h, w = info["size"]
    if info["mode"] == "class":
        if cls is None:
            raise GeneratorError(f"This model is class-conditional: choose a class ({', '.join(info['names'])}).")
        ys = np.full(n, cls, np.int64) if np.isscalar(cls) else np.asarray(cls, np.int64)
        if len(ys) != n:
            raise GeneratorError(f"{len(ys)} classes for {n} images.")
    else:
        if masks is None or len(masks) != n:
            raise GeneratorError("This model is mask-conditional: give one mask per image (--mask).")
        if tuple(masks.shape[1:]) != (h, w):
            raise GeneratorError(f"masks are {masks.shape[1:]}, the model's size is {h}x{w}.")
    out = []
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        g = torch.Generator().manual_seed(seed * 1_000_003 + done)
        y = torch.from_numpy(ys[done : done + b]) if info["mode"] == "class" else None
        c = None
        if info["mode"] == "mask":
            assert masks is not None
            c = torch.from_numpy(one_hot(masks[done : done + b].astype(np.int64), int(info["cond_channels"])))
        x = ddim_sample(net, (b, int(info["image_channels"]), h, w), y, c, steps, guidance, g, bf16=bf16)
        out.append(from_unit(x.numpy(), info["intensity"]))
        done += b
        if on_batch is not None:
            on_batch(done, n)
    return np.concatenate(out)
