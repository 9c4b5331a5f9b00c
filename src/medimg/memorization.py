"""Memorisation check of a generated set: which samples copy (or nearly copy) a training image.

A sample *memorises* a training image when, after undoing small changes a generator (or a copier) could make,
it is much more similar to that training image than real images of the same distribution are to their own
nearest training image. The method follows the copy-detection literature on generative models (Somepalli et
al. 2023; Carlini et al. 2023; DeepSSIM, Dar et al. 2025), in a form that needs no trained network:

1. **Common grid.** Every image (2D ``(y, x)`` or 3D ``(z, y, x)``) is resampled to a grid of ``grid`` pixels
   per axis (default 32 in 2D, 24 in 3D) after a Gaussian anti-alias filter (sigma = (factor - 1) / 2 grid
   pixels when shrinking). Pixel spacing is ignored: a copy keeps the field of view, not the voxel size.
2. **Intensity normalisation.** Each image is z-scored (mean 0, SD 1), so brightness/contrast changes do not
   matter; the band-pass below and the correlation make the score insensitive to smooth (e.g. gamma) changes.
3. **Structure (band-pass).** ``gauss(x, 1.5) - gauss(x, 4)`` (grid pixels): the low frequencies all chest
   X-rays (or all fetal heads) share are removed, pixel noise is damped, what remains is the image's own
   structure.
4. **Similarity** = the highest Pearson correlation (normalised cross-correlation) between the training image's
   central crop (``grid - 2 * max_shift`` per axis) and the sample's crops shifted by up to ``max_shift`` grid
   pixels per axis (default 4 in 2D = 12.5 % of the field, 2 in 3D), over the sample rescaled by ``scales``
   (default 0.92, 1, 1.08 about the centre), at whole and (2D, ``subpixel``) half-pixel offsets, and, with
   ``flips``, mirrored left-right. Before correlating, the first ``REMOVE_COMPONENTS`` = 10 principal
   directions of all training crops are projected out (at most one per 10 training images): what every chest
   X-ray or every fetal head shares, so that only an image's own structure counts. 1 = identical structure.
5. **Search.** Exhaustive over the whole training set would cost ``n_samples x n_train x transforms``. A coarse
   stage ranks all training images by the best correlation of heavily blurred 16-pixel (2D) / 10-voxel (3D)
   thumbnails over shifts of up to 2 thumbnail pixels (plus the mirrored sample with ``flips``); the
   ``candidates`` best (default 32) are scored exactly as in 4. Both stages are batched matrix products.
6. **Calibration without the samples.** The same similarity is computed from each training image (or a random
   subset of ``calibration_size``) to its nearest *other* training image. Real images that were not trained on
   are, by exchangeability, as similar to the training set as a training image is to the rest of it, so the
   ``1 - false_alarm`` quantile of these leave-one-out similarities is a threshold that flags about
   ``false_alarm`` of genuinely new images (default 5 %). Each sample also gets the empirical p-value: the
   fraction of leave-one-out similarities at or above its own. Near-duplicates inside the training set (two
   scans of one patient) raise the threshold, which is the conservative direction.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medimg.errors import DimensionError, MedimgError

#: Band-pass of the structure image: Gaussian sigmas (grid pixels) of the kept detail and the removed background.
BAND_LOW, BAND_HIGH = 1.5, 4.0
#: Principal directions of the training crops left out of the comparison (shared anatomy).
REMOVE_COMPONENTS = 10
#: Default grid (pixels per axis) and maximum shift (grid pixels per axis), by dimensionality.
DEFAULT_GRID = {2: 32, 3: 24}
DEFAULT_SHIFT = {2: 4, 3: 2}
#: Coarse-stage thumbnail size per axis, by dimensionality.
COARSE = {2: 12, 3: 6}


class MemorizationInputError(MedimgError):
    """Image sets that cannot be compared for memorisation (empty, mixed 2D/3D, too few training images)."""


@dataclass
class Match:
    """One sample's nearest training image: its name, the similarity (max. correlation over the transforms,
    1 = identical structure), whether it exceeds the threshold, the empirical p-value against the training
    set's leave-one-out similarities, and the transform that matched (shift in grid pixels per axis, ``(z,) y,
    x``; scale; left-right mirror)."""

    sample: str
    match: str
    similarity: float
    memorized: bool
    p_value: float
    shift: tuple[float, ...]
    scale: float
    flipped: bool


@dataclass
class Calibration:
    """The threshold and where it comes from: the leave-one-out nearest-neighbour similarities of
    ``n`` training images (``source='calibrated'``) or a value given by the user (``source='given'``)."""

    threshold: float
    source: str
    false_alarm: float
    n: int
    quantiles: dict[str, float] = field(default_factory=dict)
    similarities: np.ndarray | None = field(default=None, repr=False)


@dataclass
class MemorizationResult:
    """Per-sample matches, the calibration, and the settings used."""

    matches: list[Match]
    calibration: Calibration
    n_train: int
    n_samples: int
    dims: int
    grid: int
    max_shift: int
    scales: tuple[float, ...]
    flips: bool
    seconds: float = 0.0

    @property
    def n_memorized(self) -> int:
        return sum(m.memorized for m in self.matches)


def _resize(stack: np.ndarray, grid: int) -> np.ndarray:
    """Resample a stack ``(n, *shape)`` of one shape to ``(n, grid, ...)`` (anti-aliased when shrinking)."""
    shape = stack.shape[1:]
    factors = [s / grid for s in shape]
    sig = [0.0] + [max(0.0, (f - 1) / 2) for f in factors]
    x = ndimage.gaussian_filter(stack, sig, mode="nearest") if any(s > 0 for s in sig) else stack
    out = ndimage.zoom(x, [1.0] + [grid / s for s in shape], order=1, mode="nearest", grid_mode=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def prepare(arrays: Sequence[np.ndarray], grid: int | None = None) -> np.ndarray:
    """Images (each 2D ``(y, x)`` or 3D ``(z, y, x)``, all of one dimensionality) on the common grid,
    z-scored: ``(n, grid, grid[, grid])`` float32."""
    if not arrays:
        raise MemorizationInputError("No images were given; give a folder with at least one image.")
    dims = {a.ndim for a in arrays}
    if len(dims) != 1 or dims - {2, 3}:
        raise MemorizationInputError(
            f"All images must be 2D or all 3D; got dimensionalities {sorted(dims)}. Give one kind per set."
        )
    d = dims.pop()
    g = grid or DEFAULT_GRID[d]
    out = np.empty((len(arrays),) + (g,) * d, np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        if min(a.shape) < 2:
            raise DimensionError(f"Image {i} has shape {a.shape}; memorisation needs at least 2 pixels per axis.")
        groups.setdefault(a.shape, []).append(i)
    for idx in groups.values():
        out[idx] = _resize(np.stack([np.asarray(arrays[i], np.float32) for i in idx]), g)
    axes = tuple(range(1, d + 1))
    out -= out.mean(axes, keepdims=True)
    sd = out.std(axes, keepdims=True)
    out /= np.where(sd > 0, sd, 1.0)
    return out


def _bandpass(x: np.ndarray) -> np.ndarray:
    s_lo = [0.0] + [BAND_LOW] * (x.ndim - 1)
    s_hi = [0.0] + [BAND_HIGH] * (x.ndim - 1)
    out: np.ndarray = ndimage.gaussian_filter(x, s_lo, mode="nearest") - ndimage.gaussian_filter(
        x, s_hi, mode="nearest"
    )
    return out.astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) centred and scaled to unit norm (their dot products are Pearson correlations)."""
    x = x - x.mean(-1, keepdims=True)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def _thumb(prep: np.ndarray, shifts: bool) -> np.ndarray:
    """Coarse thumbnails: blurred, ``COARSE + 4`` pixels per axis; the central ``COARSE`` crop as unit rows
    ``(n, 1, D)`` or, with ``shifts``, all 5**d crops shifted by up to 2 coarse pixels ``(n, 5**d, D)``."""
    d = prep.ndim - 1
    g = prep.shape[1]
    c = COARSE[d] + 4
    blurred = ndimage.gaussian_filter(prep, [0.0] + [g / c / 2] * d, mode="nearest")
    small = ndimage.zoom(blurred, [1.0] + [c / g] * d, order=1, mode="nearest", grid_mode=True)
    if not shifts:
        crop = (slice(None),) + (slice(2, c - 2),) * d
        return _unit_rows(small[crop].reshape(len(prep), 1, -1)).astype(np.float32)
    win = np.lib.stride_tricks.sliding_window_view(small, (c - 4,) * d, axis=tuple(range(1, d + 1)))
    return _unit_rows(win.reshape(len(prep), 5**d, -1)).astype(np.float32)


def _scaled(prep: np.ndarray, s: float) -> np.ndarray:
    """Each image zoomed by ``s`` about its centre (same grid)."""
    if s == 1.0:
        return prep
    d = prep.ndim - 1
    g = prep.shape[1]
    c = (g - 1) / 2
    mat = np.diag([1.0] + [1.0 / s] * d)
    off = np.array([0.0] + [c - c / s] * d)
    return ndimage.affine_transform(prep, mat, offset=off, order=1, mode="nearest").astype(np.float32)


class Matcher:
    """A training set prepared for look-ups: structure images' central crops (unit rows) and coarse thumbnails."""

    def __init__(
        self,
        train: np.ndarray,
        max_shift: int | None = None,
        scales: Sequence[float] = (0.92, 1.0, 1.08),
        flips: bool = True,
        candidates: int = 32,
        subpixel: bool | None = None,
        remove_components: int = REMOVE_COMPONENTS,
    ) -> None:
        """``train``: the output of :func:`prepare` for the training images. ``remove_components``: compare
        in the orthogonal complement of the training crops' first principal directions (what all training
        images share)."""
        self.dims = train.ndim - 1
        self.grid = train.shape[1]
        self.r = DEFAULT_SHIFT[self.dims] if max_shift is None else max_shift
        if not 0 <= 2 * self.r < self.grid - 2:
            raise MemorizationInputError(f"max_shift {self.r} is too large for a grid of {self.grid}.")
        self.scales = tuple(float(s) for s in scales)
        self.flips = flips
        self.subpixel = self.dims == 2 if subpixel is None else subpixel
        self.k = max(1, min(candidates, len(train)))
        r, g = self.r, self.grid
        crop = (slice(None),) + (slice(r, g - r),) * self.dims
        self.crops = _unit_rows(_bandpass(train)[crop].reshape(len(train), -1)).astype(np.float32)
        self.thumbs = _thumb(train, False)[:, 0]
        self.pcs: np.ndarray | None = None
        remove_components = min(remove_components, len(train) // 10)  # needs many more images than directions
        if remove_components > 0:
            _, _, vt = np.linalg.svd(self.crops, full_matrices=False)
            self.pcs = np.ascontiguousarray(vt[:remove_components].T)  # (D, r)
            self.proj = self.crops @ self.pcs  # (n, r)
            self.rnorm = np.sqrt(np.maximum(1.0 - (self.proj**2).sum(1), 1e-12))
        self.n = len(train)

    def _variants(self, q: np.ndarray) -> tuple[np.ndarray, list[tuple[tuple[float, ...], float, bool]]]:
        """All transformed crops of the samples ``q``: ``(n, T, D)`` unit rows and the transform of each."""
        d, r, g = self.dims, self.r, self.grid
        w = g - 2 * r
        shifts = list(np.ndindex(*(2 * r + 1,) * d))
        blocks, meta = [], []
        subs = list(np.ndindex(*(2,) * d)) if self.subpixel else [(0,) * d]
        for flip in (False, True) if self.flips else (False,):
            qf = q[..., ::-1] if flip else q
            for s in self.scales:
                qs = _scaled(np.ascontiguousarray(qf), s)
                for sub in subs:
                    off = [0.0] + [0.5 * v for v in sub]
                    qq = ndimage.shift(qs, off, order=1, mode="nearest") if any(sub) else qs
                    bp = _bandpass(qq)
                    win = np.lib.stride_tricks.sliding_window_view(bp, (w,) * d, axis=tuple(range(1, d + 1)))
                    # win: (n, 2r+1, ..., w, ...)
                    blocks.append(win.reshape(len(q), len(shifts), -1))
                    meta += [
                        (tuple(int(v) - r - 0.5 * u for v, u in zip(sh, sub, strict=True)), s, flip) for sh in shifts
                    ]
        return _unit_rows(np.concatenate(blocks, axis=1)), meta

    def query(
        self, q: np.ndarray, exclude: np.ndarray | None = None, chunk: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[tuple[float, ...], float, bool]]]:
        """Nearest training image of each prepared sample ``q``: indices, similarities and transforms.
        ``exclude[i]``: a training index sample ``i`` may not match (itself, for calibration; -1: none)."""
        n = len(q)
        idx = np.empty(n, np.int64)
        sim = np.empty(n, np.float64)
        tr: list[tuple[tuple[float, ...], float, bool]] = []
        k = self.k if exclude is None else min(self.k, self.n - 1)
        if k < 1:
            raise MemorizationInputError("The training set needs at least 2 images for calibration.")
        per = (
            (2 * self.r + 1) ** self.dims
            * len(self.scales)
            * (2 if self.flips else 1)
            * (2**self.dims if self.subpixel else 1)
        )
        dim = self.crops.shape[1]
        step = chunk or max(1, min(int(4e7 // (per * dim)), int(2e7 // (self.n * 5**self.dims))))
        tq = _thumb(q, True)
        tqf = _thumb(np.ascontiguousarray(q[..., ::-1]), True) if self.flips else None
        for a in range(0, n, step):
            b = min(n, a + step)
            coarse = (tq[a:b] @ self.thumbs.T).max(1)
            if tqf is not None:
                coarse = np.maximum(coarse, (tqf[a:b] @ self.thumbs.T).max(1))
            if exclude is not None:
                ex = exclude[a:b]
                rows = np.nonzero(ex >= 0)[0]
                coarse[rows, ex[rows]] = -np.inf
            cand = np.argpartition(-coarse, k - 1, axis=1)[:, :k]  # (m, k)
            var, meta = self._variants(q[a:b])  # (m, T, D)
            sims = np.matmul(var, self.crops[cand].transpose(0, 2, 1))  # (m, T, k)
            if self.pcs is not None:
                pv = var @ self.pcs  # (m, T, r)
                vn = np.sqrt(np.maximum(1.0 - (pv**2).sum(-1), 1e-12))  # (m, T)
                sims -= np.matmul(pv, self.proj[cand].transpose(0, 2, 1))
                sims /= vn[:, :, None] * self.rnorm[cand][:, None, :]
            flat = sims.reshape(b - a, -1).argmax(1)
            t_i, c_i = np.unravel_index(flat, sims.shape[1:])
            rows_m = np.arange(b - a)
            idx[a:b] = cand[rows_m, c_i]
            sim[a:b] = sims[rows_m, t_i, c_i]
            tr += [meta[t] for t in t_i]
        return idx, sim, tr


def calibrate(
    matcher: Matcher, train: np.ndarray, false_alarm: float = 0.05, size: int = 1000, seed: int = 0
) -> Calibration:
    """Threshold = the ``1 - false_alarm`` quantile of leave-one-out nearest-neighbour similarities of
    ``size`` randomly chosen training images (all when fewer) to the rest of the training set."""
    if not 0 < false_alarm < 1:
        raise MemorizationInputError(f"false_alarm must be between 0 and 1; got {false_alarm}.")
    n = len(train)
    if n < 2:
        raise MemorizationInputError(
            "Calibration needs at least 2 training images; give more, or give --threshold explicitly."
        )
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size, replace=False)) if n > size else np.arange(n)
    _, sims, _ = matcher.query(train[pick], exclude=pick)
    thr = float(np.quantile(sims, 1 - false_alarm))
    qs = {f"q{int(p * 100):02d}": float(np.quantile(sims, p)) for p in (0.05, 0.5, 0.95, 0.99)}
    return Calibration(thr, "calibrated", false_alarm, len(pick), qs, np.sort(sims))


def find_memorized(
    samples: Sequence[np.ndarray],
    train: Sequence[np.ndarray],
    sample_names: Sequence[str] | None = None,
    train_names: Sequence[str] | None = None,
    threshold: float | None = None,
    false_alarm: float = 0.05,
    grid: int | None = None,
    max_shift: int | None = None,
    scales: Sequence[float] = (0.92, 1.0, 1.08),
    flips: bool = True,
    candidates: int = 32,
    subpixel: bool | None = None,
    calibration_size: int = 1000,
    seed: int = 0,
) -> MemorizationResult:
    """Match every sample image against the training images (arrays: 2D ``(y, x)`` or 3D ``(z, y, x)``).
    ``threshold`` None: calibrated on the training set at ``false_alarm`` (see the module docstring)."""
    t0 = time.perf_counter()
    if not samples:
        raise MemorizationInputError("The sample set is empty; give at least one generated image.")
    if not train:
        raise MemorizationInputError("The training set is empty; give the folder of the images trained on.")
    ds, dt = {a.ndim for a in samples}, {a.ndim for a in train}
    if ds != dt or len(ds) != 1:
        raise MemorizationInputError(
            f"The samples are {'/'.join(str(d) for d in sorted(ds))}D and the training images "
            f"{'/'.join(str(d) for d in sorted(dt))}D; compare like with like (one kind per set)."
        )
    sn = list(sample_names) if sample_names is not None else [f"sample_{i}" for i in range(len(samples))]
    tn = list(train_names) if train_names is not None else [f"train_{i}" for i in range(len(train))]
    pt = prepare(train, grid)
    ps = prepare(samples, pt.shape[1])
    m = Matcher(pt, max_shift, scales, flips, candidates, subpixel)
    cal_sims: np.ndarray | None
    if threshold is None:
        cal = calibrate(m, pt, false_alarm, calibration_size, seed)
        cal_sims = cal.similarities
    else:
        cal = Calibration(float(threshold), "given", float("nan"), 0)
        cal_sims = None
    idx, sim, tr = m.query(ps)
    matches = []
    for i in range(len(ps)):
        p = (
            float(1.0 - np.searchsorted(cal_sims, sim[i], side="left") / len(cal_sims))
            if cal_sims is not None
            else float("nan")
        )
        sh, sc, fl = tr[i]
        matches.append(Match(sn[i], tn[int(idx[i])], float(sim[i]), bool(sim[i] > cal.threshold), p, sh, sc, fl))
    return MemorizationResult(
        matches,
        cal,
        len(pt),
        len(ps),
        pt.ndim - 1,
        pt.shape[1],
        m.r,
        m.scales,
        flips,
        time.perf_counter() - t0,
    )


def load_arrays(folder: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """Grey images of a folder (sorted by name) as 2D ``(y, x)`` / 3D ``(z, y, x)`` arrays, with their names;
    the folder reading of :mod:`medimg.frd` (RGB to luma)."""
    from medimg.frd import FRDInputError, load_set

    try:
        samples = load_set(folder, None, "v0")
    except FRDInputError as e:
        raise MemorizationInputError(str(e).replace("FRD needs at least 2 images per set", "give at least one")) from e
    return [s.array[0] if s.dims == 2 else s.array for s in samples], [s.name for s in samples]


def memorization_folders(
    samples_dir: str | Path,
    train_dir: str | Path,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
    **kwargs: Any,
) -> MemorizationResult:
    """:func:`find_memorized` on two image folders (2D pictures or 3D volumes)."""
    t0 = time.perf_counter()
    sa, sn = load_arrays(samples_dir)
    ta, tn = load_arrays(train_dir)
    if sa[0].ndim != ta[0].ndim:
        raise MemorizationInputError(
            f"{samples_dir} holds {sa[0].ndim}D images and {train_dir} {ta[0].ndim}D; compare like with like."
        )
    res = find_memorized(sa, ta, sn, tn, **kwargs)
    res.seconds = time.perf_counter() - t0
    return res


def report_text(res: MemorizationResult, fmt: str) -> str:
    """The per-sample table as CSV (``fmt='csv'``) or the whole result as JSON (``'json'``)."""
    rows = [asdict(m) | {"shift": list(m.shift)} for m in res.matches]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["sample"])
        w.writeheader()
        for r in rows:
            w.writerow(r | {"shift": " ".join(str(v) for v in r["shift"])})
        return buf.getvalue()
    cal = {k: v for k, v in asdict(res.calibration).items() if k != "similarities"}
    return json.dumps({"threshold": res.calibration.threshold, "calibration": cal, "matches": rows}, indent=2)
