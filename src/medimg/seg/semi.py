"""Semi-supervised segmentation training: labelled cases plus a folder of unlabelled images (``medimg train DATASET
--unlabeled DIR``), within the same time budget as supervised training.

Method ``mean-teacher`` (Tarvainen & Valpola 2017; the medical variant of Yu et al. 2019 without the uncertainty
mask): a teacher network is the exponential moving average (EMA) of the student's weights. Every iteration, besides
the supervised Dice + CE loss on a labelled batch, the student sees a batch of unlabelled patches with noise and
intensity changes while the teacher sees them clean, and the mean squared difference of their softmax outputs is
added with a weight that ramps up (sigmoid, over the first ``rampup`` fraction of the iterations) to
``consistency``. The teacher is what is saved as the model (``model.pt``): its EMA weights are the better
segmenter.

Unlabelled images are checked against the labelled data's domain (:class:`medimg.domain.ImageDomain` from the
fingerprint) before anything is trained: images of another modality, size or spacing are refused and listed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.io._atomic import atomic_path
from medimg.seg.train import Trainer, _Cache, _crop, foreground_coords

#: Methods ``--method`` accepts.
METHODS = ("mean-teacher", "self-training", "copy-paste")
#: Methods that train on pseudo-labels (:class:`PseudoLabelTrainer`); they also fill a sparse dataset's ignored voxels.
PSEUDO_LABEL_METHODS = ("self-training", "copy-paste")
#: What ``--unlabeled`` trains with when no ``--method`` is given (chosen by measurement: docs/semi_supervised.md).
DEFAULT_METHOD = "copy-paste"


def unlabeled_images(folder: str | Path, n_channels: int) -> list[list[Path]]:
    """The image files of ``folder`` grouped per case (``<case>_0000``-style channel suffixes understood)."""
    from medimg.io._atomic import split_ext
    from medimg.seg.dataset import _CHANNEL, _is_image

    root = Path(folder)
    if not root.is_dir():
        raise MedimgError(f"Unlabelled folder {str(root)!r} does not exist.")
    groups: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if not _is_image(p):
            continue
        stem = split_ext(p.name)[0]
        m = _CHANNEL.match(stem)
        groups.setdefault(m.group("case") if m and n_channels > 1 else stem, []).append(p)
    cases = [sorted(v) for v in groups.values()]
    if not cases:
        raise MedimgError(f"No image in {root} (NIfTI, NRRD, MHA, ...); give the folder of unlabelled images.")
    bad = [c for c in cases if len(c) != n_channels]
    if bad:
        raise MedimgError(
            f"{len(bad)} unlabelled case(s) have {len(bad[0])} channel file(s), the model takes {n_channels}: "
            f"{bad[0][0].name}."
        )
    return cases


class _UnlabeledTrainer(Trainer):
    """A :class:`Trainer` that also holds a folder's unlabelled images, preprocessed as the plan says."""

    def __init__(self, *args: Any, unlabeled: list[list[Path]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unlabeled_files = unlabeled
        self.u_images: list[np.ndarray] = []

    # ------------------------------------------------------------------ data
    def _prepare_unlabeled(self) -> None:
        import medimg
        from medimg.seg.plan import preprocess_image

        if not self.unlabeled_files:
            return
        cache = self.out / "preprocessed_unlabeled"
        cache.mkdir(parents=True, exist_ok=True)
        items = self.unlabeled_files
        for i, files in enumerate(self.progress(items, "unlabelled") if self.progress else items):
            path = cache / f"u{i:05d}_img.npy"
            if not path.exists():
                arr, _ = preprocess_image([medimg.read(f) for f in files], self.plan)
                with atomic_path(path) as tmp:
                    np.save(tmp, arr)
            self.u_images.append(np.load(path))


class MeanTeacherTrainer(_UnlabeledTrainer):
    """A :class:`Trainer` that adds a mean-teacher consistency loss on unlabelled patches (see the module)."""

    consistency: float = 0.1
    ema_decay: float = 0.99
    rampup: float = 0.2
    noise_std: float = 0.1

    def __init__(self, *args: Any, unlabeled: list[list[Path]], **kwargs: Any) -> None:
        super().__init__(*args, unlabeled=unlabeled, **kwargs)
        self.teacher = copy.deepcopy(self.net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def unlabeled_batch(self) -> Any:
        """Random patches of unlabelled images (no foreground oversampling: there are no labels)."""
        import torch

        out = []
        for _ in range(int(self.plan["batch_size"])):
            arr = self.u_images[int(self.rng.integers(len(self.u_images)))]
            out.append(_crop(arr, self.random_start(arr.shape[1:]), self.patch, 1))
        return torch.from_numpy(np.stack(out).astype(np.float32)).to(self.device)

    # ------------------------------------------------------------------ training
    def consistency_weight(self) -> float:
        """Sigmoid ramp-up ``exp(-5 (1 - t)^2)`` over the first ``rampup`` of the planned iterations."""
        if self.total_iterations is None:  # first epoch, before the schedule is fixed: the ramp's start
            return float(self.consistency * math.exp(-5.0))
        t = min(1.0, self.iteration / max(1.0, self.rampup * self.total_iterations))
        return float(self.consistency * math.exp(-5.0 * (1.0 - t) ** 2))

    def step_loss(self, img: Any, lab: Any, bf16: bool) -> tuple[Any, Any]:
        """Supervised loss on the labelled batch plus the ramped consistency loss on an unlabelled one (the student
        on noisy patches, the teacher on clean ones); the supervised part is what is logged."""
        t = self.torch
        u = self.unlabeled_batch()
        noisy = u + self.noise_std * t.randn(u.shape, generator=None).to(u.device)
        with t.autocast(self.device.type, dtype=t.bfloat16, enabled=bf16):
            out = self.net(t.cat([img, noisy]))
            with t.no_grad():
                self.teacher.train()
                target = self.teacher(u)
        out = out.float()
        n = img.shape[0]
        sup = self.loss(out[:n], lab)
        head = (lambda x: x[:, 0]) if out.dim() == lab.dim() + 2 else (lambda x: x)  # deep supervision: full res
        student_p = t.softmax(head(out[n:]), 1)
        teacher_p = t.softmax(head(target.float()), 1)
        return sup + self.consistency_weight() * ((student_p - teacher_p) ** 2).mean(), sup

    def after_step(self) -> None:
        """EMA teacher update (warm start: a plain average while few steps are done)."""
        with self.torch.no_grad():
            a = min(self.ema_decay, 1 - 1 / (self.iteration + 2))
            for pt, ps in zip(self.teacher.parameters(), self.net.parameters(), strict=True):
                pt.mul_(a).add_(ps.detach(), alpha=1 - a)

    def _choose_precision(self, img: Any, lab: Any) -> None:
        saved = copy.deepcopy(self.teacher.state_dict())
        super()._choose_precision(img, lab)
        self.teacher.load_state_dict(saved)  # the timing steps are undone for the teacher too

    def pseudo_dice(self, val_batches: list[tuple[Any, Any]]) -> float:
        """The teacher's pseudo-Dice (it is the model that is saved)."""
        student, self.net = self.net, self.teacher
        try:
            return super().pseudo_dice(val_batches)
        finally:
            self.net = student

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "teacher": self.teacher.state_dict()}

    def load_checkpoint(self) -> bool:
        if not super().load_checkpoint():
            return False
        st = self.torch.load(self.out / "checkpoint.pt", weights_only=False, map_location=self.device)
        if "teacher" in st:
            self.teacher.load_state_dict(st["teacher"])
        return True

    def run(self, resume: bool = True) -> dict[str, Any]:
        """Check and preprocess the unlabelled images, train, and save the teacher as ``model.pt``."""
        self._prepare_unlabeled()
        res = super().run(resume)
        if self.rank == 0 and (self.out / "model.pt").exists():
            with atomic_path(self.out / "model.pt") as tmp:
                self.torch.save({k: v.float() for k, v in self.teacher.state_dict().items()}, tmp)
        return res


class PseudoLabelTrainer(_UnlabeledTrainer):
    """Self-training on the network's own confident predictions, optionally with bidirectional copy-paste.

    The first :attr:`start` of the planned iterations train on the labels alone. Then the current network predicts
    every unlabelled image (and, in a sparse dataset, the ignored voxels of the labelled training cases) once, on the
    preprocessed grid (sliding window, Gaussian blending): voxels whose top softmax probability is below
    :attr:`confidence` become ignored, the rest take the predicted class. The predictions are made again at each
    fraction of :attr:`refresh`. From then on, each patch of a batch is, with probability :attr:`u_fraction`, a
    pseudo-labelled patch (foreground-centred as often as labelled ones are), else a labelled one. Sparse labelled
    cases keep their annotated voxels and take the pseudo-labels only where they were ignored (``fill_ignored``;
    :func:`~medimg.seg.model.train_model` fills them only when no unlabelled folder is given).

    With ``copy_paste`` (bidirectional copy-paste, after Bai et al., CVPR 2023), a pseudo-labelled patch is mixed with
    a labelled patch: a box of :attr:`box_fraction` of the patch (random position) is pasted from one into the other,
    image and label alike, the direction alternating within the batch, so labelled structure appears in unlabelled
    context and the reverse.

    Prediction rounds are plain inference (no gradient), about a second per 100 hippocampus crops here; each
    iteration costs what a supervised one does. Nothing extra is saved: a resumed run predicts again."""

    start: float = 0.4
    refresh: tuple[float, ...] = (0.7,)
    confidence: float = 0.9
    u_fraction: float = 0.5
    box_fraction: float = 2 / 3

    def __init__(
        self,
        *args: Any,
        unlabeled: list[list[Path]],
        copy_paste: bool = False,
        fill_ignored: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, unlabeled=unlabeled, **kwargs)
        self.copy_paste = copy_paste
        #: Fill the ignored voxels of sparse labelled cases with pseudo-labels (else they stay without loss).
        self.fill_ignored = fill_ignored
        #: Pseudo-labelled unlabelled images (ids ``u00000`` ...), or None before the first round.
        self.pseudo: _Cache | None = None
        #: Sparse labelled training cases with their ignored voxels filled by pseudo-labels.
        self.filled: dict[str, np.ndarray] = {}
        self.rounds_done = 0
        #: Per round: iteration, seconds, fraction of pseudo-labelled voxels kept (confident).
        self.rounds: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ pseudo-labels
    def _predict(self, arr: np.ndarray, ignore: int) -> np.ndarray:
        """Confident argmax labels of a preprocessed ``(C, *S)`` array; ``ignore`` where unsure."""
        from monai.inferers import sliding_window_inference

        t = self.torch
        x = t.from_numpy(np.ascontiguousarray(arr[None], dtype=np.float32)).to(self.device)
        self.net.eval()
        with t.no_grad(), t.autocast(self.device.type, dtype=t.bfloat16, enabled=self.precision == "bf16"):
            out = sliding_window_inference(x, self.patch, sw_batch_size=4, predictor=self.net, overlap=0.5)
        probs = t.softmax(t.as_tensor(out).float(), 1)[0]
        conf, lab = probs.max(0)
        lab = lab.masked_fill(conf < self.confidence, ignore)
        return lab.cpu().numpy().astype(np.int16)

    def _maybe_pseudo_label(self, cache: _Cache) -> None:
        """Predict pseudo-labels when the schedule reaches :attr:`start` or a :attr:`refresh` fraction."""
        import time

        if self.total_iterations is None:
            return
        due = sum(self.iteration >= f * self.total_iterations for f in (self.start, *self.refresh))
        if due <= self.rounds_done:
            return
        t0 = time.perf_counter()
        if self.ignore_label is None:
            self.ignore_label = self.n_classes  # a value no label map holds: unsure pseudo-labelled voxels
        ign = self.ignore_label
        kept, total = 0, 0
        pseudo = _Cache()
        for i, arr in enumerate(self.u_images):
            lab = self._predict(arr, ign)
            kept, total = kept + int((lab != ign).sum()), total + lab.size
            uid = f"u{i:05d}"
            pseudo.images[uid], pseudo.labels[uid], pseudo.fg[uid] = arr, lab, foreground_coords(lab, ign, self.rng)
        for cid in self.split["train"] if self.fill_ignored else []:
            lab = np.asarray(cache.labels[cid])
            holes = lab == ign
            if holes.any():
                pred = self._predict(np.asarray(cache.images[cid]), ign)
                kept, total = kept + int((pred[holes] != ign).sum()), total + int(holes.sum())
                self.filled[cid] = np.where(holes, pred, lab).astype(lab.dtype)
        self.pseudo = pseudo if pseudo.images else None
        self.rounds_done = due
        self.rounds.append(
            {
                "iteration": self.iteration,
                "seconds": round(time.perf_counter() - t0, 2),
                "confident_fraction": round(kept / max(1, total), 4),
            }
        )

    # ------------------------------------------------------------------ batches
    def _mix(self, lp: tuple[np.ndarray, np.ndarray], up: tuple[np.ndarray, np.ndarray], inward: bool) -> tuple:
        """Paste a box of the labelled patch into the pseudo-labelled one (``inward``) or the reverse."""
        box = [max(1, round(p * self.box_fraction)) for p in self.patch]
        start = [int(self.rng.integers(0, p - b + 1)) for p, b in zip(self.patch, box, strict=True)]
        sl = tuple(slice(s0, s0 + b) for s0, b in zip(start, box, strict=True))
        (dst_i, dst_l), (src_i, src_l) = (up, lp) if inward else (lp, up)
        img, lab = dst_i.copy(), dst_l.copy()
        img[(slice(None), *sl)] = src_i[(slice(None), *sl)]
        lab[sl] = src_l[sl]
        return img, lab

    def sample_batch(self, cache: _Cache, ids: Sequence[str], batch_size: int, fg_fraction: float) -> tuple:
        """Training batches mix labelled and pseudo-labelled patches once pseudo-labels exist (see the class);
        validation batches (other ``ids``) stay labelled."""
        if list(ids) != list(self.split["train"]):
            return super().sample_batch(cache, ids, batch_size, fg_fraction)
        self._maybe_pseudo_label(cache)
        if self.pseudo is None and not self.filled:
            return super().sample_batch(cache, ids, batch_size, fg_fraction)
        labelled = _Cache(cache.images, {**cache.labels, **self.filled}, cache.fg) if self.filled else cache
        u_ids = list(self.pseudo.images) if self.pseudo is not None else []
        patches = []
        for b in range(batch_size):
            centred = b >= batch_size * (1 - fg_fraction)
            lp = self.patch_of(labelled, ids[int(self.rng.integers(len(ids)))], centred)
            if self.pseudo is None or self.rng.random() >= self.u_fraction:
                patches.append(lp)
                continue
            up = self.patch_of(self.pseudo, u_ids[int(self.rng.integers(len(u_ids)))], centred)
            patches.append(self._mix(lp, up, inward=b % 2 == 0) if self.copy_paste else up)
        return self.to_batch(patches)

    def run(self, resume: bool = True) -> dict[str, Any]:
        """Preprocess the unlabelled images, then train (pseudo-label rounds inside); the result's
        ``pseudo_label_rounds`` lists each round."""
        self._prepare_unlabeled()
        res = super().run(resume)
        return {**res, "pseudo_label_rounds": self.rounds}


def check_unlabeled_domain(fp: dict[str, Any], cases: list[list[Path]], dataset_name: str) -> None:
    """Refuse unlabelled images outside the labelled data's domain (listing up to 5 with the reason)."""
    import medimg
    from medimg.domain import ImageDomain

    dom = ImageDomain.from_fingerprint(fp, f"the labelled images of {dataset_name}")
    bad = []
    for files in cases:
        diffs = dom.differences([medimg.read(f) for f in files])
        if diffs:
            bad.append(f"{files[0].name}: {diffs[0]}")
    if bad:
        raise MedimgError(
            f"{len(bad)} of {len(cases)} unlabelled image(s) are outside the labelled data's domain, e.g. "
            + "; ".join(bad[:5])
            + ". Remove them from the --unlabeled folder (they would teach the model the wrong images)."
        )
