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
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.io._atomic import atomic_path
from medimg.seg.train import Trainer, _crop

#: Methods ``--method`` accepts.
METHODS = ("mean-teacher",)


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


class MeanTeacherTrainer(Trainer):
    """A :class:`Trainer` that adds a mean-teacher consistency loss on unlabelled patches (see the module)."""

    consistency: float = 0.1
    ema_decay: float = 0.99
    rampup: float = 0.2
    noise_std: float = 0.1

    def __init__(self, *args: Any, unlabeled: list[list[Path]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unlabeled_files = unlabeled
        self.teacher = copy.deepcopy(self.net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.u_images: list[np.ndarray] = []

    # ------------------------------------------------------------------ data
    def _prepare_unlabeled(self) -> None:
        import medimg
        from medimg.seg.plan import preprocess_image

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
