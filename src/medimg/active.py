"""Active learning: rank unlabelled cases by how informative they are likely to be for a segmentation model.

Engine of ``medimg al next`` (operation ``al_next``). Every model-based score reuses
:class:`~medimg.seg.predict.Predictor` (its preprocessing, MONAI sliding window and domain check); nothing here
changes the model's weights.

Strategies (``rank_cases(..., strategy=...)``):

* ``random`` -- a seeded random order (``numpy.random.default_rng(seed)``): the baseline.
* ``entropy`` -- mean normalised predictive entropy ``H(p) / log K`` (0..1) over the *uncertainty region*: the
  predicted foreground (argmax != background) dilated by ``dilation`` voxels, united with every voxel whose
  foreground probability ``1 - p_background`` is at least ``fg_threshold``. Computed on the network grid. A case
  with an empty region (the model is sure there is nothing) scores 0. Averaging over the region, not the whole
  image, keeps the large confident background from drowning the score.
* ``tta`` -- disagreement across mirrored passes: the generalised Jensen-Shannon divergence
  ``H(mean_m p_m) - mean_m H(p_m)`` (normalised by ``log K``) of the passes ``p_m``, averaged over the region of
  the mean prediction. Mirroring is applied to every sliding-window patch (as nnU-Net mirrors), flipped back.
  ``passes`` limits the mirror combinations used (identity, single axes, pairs, ...; default all ``2**dims``).
* ``mc-dropout`` -- medimg's networks (MONAI DynUNet as :func:`medimg.seg.train.build_network` builds it) have
  **no dropout layers**, so true Monte-Carlo dropout is impossible. The closest honest alternative is used and
  reported as such: *test-time feature dropout*: channel dropout (whole feature maps, rate ``dropout_rate``,
  rescaled by ``1/(1-rate)``) inserted on the outputs of the bottleneck and of every decoder block, ``passes``
  stochastic passes (default 8); the score is the mutual information (BALD) ``H(mean p) - mean H(p)`` over the
  region, normalised by ``log K``. The network was not trained with dropout, so this is a perturbation-sensitivity
  score, not a Bayesian posterior. The masks come from a generator seeded with ``seed`` afresh for every case, so
  every case sees the same perturbations (common random numbers) and the ranking is deterministic.
* ``coreset`` -- k-center greedy (Sener & Savarese 2018) on encoder features: the bottleneck block's output,
  mean-pooled over space (and over sliding-window patches), one vector per case. The labelled cases' features are
  the initial centres; each step picks the unlabelled case farthest (Euclidean) from its nearest centre; its score
  is that distance. Without labelled cases, the first pick is the case farthest from the pool's mean feature.
* ``hybrid`` -- uncertainty-weighted diversity: the ``hybrid_factor * n`` most uncertain cases (``entropy``), then
  k-center greedy among them (labelled cases as centres); the rest follow by entropy. Its score is the entropy,
  the selection distance is in ``details``.

Unlabelled images outside the model's training domain (the Predictor's domain check: dimensionality, channels,
spacing, field of view, intensities) are refused -- listed with the reasons, never ranked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medimg.errors import MedimgError

STRATEGIES = ("random", "entropy", "tta", "mc-dropout", "coreset", "hybrid")
#: Strategies that need the model's predictions (all but ``random``).
MODEL_STRATEGIES = STRATEGIES[1:]

Progress = Callable[[Sequence[Any], str], Any]


@dataclass
class Candidate:
    """An image case: its id and one file per channel."""

    case_id: str
    images: list[Path]


@dataclass
class CaseScore:
    """A ranked case: 1-based rank, its score (higher = more informative; see the strategy) and extra figures."""

    case_id: str
    images: list[Path]
    rank: int
    score: float
    details: dict[str, float] = field(default_factory=dict)


@dataclass
class Refused:
    """A case left out of the ranking (outside the model's domain, or unreadable), with the reasons."""

    case_id: str
    images: list[Path]
    reasons: list[str]


@dataclass
class Ranking:
    """The result of :func:`rank_cases`: every in-domain candidate ranked, the refused ones, and notes."""

    strategy: str
    ranked: list[CaseScore]
    refused: list[Refused]
    n_candidates: int
    n_labelled: int
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def top(self, n: int) -> list[CaseScore]:
        return self.ranked[:n]


# ------------------------------------------------------------------------------------------------- finding cases


def group_images(folder: str | Path) -> list[Candidate]:
    """The image cases in ``folder``: files grouped by case id, ``_0000``-style channel suffixes understood (as
    :func:`medimg.seg.load_dataset` does), sorted by case id."""
    from medimg.io._atomic import split_ext
    from medimg.seg.dataset import _CHANNEL, _is_image

    d = Path(folder)
    if not d.is_dir():
        raise MedimgError(f"Folder {str(d)!r} does not exist; give a folder of unlabelled images.")
    cases: dict[str, dict[int, Path]] = {}
    for p in sorted(d.iterdir()):
        if not _is_image(p):
            continue
        stem = split_ext(p)[0]
        m = _CHANNEL.match(stem)
        cid, ch = (m.group("case"), int(m.group("ch"))) if m else (stem, 0)
        cases.setdefault(cid, {})[ch] = p
    return [Candidate(cid, [ch[k] for k in sorted(ch)]) for cid, ch in sorted(cases.items())]


def find_candidates(
    dataset: str | Path, unlabeled: str | Path | None = None
) -> tuple[list[Candidate], list[Candidate]]:
    """``(unlabelled, labelled)`` cases of a dataset folder: the unlabelled ones are the images in ``imagesTr``
    without a label in ``labelsTr`` or, with ``unlabeled``, the images of that folder (minus any case id the
    dataset already labels). A dataset without any label yet (no ``labelsTr`` or an empty one) has every image of
    ``imagesTr`` unlabelled. Raises :class:`MedimgError` when there is none to rank."""
    from medimg.seg import load_dataset

    try:
        ds = load_dataset(dataset)
    except MedimgError:
        # no label at all yet (labelsTr missing or empty): every image of imagesTr/ (or images/) is unlabelled
        img_dir = next((Path(dataset) / d for d in ("imagesTr", "images") if (Path(dataset) / d).is_dir()), None)
        if img_dir is None or unlabeled is not None or not group_images(img_dir):
            raise
        return group_images(img_dir), []
    labelled = [Candidate(c.case_id, list(c.images)) for c in ds.cases if c.label is not None]
    known = {c.case_id for c in labelled}
    if unlabeled is not None:
        pool = [c for c in group_images(unlabeled) if c.case_id not in known]
        where = f"{str(unlabeled)!r} (images whose case id is not labelled in {str(dataset)!r})"
    else:
        pool = [Candidate(c.case_id, list(c.images)) for c in ds.cases if c.label is None]
        where = f"{str(Path(dataset) / 'imagesTr')!r} (images without a label file in labelsTr)"
    if not pool:
        raise MedimgError(
            f"No unlabelled cases to rank in {where}. Put the images to choose from in imagesTr without a label, "
            "or give a folder of them with --unlabeled DIR."
        )
    return pool, labelled


# ------------------------------------------------------------------------------------------------------ scoring


def _entropy(p: np.ndarray) -> np.ndarray:
    """Voxel-wise Shannon entropy (nats) of class probabilities ``(K, *S)``."""
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(0)


class CaseScorer:
    """Model-based per-case figures for one :class:`~medimg.seg.predict.Predictor` (which it leaves unchanged
    after every call: hooks are removed and the network restored)."""

    def __init__(self, predictor: Any, dilation: int = 3, fg_threshold: float = 0.05) -> None:
        self.pred = predictor
        self.dilation = int(dilation)
        self.fg_threshold = float(fg_threshold)
        self.log_k = math.log(max(2, int(predictor.n_classes)))

    # -- helpers ------------------------------------------------------------------------------------------------
    def region(self, probs: np.ndarray) -> np.ndarray:
        """The uncertainty region of a prediction ``(K, *S)``: dilated argmax foreground plus voxels with
        foreground probability >= ``fg_threshold``."""
        fg = np.argmax(probs, 0) != 0
        if self.dilation > 0 and fg.any():
            fg = ndimage.binary_dilation(fg, iterations=self.dilation)
        return fg | ((1.0 - probs[0]) >= self.fg_threshold)

    def _mean_in(self, values: np.ndarray, region: np.ndarray) -> float:
        return float(values[region].mean() / self.log_k) if region.any() else 0.0

    @contextmanager
    def _hooks(self, modules: Sequence[Any], fn: Callable[[Any, Any, Any], Any]) -> Iterator[None]:
        handles = [m.register_forward_hook(fn) for m in modules]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    # -- passes ---------------------------------------------------------------------------------------------------
    def forward(self, images: list[Any], features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """One deterministic pass: probabilities ``(K, *S)`` on the network grid and, with ``features``, the
        bottleneck output mean-pooled over space and over sliding-window patches (``(C,)``)."""
        if not features:
            return self.pred.probabilities(images, tta=False)[0], None
        acc: list[np.ndarray] = []

        def grab(_m: Any, _i: Any, out: Any) -> None:
            o = out.detach().float()
            acc.append(o.mean(dim=tuple(range(2, o.ndim))).sum(0).numpy())
            acc.append(np.array([o.shape[0]], dtype=np.float64))

        with self._hooks([self.pred.net.bottleneck], grab):
            probs = self.pred.probabilities(images, tta=False)[0]
        total = np.sum(acc[0::2], axis=0)
        count = float(np.sum(acc[1::2]))
        return probs, (total / max(count, 1.0)).astype(np.float64)

    def entropy(self, probs: np.ndarray) -> dict[str, float]:
        """``entropy`` figures of a prediction."""
        reg = self.region(probs)
        return {
            "entropy": self._mean_in(_entropy(probs), reg),
            "region_voxels": float(reg.sum()),
            "foreground_voxels": float((np.argmax(probs, 0) != 0).sum()),
        }

    def _disagreement(self, passes: list[np.ndarray]) -> dict[str, float]:
        mean = np.mean(passes, axis=0)
        reg = self.region(mean)
        h_mean = _entropy(mean)
        mi = h_mean - np.mean([_entropy(p) for p in passes], axis=0)
        return {
            "disagreement": self._mean_in(np.maximum(mi, 0.0), reg),
            "entropy": self._mean_in(h_mean, reg),
            "region_voxels": float(reg.sum()),
            "passes": float(len(passes)),
        }

    def tta(self, images: list[Any], passes: int | None = None) -> dict[str, float]:
        """Disagreement across mirrored passes (every patch mirrored, predicted, mirrored back)."""
        net = self.pred.net
        dims = int(self.pred.plan["dims"])
        combos = [c for r in range(dims + 1) for c in itertools.combinations(range(2, dims + 2), r)]
        combos = combos[: max(2, passes)] if passes else combos
        outs = []
        try:
            for axes in combos:
                self.pred.net = _Mirrored(net, axes) if axes else net
                outs.append(self.pred.probabilities(images, tta=False)[0])
        finally:
            self.pred.net = net
        return self._disagreement(outs)

    def mc_dropout(self, images: list[Any], passes: int = 8, rate: float = 0.1, seed: int = 0) -> dict[str, float]:
        """Test-time feature dropout (see the module docstring): mutual information over ``passes`` passes."""
        import torch

        net = self.pred.net
        modules = [net.bottleneck, *list(net.upsamples)]
        gen = torch.Generator().manual_seed(int(seed))
        keep = 1.0 - rate

        def drop(_m: Any, _i: Any, out: Any) -> Any:
            mask = (torch.rand(out.shape[:2], generator=gen) < keep).to(out.dtype) / keep
            return out * mask.view(*out.shape[:2], *([1] * (out.ndim - 2)))

        outs = []
        with self._hooks(modules, drop):
            for _ in range(max(2, passes)):
                outs.append(self.pred.probabilities(images, tta=False)[0])
        return self._disagreement(outs)


class _Mirrored:
    """A network wrapper that mirrors its input along ``axes`` and mirrors the output back."""

    def __init__(self, net: Any, axes: tuple[int, ...]) -> None:
        self.net = net
        self.axes = list(axes)

    def __call__(self, x: Any) -> Any:
        return self.net(x.flip(self.axes)).flip(self.axes)


def k_center_greedy(
    pool: np.ndarray, centres: np.ndarray | None = None, n: int | None = None
) -> tuple[list[int], list[float]]:
    """Greedy k-center selection: indices into ``pool`` ``(N, D)`` in selection order and, for each, its
    Euclidean distance to the nearest centre at the time it was picked. ``centres`` ``(M, D)`` (e.g. labelled
    cases) start the set; without them the first pick is the point farthest from the pool's mean. Ties go to
    the lowest index. Selects ``n`` (default all) points."""
    n_pick = len(pool) if n is None else min(n, len(pool))
    if n_pick == 0:
        return [], []
    if centres is not None and len(centres):
        d = np.min(np.linalg.norm(pool[:, None, :] - centres[None, :, :], axis=2), axis=1)
    else:
        d = np.full(len(pool), np.inf)
    order: list[int] = []
    dists: list[float] = []
    chosen = np.zeros(len(pool), bool)
    for _ in range(n_pick):
        if np.isinf(d).all():
            i = int(np.argmax(np.linalg.norm(pool - pool.mean(0), axis=1)))
            dist = float(np.linalg.norm(pool[i] - pool.mean(0)))
        else:
            cand = np.where(chosen, -np.inf, d)
            i = int(np.argmax(cand))
            dist = float(cand[i])
        order.append(i)
        dists.append(dist)
        chosen[i] = True
        d = np.minimum(d, np.linalg.norm(pool - pool[i], axis=1))
        d[chosen] = -np.inf
    return order, dists


# ------------------------------------------------------------------------------------------------------ ranking


def rank_cases(
    predictor: Any,
    candidates: Sequence[Candidate],
    strategy: str,
    n: int,
    *,
    labelled: Sequence[Candidate] = (),
    seed: int = 0,
    passes: int | None = None,
    dropout_rate: float = 0.1,
    hybrid_factor: int = 3,
    dilation: int = 3,
    fg_threshold: float = 0.05,
    read: Callable[[Path], Any] | None = None,
    progress: Progress | None = None,
) -> Ranking:
    """Rank ``candidates`` (unlabelled cases) by ``strategy`` for ``predictor`` (a loaded
    :class:`~medimg.seg.predict.Predictor`); the first ``n`` are the proposal (``Ranking.top(n)``), every
    in-domain candidate is ranked. Out-of-domain or unreadable cases are listed in ``Ranking.refused``.

    ``labelled`` (cases already labelled) serve as initial centres for ``coreset`` / ``hybrid``. ``passes``: mirror
    combinations for ``tta`` (default all) or stochastic passes for ``mc-dropout`` (default 8)."""
    import medimg

    if strategy not in STRATEGIES:
        raise MedimgError(f"Unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}.")
    if n < 1:
        raise MedimgError(f"n = {n}: give the number of cases to propose, at least 1 (e.g. -n 10).")
    if not candidates:
        raise MedimgError("No unlabelled cases to rank; give images without labels (imagesTr, or --unlabeled DIR).")
    if passes is not None and passes < 2:
        raise MedimgError(f"passes = {passes}: tta and mc-dropout need at least 2 passes to measure disagreement.")
    if not 0.0 < dropout_rate < 1.0:
        raise MedimgError(f"dropout_rate = {dropout_rate}: give a rate between 0 and 1 (e.g. 0.1).")
    if hybrid_factor < 1:
        raise MedimgError(f"hybrid_factor = {hybrid_factor}: give at least 1 (hybrid looks at factor x n cases).")
    read = read or medimg.read
    it: Callable[[Sequence[Any], str], Any] = progress or (lambda items, _what: items)
    scorer = CaseScorer(predictor, dilation, fg_threshold)
    needs_features = strategy in ("coreset", "hybrid")
    notes: list[str] = []
    if strategy == "mc-dropout":
        notes.append(
            "The network has no dropout layers (MONAI DynUNet as medimg builds it), so mc-dropout uses test-time "
            f"feature dropout (channel dropout, rate {dropout_rate}, on the bottleneck and decoder outputs) and "
            "scores the mutual information across passes: a perturbation-sensitivity score, not Bayesian MC dropout."
        )
    refused: list[Refused] = []
    kept: list[Candidate] = []
    figures: list[dict[str, float]] = []
    feats: list[np.ndarray] = []
    for c in it(list(candidates), f"scoring ({strategy})"):
        try:
            images = [read(p) for p in c.images]
        except MedimgError as e:
            refused.append(Refused(c.case_id, c.images, [f"could not be read: {e}"]))
            continue
        record = predictor.check_domain(images, force=True)
        if record["differences"]:
            refused.append(Refused(c.case_id, c.images, list(record["differences"])))
            continue
        kept.append(c)
        if strategy == "random":
            figures.append({})
        elif strategy in ("entropy", "coreset", "hybrid"):
            probs, f = scorer.forward(images, features=needs_features)
            figures.append(scorer.entropy(probs))
            if f is not None:
                feats.append(f)
        elif strategy == "tta":
            figures.append(scorer.tta(images, passes))
        else:
            figures.append(scorer.mc_dropout(images, passes or 8, dropout_rate, seed))
    centres = None
    if needs_features and kept:
        lab = []
        for c in it(list(labelled), "features of the labelled cases"):
            images = [read(p) for p in c.images]
            if predictor.check_domain(images, force=True)["differences"]:
                continue
            f = scorer.forward(images, features=True)[1]
            assert f is not None
            lab.append(f)
        centres = np.stack(lab) if lab else None
        if centres is None:
            notes.append("No labelled in-domain case: k-center greedy started from the case farthest from the mean.")
    order, scores, details = _order(strategy, kept, figures, feats, centres, n, seed, hybrid_factor)
    ranked = [
        CaseScore(kept[i].case_id, kept[i].images, r + 1, float(s), d)
        for r, (i, s, d) in enumerate(zip(order, scores, details, strict=True))
    ]
    if refused:
        notes.append(f"{len(refused)} case(s) outside the model's domain (or unreadable) were refused and not ranked.")
    settings: dict[str, Any] = {"seed": seed}
    if strategy in ("entropy", "tta", "mc-dropout", "hybrid"):
        settings.update(dilation=dilation, fg_threshold=fg_threshold)
    if strategy == "tta":
        settings["passes"] = int(figures[0]["passes"]) if figures else passes
    if strategy == "mc-dropout":
        settings.update(passes=passes or 8, dropout_rate=dropout_rate)
    if strategy == "hybrid":
        settings["hybrid_factor"] = hybrid_factor
    return Ranking(strategy, ranked, refused, len(candidates), len(labelled), settings, notes)


def _order(
    strategy: str,
    kept: list[Candidate],
    figures: list[dict[str, float]],
    feats: list[np.ndarray],
    centres: np.ndarray | None,
    n: int,
    seed: int,
    hybrid_factor: int,
) -> tuple[list[int], list[float], list[dict[str, float]]]:
    """Ranking order (indices into ``kept``), the score of each and its details."""
    m = len(kept)
    if m == 0:
        return [], [], []
    ids = [c.case_id for c in kept]

    def by_score(values: Sequence[float], idx: Sequence[int]) -> list[int]:  # descending, ties by case id
        return sorted(idx, key=lambda i: (-values[i], ids[i]))

    if strategy == "random":
        vals = list(np.random.default_rng(seed).random(m))
        order = by_score(vals, range(m))
        return order, [vals[i] for i in order], [{} for _ in order]
    if strategy in ("entropy", "tta", "mc-dropout"):
        key = "entropy" if strategy == "entropy" else "disagreement"
        vals = [f[key] for f in figures]
        order = by_score(vals, range(m))
        return order, [vals[i] for i in order], [figures[i] for i in order]
    pool = np.stack(feats)
    if strategy == "coreset":
        order, dists = k_center_greedy(pool, centres)
        return order, dists, [{**figures[i], "kcenter_distance": d} for i, d in zip(order, dists, strict=True)]
    ent = [f["entropy"] for f in figures]
    by_ent = by_score(ent, range(m))
    top = by_ent[: min(m, max(n, hybrid_factor * n))]
    sub, dists = k_center_greedy(pool[top], centres, n)
    picked = [top[j] for j in sub]
    rest = [i for i in by_ent if i not in picked]
    order = picked + rest
    dist_of = {i: d for i, d in zip(picked, dists, strict=True)}
    details = [{**figures[i], **({"kcenter_distance": dist_of[i]} if i in dist_of else {})} for i in order]
    return order, [ent[i] for i in order], details


def ranking_rows(r: Ranking) -> list[dict[str, Any]]:
    """Flat rows (rank, case_id, score, images, details...) of the ranked cases, for CSV/JSON."""
    rows = []
    for c in r.ranked:
        rows.append(
            {
                "rank": c.rank,
                "case_id": c.case_id,
                "score": c.score,
                "images": ";".join(str(p) for p in c.images),
                **c.details,
            }
        )
    return rows
