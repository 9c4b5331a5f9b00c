"""Training: one :class:`Trainer` with overridable hooks (network, optimiser, learning rate, augmentation, loss).

* Data: cases are preprocessed once into ``<model>/preprocessed/`` (``.npy``; memory-mapped when the dataset is
  larger than :data:`IN_MEMORY_LIMIT_BYTES`), patches are sampled with foreground oversampling.
* Schedule: ``--time-budget`` is turned into a number of iterations from the measured speed of the first epoch,
  then re-planned at every epoch of a fresh run from the average wall time per iteration since the first epoch
  (which alone pays for one-time work such as data caching), validation and checkpoints included, so the poly
  schedule ends at the budget even when the machine's speed varies. A resumed run keeps the count in its checkpoint
  (and ``max_iterations`` fixes it), so resuming is exact.
* Checkpoint every epoch (``checkpoint.pt``, atomic) holding weights, optimiser, RNG states and the log: a killed
  run resumes exactly where it stopped.
* Mixed precision: ``precision="auto"`` times float32 and bfloat16 autocast on the first batch and keeps the
  faster (bf16 is much faster on CPUs with AMX/AVX512-BF16, such as this project's machines).
* A larger ``--time-budget`` on a finished model continues training to the new budget (:attr:`Trainer.note` says
  what happened); the plan's ``ignore_label`` voxels get no loss and no pseudo-Dice.
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

from medimg.errors import MedimgError
from medimg.io._atomic import atomic_path
from medimg.seg.dataset import SegDataset, size_mismatch_error
from medimg.seg.plan import preprocess_image, preprocess_label, save_json

#: Preprocessed datasets larger than this are memory-mapped instead of loaded.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3


def parse_duration(text: str | float | int) -> float:
    """``"20m"``, ``"90s"``, ``"1.5h"`` or a number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(t[:-1]) * units[t[-1]] if t[-1] in units else float(t)
    except (ValueError, IndexError):
        raise MedimgError(f"Cannot read duration {text!r}; use e.g. 20m, 90s or 1.5h.") from None


def format_duration(seconds: float) -> str:
    """Seconds -> ``"45 s"``, ``"12.5 min"`` or ``"1.50 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def make_split(
    case_ids: Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    n_folds: int = 5,
    group_pattern: str | None = None,
) -> dict[str, list[str]]:
    """A seeded random train/validation split, or fold ``fold`` of ``n_folds`` for cross-validation.

    ``group_pattern`` (a regular expression whose first match is the group, e.g. ``"patient\\d+"``) keeps cases of
    one group (patient) on the same side of the split."""
    import re

    ids = sorted(case_ids)
    groups: dict[str, list[str]] = {}
    for i in ids:
        m = re.search(group_pattern, i) if group_pattern else None
        groups.setdefault(m.group(0) if m else i, []).append(i)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    perm = [keys[i] for i in rng.permutation(len(keys))]
    if fold is not None:
        if not 0 <= fold < n_folds:
            raise MedimgError(f"fold must be in 0..{n_folds - 1}.")
        val_keys = perm[fold::n_folds]
    else:
        val_keys = perm[: max(1, round(len(keys) * val_fraction))]
    val_set = {i for k in val_keys for i in groups[k]}
    return {"train": [i for i in ids if i not in val_set], "val": sorted(val_set)}


@dataclass
class _Cache:
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    fg: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)


def prepare_cache(
    ds: SegDataset,
    plan: dict[str, Any],
    cache_dir: Path,
    case_ids: Sequence[str],
    progress: Callable[[Sequence[Any], str], Any] | None = None,
    seed: int = 0,
) -> _Cache:
    """Preprocess the cases once (resample + normalise) into ``cache_dir`` and open them.

    Every case is read before an error is raised, so that all cases whose image and label sizes differ (or whose
    label values the plan does not know) are named in one :class:`MedimgError`."""
    import medimg

    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ignore = plan.get("ignore_label")
    known = {int(k) for k in plan["labels"]} | ({int(ignore)} if ignore is not None else set())
    mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    unknown: dict[str, list[int]] = {}
    todo = [c for c in case_ids if not (cache_dir / f"{c}_img.npy").exists()]
    for cid in progress(todo, "preprocessing") if progress and todo else todo:
        case = ds.case(cid)
        if case.label is None:
            raise MedimgError(f"Case {cid} has no label; take it out of the split (it cannot be trained on).")
        imgs = [medimg.read(p) for p in case.images]
        lab = medimg.read_labels(case.label)
        if any(im.shape != lab.shape for im in imgs):
            mismatches.append((cid, next(im.shape for im in imgs if im.shape != lab.shape), lab.shape))
            continue
        values = {int(v) for v in np.unique(lab.array)}
        if values - known:
            unknown[cid] = sorted(values - known)
            continue
        if mismatches or unknown:
            continue  # only collecting problems now
        arr, _grid = preprocess_image(imgs, plan)
        lab_arr = preprocess_label(lab, plan)
        if lab_arr.shape != arr.shape[1:]:
            raise MedimgError(f"Case {cid}: preprocessed label {lab_arr.shape} and image {arr.shape[1:]} differ.")
        fg = {f"c{v}": coords for v, coords in foreground_coords(lab_arr, ignore, rng).items()}
        for name, a in ((f"{cid}_img.npy", arr), (f"{cid}_lab.npy", lab_arr)):
            with atomic_path(cache_dir / name) as tmp:
                np.save(tmp, a)
        with atomic_path(cache_dir / f"{cid}_fg.npz") as tmp:
            np.savez(tmp, **fg)  # type: ignore[arg-type]
    if mismatches:
        raise size_mismatch_error(ds, mismatches)
    if unknown:
        shown = ", ".join(f"{cid} {v}" for cid, v in list(unknown.items())[:5])
        raise MedimgError(
            f"Label values the plan does not know (classes {sorted(int(k) for k in plan['labels'])}) in "
            f"{len(unknown)} case(s): {shown}. Declare them in dataset.json (or --labels) or fix the label files "
            '(a value that marks unannotated voxels is declared as "ignore": V, the highest label value, and gets '
            f"no loss); `medimg dataset check {ds.root}` lists every problem."
        )
    total = sum((cache_dir / f"{c}_img.npy").stat().st_size for c in case_ids)
    mode: Literal["r"] | None = None if total < IN_MEMORY_LIMIT_BYTES else "r"
    cache = _Cache()
    for cid in case_ids:
        cache.images[cid] = np.load(cache_dir / f"{cid}_img.npy", mmap_mode=mode)
        cache.labels[cid] = np.load(cache_dir / f"{cid}_lab.npy", mmap_mode=mode)
        with np.load(cache_dir / f"{cid}_fg.npz") as z:
            cache.fg[cid] = {int(k[1:]): z[k] for k in z.files}
    return cache


def foreground_coords(lab: np.ndarray, ignore: int | None, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Voxel indices of each foreground class of ``lab`` (not 0, not ``ignore``), at most 2000 per class drawn
    without replacement: the centres foreground-oversampled patches are drawn around."""
    fg = {}
    for v in np.unique(lab):
        if v == 0 or v == ignore:
            continue
        coords = np.argwhere(lab == v)
        if len(coords) > 2000:
            coords = coords[rng.choice(len(coords), 2000, replace=False)]
        fg[int(v)] = coords.astype(np.int32)
    return fg


def _crop(arr: np.ndarray, start: Sequence[int], size: Sequence[int], spatial_from: int) -> np.ndarray:
    """Crop ``size`` at ``start`` over the spatial axes (from axis ``spatial_from``), zero-padding outside."""
    sl, pads = [], []
    for s, n, dim in zip(start, size, arr.shape[spatial_from:], strict=True):
        lo, hi = max(0, s), min(dim, s + n)
        sl.append(slice(lo, hi))
        pads.append((lo - s, s + n - hi))
    out = np.asarray(arr[(slice(None),) * spatial_from + tuple(sl)])
    if any(p != (0, 0) for p in pads):
        out = np.pad(out, [(0, 0)] * spatial_from + pads)
    return out


class Trainer:
    """Trains a segmentation network as a :mod:`medimg.seg.plan` plan describes. Subclass and override the
    ``build_network``, ``build_optimizer``, ``learning_rate``, ``augment`` or ``loss`` hooks for variants.

    Data-parallel runs (:mod:`medimg.seg.distributed`) set :attr:`rank`, :attr:`world_size` and :attr:`ddp` and
    override :meth:`_agree`; a single process keeps the defaults and trains exactly as before."""

    #: This process's rank in a data-parallel run (0 alone); only rank 0 writes files.
    rank: int = 0
    #: Number of data-parallel training processes (1 alone).
    world_size: int = 1

    def __init__(
        self,
        ds: SegDataset,
        plan: dict[str, Any],
        out_dir: Path,
        split: dict[str, list[str]],
        time_budget_s: float,
        max_iterations: int | None = None,
        progress: Callable[[Sequence[Any], str], Any] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        device: str | None = "cpu",
    ) -> None:
        import torch

        from medimg.device import resolve_device

        self.torch = torch
        #: Where the network and the batches live (``--device``; :func:`medimg.device.resolve_device`).
        self.device = resolve_device(device)
        self.ds, self.plan, self.out, self.split = ds, plan, Path(out_dir), split
        self.time_budget_s = time_budget_s
        self.max_iterations = max_iterations
        self.progress, self.on_epoch = progress, on_epoch
        tr = plan["training"]
        self.seed = int(tr.get("seed", 0))
        self.rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        self.n_classes = max(int(k) for k in plan["labels"]) + 1
        ignore = plan.get("ignore_label")
        #: Label value without loss or metric (``plan["ignore_label"]``), or None.
        self.ignore_label: int | None = int(ignore) if ignore is not None else None
        self.dims = int(plan["dims"])
        self.patch = [int(p) for p in plan["patch_size"]]
        self.net = self.build_network().to(self.device)
        self.opt = self.build_optimizer()
        self.iteration = 0
        self.total_iterations: int | None = max_iterations
        self.elapsed = 0.0
        self.log: list[dict[str, Any]] = []
        self.ema: float | None = None
        self.precision = tr.get("precision", "auto")
        self.budget_at_checkpoint: float | None = None  # the time budget the checkpoint was trained for
        #: What :meth:`run` did with an existing checkpoint (resumed, continued to a new budget, nothing to do).
        self.note: str | None = None
        #: Called with :attr:`note` as soon as it is known (before any training), e.g. to print it.
        self.on_note: Callable[[str], None] | None = None
        self.iterations_this_run = 0
        #: DistributedDataParallel wrapper of :attr:`net` that ``_step`` trains through (gradients averaged over
        #: the processes), or None in a single process; :attr:`net` stays the bare network.
        self.ddp: Any = None

    def _agree(self, value: Any) -> Any:
        """A decision every data-parallel process must share (the stop, the planned iteration count): rank 0's
        ``value`` on every rank. A single process returns ``value`` unchanged."""
        return value

    # ------------------------------------------------------------------ hooks
    def build_network(self) -> Any:
        """The network (MONAI DynUNet by default)."""
        return build_network(self.plan)

    def build_optimizer(self) -> Any:
        tr = self.plan["training"]
        if tr["optimizer"] == "adamw":
            return self.torch.optim.AdamW(self.net.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"])
        if tr["optimizer"] == "sgd":
            return self.torch.optim.SGD(
                self.net.parameters(),
                lr=tr["lr"],
                momentum=tr["momentum"],
                nesterov=True,
                weight_decay=tr["weight_decay"],
            )
        raise MedimgError(f"Unknown optimizer {tr['optimizer']!r} in the plan (adamw or sgd).")

    def learning_rate(self, iteration: int) -> float:
        """Poly schedule over the planned number of iterations."""
        total = max(1, self.total_iterations or 1)
        return float(self.plan["training"]["lr"] * (1 - min(iteration, total - 1) / total) ** 0.9)

    def augment(self, img: Any, lab: Any) -> tuple[Any, Any]:
        """Spatial (rotation/scale), mirror and intensity augmentation of a batch ``(B, C, *S)`` / ``(B, *S)``."""
        return augment_batch(img, lab, self.plan["augmentation"], self.rng, self.dims)

    def loss(self, outputs: Any, target: Any) -> Any:
        """Dice + cross-entropy, summed over deep-supervision heads with weights 1, 1/2, 1/4 ... (normalised);
        voxels of the plan's ignore label contribute nothing."""
        return dice_ce_loss(outputs, target, self.n_classes, ignore_index=self.ignore_label)

    # ------------------------------------------------------------------ data
    def sample_batch(self, cache: _Cache, ids: Sequence[str], batch_size: int, fg_fraction: float) -> tuple:
        """A batch ``(B, C, *patch)`` / ``(B, *patch)``: random cases, the last ``fg_fraction`` of the batch centred
        on foreground."""
        patches = []
        for b in range(batch_size):
            cid = ids[int(self.rng.integers(len(ids)))]
            patches.append(self.patch_of(cache, cid, centred=b >= batch_size * (1 - fg_fraction)))
        return self.to_batch(patches)

    def random_start(self, shape: Sequence[int]) -> list[int]:
        """A uniformly random patch corner in an array of spatial ``shape`` (patches larger than it are centred
        anywhere that covers it)."""
        return [
            int(self.rng.integers(min(0, s - p), max(0, s - p) + 1)) for s, p in zip(shape, self.patch, strict=True)
        ]

    def patch_of(self, cache: _Cache, cid: str, centred: bool) -> tuple[np.ndarray, np.ndarray]:
        """One (image, label) patch of case ``cid``: around a random voxel of a random foreground class (jittered by
        up to a quarter patch) when ``centred`` and the case has foreground, else at a random position."""
        img, lab = cache.images[cid], cache.labels[cid]
        fg = cache.fg[cid]
        if centred and fg:
            cls = list(fg)[int(self.rng.integers(len(fg)))]
            center = fg[cls][int(self.rng.integers(len(fg[cls])))]
            start = [
                int(c) - p // 2 + int(self.rng.integers(-p // 4, p // 4 + 1))
                for c, p in zip(center, self.patch, strict=True)
            ]
        else:
            start = self.random_start(lab.shape)
        return _crop(img, start, self.patch, 1), _crop(lab[None], start, self.patch, 1)[0]

    def to_batch(self, patches: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[Any, Any]:
        """Stack (image, label) patches into float32 / int64 tensors."""
        t = self.torch
        return (
            t.from_numpy(np.stack([i for i, _ in patches]).astype(np.float32)).to(self.device),
            t.from_numpy(np.stack([lb for _, lb in patches]).astype(np.int64)).to(self.device),
        )

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "iteration": self.iteration,
            "total_iterations": self.total_iterations,
            "elapsed": self.elapsed,
            "log": self.log,
            "ema": self.ema,
            "rng": self.rng.bit_generator.state,
            "torch_rng": self.torch.get_rng_state(),
            "precision": self.precision,
            "time_budget_s": self.time_budget_s,
        }

    def save_checkpoint(self) -> None:
        with atomic_path(self.out / "checkpoint.pt") as tmp:
            self.torch.save(self._state(), tmp)

    def load_checkpoint(self) -> bool:
        p = self.out / "checkpoint.pt"
        if not p.exists():
            return False
        st = self.torch.load(p, weights_only=False, map_location=self.device)
        self.net.load_state_dict(st["net"])
        self.opt.load_state_dict(st["opt"])
        self.iteration, self.total_iterations = st["iteration"], st["total_iterations"]
        self.elapsed, self.log, self.ema = st["elapsed"], st["log"], st["ema"]
        self.rng.bit_generator.state = st["rng"]
        self.torch.set_rng_state(st["torch_rng"])
        self.precision = st["precision"]
        self.budget_at_checkpoint = st.get("time_budget_s")
        return True

    # ------------------------------------------------------------------ loop
    def _step(self, img: Any, lab: Any, bf16: bool) -> float:
        """One optimiser step (learning rate, loss, gradient clipping to norm 12); returns the logged loss."""
        t = self.torch
        for g in self.opt.param_groups:
            g["lr"] = self.learning_rate(self.iteration)
        self.net.train()
        loss, logged = self.step_loss(img, lab, bf16)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t.nn.utils.clip_grad_norm_(self.net.parameters(), 12.0)
        self.opt.step()
        self.after_step()
        return float(logged.detach())

    def step_loss(self, img: Any, lab: Any, bf16: bool) -> tuple[Any, Any]:
        """The loss to back-propagate for a batch, and the loss to log (the same here)."""
        t = self.torch
        with t.autocast(self.device.type, dtype=t.bfloat16, enabled=bf16):
            out = (self.net if self.ddp is None else self.ddp)(img)
        loss = self.loss(out.float(), lab)
        return loss, loss

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. a mean teacher's EMA update); nothing by default."""

    def _choose_precision(self, img: Any, lab: Any) -> None:
        if self.precision != "auto":
            return
        if self.device.type == "cuda":  # tensor cores: bf16 autocast is the GPU's fast path where supported
            self.precision = "bf16" if self.torch.cuda.is_bf16_supported() else "fp32"
            return
        from medimg.precision import bf16_is_faster

        faster = bf16_is_faster(lambda m: self._step(img, lab, m), (self.net, self.opt))
        self.precision = "bf16" if faster else "fp32"

    def pseudo_dice(self, val_batches: list[tuple[Any, Any]]) -> float:
        """Dice over foreground classes pooled over fixed validation patches (nnU-Net's 'pseudo Dice')."""
        t = self.torch
        self.net.eval()
        tp = np.zeros(self.n_classes)
        fp = np.zeros(self.n_classes)
        fn = np.zeros(self.n_classes)
        with t.no_grad(), t.autocast(self.device.type, dtype=t.bfloat16, enabled=self.precision == "bf16"):
            for img, lab in val_batches:
                pred = self.net(img).float().argmax(1)
                if self.ignore_label is not None:
                    pred = pred.masked_fill(lab == self.ignore_label, 0)  # no metric on ignored voxels
                for c in range(1, self.n_classes):
                    p, g = pred == c, lab == c
                    tp[c] += int((p & g).sum())
                    fp[c] += int((p & ~g).sum())
                    fn[c] += int((~p & g).sum())
        d = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in range(1, self.n_classes) if tp[c] + fp[c] + fn[c]]
        return float(np.mean(d)) if d else math.nan

    def _continue_from_checkpoint(self) -> None:
        """After loading a checkpoint: keep its schedule when the budget is unchanged (exact resume), stretch it
        to a new budget (or ``max_iterations``), and set :attr:`note` to say which."""
        done_it, old_total, spent = self.iteration, self.total_iterations, self.elapsed
        old_budget = self.budget_at_checkpoint
        budget_changed = old_budget is not None and abs(self.time_budget_s - old_budget) > 1e-6
        if self.max_iterations is not None:
            self.total_iterations = self.max_iterations
        elif budget_changed and old_total is not None:
            per_it = spent / max(1, done_it)
            self.total_iterations = done_it + max(0, int((self.time_budget_s - spent) / per_it))
        new_total = self.total_iterations
        finished_before = (old_total is not None and done_it >= old_total) or (
            self.max_iterations is None and old_budget is not None and spent >= old_budget
        )
        if self.max_iterations is not None:
            will_train = new_total is not None and done_it < new_total
        else:
            will_train = spent < self.time_budget_s and (new_total is None or done_it < new_total)
        budget, trained = format_duration(self.time_budget_s), format_duration(spent)
        if not will_train and budget_changed and self.max_iterations is None:
            self.note = (
                f"the {budget} budget is already spent: this model has trained {trained} ({done_it} iterations), "
                f"so there is nothing to continue. Pass a --time-budget above {trained} to train longer, or "
                "--no-resume to start over."
            )
        elif not will_train:
            self.note = (
                f"already trained to this budget ({done_it} iterations, {trained}); nothing to continue. Pass a "
                "larger --time-budget to train longer, or --no-resume to start over."
            )
        elif finished_before:
            self.note = (
                f"continuing training from iteration {done_it} ({trained} done) to the new {budget} budget"
                + (f": about {new_total} iterations in all" if new_total is not None else "")
                + " (the learning rate follows the stretched poly schedule)"
            )
        elif budget_changed or new_total != old_total:
            self.note = f"resumed at iteration {done_it}; the schedule now ends at iteration {new_total} ({budget})"
        else:
            self.note = f"resumed from the checkpoint at iteration {done_it} of {new_total}"

    def run(self, resume: bool = True) -> dict[str, Any]:
        """Train until the planned iterations (or the time budget) are done; returns the final log entry."""
        t = self.torch
        tr = self.plan["training"]
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            save_json(self.plan, self.out / "plan.json")  # a model folder always carries the plan it was trained with
        cache = prepare_cache(
            self.ds,
            self.plan,
            self.out / "preprocessed",
            self.split["train"] + self.split["val"],
            self.progress,
            self.seed,
        )
        resumed = resume and self.load_checkpoint()
        if resumed:
            self._continue_from_checkpoint()
            if self.note and self.on_note:
                self.on_note(self.note)
        val_rng = np.random.default_rng(self.seed + 1)
        saved_rng, self.rng = self.rng, val_rng
        n_val = max(1, int(tr.get("val_patches", 16)) // self.plan["batch_size"])
        val_batches = [self.sample_batch(cache, self.split["val"], self.plan["batch_size"], 0.5) for _ in range(n_val)]
        self.rng = saved_rng
        per_epoch = int(tr["iterations_per_epoch"])
        t_start = time.perf_counter() - self.elapsed
        budget_end = t_start + self.time_budget_s
        if not resumed:
            img, lab = self.sample_batch(
                cache, self.split["train"], self.plan["batch_size"], self.plan["foreground_oversampling"]
            )
            self._choose_precision(img, lab)
            self.precision = self._agree(self.precision)
        bf16 = self.precision == "bf16"
        losses: list[float] = []
        t_epoch, it_epoch = time.perf_counter(), self.iteration
        t_ref: float | None = None  # end of this run's first epoch: the start of the averaged speed
        it_ref = self.iteration
        bar = self.progress(range(10**9), "training") if self.progress else None
        bar_iter = iter(bar) if bar is not None else None
        while True:
            if self.total_iterations is not None and self.iteration >= self.total_iterations:
                break
            if self.max_iterations is None and self._agree(time.perf_counter() >= budget_end):
                break
            img, lab = self.sample_batch(
                cache, self.split["train"], self.plan["batch_size"], self.plan["foreground_oversampling"]
            )
            img, lab = self.augment(img, lab)
            losses.append(self._step(img, lab, bf16))
            self.iteration += 1
            self.iterations_this_run += 1
            if bar_iter is not None:
                next(bar_iter, None)
            if self.iteration % per_epoch == 0:
                self.elapsed = time.perf_counter() - t_start
                pd = self.pseudo_dice(val_batches)
                self.ema = pd if self.ema is None else 0.9 * self.ema + 0.1 * pd
                if self.total_iterations is None or (not resumed and self.max_iterations is None):
                    # plan the schedule from the measured speed, again at every epoch of a fresh run: after the
                    # first epoch (which also pays for one-time work such as data caching) from the average wall
                    # time per iteration since then, validation and checkpoints included, so a passing slowdown or
                    # a fast start neither ends the poly schedule early nor leaves it unfinished at the budget
                    now = time.perf_counter()
                    if t_ref is None:
                        per_it = (now - t_epoch) / max(1, self.iteration - it_epoch)
                        t_ref, it_ref = now, self.iteration
                    else:
                        per_it = (now - t_ref) / max(1, self.iteration - it_ref)
                    self.total_iterations = self._agree(self.iteration + max(0, int((budget_end - now) / per_it)))
                t_epoch, it_epoch = time.perf_counter(), self.iteration
                entry = {
                    "epoch": self.iteration // per_epoch,
                    "iteration": self.iteration,
                    "elapsed_s": round(self.elapsed, 2),
                    "lr": self.learning_rate(self.iteration),
                    "train_loss": float(np.mean(losses)),
                    "val_pseudo_dice": pd,
                    "val_pseudo_dice_ema": self.ema,
                    "total_iterations": self.total_iterations,
                }
                self.log.append(entry)
                losses = []
                self.save_checkpoint()
                if self.on_epoch:
                    self.on_epoch(entry)
        if self._agree(bool(self.iterations_this_run) or not (self.out / "model.pt").exists()):
            self.elapsed = time.perf_counter() - t_start
            if self.rank == 0:
                with atomic_path(self.out / "model.pt") as tmp:
                    t.save({k: v.float() for k, v in self.net.state_dict().items()}, tmp)
            self.save_checkpoint()
        return {
            "iterations": self.iteration,
            "elapsed_s": self.elapsed,
            "precision": self.precision,
            "log": self.log,
            "iterations_this_run": self.iterations_this_run,
            "note": self.note,
        }


def build_network(plan: dict[str, Any]) -> Any:
    """MONAI DynUNet from the plan's topology."""
    from monai.networks.nets import DynUNet

    net = plan["network"]
    ds_num = int(net.get("deep_supervision", 0))
    k_slice = plan.get("slice_axis")
    unet = DynUNet(
        spatial_dims=int(plan["dims"]) - (k_slice is not None),
        in_channels=len(plan["channels"]),
        out_channels=max(int(k) for k in plan["labels"]) + 1,
        kernel_size=net["kernel_sizes"],
        strides=net["strides"],
        upsample_kernel_size=net["strides"][1:],
        filters=net["filters"],
        norm_name=net.get("norm", "instance"),
        deep_supervision=ds_num > 0,
        deep_supr_num=max(1, ds_num),
        res_block=False,
    )
    if k_slice is None:
        return unet
    from medimg.seg.nets import SliceNet

    return SliceNet(unet, int(k_slice))


def dice_ce_loss(
    outputs: Any, target: Any, n_classes: int, smooth: float = 1e-5, ignore_index: int | None = None
) -> Any:
    """Soft Dice (batch Dice over foreground classes) + cross-entropy; ``outputs`` ``(B, C, *S)`` or, with deep
    supervision, ``(B, H, C, *S)`` (heads weighted 1, 1/2, 1/4, ... normalised).

    Voxels whose target is ``ignore_index`` (nnU-Net's ignore label) are left out of both terms: the
    cross-entropy is the mean over the other voxels and the Dice sums skip them, so the loss and its gradient do not
    depend on the network's output there."""
    import torch
    import torch.nn.functional as F

    heads = [outputs] if outputs.dim() == target.dim() + 1 else list(outputs.unbind(1))
    weights = np.array([0.5**i for i in range(len(heads))])
    weights = weights / weights.sum()
    valid = None
    if ignore_index is not None:
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
    onehot = F.one_hot(target, n_classes).movedim(-1, 1).float()
    if valid is not None:
        onehot = onehot * valid.unsqueeze(1)
    axes = [0, *list(range(2, onehot.dim()))]
    total = torch.zeros((), dtype=torch.float32)
    for w, logits in zip(weights, heads, strict=True):
        probs = torch.softmax(logits, 1)
        if valid is None:
            ce = F.cross_entropy(logits, target)
        else:
            ce_voxels = F.cross_entropy(logits, target, reduction="none")
            ce = torch.where(valid, ce_voxels, 0.0).sum() / valid.sum().clamp_min(1)
            probs = torch.where(valid.unsqueeze(1), probs, 0.0)
        inter = (probs * onehot).sum(axes)
        denom = probs.sum(axes) + onehot.sum(axes)
        dice = (2 * inter + smooth) / (denom + smooth)
        total = total + float(w) * (ce + 1 - dice[1:].mean())
    return total


def augment_batch(img: Any, lab: Any, cfg: dict[str, Any], rng: np.random.Generator, dims: int) -> tuple[Any, Any]:
    """Random rotation/scaling (grid_sample), mirroring and intensity changes; parameters drawn from ``rng`` so
    that training is reproducible from a seed."""
    import torch
    import torch.nn.functional as F

    b = img.shape[0]
    if cfg.get("p_spatial", 0) > 0:
        theta = torch.zeros(b, dims, dims + 1)
        apply = False
        for i in range(b):
            if rng.random() < cfg["p_spatial"]:
                apply = True
                s = rng.uniform(*cfg["scale"])
                plane = cfg.get("rotation_plane")
                ang = np.deg2rad(
                    rng.uniform(-cfg["rotation_deg"], cfg["rotation_deg"], size=3 if dims == 3 and not plane else 1)
                )
                if dims == 3 and plane:  # the 2D configuration: rotate and scale within the slice plane only
                    rot = np.eye(3)
                    u, v = (dims - 1 - a for a in plane)  # affine_grid orders coordinates last axis first
                    rot[np.ix_([u, v], [u, v])] = _rotation(ang, 2) / s
                    theta[i, :, :dims] = torch.from_numpy(rot).float()
                    continue
                rot = _rotation(ang, dims)
                theta[i, :, :dims] = torch.from_numpy(rot / s).float()
            else:
                theta[i, :, :dims] = torch.eye(dims)
        if apply:
            grid = F.affine_grid(theta.to(img.device), list(img.shape), align_corners=False)
            img = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            lab = F.grid_sample(lab[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[
                :, 0
            ].long()
    for axis in cfg.get("mirror_axes", []):
        flip = torch.from_numpy(rng.random(b) < 0.5).to(img.device)
        if flip.any():
            img[flip] = img[flip].flip(axis + 2)
            lab[flip] = lab[flip].flip(axis + 1)
    for i in range(b):
        if rng.random() < cfg.get("p_intensity", 0):
            img[i] = img[i] * float(rng.uniform(*cfg["intensity_scale"]))
        if rng.random() < cfg.get("p_gamma", 0):
            x = img[i]
            lo, hi = float(x.min()), float(x.max())
            if hi > lo:
                img[i] = ((x - lo) / (hi - lo)) ** float(rng.uniform(*cfg["gamma"])) * (hi - lo) + lo
        if rng.random() < cfg.get("p_noise", 0):
            noise = rng.normal(0, cfg["noise_std"], size=tuple(img[i].shape))
            img[i] = img[i] + torch.from_numpy(noise).float().to(img.device)
    return img, lab


def _rotation(angles: np.ndarray, dims: int) -> np.ndarray:
    if dims == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    rx, ry, rz = angles
    mx = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    my = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    mz = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return mz @ my @ mx


_SEG_CURVES = {
    "train loss": "train_loss",
    "val pseudo-Dice": "val_pseudo_dice",
    "val pseudo-Dice (EMA)": "val_pseudo_dice_ema",
}


def write_training_log(log: list[dict[str, Any]], out: Path, curves: dict[str, str] | None = None) -> None:
    """training_log.csv and training_curve.svg in the model folder; ``curves`` maps a legend entry to a log key
    (default: the segmentation trainer's loss and pseudo-Dice)."""
    if not log:
        return
    with atomic_path(out / "training_log.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(log[0]))
        w.writeheader()
        w.writerows(log)
    from medimg.report.evaluation import line_plot_svg

    series: dict[str, Sequence[float]] = {name: [e[key] for e in log] for name, key in (curves or _SEG_CURVES).items()}
    with atomic_path(out / "training_curve.svg") as tmp:
        tmp.write_text(line_plot_svg([e["elapsed_s"] / 60 for e in log], series, "training", "minutes"))


def load_split(
    path: str | Path, fold: int | None = None, case_ids: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Read a split: medimg's ``{"train": [...], "val": [...]}`` or nnU-Net's ``splits_final.json`` (a list of
    such dictionaries, one per fold; ``fold`` picks one, and is required when there are several).

    With ``case_ids`` (the dataset's labelled cases) the split is checked: every id must exist, train and val must
    not overlap and val must not be empty."""
    p = Path(path)
    if not p.is_file():
        raise MedimgError(f"Split file {str(p)!r} does not exist.")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise MedimgError(f"{p} is not valid JSON: {e}") from e

    def entry(x: Any, what: str) -> dict[str, list[str]]:
        if not isinstance(x, dict) or not {"train", "val"} <= set(x):
            raise MedimgError(f"{p}: {what} needs 'train' and 'val' lists of case ids.")
        return {"train": [str(i) for i in x["train"]], "val": [str(i) for i in x["val"]]}

    if isinstance(d, list):  # nnU-Net splits_final.json
        if not d:
            raise MedimgError(f"{p} holds no folds.")
        if fold is None and len(d) > 1:
            raise MedimgError(
                f"{p} holds {len(d)} folds (nnU-Net splits_final.json); choose one with --fold 0..{len(d) - 1}."
            )
        k = 0 if fold is None else fold
        if not 0 <= k < len(d):
            raise MedimgError(f"{p} holds {len(d)} fold(s); --fold must be in 0..{len(d) - 1}, not {k}.")
        split = entry(d[k], f"fold {k}")
    else:
        if fold is not None:
            raise MedimgError(
                f"{p} is a single train/val split; --fold applies to nnU-Net splits_final.json files (a list of "
                "folds). Drop --fold or give a splits_final.json."
            )
        split = entry(d, "a split file")
    if case_ids is not None:
        known = set(case_ids)
        missing = [i for i in split["train"] + split["val"] if i not in known]
        if missing:
            raise MedimgError(
                f"{p}: {len(missing)} case id(s) are not labelled cases of the dataset: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}. Use the dataset's case ids (e.g. {sorted(known)[0]})."
            )
        both = sorted(set(split["train"]) & set(split["val"]))
        if both:
            raise MedimgError(f"{p}: case(s) in both train and val: {', '.join(both[:5])}.")
        if not split["val"] or not split["train"]:
            raise MedimgError(f"{p}: the split needs at least one training and one validation case.")
    return split


def save_split(split: dict[str, list[str]], path: Path) -> None:
    save_json(split, path)
