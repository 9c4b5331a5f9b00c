"""Distribution metrics of a generated set beside FRD: KID, precision/recall/density/coverage, MS-SSIM diversity.

All need no downloaded weights. The feature spaces are medimg's own:

- ``radiomics``: the FRD v1 radiomic features (:mod:`medimg.frd`), float32, z-scored with the reference set A's
  mean and SD, features NaN/inf/constant in A dropped (as FRD v1 prepares them).
- ``pixels``: the images on a common grid (2D 32 x 32, 3D 16^3; anti-aliased), each z-scored, flattened.
- ``encoder``: the global-average-pooled features of a medimg classifier's encoder (a model medimg trained, e.g. the
  bundled ``pneumoniamnist``; :meth:`medimg.classify.ClassifierModel.embed`), where FID is also reported: the
  Fréchet distance of Gaussians fitted to the features (Inception's role, played by a model trained on the domain).

Metrics (A = reference/real, B = generated):

- **KID** (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3`` (d = feature count), averaged over ``subsets`` random subsets of
  ``min(subset_size, min(|A|, |B|) // 2)`` rows of each set (without replacement; at most half of the smaller set
  so that the subsets differ and their SD means something), with its SD over the subsets (as torch-fidelity /
  clean-fid report it). About 0 for one distribution (it can be slightly negative: unbiased).
- **precision / recall** (Kynkaenniemi et al. 2019) and **density / coverage** (Naeem et al. 2020), k-NN
  manifolds with ``k`` (default 5), following the reference ``prdc`` code: a point's ball radius is the distance
  to its k-th nearest neighbour in its own set (the point itself counted as the 0-th). Precision = share of B
  inside some A ball; recall = share of A inside some B ball; density = mean number of A balls holding a B point
  / k; coverage = share of A balls holding at least one B point.
- **MS-SSIM diversity** (Odena et al. 2017): mean MS-SSIM of ``pairs`` random pairs of distinct images of one set
  (lower = more diverse; 1 = all identical). MS-SSIM (Wang et al. 2003) as MONAI 1.6.1 computes it: Gaussian
  window (11, sigma 1.5, smaller for small images), valid convolution, k1 0.01, k2 0.03, data range 1 (each image
  min-max scaled to [0, 1]), contrast-structure at each level, SSIM at the last, ReLU, weights (0.0448, 0.2856,
  0.3001, 0.2363, 0.1333) truncated to the levels that fit, average pooling by 2 between levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medimg.errors import MedimgError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class DistributionInputError(MedimgError):
    """Feature sets or images that the distribution metrics cannot use."""


def _check(a: np.ndarray, b: np.ndarray, need: int = 2) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise DistributionInputError(
            f"Feature matrices must be (images x features) with the same features; got {a.shape} and {b.shape}."
        )
    if len(a) < need or len(b) < need:
        raise DistributionInputError(f"Each set needs at least {need} images; got {len(a)} and {len(b)}.")


def kid(
    a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance on feature matrices: mean and SD of the unbiased MMD^2 (cubic kernel) over
    subsets."""
    _check(a, b)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a.shape[1]
    m = min(subset_size, max(2, min(len(a), len(b)) // 2))
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for s in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        vals[s] = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        )
    return float(vals.mean()), float(vals.std())


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance squared between Gaussians fitted to the rows of ``a`` and ``b`` (FID's formula, Heusel et
    al. 2017, in whatever feature space the rows come from; covariances with ``n - 1``)."""
    from medimg.frd import frechet_distance_squared

    _check(a, b)
    return frechet_distance_squared(
        a.mean(axis=0), np.atleast_2d(np.cov(a, rowvar=False)), b.mean(axis=0), np.atleast_2d(np.cov(b, rowvar=False))
    )


def _pdist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.sqrt(np.maximum(d2, 0))


@dataclass
class PRDC:
    """Precision, recall, density and coverage of B against A (k-NN manifolds)."""

    precision: float
    recall: float
    density: float
    coverage: float
    k: int


def prdc(a: np.ndarray, b: np.ndarray, k: int = 5) -> PRDC:
    """Precision/recall (Kynkaenniemi et al.) and density/coverage (Naeem et al.) of ``b`` (generated) against
    ``a`` (real), k-th-nearest-neighbour balls, Euclidean distance."""
    _check(a, b, k + 1)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    raa, rbb, rab = _pdist(a, a), _pdist(b, b), _pdist(a, b)
    ra = np.partition(raa, k, axis=1)[:, k]  # k-th neighbour, self is the 0-th
    rb = np.partition(rbb, k, axis=1)[:, k]
    in_a = rab < ra[:, None]  # (A, B): B point inside A ball
    precision = float(in_a.any(0).mean())
    recall = float((rab < rb[None, :]).any(1).mean())
    density = float(in_a.sum(0).mean() / k)
    coverage = float((rab.min(1) < ra).mean())
    return PRDC(precision, recall, density, coverage, k)


def zscore_against(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature matrices z-scored with A's mean and SD; features non-finite anywhere or constant in A
    dropped; rows with a NaN dropped."""
    a = a[~np.isnan(a).any(1)]
    b = b[~np.isnan(b).any(1)]
    mu, sd = a.mean(0), a.std(0)
    keep = (sd > 1e-12 * np.maximum(1.0, np.abs(mu))) & np.isfinite(mu) & np.isfinite(sd)
    za = (a[:, keep] - mu[keep]) / sd[keep]
    zb = (b[:, keep] - mu[keep]) / sd[keep]
    ok = np.isfinite(za).all(0) & np.isfinite(zb).all(0)
    return za[:, ok], zb[:, ok]


def _gauss_1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange((1 - size) / 2, (1 + size) / 2, 1.0)
    g = np.exp(-((x / sigma) ** 2) / 2)
    return g / g.sum()


def _valid_filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable valid-mode correlation over the spatial axes (all but the first) of a batch."""
    for ax in range(1, x.ndim):
        x = ndimage.correlate1d(x, g, axis=ax, mode="constant")
        h = len(g) // 2
        sl = [slice(None)] * x.ndim
        sl[ax] = slice(h, x.shape[ax] - (len(g) - 1 - h))
        x = x[tuple(sl)]
    return x


def ms_ssim_settings(shape: Sequence[int]) -> tuple[int, float, tuple[float, ...]]:
    """Kernel size, sigma and weights for images of ``shape``: kernel 11 / sigma 1.5 and 5 levels when they
    fit (MONAI's size rule: ``size // (levels - 1)**2 > kernel - 1``), else fewer levels and then smaller kernels
    (7 / 1.0, 5 / 0.75, 3 / 0.5); the weights are MS-SSIM's first ``levels`` weights."""
    m = min(shape)
    for ks, sg in ((11, 1.5), (7, 1.0), (5, 0.75), (3, 0.5)):
        for lv in (5, 4, 3, 2):
            if m // max(1, (lv - 1)) ** 2 > ks - 1 and m // 2 ** (lv - 1) >= ks:
                return ks, sg, MS_SSIM_WEIGHTS[:lv]
    raise DistributionInputError(f"Images of shape {tuple(shape)} are too small for MS-SSIM (need >= 6 pixels).")


def ms_ssim(
    x: np.ndarray,
    y: np.ndarray,
    kernel_size: int = 11,
    sigma: float = 1.5,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """MS-SSIM of image pairs: ``x``, ``y`` batches ``(n, *spatial)`` (2D or 3D); returns ``(n,)``."""
    if x.shape != y.shape:
        raise DistributionInputError(f"MS-SSIM needs images of one shape; got {x.shape} and {y.shape}.")
    g = _gauss_1d(kernel_size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)
    vals = []
    ssim = np.zeros(len(x))
    for _ in weights:
        mx, my = _valid_filter(x, g), _valid_filter(y, g)
        sxx = _valid_filter(x * x, g) - mx * mx
        syy = _valid_filter(y * y, g) - my * my
        sxy = _valid_filter(x * y, g) - mx * my
        cs_map = (2 * sxy + c2) / (sxx + syy + c2)
        ssim_map = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs_map
        axes = tuple(range(1, x.ndim))
        vals.append(np.maximum(cs_map.mean(axes), 0))
        ssim = np.maximum(ssim_map.mean(axes), 0)
        sl = (slice(None), *(slice(0, 2 * (s // 2)) for s in x.shape[1:]))
        x = x[sl].reshape(len(x), *[v for s in x.shape[1:] for v in (s // 2, 2)]).mean(tuple(range(2, 2 * x.ndim, 2)))
        y = y[sl].reshape(len(y), *[v for s in y.shape[1:] for v in (s // 2, 2)]).mean(tuple(range(2, 2 * y.ndim, 2)))
    vals[-1] = ssim
    w = np.asarray(weights, np.float64)[:, None]
    return np.asarray(np.prod(np.stack(vals) ** w, axis=0))


def to_common(arrays: Sequence[np.ndarray], shape: Sequence[int] | None = None) -> np.ndarray:
    """Images (2D ``(y, x)`` or 3D ``(z, y, x)``) resampled to one ``shape`` (default: the median shape),
    anti-aliased, each min-max scaled to [0, 1]: ``(n, *shape)`` float32."""
    if not arrays:
        raise DistributionInputError("No images were given.")
    if len({a.ndim for a in arrays}) != 1:
        raise DistributionInputError("The set mixes 2D and 3D images; give one kind per set.")
    tgt = tuple(int(v) for v in (shape or np.median([a.shape for a in arrays], axis=0).astype(int)))
    out = np.empty((len(arrays), *tgt), np.float32)
    for i, a in enumerate(arrays):
        a = np.asarray(a, np.float32)
        if a.shape != tgt:
            f = [s / t for s, t in zip(a.shape, tgt, strict=True)]
            a = ndimage.gaussian_filter(a, [max(0.0, (v - 1) / 2) for v in f], mode="nearest")
            a = ndimage.zoom(
                a, [t / s for s, t in zip(a.shape, tgt, strict=True)], order=1, mode="nearest", grid_mode=True
            )
        lo, hi = float(a.min()), float(a.max())
        out[i] = (a - lo) / (hi - lo) if hi > lo else 0.0
    return out


def ms_ssim_diversity(
    arrays: Sequence[np.ndarray], pairs: int = 200, seed: int = 0, shape: Sequence[int] | None = None
) -> tuple[float, float, int]:
    """Mean and SD of MS-SSIM over ``pairs`` random pairs of distinct images of one set (all pairs when there
    are fewer), and the number of pairs used."""
    if len(arrays) < 2:
        raise DistributionInputError("MS-SSIM diversity needs at least 2 images in the set.")
    imgs = to_common(arrays, shape)
    n = len(imgs)
    allp = n * (n - 1) // 2
    rng = np.random.default_rng(seed)
    if allp <= pairs:
        i, j = np.triu_indices(n, 1)
    else:
        i = rng.integers(0, n, pairs)
        j = (i + rng.integers(1, n, pairs)) % n
    ks, sg, w = ms_ssim_settings(imgs.shape[1:])
    v = np.concatenate([ms_ssim(imgs[i[s : s + 64]], imgs[j[s : s + 64]], ks, sg, w) for s in range(0, len(i), 64)])
    return float(v.mean()), float(v.std()), len(v)


def pixel_features(arrays: Sequence[np.ndarray], grid: int | None = None) -> np.ndarray:
    """The ``pixels`` feature space: images on a common grid (2D 32, 3D 16), each z-scored, flattened."""
    d = arrays[0].ndim
    g = grid or (32 if d == 2 else 16)
    x = to_common(arrays, (g,) * d).reshape(len(arrays), -1)
    x = x - x.mean(1, keepdims=True)
    sd = x.std(1, keepdims=True)
    return np.asarray(x / np.where(sd > 0, sd, 1.0))
