"""Label fusion of several raters' label maps, and each rater's quality (sensitivity / specificity).

All raters' maps must lie on ONE voxel grid (same shape, spacing, origin, direction); the fused map keeps that
exact geometry (and the first map's class names). Label 0 is background; every other value present in any map
is a label. Three methods:

``majority``
    Per-voxel plurality vote over the label values (0 included). **Ties** (two or more values with the same,
    highest number of votes) go to the *smallest* tied value, so background wins a tie with a structure: with
    two raters the majority vote of a binary mask is their intersection. Rater quality is measured against the
    fused map: for label ``c``, sensitivity = |rater = c and fused = c| / |fused = c|, specificity =
    |rater != c and fused != c| / |fused != c|.

``staple``
    STAPLE (Warfield, Zou & Wells, IEEE TMI 2004) for binary masks, implemented here in NumPy: an EM algorithm
    that estimates the probability ``W`` that each voxel is truly foreground together with every rater's
    sensitivity ``p`` and specificity ``q``. It follows ITK's ``STAPLEImageFilter`` step for step (``W``
    starts as the mean vote, the prior is the mean of that times the confidence weight (1), each iteration
    updates ``p, q`` then ``W``, and it stops when no ``p`` or ``q`` changed by more than 1e-7 between two
    iterations), so its estimates equal SimpleITK's ``STAPLE`` to rounding -- shown by
    ``benchmarks/fusion_staple.py`` and the tests. The EM runs on the distinct vote patterns (at most
    2^raters of them) weighted by their voxel counts, which gives the same sums as a voxel loop. A voxel is
    foreground when ``W > 0.5``. With several labels, STAPLE runs once per label (that label against everything
    else); each voxel gets the label of highest ``W`` among those above 0.5, else background. The probability
    map holds ``W`` (one channel per label, in label order, when there are several labels).

``multi-staple``
    SimpleITK's ``MultiLabelSTAPLE`` (Rohlfing et al., 2004): one EM over all labels with a full confusion
    matrix per rater. Voxels it leaves undecided (tied posteriors) take the majority vote (counted in
    ``undecided_voxels``). Per label ``c``: sensitivity = P(rater says c | truth c) from the confusion matrix,
    specificity = P(rater does not say c | truth is not c), weighting the other true labels by ITK's prior
    (the fraction of all votes each label received).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medimg.errors import GeometryError, MedimgError
from medimg.image import Image, LabelMap, geometry_differences

FusionMethod = Literal["majority", "staple", "multi-staple"]
METHODS: tuple[str, ...] = ("majority", "staple", "multi-staple")
#: ITK STAPLEImageFilter's convergence threshold on the squared change of every sensitivity and specificity.
STAPLE_MIN_SQUARED_CHANGE = 1.0e-14


@dataclass
class LabelPerformance:
    """A rater's sensitivity and specificity for one label (fractions in 0..1)."""

    sensitivity: float
    specificity: float


@dataclass
class RaterQuality:
    """One rater: its name (file stem), and per label value its :class:`LabelPerformance`."""

    name: str
    labels: dict[int, LabelPerformance]


@dataclass
class StapleEstimate:
    """Binary STAPLE's output: ``probability`` (W, same shape as the masks, float64), per-rater
    ``sensitivity`` and ``specificity`` (p, q) and the number of EM ``iterations`` run."""

    probability: np.ndarray
    sensitivity: list[float]
    specificity: list[float]
    iterations: int
    prior: float


@dataclass
class FusionResult:
    """The fused label map (the raters' grid), the method, the labels fused, each rater's quality, and
    method-specific facts: STAPLE's probability map and iterations per label, majority's tied voxels,
    multi-label STAPLE's undecided voxels."""

    fused: LabelMap
    method: str
    labels: list[int]
    raters: list[RaterQuality]
    probability: Image | None = None
    iterations: dict[int, int] = field(default_factory=dict)
    tie_voxels: int = 0
    undecided_voxels: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary: method, labels, voxel counts of the fused map, per-rater quality."""
        counts = self.fused.voxel_counts()
        return {
            "method": self.method,
            "labels": self.labels,
            "fused_voxels": {str(c): int(counts.get(c, 0)) for c in self.labels},
            "raters": [
                {
                    "name": r.name,
                    "labels": {
                        str(c): {"sensitivity": lp.sensitivity, "specificity": lp.specificity}
                        for c, lp in r.labels.items()
                    },
                }
                for r in self.raters
            ],
            "quality_against": "fused majority vote" if self.method == "majority" else "STAPLE's estimate",
            "iterations": {str(c): n for c, n in self.iterations.items()},
            "tie_voxels": self.tie_voxels,
            "undecided_voxels": self.undecided_voxels,
            "shape": list(self.fused.shape),
            "spacing_mm": [float(s) for s in self.fused.spacing],
            "seconds": round(self.seconds, 4),
        }


# ------------------------------------------------------------------------------------------------------ checks


def check_raters(maps: Sequence[LabelMap], names: Sequence[str] | None = None) -> list[str]:
    """Check that there are at least two rater maps on one voxel grid; returns the rater names.

    Raises :class:`GeometryError` naming the first map that differs (and how), with the command that
    resamples it onto the first rater's grid."""
    if len(maps) < 2:
        raise MedimgError(f"Label fusion needs at least two raters' label maps (got {len(maps)}).")
    rnames = list(names) if names is not None else [f"rater{i + 1}" for i in range(len(maps))]
    if len(rnames) != len(maps):
        raise MedimgError(f"{len(rnames)} rater names for {len(maps)} label maps.")
    for name, m in zip(rnames[1:], maps[1:], strict=True):
        diffs = geometry_differences(maps[0], m)
        if diffs:
            raise GeometryError(
                f"The raters' label maps must share one voxel grid, but {name} differs from {rnames[0]}: "
                + "; ".join(diffs)
                + f". Resample it onto the first one's grid first: `medimg resample {name} OUT --reference "
                f"{rnames[0]} --labels` (nearest-neighbour), then fuse OUT instead."
            )
    return rnames


def _label_values(maps: Sequence[LabelMap]) -> list[int]:
    values: set[int] = set()
    for m in maps:
        values |= set(m.labels)
    return sorted(values)


# ---------------------------------------------------------------------------------------------- majority vote


def majority_vote(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Plurality vote per voxel over integer arrays of one shape; ties go to the smallest tied value.
    Returns the fused array (dtype of the first) and the number of tied voxels."""
    values = sorted({int(v) for a in arrays for v in np.unique(a)} | {0})
    counts = np.zeros((len(values), *arrays[0].shape), dtype=np.int32)
    for k, v in enumerate(values):
        for a in arrays:
            counts[k] += a == v
    best = counts.max(axis=0)
    ties = int(np.count_nonzero((counts == best).sum(axis=0) > 1))
    fused = np.asarray(values)[np.argmax(counts, axis=0)]  # argmax takes the first (smallest value) of a tie
    return fused.astype(arrays[0].dtype), ties


def agreement_with(arrays: Sequence[np.ndarray], fused: np.ndarray, labels: Sequence[int]) -> list[dict[int, Any]]:
    """Per rater and label: sensitivity and specificity of the rater against ``fused`` (NaN when ``fused`` has
    no voxel of the label, or no voxel outside it)."""
    out: list[dict[int, Any]] = []
    for a in arrays:
        per: dict[int, LabelPerformance] = {}
        for c in labels:
            f, r = fused == c, a == c
            n_f, n_not = int(f.sum()), int(f.size - f.sum())
            sens = float(np.count_nonzero(r & f)) / n_f if n_f else float("nan")
            spec = float(np.count_nonzero(~r & ~f)) / n_not if n_not else float("nan")
            per[c] = LabelPerformance(sens, spec)
        out.append(per)
    return out


# ------------------------------------------------------------------------------------------------------ STAPLE


def staple_binary(
    masks: Sequence[np.ndarray], confidence_weight: float = 1.0, max_iterations: int = 10_000
) -> StapleEstimate:
    """Binary STAPLE (see the module docstring) of boolean masks of one shape.

    ``confidence_weight`` scales the foreground prior as in ITK (1 = the mean vote). Stops when every rater's
    sensitivity and specificity changed by at most 1e-7 (squared change 1e-14, ITK's rule) or after
    ``max_iterations``."""
    if len(masks) < 2:
        raise MedimgError("STAPLE needs at least two raters' masks.")
    shape = masks[0].shape
    n_r = len(masks)
    if n_r > 30:
        raise MedimgError(f"STAPLE here handles up to 30 raters (got {n_r}).")
    # vote pattern of every voxel as an integer (bit i = rater i says foreground)
    code = np.zeros(shape, dtype=np.int64)
    for i, m in enumerate(masks):
        if m.shape != shape:
            raise GeometryError(f"Mask {i + 1} has shape {m.shape}, the first {shape}.")
        code |= np.asarray(m, dtype=bool).astype(np.int64) << i
    patterns, inverse, counts = np.unique(code.ravel(), return_inverse=True, return_counts=True)
    d = ((patterns[:, None] >> np.arange(n_r)[None, :]) & 1).astype(np.float64)  # (patterns, raters) votes
    w_count = counts.astype(np.float64)
    w = d.mean(axis=1)  # initial W: the mean vote
    g_t = float((w * w_count).sum() / w_count.sum()) * confidence_weight
    p = np.full(n_r, np.nan)
    q = np.full(n_r, np.nan)
    last_p = np.full(n_r, -10.0)
    last_q = np.full(n_r, -10.0)
    iteration = 0
    for iteration in range(max_iterations):
        fg = (w * w_count) @ d  # sum_j W_j D_ij
        bg = ((1 - w) * w_count) @ (1 - d)  # sum_j (1 - W_j)(1 - D_ij)
        s_fg, s_bg = float((w * w_count).sum()), float(((1 - w) * w_count).sum())
        p = fg / s_fg if s_fg > 0 else np.zeros(n_r)
        q = bg / s_bg if s_bg > 0 else np.ones(n_r)
        alpha = np.prod(np.where(d > 0, p[None, :], 1 - p[None, :]), axis=1)
        beta = np.prod(np.where(d > 0, 1 - q[None, :], q[None, :]), axis=1)
        den = g_t * alpha + (1 - g_t) * beta
        w = np.divide(g_t * alpha, den, out=np.zeros_like(den), where=den > 0)
        converged = iteration != 0 and bool(
            np.all((p - last_p) ** 2 <= STAPLE_MIN_SQUARED_CHANGE)
            and np.all((q - last_q) ** 2 <= STAPLE_MIN_SQUARED_CHANGE)
        )
        last_p, last_q = p.copy(), q.copy()
        if converged:
            break
    prob = w[inverse].reshape(shape)
    return StapleEstimate(prob, [float(x) for x in p], [float(x) for x in q], iteration, g_t)


def _staple(
    maps: Sequence[LabelMap], labels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, list[dict[int, Any]], dict[int, int]]:
    arrays = [m.array for m in maps]
    probs = np.zeros((len(labels), *arrays[0].shape), dtype=np.float64)
    quality: list[dict[int, Any]] = [{} for _ in maps]
    iterations: dict[int, int] = {}
    for k, c in enumerate(labels):
        est = staple_binary([a == c for a in arrays])
        probs[k] = est.probability
        iterations[c] = est.iterations
        for i in range(len(maps)):
            quality[i][c] = LabelPerformance(est.sensitivity[i], est.specificity[i])
    if not labels:
        return np.zeros(arrays[0].shape, arrays[0].dtype), probs, quality, iterations
    best = np.argmax(probs, axis=0)
    best_p = np.take_along_axis(probs, best[None], axis=0)[0]
    fused = np.where(best_p > 0.5, np.asarray(labels)[best], 0).astype(arrays[0].dtype)
    return fused, probs, quality, iterations


def _multi_staple(maps: Sequence[LabelMap], labels: Sequence[int]) -> tuple[np.ndarray, list[dict[int, Any]], int]:
    import SimpleITK as sitk

    from medimg.interop import to_sitk

    if max(labels, default=0) >= 65535:
        raise MedimgError("multi-staple handles label values below 65535; renumber the labels first.")
    arrays = [m.array for m in maps]
    values = [0, *labels]  # ITK's labels are 0..max; values absent everywhere get prior 0 and are never chosen
    undecided = max(values) + 1
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(undecided)
    res = sitk.GetArrayFromImage(f.Execute([sitk.Cast(to_sitk(m), sitk.sitkUInt16) for m in maps])).T
    n_l = undecided  # ITK's label count: 0..max
    votes = np.array([sum(int(np.count_nonzero(a == v)) for a in arrays) for v in range(n_l)], dtype=np.float64)
    prior = votes / votes.sum()
    quality: list[dict[int, Any]] = []
    for i in range(len(maps)):
        cm = np.asarray(f.GetConfusionMatrix(i), dtype=np.float64).reshape(n_l + 1, n_l)  # [rater says, truth]
        per: dict[int, LabelPerformance] = {}
        for c in labels:
            others = [m for m in range(n_l) if m != c and prior[m] > 0]
            wsum = float(sum(prior[m] for m in others))
            spec = float(sum(prior[m] * (1 - cm[c, m]) for m in others) / wsum) if wsum > 0 else float("nan")
            per[c] = LabelPerformance(float(cm[c, c]), spec)
        quality.append(per)
    mv, _ = majority_vote(arrays)
    undecided_mask = res == undecided
    fused = np.where(undecided_mask, mv, res).astype(arrays[0].dtype)
    return fused, quality, int(np.count_nonzero(undecided_mask))


# ------------------------------------------------------------------------------------------------ simulation


def simulate_raters(
    truth: LabelMap,
    sensitivities: Sequence[float],
    specificities: Sequence[float],
    seed: int = 0,
) -> list[LabelMap]:
    """Synthetic raters of a known truth with planted error rates (for tests and benchmarks).

    Rater ``i`` keeps each voxel of a structure (any non-zero label) with probability ``sensitivities[i]``
    (missed voxels become background) and marks each background voxel with probability
    ``1 - specificities[i]`` (as the first label of the truth), independently per voxel: exactly the model
    STAPLE assumes. The maps keep the truth's geometry."""
    if len(sensitivities) != len(specificities):
        raise MedimgError("Give one specificity per sensitivity (one pair per rater).")
    rng = np.random.default_rng(seed)
    t = truth.array
    fg = t > 0
    fp_label = truth.labels[0] if truth.labels else 1
    out = []
    for s, q in zip(sensitivities, specificities, strict=True):
        u = rng.random(t.shape)
        arr = np.where(fg, np.where(u < s, t, 0), np.where(u < 1 - q, fp_label, 0)).astype(t.dtype)
        out.append(truth.with_array(arr))
    return out


# ------------------------------------------------------------------------------------------------------- fuse


def fuse(maps: Sequence[LabelMap], method: str = "staple", names: Sequence[str] | None = None) -> FusionResult:
    """Fuse raters' label maps (one grid; see the module docstring) with ``method`` and measure each rater.

    Returns a :class:`FusionResult` whose ``fused`` map has the raters' exact geometry and the first map's
    class names. Raises :class:`GeometryError` when the maps are on different grids, :class:`MedimgError` for an
    unknown method or fewer than two maps."""
    if method not in METHODS:
        raise MedimgError(f"Unknown fusion method {method!r}; choose one of {', '.join(METHODS)}.")
    rnames = check_raters(maps, names)
    t0 = time.perf_counter()
    labels = _label_values(maps)
    first = maps[0]
    class_names: dict[int, str] = {}
    for m in maps:
        for k, v in m.names.items():
            class_names.setdefault(k, v)
    probability: Image | None = None
    iterations: dict[int, int] = {}
    ties = undecided = 0
    if method == "majority":
        fused, ties = majority_vote([m.array for m in maps])
        quality = agreement_with([m.array for m in maps], fused, labels)
    elif method == "staple":
        fused, probs, quality, iterations = _staple(maps, labels)
        arr = probs[0] if len(labels) == 1 else np.moveaxis(probs, 0, -1)
        probability = Image(arr.astype(np.float32), first.spacing, first.origin, first.direction, ndim=first.ndim)
    else:
        fused, quality, undecided = _multi_staple(maps, labels)
    out = LabelMap(fused, first.spacing, first.origin, first.direction, names=class_names, colors=first.colors)
    return FusionResult(
        fused=out,
        method=method,
        labels=labels,
        raters=[RaterQuality(n, q) for n, q in zip(rnames, quality, strict=True)],
        probability=probability,
        iterations=iterations,
        tie_voxels=ties,
        undecided_voxels=undecided,
        seconds=time.perf_counter() - t0,
    )
