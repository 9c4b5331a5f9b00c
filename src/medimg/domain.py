"""Model domains: what a model was trained on, and the check that refuses input outside it.

A model that answers outside its training domain gives a confident, wrong answer (a hippocampus model "finds"
1.3 L of hippocampus in an abdominal CT). Every model folder therefore records its domain and every prediction
path checks the input against it first; out-of-domain input raises :class:`OutOfDomainError`, saying what differs,
unless the caller forces it (CLI: ``--force``), in which case the result's provenance says so.

Two kinds of domain:

* :class:`ImageDomain` (segmentation models; ``domain.json`` in the model folder, derived from the training set's
  fingerprint): dimensionality, channels, modality, voxel spacing range (mm), field-of-view range (mm; compared
  as sorted extents, so it does not depend on the axis order) and raw intensity range.
* :class:`FeatureDomain` (classifiers; ``domain.json`` + ``domain.npz``): dimensionality and channels, plus
  Gaussian densities of the network's own early-stage features (pooled to a coarse 3 x 3 layout) on the training
  images. An image is out of domain when a squared Mahalanobis distance exceeds a threshold fixed on the
  *training* images only (1.2 x the 99.9th percentile of their 2-fold out-of-sample distances), so that held-out
  in-domain data is not used to tune it.
  (The penultimate, globally pooled features were tried first and separate brain MR or CT slices from chest
  X-rays poorly: a classifier trained to tell two classes apart discards what is irrelevant to them.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import OutOfDomainError
from medimg.image import Image

#: Factor by which spacing and field of view may exceed the training range before an image is out of domain.
SPACING_FACTOR = 1.5
EXTENT_FACTOR = 2.0
#: Largest share of voxels allowed below the training minimum intensity (by more than 0.1 % of the training
#: range: a model trained on non-negative MR must not see CT's air at -1000 HU).
BELOW_MIN_FRACTION = 0.02
BELOW_MIN_TOLERANCE = 0.001


def _fmt(v: Sequence[float] | np.ndarray, unit: str = "") -> str:
    return " x ".join(f"{x:.3g}" for x in v) + unit


#: Per-image intensity percentiles whose training range is recorded (raw values, e.g. Hounsfield units).
PERCENTILES = (1.0, 50.0, 99.0)
#: Share of the training images' overall intensity span by which a percentile may leave its training range.
PERCENTILE_MARGIN = 0.1


def percentile_record(arrays: Sequence[np.ndarray]) -> dict[str, Any]:
    """The range over training images of each one's 1st, 50th and 99th intensity percentile (raw units)."""
    return percentile_range([np.percentile(np.asarray(a, np.float64), PERCENTILES) for a in arrays])


def percentile_range(per_image: Sequence[Sequence[float]] | Sequence[np.ndarray]) -> dict[str, Any]:
    """:func:`percentile_record` from each image's :data:`PERCENTILES` already computed (``(n, 3)``, e.g. the
    fingerprint's ``case_percentiles``)."""
    q = np.asarray(per_image, np.float64).T  # (3, n)
    return {
        "percentiles": list(PERCENTILES),
        "min": [float(v) for v in q.min(axis=1)],
        "max": [float(v) for v in q.max(axis=1)],
        "span": float(q[-1].max() - q[0].min()),
    }


def percentile_differences(array: np.ndarray, record: dict[str, Any]) -> list[str]:
    """Why an image's raw intensity percentiles are outside a :func:`percentile_record` (empty when inside)."""
    q = np.percentile(np.asarray(array, np.float64), record["percentiles"])
    m = PERCENTILE_MARGIN * max(float(record["span"]), 1e-6)
    return [
        f"its {p:g} % intensity percentile is {v:.4g}, the training images' are {lo:.4g} to {hi:.4g}"
        for p, v, lo, hi in zip(record["percentiles"], q, record["min"], record["max"], strict=True)
        if not lo - m <= v <= hi + m
    ]


@dataclass
class ImageDomain:
    """The inputs a segmentation model was trained on (all lengths in mm).

    ``extent_min_mm`` / ``extent_max_mm`` are the smallest and largest *sorted* fields of view (shape x spacing)
    seen in training; ``spacing_min_mm`` / ``spacing_max_mm`` the smallest and largest voxel size along any axis.
    ``intensity`` holds raw ``min`` / ``max`` / ``p00_5`` / ``p99_5`` over the training foreground.
    ``case_percentiles`` (CT models: Hounsfield units are absolute) holds the range of every training image's 1st,
    50th and 99th intensity percentile (:func:`percentile_record`): an image whose percentiles lie outside it by more
    than :data:`PERCENTILE_MARGIN` (a tenth) of the training span is out of domain (an MR crop of soft-tissue-like
    values has no lung air, unlike every LIDC nodule crop).
    """

    description: str
    dims: int
    channels: list[str]
    spacing_min_mm: float
    spacing_max_mm: float
    extent_min_mm: list[float]
    extent_max_mm: list[float]
    intensity: dict[str, float] = field(default_factory=dict)
    modality: str | None = None
    spacing_known: bool = True
    case_percentiles: dict[str, Any] | None = None

    @classmethod
    def from_fingerprint(cls, fp: dict[str, Any], description: str = "", modality: str | None = None) -> ImageDomain:
        """Derive the domain from a dataset fingerprint (``fingerprint.json``: per-case spacings and shapes)."""
        spacings = np.asarray(fp["spacings"], dtype=np.float64)
        shapes = np.asarray(fp["shapes"], dtype=np.float64)
        extents = np.sort(spacings * shapes, axis=1)
        inten = fp.get("foreground_intensity") or [{}]
        intensity = {k: float(v) for k, v in inten[0].items() if k in ("min", "max", "p00_5", "p99_5")}
        if "min" in intensity and fp.get("case_percentiles"):
            # the floor covers whole images, not only the labelled structures: an MR background darker than every
            # organ (CHAOS: 0 around the body, liver >= 14) is part of every training image (1st percentiles)
            intensity["min"] = min(intensity["min"], float(np.min(np.asarray(fp["case_percentiles"])[:, 0])))
        return cls(
            description=description or f"the {fp.get('name', 'training')} dataset",
            dims=int(spacings.shape[1]),
            channels=list(fp.get("channels", ["image"])),
            spacing_min_mm=float(spacings.min()),
            spacing_max_mm=float(spacings.max()),
            extent_min_mm=[round(float(v), 3) for v in extents.min(axis=0)],
            extent_max_mm=[round(float(v), 3) for v in extents.max(axis=0)],
            intensity=intensity,
            modality=modality,
            spacing_known=bool(fp.get("spacing_known", True)),
            # Hounsfield units are absolute: CT models also check each image's intensity percentiles
            case_percentiles=percentile_range(fp["case_percentiles"])
            if modality == "CT" and fp.get("case_percentiles")
            else None,
        )

    def differences(self, images: Sequence[Image]) -> list[str]:
        """What differs between the input (one image per channel) and this domain; empty when in domain."""
        img = images[0]
        out: list[str] = []
        if img.ndim != self.dims:
            out.append(f"the image is {img.ndim}D; this model takes {self.dims}D images")
            return out
        n_ch = sum(im.n_channels for im in images)
        if n_ch != len(self.channels):
            out.append(
                f"the input has {n_ch} channel(s); this model takes {len(self.channels)} ({', '.join(self.channels)})"
            )
            return out
        mod = str(img.meta.get("modality") or "").upper()
        if self.modality and mod and mod != self.modality.upper():
            out.append(f"the image is {mod}; this model was trained on {self.modality}")
        if self.spacing_known and not img.spacing_known:
            out.append("the image's voxel spacing is unknown (pass it with --input-spacing)")
        sp = np.asarray(img.spacing, dtype=np.float64)
        lo, hi = self.spacing_min_mm / SPACING_FACTOR, self.spacing_max_mm * SPACING_FACTOR
        if sp.min() < lo or sp.max() > hi:
            rng = (
                _fmt([self.spacing_min_mm])
                if self.spacing_min_mm == self.spacing_max_mm
                else f"{_fmt([self.spacing_min_mm])}-{_fmt([self.spacing_max_mm])}"
            )
            out.append(f"the voxel spacing is {_fmt(sp, ' mm')}; this model was trained on {rng} mm voxels")
        ext = np.sort(sp * np.asarray(img.shape, dtype=np.float64))
        if np.any(ext > np.asarray(self.extent_max_mm) * EXTENT_FACTOR) or np.any(
            ext < np.asarray(self.extent_min_mm) / EXTENT_FACTOR
        ):
            out.append(
                f"the image is {_fmt(sp * np.asarray(img.shape), ' mm')}; this model was trained on "
                f"{_fmt(self.extent_min_mm)} to {_fmt(self.extent_max_mm, ' mm')} {self.description}"
            )
        if {"min", "p00_5", "p99_5"} <= set(self.intensity):
            span = self.intensity["p99_5"] - self.intensity["p00_5"]
            floor = self.intensity["min"] - BELOW_MIN_TOLERANCE * max(span, 1e-6)
            a = np.asarray(img.array)
            below = float(np.count_nonzero(a < floor)) / max(a.size, 1)
            if below > BELOW_MIN_FRACTION:
                out.append(
                    f"{100 * below:.0f} % of the voxels are below {floor:.4g}, the lowest intensity in training "
                    f"(e.g. CT Hounsfield units given to an MR model)"
                )
            if self.case_percentiles:
                out += percentile_differences(a, self.case_percentiles)
            if (self.modality or "").upper() == "CT" and "max" in self.intensity:
                # Hounsfield units are absolute (MR intensities are not): far above the training maximum is not CT
                ceiling = self.intensity["max"] + BELOW_MIN_TOLERANCE * max(span, 1e-6)
                above = float(np.count_nonzero(a > ceiling)) / max(a.size, 1)
                if above > BELOW_MIN_FRACTION:
                    out.append(
                        f"{100 * above:.0f} % of the voxels are above {ceiling:.4g}, the highest intensity in training "
                        "(Hounsfield units of CT end near there; e.g. an MR image given to a CT model)"
                    )
        return out

    def save(self, path: str | Path) -> Path:
        """Write this domain as JSON (atomically)."""
        from medimg.io._atomic import atomic_path

        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"kind": "image", **asdict(self)}, indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ImageDomain:
        d = json.loads(Path(path).read_text())
        d.pop("kind", None)
        return cls(**d)


@dataclass
class FeatureDomain:
    """A classifier's domain: input dims/channels and Gaussian densities of its own intermediate features.

    For each feature layer (early encoder stages, average-pooled to a 3 x 3 (x 3) layout so that the position of
    structures counts), ``means[i]`` and ``precisions[i]`` define a squared Mahalanobis distance and
    ``thresholds[i]`` = ``margin`` x the 99.9th percentile of the training images' distances. An image is out of
    domain when any layer's distance exceeds its threshold; ``score`` = max over layers of distance / threshold.
    """

    description: str
    dims: int
    channels: int
    layers: list[str]
    means: list[np.ndarray]
    precisions: list[np.ndarray]
    thresholds: list[float]
    train_p999: list[float]
    train_max: list[float]
    margin: float
    n_train: int
    #: Largest in-domain share of near-black pixels (<= 2 % of the image's range, on the resized model input):
    #: 2 x the training images' 99.9th percentile. Catches photographs with a black surround (fundus) that the
    #: feature densities alone let through. None: not checked.
    dark_fraction_limit: float | None = None

    @classmethod
    def fit(
        cls,
        features: Sequence[np.ndarray],
        layers: Sequence[str],
        description: str,
        dims: int,
        channels: int,
        shrinkage: float | None = None,
        margin: float = 1.0,
        dark_fractions: np.ndarray | None = None,
    ) -> FeatureDomain:
        """Fit one density per layer on training features ``[(n, d_i)]``. The covariance is shrunk towards its
        mean variance (Ledoit-Wolf's optimal intensity, at least 5 %, unless ``shrinkage`` is given) so that it
        inverts with few images; thresholds are ``margin`` x the 99.9th percentile of 2-fold out-of-sample
        distances."""
        means, precs, thr, p999, mx = [], [], [], [], []
        rng = np.random.default_rng(0)
        for f in features:
            f = np.asarray(f, dtype=np.float64)
            mu, prec = _gaussian(f, shrinkage)
            # the threshold comes from out-of-sample distances (2-fold): in-sample distances are biased low when
            # the feature dimension is not small against the number of images
            fold = rng.permutation(len(f)) % 2
            held = np.concatenate([_mahalanobis2(f[fold == k], *_gaussian(f[fold != k], shrinkage)) for k in (0, 1)])
            means.append(mu)
            precs.append(prec)
            p999.append(float(np.percentile(held, 99.9)))
            mx.append(float(held.max()))
            thr.append(p999[-1] * margin)
        dark = None if dark_fractions is None else float(2 * np.percentile(dark_fractions, 99.9))
        return cls(
            description, dims, channels, list(layers), means, precs, thr, p999, mx, margin, len(features[0]), dark
        )

    def feature_scores(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """``(n,)`` max over layers of distance / threshold: > 1 means out of domain."""
        per = [
            _mahalanobis2(np.asarray(f, dtype=np.float64), mu, p) / t
            for f, mu, p, t in zip(features, self.means, self.precisions, self.thresholds, strict=True)
        ]
        return np.max(np.stack(per), axis=0)

    def assess(
        self, features: Sequence[np.ndarray], dark_fractions: np.ndarray | None
    ) -> list[tuple[float, list[str]]]:
        """Per image: its score (max of feature and input-statistic ratios to their limits; > 1 = out of domain)
        and what differs, in words."""
        fs = self.feature_scores(features)
        out = []
        for i, f in enumerate(fs):
            reasons = []
            score = float(f)
            if f > 1:
                reasons.append(
                    f"its image features lie {f:.1f} x farther from the training images than the in-domain limit"
                )
            if self.dark_fraction_limit and dark_fractions is not None:
                r = float(dark_fractions[i]) / self.dark_fraction_limit
                score = max(score, r)
                if r > 1:
                    reasons.append(
                        f"{100 * dark_fractions[i]:.0f} % of it is near-black background (at most "
                        f"{100 * self.dark_fraction_limit:.0f} % in the training images)"
                    )
            out.append((score, reasons))
        return out

    def save(self, folder: str | Path) -> None:
        """Write ``domain.json`` (+ ``domain.npz`` with the densities) into a model folder (atomically)."""
        from medimg.io._atomic import atomic_path

        folder = Path(folder)
        meta = {
            "kind": "features",
            "description": self.description,
            "dims": self.dims,
            "channels": self.channels,
            "layers": self.layers,
            "thresholds": self.thresholds,
            "train_p99_9": self.train_p999,
            "train_max": self.train_max,
            "margin": self.margin,
            "n_train": self.n_train,
            "dark_fraction_limit": self.dark_fraction_limit,
            "density": "domain.npz: mean_i, precision_i per layer (squared Mahalanobis distance)",
        }
        arrays = {}
        for i, (mu, p) in enumerate(zip(self.means, self.precisions, strict=True)):
            arrays[f"mean_{i}"], arrays[f"precision_{i}"] = mu.astype(np.float32), p.astype(np.float32)
        with atomic_path(folder / "domain.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        with atomic_path(folder / "domain.json") as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> FeatureDomain:
        folder = Path(folder)
        meta = json.loads((folder / "domain.json").read_text())
        n = len(meta["layers"])
        with np.load(folder / "domain.npz") as z:
            means = [z[f"mean_{i}"].astype(np.float64) for i in range(n)]
            precs = [z[f"precision_{i}"].astype(np.float64) for i in range(n)]
        return cls(
            meta["description"],
            int(meta["dims"]),
            int(meta["channels"]),
            list(meta["layers"]),
            means,
            precs,
            [float(v) for v in meta["thresholds"]],
            [float(v) for v in meta["train_p99_9"]],
            [float(v) for v in meta["train_max"]],
            float(meta["margin"]),
            int(meta["n_train"]),
            meta.get("dark_fraction_limit"),
        )


def _gaussian(f: np.ndarray, shrinkage: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision of features ``(n, d)`` with a shrunk covariance (Ledoit & Wolf 2004 when
    ``shrinkage`` is None: the intensity that minimises the expected Frobenius error, floored at 5 %)."""
    n, d = f.shape
    mu = f.mean(axis=0)
    x = f - mu
    cov = x.T @ x / n
    target = np.trace(cov) / d
    if shrinkage is None:
        delta = float(np.sum((cov - target * np.eye(d)) ** 2))
        beta = float((np.sum(np.sum(x**2, axis=1) ** 2) - n * np.sum(cov**2)) / n**2)
        shrinkage = max(0.05, min(1.0, beta / delta if delta > 0 else 1.0))
    cov = (1 - shrinkage) * cov + shrinkage * target * np.eye(d)
    return mu, np.linalg.inv(cov)


def _mahalanobis2(f: np.ndarray, mu: np.ndarray, prec: np.ndarray) -> np.ndarray:
    z = f - mu
    return np.einsum("ij,jk,ik->i", z, prec, z)


def load_image_domain(model_dir: str | Path) -> ImageDomain | None:
    """A segmentation model folder's domain: ``domain.json``, else derived from ``fingerprint.json``, else None."""
    d = Path(model_dir)
    if (d / "domain.json").exists():
        return ImageDomain.load(d / "domain.json")
    if (d / "fingerprint.json").exists():
        fp = json.loads((d / "fingerprint.json").read_text())
        if "spacings" in fp and "shapes" in fp:
            return ImageDomain.from_fingerprint(fp)
    return None


def domain_record(differences: Sequence[str], forced: bool, checked: bool = True) -> dict[str, Any]:
    """The provenance entry of a domain check."""
    return {
        "checked": checked,
        "in_domain": not differences,
        "forced": bool(forced and differences),
        "differences": list(differences),
    }


def refuse_or_record(differences: Sequence[str], model: str, what: str, force: bool) -> dict[str, Any]:
    """Raise :class:`OutOfDomainError` for out-of-domain input unless ``force``; return the provenance record."""
    if differences and not force:
        raise OutOfDomainError(
            f"{what} is outside the domain of model {model!r}: "
            + "; ".join(differences)
            + ". Its answer would not mean anything; use a model trained for this input, or pass --force "
            "(force=True) to run it anyway (recorded in the output's provenance)."
        )
    return domain_record(differences, force)
