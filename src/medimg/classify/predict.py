"""Loading classifier model folders (bundled or your own) and predicting calibrated probabilities."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medimg.classify.augment import normalize, resize
from medimg.classify.networks import Classifier, build_encoder
from medimg.classify.train import dark_fractions, domain_features, predict_logits, probabilities
from medimg.errors import MedimgError

BUNDLED_DIR = Path(__file__).parent / "models"


def resolve_classifier(name_or_path: str | Path) -> Path:
    """A classifier model folder path, or the name of a bundled classifier (see :mod:`medimg.registry`)."""
    from medimg.registry import find

    return find(name_or_path, "classification")


class ClassifierModel:
    """A trained classifier: ``model.predict_proba(images)`` -> ``(n, k)`` calibrated probabilities."""

    def __init__(self, name_or_path: str | Path) -> None:
        self.path = resolve_classifier(name_or_path)
        self.info: dict[str, Any] = json.loads((self.path / "model.json").read_text())
        self.classes: list[str] = list(self.info["classes"])
        self.multilabel = bool(self.info.get("multilabel", False))
        self.temperature = float(self.info.get("temperature", 1.0))
        self.input_size = list(self.info["input_size"])
        #: The physical grid image files are resampled onto (:mod:`medimg.classify.grid`), or None.
        self.grid: dict[str, Any] | None = self.info.get("grid")
        self.net = Classifier(build_encoder(self.info["encoder"]), len(self.classes), 0.0)
        state = torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)
        self.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        self.net.eval()
        from medimg.domain import FeatureDomain

        self.domain = FeatureDomain.load(self.path) if (self.path / "domain.npz").exists() else None
        self.last_domain: list[dict[str, Any]] = []
        #: Default of ``force`` in :meth:`predict_proba` (classify out-of-domain images instead of refusing them).
        self.force = False

    def features(self, images: np.ndarray) -> list[np.ndarray]:
        """The domain-density features of raw images (preprocessed as in training: resize + z-score)."""
        return domain_features(self.net, self.check(images), self.input_size)

    def check_domain(self, images: np.ndarray, force: bool = False, ids: Sequence[str] | None = None) -> list[dict]:
        """One provenance record per image (``score``: the largest squared Mahalanobis distance of its features to
        the training densities, as a multiple of the in-domain threshold; in_domain, forced).

        Raises OutOfDomainError naming the images outside the domain unless ``force``."""
        from medimg.domain import domain_record
        from medimg.errors import OutOfDomainError

        a = self.check(images)
        if self.domain is None:  # a model folder from before domains were recorded
            self.last_domain = [domain_record([], False, checked=False) for _ in range(len(a))]
            return self.last_domain
        assessed = self.domain.assess(domain_features(self.net, a, self.input_size), dark_fractions(a, self.input_size))
        ids = list(ids) if ids is not None else [str(i) for i in range(len(a))]
        if self.info.get("input_intensity"):  # grid models: raw intensities (e.g. HU) must look like the training's
            from medimg.classify.grid import intensity_differences

            extra = intensity_differences(a, self.info["input_intensity"])
            assessed = [(score, list(reasons) + more) for (score, reasons), more in zip(assessed, extra, strict=True)]
        recs = [{**domain_record(reasons, force), "score": score} for score, reasons in assessed]
        bad = [i for i, r in enumerate(recs) if not r["in_domain"]]
        if bad and not force:
            names = ", ".join(ids[i] for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
            why = "; ".join(f"{ids[i]}: " + ", ".join(recs[i]["differences"]) for i in bad[:3])
            raise OutOfDomainError(
                f"{len(bad)} of {len(a)} image(s) are outside the domain of classifier {self.info.get('name')!r} "
                f"({self.domain.description}): {names} (e.g. {why}). "
                "The classifier's answer would not mean anything for them; pass "
                "--force (force=True) to classify them anyway (recorded in the output)."
            )
        self.last_domain = recs
        return recs

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
                + (
                    " For an RGB image use --channel grey (or --channel 0)."
                    if ch == 1 and a.ndim == dims + 2 and a.shape[1] in (3, 4)
                    else ""
                )
            )
        if self.grid is not None:
            from medimg.classify.grid import numpy_shape

            if tuple(a.shape[2:]) != numpy_shape(self.grid):
                sp = "x".join(f"{v:g}" for v in self.grid["spacing_mm"])
                raise MedimgError(
                    f"This model takes images on a {sp} mm grid of {'x'.join(map(str, self.grid['size']))} voxels "
                    f"(x, y[, z]); got an array of shape {tuple(a.shape[2:])} (numpy order). Give image files with "
                    "their spacing (NIfTI, NRRD, DICOM): they are resampled onto the grid."
                )
        if not np.all(np.isfinite(a)):
            bad = np.nonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0]
            raise MedimgError(f"Image(s) {bad[:10].tolist()} contain NaN or infinite values; fix or drop them.")
        return a

    def logits(self, images: np.ndarray) -> np.ndarray:
        return predict_logits(self.net, self.check(images), self.input_size)

    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The encoder's global-average-pooled features ``(n, d)`` (the input of the classification head) of raw
        images, preprocessed as in training; the feature space of FID/KID on this model (no domain check)."""
        a = self.check(images)
        out = []
        with torch.no_grad():
            for i in range(0, len(a), batch_size):
                x = normalize(resize(torch.from_numpy(np.ascontiguousarray(a[i : i + batch_size])), self.input_size))
                out.append(self.net.encoder.embed(x).float().numpy())
        return np.concatenate(out).astype(np.float64)

    def predict_proba(
        self,
        images: np.ndarray,
        calibrated: bool = True,
        force: bool | None = None,
        ids: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Probabilities ``(n, k)``: softmax rows sum to one (multi-label: independent sigmoids).

        Images outside the model's training domain raise OutOfDomainError unless ``force``; the per-image domain
        records of the last call are in ``self.last_domain``."""
        a = self.check(images)
        self.check_domain(a, self.force if force is None else force, ids)
        t = self.temperature if calibrated else 1.0
        return probabilities(predict_logits(self.net, a, self.input_size), self.multilabel, t)


def write_probabilities_csv(
    path: str | Path,
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    multilabel: bool,
    labels: np.ndarray | None = None,
    domain: Sequence[dict[str, Any]] | None = None,
) -> None:
    """A CSV with one row per image: id, ``p_<class>`` columns, the predicted class (or classes), the true
    label when known, and (``domain``) whether the image was inside the model's domain and its domain score
    (> 1: outside, classified only because forced). Written atomically."""
    from medimg.io._atomic import atomic_path

    header = ["id", *[f"p_{c}" for c in classes], "predicted"] + (["label"] if labels is not None else [])
    header += ["in_domain", "domain_score"] if domain is not None else []
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
            if domain is not None:
                cells += [str(bool(domain[i]["in_domain"])).lower(), f"{domain[i].get('score', float('nan')):.3f}"]
            w.writerow(cells)
