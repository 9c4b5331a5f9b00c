"""Loading classifier model folders (bundled or your own) and predicting calibrated probabilities."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medimg.classify.networks import Classifier, build_encoder
from medimg.classify.train import predict_logits, probabilities
from medimg.errors import MedimgError

BUNDLED_DIR = Path(__file__).parent / "models"


def resolve_classifier(name_or_path: str | Path) -> Path:
    """A classifier model folder path, or the name of a bundled classifier."""
    from medimg.seg.model import BUNDLED_DIR as SEG_DIR

    p = Path(name_or_path)
    for cand in (p, BUNDLED_DIR / str(name_or_path), SEG_DIR / str(name_or_path)):
        if (cand / "model.json").exists() and (cand / "model.pt").exists():
            info = json.loads((cand / "model.json").read_text())
            if info.get("task") != "classification":
                raise MedimgError(f"{cand} is a {info.get('task', 'segmentation')} model, not a classifier.")
            return cand
    names = sorted(d.name for d in BUNDLED_DIR.iterdir() if (d / "model.json").exists()) if BUNDLED_DIR.is_dir() else []
    raise MedimgError(
        f"No classifier {str(name_or_path)!r}: give a model folder or a bundled name ({', '.join(names) or 'none'})."
    )


class ClassifierModel:
    """A trained classifier: ``model.predict_proba(images)`` -> ``(n, k)`` calibrated probabilities."""

    def __init__(self, name_or_path: str | Path) -> None:
        self.path = resolve_classifier(name_or_path)
        self.info: dict[str, Any] = json.loads((self.path / "model.json").read_text())
        self.classes: list[str] = list(self.info["classes"])
        self.multilabel = bool(self.info.get("multilabel", False))
        self.temperature = float(self.info.get("temperature", 1.0))
        self.input_size = list(self.info["input_size"])
        self.net = Classifier(build_encoder(self.info["encoder"]), len(self.classes), 0.0)
        state = torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)
        self.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        self.net.eval()

    def check(self, images: np.ndarray) -> np.ndarray:
        """Validate and bring images to ``(n, c, *spatial)`` float32 (a single image or ``(n, *spatial)`` is
        accepted for one-channel models)."""
        a = np.asarray(images, dtype=np.float32)
        dims, ch = int(self.info["dims"]), int(self.info["channels"])
        if a.ndim == dims:
            a = a[None, None]
        elif a.ndim == dims + 1 and ch == 1:
            a = a[:, None]
        if a.ndim != dims + 2 or a.shape[1] != ch:
            raise MedimgError(
                f"The model expects {dims}D images with {ch} channel(s), i.e. an array (n, {ch}, "
                f"{', '.join('size' for _ in range(dims))}); got shape {np.asarray(images).shape}."
            )
        if not np.all(np.isfinite(a)):
            bad = np.nonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0]
            raise MedimgError(f"Image(s) {bad[:10].tolist()} contain NaN or infinite values; fix or drop them.")
        return a

    def logits(self, images: np.ndarray) -> np.ndarray:
        return predict_logits(self.net, self.check(images), self.input_size)

    def predict_proba(self, images: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Probabilities ``(n, k)``: softmax rows sum to one (multi-label: independent sigmoids)."""
        t = self.temperature if calibrated else 1.0
        return probabilities(self.logits(images), self.multilabel, t)


def write_probabilities_csv(
    path: str | Path,
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    multilabel: bool,
    labels: np.ndarray | None = None,
) -> None:
    """A CSV with one row per image: id, ``p_<class>`` columns, the predicted class (or classes), and the true
    label when known. Written atomically."""
    from medimg.io._atomic import atomic_path

    header = ["id", *[f"p_{c}" for c in classes], "predicted"] + (["label"] if labels is not None else [])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, row in enumerate(probs):
            pred = (
                ";".join(c for c, p in zip(classes, row, strict=True) if p >= 0.5)
                if multilabel
                else classes[int(np.argmax(row))]
            )
            cells = [ids[i], *[f"{p:.6f}" for p in row], pred]
            if labels is not None:
                lab = labels[i]
                cells.append(
                    ";".join(c for c, v in zip(classes, lab, strict=True) if v > 0.5)
                    if multilabel
                    else classes[int(lab)]
                )
            w.writerow(cells)
