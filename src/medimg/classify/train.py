"""Supervised training of 2D/3D classifiers on a CPU within a wall-clock budget.

Recipe (defaults in :data:`DEFAULT_CONFIG`): a small ResNet (:mod:`medimg.classify.networks`), AdamW with linear
warm-up and cosine decay fitted to the time budget (the step time is measured on the first steps), class-balanced
cross-entropy (multi-class) or BCE with positive weights (multi-label), random affine + gamma/noise augmentation,
an exponential moving average (EMA) of the weights, evaluation of the EMA weights on a validation split after every
epoch (the best one is kept and training stops after ``patience_epochs`` without improvement; ``select="last"`` keeps
the last one instead, for tiny validation splits), bf16 autocast when it is
faster on this CPU, then temperature scaling fitted on the validation split.

The model folder holds ``model.pt`` (weights), ``model.json`` (classes, input size, temperature, encoder config,
training settings, validation metrics), ``training_log.csv`` and ``training_curve.svg``.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.classify.augment import augment, normalize, resize
from medimg.classify.calibrate import fit_temperature
from medimg.classify.data import ClassificationData, DatasetError
from medimg.classify.grid import intensity_record
from medimg.classify.networks import Classifier, build_encoder, default_encoder_config
from medimg.errors import MedimgError
from medimg.precision import bf16_is_faster

DEFAULT_CONFIG: dict[str, Any] = {
    "input_size": None,
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 5e-4,
    "warmup_fraction": 0.03,
    "dropout": 0.2,
    "label_smoothing": 0.0,
    "balance": "loss",
    "ema_decay": 0.995,
    "patience_epochs": 20,
    "select": "best",
    "max_epochs": 1000,
    "val_fraction": 0.1,
    "precision": "auto",
    "seed": 0,
    "encoder": None,
    "freeze_encoder": False,
    "augment": {
        "rotate_deg": 10.0,
        "scale": [0.9, 1.1],
        "translate": 0.08,
        "flip_axes": [],
        "gamma": 0.3,
        "noise": 0.05,
        "p_blur": 0.0,
    },
}


def stratified_split(data: ClassificationData, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation indices with every class represented in both (multi-label: stratified on the first
    positive class)."""
    if not 0 < val_fraction < 1:
        raise MedimgError(f"val_fraction must be in (0, 1); got {val_fraction}.")
    rng = np.random.default_rng(seed)
    key = data.labels.argmax(1) if data.multilabel else data.labels
    tr, va = [], []
    for c in np.unique(key):
        idx = rng.permutation(np.nonzero(key == c)[0])
        k = round(len(idx) * val_fraction)
        k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else 0
        va += list(idx[:k])
        tr += list(idx[k:])
    return np.sort(np.asarray(tr, np.int64)), np.sort(np.asarray(va, np.int64))


def _loss_fn(data: ClassificationData, balance: str, smoothing: float) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    counts = np.asarray(data.class_counts(), np.float64)
    if data.multilabel:
        pos = counts
        neg = len(data) - counts
        pw = torch.as_tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)
        if balance == "none":
            pw = torch.ones_like(pw)
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pw)
    present = counts > 0
    w = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    weight = torch.as_tensor(w if balance == "loss" else present.astype(np.float64), dtype=torch.float32)
    return lambda logits, y: F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=smoothing)


def probabilities(logits: torch.Tensor | np.ndarray, multilabel: bool, temperature: float = 1.0) -> np.ndarray:
    """Logits -> probabilities (softmax over classes, or per-class sigmoid for multi-label)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    return (torch.sigmoid(z) if multilabel else torch.softmax(z, dim=1)).numpy()


def evaluate_probabilities(labels: np.ndarray, probs: np.ndarray, multilabel: bool) -> dict[str, float]:
    """AUROC (macro), accuracy, balanced accuracy, ECE for multi-class or multi-label predictions."""
    from medimg.metrics.classification import auroc, classification_metrics

    if multilabel:
        aucs = [auroc(labels[:, k], probs[:, k]) for k in range(labels.shape[1])]
        acc = float(np.mean((probs >= 0.5) == (labels > 0.5)))
        finite = [a for a in aucs if math.isfinite(a)]
        return {"auroc": float(np.mean(finite)) if finite else math.nan, "accuracy": acc}
    m = classification_metrics(labels, probs[:, 1] if probs.shape[1] == 2 else probs)
    return {k: float(m[k]) for k in ("auroc", "accuracy", "balanced_accuracy", "ece")}


def predict_logits(
    net: torch.nn.Module, images: np.ndarray, input_size: Any, batch_size: int = 256, bf16: bool = False
) -> np.ndarray:
    """Logits ``(n, k)`` of raw images ``(n, c, *spatial)`` (resized and normalised as in training)."""
    net.eval()
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), batch_size):
            x = normalize(resize(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])), input_size))
            out.append(net(x).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


#: Encoder stages whose (3 x 3 pooled) features define a classifier's domain density.
DOMAIN_STAGES = (0, 1)


def domain_features(
    net: torch.nn.Module, images: np.ndarray, input_size: Any, batch_size: int = 256
) -> list[np.ndarray]:
    """Features ``[(n, d_i)]`` of the encoder stages in :data:`DOMAIN_STAGES`, average-pooled to 3 x 3 (x 3),
    of raw images ``(n, c, ...)`` resized and normalised as in training; used for the model's domain density."""
    import torch.nn.functional as F

    enc: Any = net.encoder
    pool = F.adaptive_avg_pool2d if enc.dims == 2 else F.adaptive_avg_pool3d
    net.eval()
    out: list[list[np.ndarray]] = [[] for _ in DOMAIN_STAGES]
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            h = normalize(resize(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])), input_size))
            h = enc.stem(h)
            for k, stage in enumerate(enc.stages):
                h = stage(h)
                if k in DOMAIN_STAGES:
                    out[DOMAIN_STAGES.index(k)].append(pool(h, 3).flatten(1).float().numpy())
                if k >= max(DOMAIN_STAGES):
                    break
    return [np.concatenate(o) if o else np.zeros((0, 0), np.float32) for o in out]


def dark_fractions(images: np.ndarray, input_size: Any, batch_size: int = 512) -> np.ndarray:
    """``(n,)`` share of near-black pixels (<= 2 % of each image's min-max range) of raw images ``(n, c, ...)``
    resized to the model input (first channel)."""
    out = []
    for i in range(0, len(images), batch_size):
        x = resize(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32)), input_size)
        x = x[:, 0].flatten(1)
        lo, hi = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
        out.append(((x - lo) <= 0.02 * (hi - lo).clamp_min(1e-6)).float().mean(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fit_domain(net: torch.nn.Module, images: np.ndarray, input_size: Any, out: Path, description: str) -> Any:
    """Fit and save the classifier's domain (feature densities + input statistics; domain.json + domain.npz) on
    its training images."""
    from medimg.domain import FeatureDomain

    feats = domain_features(net, images, input_size)
    dom = FeatureDomain.fit(
        feats,
        [f"stage {k} (3x3 pooled)" for k in DOMAIN_STAGES],
        description,
        images.ndim - 2,
        int(images.shape[1]),
        dark_fractions=dark_fractions(images, input_size),
    )
    dom.save(out)
    return dom


class _EMA:
    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.net = copy.deepcopy(net).eval()
        self.decay = decay
        for p in self.net.parameters():
            p.requires_grad_(False)

    def update(self, net: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(self.net.state_dict().values(), net.state_dict().values(), strict=True):
                if e.dtype.is_floating_point:
                    e.mul_(d).add_(p.detach(), alpha=1 - d)
                else:
                    e.copy_(p)


def train_classifier(
    train: ClassificationData,
    out_dir: str | Path,
    time_budget_s: float = 900.0,
    val: ClassificationData | None = None,
    config: dict[str, Any] | None = None,
    init_encoder: str | Path | None = None,
    name: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a classifier and write a model folder; returns its ``model.json`` contents.

    ``val`` is the split used for early stopping and temperature scaling (default: a stratified
    ``config["val_fraction"]`` of ``train``). ``init_encoder`` is an encoder folder written by
    :func:`medimg.classify.ssl.pretrain` (or a classifier model folder) whose encoder weights start the training;
    ``config["freeze_encoder"]`` then trains the head only (a linear probe)."""
    from medimg.seg.train import write_training_log

    cfg = {**DEFAULT_CONFIG, **(config or {})}
    cfg["augment"] = {**DEFAULT_CONFIG["augment"], **(config or {}).get("augment", {})}
    out = Path(out_dir)
    if len(train) < 2:
        raise DatasetError(f"Need at least 2 training images; got {len(train)}.")
    seed = int(cfg["seed"])
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if val is None:
        tr_idx, va_idx = stratified_split(train, float(cfg["val_fraction"]), seed)
        train, val = train.subset(tr_idx), train.subset(va_idx)
    if val.images.shape[1:] != train.images.shape[1:]:
        raise DatasetError(f"Validation images {val.images.shape[1:]} differ from training {train.images.shape[1:]}.")
    if val.multilabel != train.multilabel:
        raise DatasetError("Training and validation splits disagree on multi-label vs multi-class.")
    n_out = len(train.classes)
    size = cfg["input_size"] or list(train.images.shape[2:])
    enc_cfg = cfg["encoder"] or default_encoder_config(train.dims, train.channels, size)
    encoder_source = None
    if init_encoder is not None:
        enc_cfg, enc_state = load_encoder(init_encoder)
        encoder_source = str(init_encoder)
    encoder = build_encoder(enc_cfg)
    if init_encoder is not None:
        encoder.load_state_dict(enc_state)
    if enc_cfg["in_channels"] != train.channels or enc_cfg["dims"] != train.dims:
        raise DatasetError(
            f"The encoder expects {enc_cfg['dims']}D images with {enc_cfg['in_channels']} channel(s); the data has "
            f"{train.dims}D with {train.channels}."
        )
    net = Classifier(encoder, n_out, float(cfg["dropout"]))
    params = net.head.parameters() if cfg["freeze_encoder"] else net.parameters()
    if cfg["freeze_encoder"]:
        for p in net.encoder.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    loss_fn = _loss_fn(train, str(cfg["balance"]), float(cfg["label_smoothing"]))
    labels_t = torch.as_tensor(train.labels)
    bs = min(int(cfg["batch_size"]), len(train))
    steps_per_epoch = max(1, len(train) // bs)
    aug_cfg = cfg["augment"]

    def batch(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = resize(torch.from_numpy(train.images[idx]), size)
        return augment(x, rng, aug_cfg), labels_t[idx]

    def step(x: torch.Tensor, y: torch.Tensor, lr: float, bf16: bool) -> float:
        for g in opt.param_groups:
            g["lr"] = lr
        net.train()
        if cfg["freeze_encoder"]:
            net.encoder.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    t_start = time.perf_counter()
    precision = str(cfg["precision"])
    if precision == "auto":  # time a few steps each way, then restore the initial state
        xb, yb = batch(rng.integers(0, len(train), bs))
        precision = "bf16" if bf16_is_faster(lambda m: step(xb, yb, 0.0, m), (net, opt)) else "fp32"
    bf16 = precision == "bf16"
    ema = _EMA(net, float(cfg["ema_decay"]))

    # measure the step time, then fit the schedule to the remaining budget
    probe_steps = min(5, steps_per_epoch)
    t0 = time.perf_counter()
    order = rng.permutation(len(train))
    losses: list[float] = []
    base_lr = float(cfg["lr"])
    for i in range(probe_steps):
        x, y = batch(order[i * bs : (i + 1) * bs])
        losses.append(step(x, y, base_lr * 0.1, bf16))
        ema.update(net, i)
    step_s = (time.perf_counter() - t0) / probe_steps
    val_s = max(0.05, step_s * len(val) / bs * 0.5)
    remaining = time_budget_s - (time.perf_counter() - t_start)
    total_steps = int(max(probe_steps + 1, remaining / (step_s + val_s / steps_per_epoch) * 0.95))
    total_steps = min(total_steps, int(cfg["max_epochs"]) * steps_per_epoch)
    warm = max(1, int(total_steps * float(cfg["warmup_fraction"])))

    def lr_at(s: int) -> float:
        if s < warm:
            return base_lr * (s + 1) / warm
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total_steps - warm))))

    log: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf}
    s = probe_steps
    pos = probe_steps
    epoch = 0
    stale = 0
    while s < total_steps:
        if pos + bs > len(order):
            order, pos = rng.permutation(len(train)), 0
        x, y = batch(order[pos : pos + bs])
        pos += bs
        losses.append(step(x, y, lr_at(s), bf16))
        ema.update(net, s)
        s += 1
        out_of_time = time.perf_counter() - t_start > time_budget_s
        if s % steps_per_epoch == 0 or s >= total_steps or out_of_time:
            epoch += 1
            probs = probabilities(predict_logits(ema.net, val.images, size, bf16=bf16), train.multilabel)
            m = evaluate_probabilities(val.labels, probs, train.multilabel)
            score = m["auroc"] if math.isfinite(m["auroc"]) else m["accuracy"]
            entry = {
                "epoch": epoch,
                "step": s,
                "total_steps": total_steps,
                "elapsed_s": round(time.perf_counter() - t_start, 2),
                "lr": lr_at(s - 1),
                "train_loss": float(np.mean(losses[-steps_per_epoch:])),
                **{f"val_{k}": v for k, v in m.items()},
            }
            log.append(entry)
            if on_epoch:
                on_epoch(entry)
            if score > best["score"] + 1e-5 or cfg["select"] == "last":
                best = {"score": score, "epoch": epoch, "state": copy.deepcopy(ema.net.state_dict()), "metrics": m}
                stale = 0
            else:
                stale += 1
            if (stale >= int(cfg["patience_epochs"]) and cfg["select"] == "best") or out_of_time:
                break
    train_s = time.perf_counter() - t_start
    net.load_state_dict(best["state"])
    val_logits = predict_logits(net, val.images, size, bf16=bf16)
    temperature = fit_temperature(val_logits, val.labels, train.multilabel)
    calibrated = evaluate_probabilities(
        val.labels, probabilities(val_logits, train.multilabel, temperature), train.multilabel
    )
    import medimg

    info = {
        "name": name or out.name,
        "task": "classification",
        "format": "medimg-classifier-1",
        "classes": list(train.classes),
        "multilabel": bool(train.multilabel),
        "dims": train.dims,
        "channels": train.channels,
        "input_size": [int(v) for v in size],
        # the physical grid image files are resampled onto before the network (medimg.classify.grid), if any
        **({"grid": cfg["grid"], "input_intensity": intensity_record(train.images)} if cfg.get("grid") else {}),
        "normalization": "per-image z-score",
        "array_order": "numpy (rows, cols) / (slices, rows, cols)",
        "temperature": temperature,
        "encoder": enc_cfg,
        "encoder_init": encoder_source,
        "medimg_version": medimg.__version__,
        "config": {k: v for k, v in cfg.items() if k != "encoder"},
        "precision": precision,
        "n_train": len(train),
        "n_val": len(val),
        "class_counts_train": train.class_counts(),
        "epochs": epoch,
        "steps": s,
        "best_epoch": best["epoch"],
        "training_seconds": round(train_s, 1),
        "validation": best["metrics"],
        "validation_calibrated": calibrated,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    save_model(net, info, out)
    fit_domain(
        net, train.images, size, out, f"{', '.join(train.classes)} images like the {len(train)} it was trained on"
    )
    write_training_log(log, out, {"train loss": "train_loss", "val AUROC (EMA)": "val_auroc"})
    return info


def save_model(net: Classifier, info: dict[str, Any], out: Path, half: bool = False) -> None:
    """Write ``model.pt`` and ``model.json`` atomically (``half`` stores float16 weights)."""
    from medimg.io._atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.dtype == torch.float32 else v) for k, v in net.state_dict().items()}
    with atomic_path(out / "model.pt") as tmp:
        torch.save(state, tmp)
    with atomic_path(out / "model.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")


def load_encoder(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Encoder config and weights from an encoder folder (``encoder.json`` + ``encoder.pt``) or a classifier
    model folder (its ``encoder.*`` weights)."""
    p = Path(path)
    if (p / "encoder.json").exists() and (p / "encoder.pt").exists():
        cfg = json.loads((p / "encoder.json").read_text())["encoder"]
        state = torch.load(p / "encoder.pt", map_location="cpu", weights_only=True)
    elif (p / "model.json").exists() and (p / "model.pt").exists():
        cfg = json.loads((p / "model.json").read_text())["encoder"]
        full = torch.load(p / "model.pt", map_location="cpu", weights_only=True)
        state = {k[len("encoder.") :]: v for k, v in full.items() if k.startswith("encoder.")}
    else:
        raise MedimgError(f"{p} is not an encoder folder (encoder.json + encoder.pt) or a classifier model folder.")
    return cfg, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
