"""Radiomic feature classes, vectorised with NumPy/SciPy: first order, GLCM, GLRLM, GLSZM, NGTDM, GLDM.

Conventions (those of pyradiomics 3.0.1, which follows IBSI with its documented deviations):

- Arrays are indexed ``(z, y, x)``; a 2D image is a ``(1, y, x)`` array. ``force2d=True`` computes the texture
  matrices in the ``y, x`` plane only (the 4 in-plane directions / 8-connectivity); otherwise the 13 directions
  and 26-connectivity of 3D are used. Neighbour distance is 1 voxel.
- Texture features work on the discretised image (grey levels ``1..Ng``, see
  :func:`medimg.radiomics.discretize.bin_image`); only voxels inside the mask count. Grey levels absent from the
  ROI are removed from the matrices and the coefficients ``i`` are the grey levels present (not 1..Ng).
- GLCM and GLRLM features are computed per direction and averaged over the directions that hold at least one
  pair / run (the GLCM is made symmetrical). Entropies use ``log2`` and ``eps = numpy.spacing(1)``.
- First-order Energy, TotalEnergy and RootMeanSquared add ``voxel_array_shift`` to the intensities;
  TotalEnergy multiplies by the voxel volume (product of the spacing, mm^3 or mm^2 x slice spacing).

Every function returns an ordered ``{feature name: value}`` dict with pyradiomics' feature names.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

EPS = float(np.spacing(1))

#: Feature names per class, in pyradiomics' (alphabetical) order; GLCM lists every non-deprecated feature.
FIRSTORDER = (
    "10Percentile",
    "90Percentile",
    "Energy",
    "Entropy",
    "InterquartileRange",
    "Kurtosis",
    "Maximum",
    "MeanAbsoluteDeviation",
    "Mean",
    "Median",
    "Minimum",
    "Range",
    "RobustMeanAbsoluteDeviation",
    "RootMeanSquared",
    "Skewness",
    "TotalEnergy",
    "Uniformity",
    "Variance",
)
GLCM = (
    "Autocorrelation",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "Id",
    "Idm",
    "Idmn",
    "Idn",
    "Imc1",
    "Imc2",
    "InverseVariance",
    "JointAverage",
    "JointEnergy",
    "JointEntropy",
    "MCC",
    "MaximumProbability",
    "SumAverage",
    "SumEntropy",
    "SumSquares",
)
GLRLM = (
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelRunEmphasis",
    "LongRunEmphasis",
    "LongRunHighGrayLevelEmphasis",
    "LongRunLowGrayLevelEmphasis",
    "LowGrayLevelRunEmphasis",
    "RunEntropy",
    "RunLengthNonUniformity",
    "RunLengthNonUniformityNormalized",
    "RunPercentage",
    "RunVariance",
    "ShortRunEmphasis",
    "ShortRunHighGrayLevelEmphasis",
    "ShortRunLowGrayLevelEmphasis",
)
GLSZM = (
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelZoneEmphasis",
    "LargeAreaEmphasis",
    "LargeAreaHighGrayLevelEmphasis",
    "LargeAreaLowGrayLevelEmphasis",
    "LowGrayLevelZoneEmphasis",
    "SizeZoneNonUniformity",
    "SizeZoneNonUniformityNormalized",
    "SmallAreaEmphasis",
    "SmallAreaHighGrayLevelEmphasis",
    "SmallAreaLowGrayLevelEmphasis",
    "ZoneEntropy",
    "ZonePercentage",
    "ZoneVariance",
)
NGTDM = ("Busyness", "Coarseness", "Complexity", "Contrast", "Strength")
GLDM = (
    "DependenceEntropy",
    "DependenceNonUniformity",
    "DependenceNonUniformityNormalized",
    "DependenceVariance",
    "GrayLevelNonUniformity",
    "GrayLevelVariance",
    "HighGrayLevelEmphasis",
    "LargeDependenceEmphasis",
    "LargeDependenceHighGrayLevelEmphasis",
    "LargeDependenceLowGrayLevelEmphasis",
    "LowGrayLevelEmphasis",
    "SmallDependenceEmphasis",
    "SmallDependenceHighGrayLevelEmphasis",
    "SmallDependenceLowGrayLevelEmphasis",
)
CLASSES: dict[str, tuple[str, ...]] = {
    "firstorder": FIRSTORDER,
    "glcm": GLCM,
    "glrlm": GLRLM,
    "glszm": GLSZM,
    "ngtdm": NGTDM,
    "gldm": GLDM,
}


# ------------------------------------------------------------------------------------------------ geometry helpers
def _avg(v: np.ndarray) -> float:
    """Mean over the directions (NaN-aware, as pyradiomics)."""
    return float(np.nanmean(v))


def directions(force2d: bool) -> list[tuple[int, ...]]:
    """The unique neighbour directions ``(dz, dy, dx)`` at distance 1: 13 in 3D, 4 in the ``y, x`` plane."""
    out: list[tuple[int, ...]] = []
    for d in itertools.product((-1, 0, 1), repeat=3):
        if d == (0, 0, 0) or (force2d and d[0] != 0):
            continue
        if tuple(-v for v in d) in out:
            continue
        out.append(d)
    return out


def _pair_slices(shape: Sequence[int], d: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``a, b`` so that ``arr[b]`` is the neighbour at offset ``d`` of ``arr[a]``."""
    a, b = [], []
    for n, o in zip(shape, d, strict=True):
        a.append(slice(max(0, -o), n - max(0, o)))
        b.append(slice(max(0, o), n - max(0, -o)))
    return tuple(a), tuple(b)


def _neighbour_kernel(force2d: bool) -> np.ndarray:
    k = np.ones((3, 3, 3))
    if force2d:
        k[0] = 0
        k[2] = 0
    k[1, 1, 1] = 0
    return k


# ------------------------------------------------------------------------------------------------ first order
def firstorder(
    image: np.ndarray,
    mask: np.ndarray,
    binned: np.ndarray,
    spacing: Sequence[float],
    voxel_array_shift: float = 0.0,
) -> dict[str, float]:
    """First-order statistics of ``image`` inside ``mask`` (``binned``: the discretised image for Entropy and
    Uniformity; ``spacing``: voxel size, for TotalEnergy)."""
    x = image[mask].astype(np.float64)
    _, counts = np.unique(binned[mask], return_counts=True)
    p = counts / max(counts.sum(), 1)
    shifted = x + voxel_array_shift
    energy = float(np.sum(shifted**2))
    p10, p25, p75, p90 = np.percentile(x, [10, 25, 75, 90])
    mean = float(x.mean())
    dev = x - mean
    m2 = float(np.mean(dev**2))
    m3 = float(np.mean(dev**3))
    m4 = float(np.mean(dev**4))
    robust = x[(x >= p10) & (x <= p90)]
    return {
        "10Percentile": float(p10),
        "90Percentile": float(p90),
        "Energy": energy,
        "Entropy": float(-np.sum(p * np.log2(p + EPS))),
        "InterquartileRange": float(p75 - p25),
        "Kurtosis": m4 / m2**2 if m2 != 0 else 0.0,
        "Maximum": float(x.max()),
        "MeanAbsoluteDeviation": float(np.mean(np.abs(dev))),
        "Mean": mean,
        "Median": float(np.median(x)),
        "Minimum": float(x.min()),
        "Range": float(x.max() - x.min()),
        "RobustMeanAbsoluteDeviation": float(np.mean(np.abs(robust - robust.mean()))),
        "RootMeanSquared": float(np.sqrt(energy / x.size)),
        "Skewness": m3 / m2**1.5 if m2 != 0 else 0.0,
        "TotalEnergy": energy * float(np.prod(spacing)),
        "Uniformity": float(np.sum(p**2)),
        "Variance": float(np.var(x)),
    }


# ------------------------------------------------------------------------------------------------ GLCM
def glcm_matrix(binned: np.ndarray, mask: np.ndarray, force2d: bool) -> tuple[np.ndarray, np.ndarray]:
    """Normalised symmetrical GLCMs ``P[i, j, angle]`` over the grey levels present, and those grey levels."""
    levels = np.unique(binned[mask])
    ng = int(levels.max())
    lut = np.zeros(ng + 1, dtype=np.int64)
    lut[levels] = np.arange(levels.size)
    n = levels.size
    mats = []
    for d in directions(force2d):
        sa, sb = _pair_slices(binned.shape, d)
        both = mask[sa] & mask[sb]
        ga = lut[binned[sa][both]]
        gb = lut[binned[sb][both]]
        m = np.bincount(ga * n + gb, minlength=n * n).reshape(n, n).astype(np.float64)
        m += m.T
        if m.sum() > 0:
            mats.append(m / m.sum())
    if not mats:
        return np.full((n, n, 1), np.nan), levels
    return np.stack(mats, axis=-1), levels


def _glcm_angle(ga: np.ndarray, gb: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    """GLCM features of one direction from its voxel pairs (grey levels ``ga`` -> ``gb``), computed on the
    non-zero entries of the symmetrical matrix only (sums over the dense matrix equal sums over its non-zeros)."""
    ng = int(levels.max())
    base = ng + 1
    codes = np.concatenate([ga * base + gb, gb * base + ga])
    uniq, cnt = np.unique(codes, return_counts=True)
    i = (uniq // base).astype(np.float64)
    j = (uniq % base).astype(np.float64)
    p = cnt / cnt.sum()
    px_full = np.bincount(uniq // base, p, minlength=base)
    px = px_full[levels]
    ux = float(np.sum(p * i))
    uy = float(np.sum(p * j))
    s = i + j - ux - uy
    di = i - ux
    dj = j - uy
    sigx = math.sqrt(float(np.sum(p * di**2)))
    sigy = math.sqrt(float(np.sum(p * dj**2)))
    corm = float(np.sum(p * di * dj))
    corr = 1.0 if sigx * sigy == 0 else corm / (sigx * sigy + EPS)
    kd = np.abs(i - j).astype(np.int64)
    pxSuby = np.bincount(kd, p, minlength=ng)[:ng]
    pxAddy = np.bincount((i + j).astype(np.int64), p, minlength=2 * ng + 1)[2 : 2 * ng + 1]
    kDiff = np.arange(ng, dtype=np.float64)
    hxy = float(-np.sum(p * np.log2(p + EPS)))
    hx = float(-np.sum(px * np.log2(px + EPS)))
    pxpy_e = px_full[uniq // base] * px_full[uniq % base]
    hxy1 = float(-np.sum(p * np.log2(pxpy_e + EPS)))
    outer = np.outer(px, px)
    hxy2 = float(-np.sum(outer * np.log2(outer + EPS)))
    imc1 = (hxy - hxy1) / hx if hx != 0 else 0.0
    imc2 = 0.0 if hxy2 == hxy else math.sqrt(max(1 - math.exp(-2 * (hxy2 - hxy)), 0.0))
    if hxy2 != hxy and 1 - math.exp(-2 * (hxy2 - hxy)) < 0:
        imc2 = float("nan")
    diffavg = float(np.sum(kDiff * pxSuby))
    return {
        "Autocorrelation": float(np.sum(p * i * j)),
        "ClusterProminence": float(np.sum(p * s**4)),
        "ClusterShade": float(np.sum(p * s**3)),
        "ClusterTendency": float(np.sum(p * s**2)),
        "Contrast": float(np.sum(p * (i - j) ** 2)),
        "Correlation": corr,
        "DifferenceAverage": diffavg,
        "DifferenceEntropy": float(-np.sum(pxSuby * np.log2(pxSuby + EPS))),
        "DifferenceVariance": float(np.sum(pxSuby * (kDiff - diffavg) ** 2)),
        "Id": float(np.sum(pxSuby / (1 + kDiff))),
        "Idm": float(np.sum(pxSuby / (1 + kDiff**2))),
        "Idmn": float(np.sum(pxSuby / (1 + kDiff**2 / ng**2))),
        "Idn": float(np.sum(pxSuby / (1 + kDiff / ng))),
        "Imc1": imc1,
        "Imc2": imc2,
        "InverseVariance": float(np.sum(pxSuby[1:] / kDiff[1:] ** 2)),
        "JointAverage": ux,
        "JointEnergy": float(np.sum(p**2)),
        "JointEntropy": hxy,
        "MaximumProbability": float(p.max()),
        "SumAverage": float(np.sum(np.arange(2, 2 * ng + 1) * pxAddy)),
        "SumEntropy": float(-np.sum(pxAddy * np.log2(pxAddy + EPS))),
        "SumSquares": float(np.sum(p * di**2)),
    }


def _mcc(binned: np.ndarray, mask: np.ndarray, force2d: bool) -> float:
    """GLCM MCC: square root of the second-largest eigenvalue of ``Q(i, j) = sum_k P(i,k) P(j,k) / (px(i)
    py(k))``, averaged over the directions."""
    P, _ = glcm_matrix(binned, mask, force2d)
    if P.shape[0] < 2:
        return 1.0
    px = P.sum(1)
    vals = []
    for a in range(P.shape[2]):
        Pa = P[..., a]
        Q = (Pa / (px[:, a][:, None] * px[:, a][None, :] + EPS)) @ Pa.T
        ev = np.sort(np.linalg.eigvals(Q))
        vals.append(np.sqrt(ev[-2]))
    return float(np.real(np.nanmean(np.array(vals))))


def glcm(binned: np.ndarray, mask: np.ndarray, force2d: bool = False, mcc: bool = True) -> dict[str, float]:
    """GLCM features (symmetrical, distance 1), each averaged over the directions that hold pairs
    (``mcc=False`` skips MCC's eigenvalue problem; it is then NaN)."""
    levels = np.unique(binned[mask])
    per_angle = []
    for d in directions(force2d):
        sa, sb = _pair_slices(binned.shape, d)
        both = mask[sa] & mask[sb]
        if both.any():
            per_angle.append(_glcm_angle(binned[sa][both], binned[sb][both], levels))
    names = [n for n in GLCM if n != "MCC"]
    if not per_angle:
        out = dict.fromkeys(GLCM, float("nan"))
    else:
        out = {n: _avg(np.array([f[n] for f in per_angle])) for n in names}
        out["MCC"] = _mcc(binned, mask, force2d) if mcc else float("nan")
    return out


# ------------------------------------------------------------------------------------------------ GLRLM
def _runs_along(binned: np.ndarray, mask: np.ndarray, d: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Grey level and length of every run along direction ``d`` (voxels of one grey level, consecutive inside
    the mask)."""
    shape = binned.shape
    idx = np.indices(shape).reshape(3, -1)
    k = next(a for a in range(3) if d[a] != 0)
    t = idx[k] * d[k]
    key = idx - t[None, :] * np.asarray(d)[:, None]
    order = np.lexsort((t, key[2], key[1], key[0]))
    val = np.where(mask, binned, 0).ravel()[order]
    kz = key[:, order]
    tt = t[order]
    n = val.size
    brk = np.ones(n, dtype=bool)
    brk[1:] = (val[1:] != val[:-1]) | np.any(kz[:, 1:] != kz[:, :-1], 0) | (tt[1:] != tt[:-1] + 1)
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, n))
    g = val[starts]
    keep = g > 0
    return g[keep], lengths[keep]


def glrlm(binned: np.ndarray, mask: np.ndarray, force2d: bool = False) -> dict[str, float]:
    """GLRLM features, each averaged over the directions that hold runs."""
    levels = np.unique(binned[mask])
    lut = np.zeros(int(levels.max()) + 1, dtype=np.int64)
    lut[levels] = np.arange(levels.size)
    nr = int(max(binned.shape))
    mats = []
    for d in directions(force2d):
        g, ln = _runs_along(binned, mask, d)
        m = np.zeros((levels.size, nr))
        np.add.at(m, (lut[g], ln - 1), 1)
        if m.sum() > 0:
            mats.append(m)
    P = np.stack(mats, -1)  # (Ng, Nr, a)
    Nr = P.sum((0, 1))
    pr = P.sum(0)
    pg = P.sum(1)
    ivec = levels.astype(np.float64)[:, None]
    jvec = np.arange(1, nr + 1, dtype=np.float64)
    keep = pr.sum(1) > 0
    P, pr, jvec = P[:, keep], pr[keep], jvec[keep][:, None]
    pgn = pg / Nr
    prn = pr / Nr
    u_i = np.sum(pgn * ivec, 0)
    u_j = np.sum(prn * jvec, 0)
    pn = P / Nr
    i3 = ivec[:, :, None]
    j3 = jvec[None, :, :]

    return {
        "GrayLevelNonUniformity": _avg(np.sum(pg**2, 0) / Nr),
        "GrayLevelNonUniformityNormalized": _avg(np.sum(pg**2, 0) / Nr**2),
        "GrayLevelVariance": _avg(np.sum(pgn * (ivec - u_i) ** 2, 0)),
        "HighGrayLevelRunEmphasis": _avg(np.sum(pg * ivec**2, 0) / Nr),
        "LongRunEmphasis": _avg(np.sum(pr * jvec**2, 0) / Nr),
        "LongRunHighGrayLevelEmphasis": _avg(np.sum(P * j3**2 * i3**2, (0, 1)) / Nr),
        "LongRunLowGrayLevelEmphasis": _avg(np.sum(P * j3**2 / i3**2, (0, 1)) / Nr),
        "LowGrayLevelRunEmphasis": _avg(np.sum(pg / ivec**2, 0) / Nr),
        "RunEntropy": _avg(-np.sum(pn * np.log2(pn + EPS), (0, 1))),
        "RunLengthNonUniformity": _avg(np.sum(pr**2, 0) / Nr),
        "RunLengthNonUniformityNormalized": _avg(np.sum(pr**2, 0) / Nr**2),
        "RunPercentage": _avg(Nr / np.sum(pr * jvec, 0)),
        "RunVariance": _avg(np.sum(prn * (jvec - u_j) ** 2, 0)),
        "ShortRunEmphasis": _avg(np.sum(pr / jvec**2, 0) / Nr),
        "ShortRunHighGrayLevelEmphasis": _avg(np.sum(P * i3**2 / j3**2, (0, 1)) / Nr),
        "ShortRunLowGrayLevelEmphasis": _avg(np.sum(P / (i3**2 * j3**2), (0, 1)) / Nr),
    }


# ------------------------------------------------------------------------------------------------ GLSZM
def glszm(binned: np.ndarray, mask: np.ndarray, force2d: bool = False) -> dict[str, float]:
    """GLSZM features: zones are connected voxels of one grey level (26- or, with ``force2d``, 8-connected,
    inside the mask)."""
    levels = np.unique(binned[mask])
    lut = np.zeros(int(levels.max()) + 1, dtype=np.int64)
    lut[levels] = np.arange(levels.size)
    # zones = connected components of the graph whose edges join neighbouring ROI voxels of equal grey level
    index = np.full(binned.shape, -1, dtype=np.int64)
    index[mask] = np.arange(int(mask.sum()))
    rows, cols = [], []
    for d in directions(force2d):
        sa, sb = _pair_slices(binned.shape, d)
        same = mask[sa] & mask[sb] & (binned[sa] == binned[sb])
        rows.append(index[sa][same])
        cols.append(index[sb][same])
    nv = int(mask.sum())
    r = np.concatenate(rows)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, np.concatenate(cols))), shape=(nv, nv))
    n_zones, zone = connected_components(graph, directed=False)
    s_arr = np.bincount(zone, minlength=n_zones)
    first = np.zeros(n_zones, dtype=np.int64)
    first[zone[::-1]] = np.arange(nv)[::-1]
    g_arr = lut[binned[mask][first]]
    ns = int(mask.sum())
    P = np.zeros((levels.size, ns))
    np.add.at(P, (g_arr, s_arr - 1), 1)
    ps = P.sum(0)
    pg = P.sum(1)
    ivec = levels.astype(np.float64)
    jvec = np.arange(1, ns + 1, dtype=np.float64)
    Nz = P.sum() or 1.0
    Np = float(np.sum(ps * jvec)) or 1.0
    keep = ps > 0
    P, ps, jvec = P[:, keep], ps[keep], jvec[keep]
    pgn, psn, pn = pg / Nz, ps / Nz, P / Nz
    u_i = np.sum(pgn * ivec)
    u_j = np.sum(psn * jvec)
    i2 = ivec[:, None]
    j2 = jvec[None, :]
    return {
        "GrayLevelNonUniformity": float(np.sum(pg**2) / Nz),
        "GrayLevelNonUniformityNormalized": float(np.sum(pg**2) / Nz**2),
        "GrayLevelVariance": float(np.sum(pgn * (ivec - u_i) ** 2)),
        "HighGrayLevelZoneEmphasis": float(np.sum(pg * ivec**2) / Nz),
        "LargeAreaEmphasis": float(np.sum(ps * jvec**2) / Nz),
        "LargeAreaHighGrayLevelEmphasis": float(np.sum(P * i2**2 * j2**2) / Nz),
        "LargeAreaLowGrayLevelEmphasis": float(np.sum(P * j2**2 / i2**2) / Nz),
        "LowGrayLevelZoneEmphasis": float(np.sum(pg / ivec**2) / Nz),
        "SizeZoneNonUniformity": float(np.sum(ps**2) / Nz),
        "SizeZoneNonUniformityNormalized": float(np.sum(ps**2) / Nz**2),
        "SmallAreaEmphasis": float(np.sum(ps / jvec**2) / Nz),
        "SmallAreaHighGrayLevelEmphasis": float(np.sum(P * i2**2 / j2**2) / Nz),
        "SmallAreaLowGrayLevelEmphasis": float(np.sum(P / (i2**2 * j2**2)) / Nz),
        "ZoneEntropy": float(-np.sum(pn * np.log2(pn + EPS))),
        "ZonePercentage": float(Nz / Np),
        "ZoneVariance": float(np.sum(psn * (jvec - u_j) ** 2)),
    }


# ------------------------------------------------------------------------------------------------ NGTDM
def _neighbour_sums(binned: np.ndarray, mask: np.ndarray, force2d: bool) -> tuple[np.ndarray, np.ndarray]:
    k = _neighbour_kernel(force2d)
    vals = np.where(mask, binned, 0).astype(np.float64)
    s = ndimage.convolve(vals, k, mode="constant", cval=0.0)
    c = ndimage.convolve(mask.astype(np.float64), k, mode="constant", cval=0.0)
    return s, c


def ngtdm(binned: np.ndarray, mask: np.ndarray, force2d: bool = False) -> dict[str, float]:
    """NGTDM features (neighbourhood: the 26 / 8 voxels at distance 1 inside the mask; voxels without any
    neighbour in the mask are left out)."""
    s, c = _neighbour_sums(binned, mask, force2d)
    valid = mask & (c > 0)
    g = binned[valid]
    diff = np.abs(g - s[valid] / c[valid])
    levels = np.unique(g)
    lut = np.zeros(int(binned[mask].max()) + 1, dtype=np.int64)
    lut[levels] = np.arange(levels.size)
    n_i = np.bincount(lut[g], minlength=levels.size).astype(np.float64)
    s_i = np.bincount(lut[g], diff, minlength=levels.size)
    i = levels.astype(np.float64)
    Nvp = n_i.sum()
    p = n_i / Nvp
    ngp = levels.size
    ps = float(np.sum(p * s_i))
    coarse = 1.0 / ps if ps != 0 else 1e6
    dif2 = (i[:, None] - i[None, :]) ** 2
    div = ngp * (ngp - 1)
    contrast = float(np.sum(p[:, None] * p[None, :] * dif2) * np.sum(s_i) / Nvp) / div if div else 0.0
    absdiff = float(np.sum(np.abs((i * p)[:, None] - (i * p)[None, :])))
    busy = ps / absdiff if absdiff != 0 else 0.0
    pisi = p * s_i
    num = pisi[:, None] + pisi[None, :]
    den = p[:, None] + p[None, :]
    complexity = float(np.sum(np.sqrt(dif2) * num / den) / Nvp)
    ssum = float(np.sum(s_i))
    strength = float(np.sum((p[:, None] + p[None, :]) * dif2)) / ssum if ssum != 0 else 0.0
    return {
        "Busyness": busy,
        "Coarseness": coarse,
        "Complexity": complexity,
        "Contrast": contrast,
        "Strength": strength,
    }


# ------------------------------------------------------------------------------------------------ GLDM
def gldm(binned: np.ndarray, mask: np.ndarray, force2d: bool = False, alpha: float = 0.0) -> dict[str, float]:
    """GLDM features: a voxel's dependence is 1 + the number of its neighbours (distance 1, inside the mask)
    whose grey level differs by at most ``alpha``."""
    k = _neighbour_kernel(force2d)
    dep = np.zeros(binned.shape, dtype=np.int64)
    vals = np.where(mask, binned, -(10**9)).astype(np.float64)
    pad = np.pad(vals, 1, constant_values=-(10**9))
    for off in np.argwhere(k > 0):
        sl = tuple(slice(o, o + n) for o, n in zip(off, binned.shape, strict=True))
        dep += (np.abs(pad[sl] - vals) <= alpha) & (pad[sl] > -(10**8))
    levels = np.unique(binned[mask])
    lut = np.zeros(int(levels.max()) + 1, dtype=np.int64)
    lut[levels] = np.arange(levels.size)
    nd = int(dep[mask].max()) + 1
    P = np.zeros((levels.size, nd))
    np.add.at(P, (lut[binned[mask]], dep[mask]), 1)
    pd_ = P.sum(0)
    pg = P.sum(1)
    ivec = levels.astype(np.float64)
    jvec = np.arange(1, nd + 1, dtype=np.float64)
    keep = pd_ > 0
    P, pd_, jvec = P[:, keep], pd_[keep], jvec[keep]
    Nz = P.sum() or 1.0
    pgn, pdn, pn = pg / Nz, pd_ / Nz, P / Nz
    u_i = np.sum(pgn * ivec)
    u_j = np.sum(pdn * jvec)
    i2, j2 = ivec[:, None], jvec[None, :]
    return {
        "DependenceEntropy": float(-np.sum(pn * np.log2(pn + EPS))),
        "DependenceNonUniformity": float(np.sum(pd_**2) / Nz),
        "DependenceNonUniformityNormalized": float(np.sum(pd_**2) / Nz**2),
        "DependenceVariance": float(np.sum(pdn * (jvec - u_j) ** 2)),
        "GrayLevelNonUniformity": float(np.sum(pg**2) / Nz),
        "GrayLevelVariance": float(np.sum(pgn * (ivec - u_i) ** 2)),
        "HighGrayLevelEmphasis": float(np.sum(pg * ivec**2) / Nz),
        "LargeDependenceEmphasis": float(np.sum(pd_ * jvec**2) / Nz),
        "LargeDependenceHighGrayLevelEmphasis": float(np.sum(P * j2**2 * i2**2) / Nz),
        "LargeDependenceLowGrayLevelEmphasis": float(np.sum(P * j2**2 / i2**2) / Nz),
        "LowGrayLevelEmphasis": float(np.sum(pg / ivec**2) / Nz),
        "SmallDependenceEmphasis": float(np.sum(pd_ / jvec**2) / Nz),
        "SmallDependenceHighGrayLevelEmphasis": float(np.sum(P * i2**2 / j2**2) / Nz),
        "SmallDependenceLowGrayLevelEmphasis": float(np.sum(P / (i2**2 * j2**2)) / Nz),
    }
