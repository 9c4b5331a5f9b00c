"""Batched feature classes: the same features as :mod:`medimg.radiomics.features`, for K images that share one
mask (the original image and its filtered versions), computed together.

Every sum over a matrix entry becomes a ``bincount`` keyed by the image index, so the cost is a few NumPy calls per
direction for the whole batch instead of per image and per feature. Inputs: ``binned`` ``(K, z, y, x)`` grey
levels (>= 1 inside the mask), ``mask`` ``(z, y, x)`` bool. Outputs: ``{feature name: array of K values}``.
Conventions are those of :mod:`medimg.radiomics.features` (pyradiomics 3.0.1); MCC (GLCM) and GLDM are not
batched (FRD v1 uses neither).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medimg.radiomics.features import EPS, _neighbour_kernel, _pair_slices, directions

Batch = dict[str, np.ndarray]


def _bc(keys: np.ndarray, weights: np.ndarray | None, n: int) -> np.ndarray:
    return np.bincount(keys, weights, minlength=n)[:n]


def firstorder(
    images: np.ndarray, mask: np.ndarray, binned: np.ndarray, spacing: Sequence[float], shift: float
) -> Batch:
    """First-order features of each image inside the shared mask."""
    x = images[:, mask].astype(np.float64)  # (K, N)
    k, n = x.shape
    b = binned[:, mask]
    base = int(b.max()) + 1
    cnt = _bc((np.arange(k)[:, None] * base + b).ravel(), None, k * base).reshape(k, base).astype(np.float64)
    p = cnt / n
    shifted = x + shift
    energy = np.sum(shifted**2, 1)
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90], axis=1)
    mean = x.mean(1)
    dev = x - mean[:, None]
    m2 = np.mean(dev**2, 1)
    m3 = np.mean(dev**3, 1)
    m4 = np.mean(dev**4, 1)
    safe = np.where(m2 == 0, 1.0, m2)
    inr = (x >= p10[:, None]) & (x <= p90[:, None])
    nin = inr.sum(1)
    rmean = np.where(inr, x, 0).sum(1) / nin
    rmad = np.where(inr, np.abs(x - rmean[:, None]), 0).sum(1) / nin
    mx, mn = x.max(1), x.min(1)
    return {
        "10Percentile": p10,
        "90Percentile": p90,
        "Energy": energy,
        "Entropy": -np.sum(p * np.log2(p + EPS), 1),
        "InterquartileRange": p75 - p25,
        "Kurtosis": np.where(m2 == 0, 0.0, m4 / safe**2),
        "Maximum": mx,
        "MeanAbsoluteDeviation": np.mean(np.abs(dev), 1),
        "Mean": mean,
        "Median": p50,
        "Minimum": mn,
        "Range": mx - mn,
        "RobustMeanAbsoluteDeviation": rmad,
        "RootMeanSquared": np.sqrt(energy / n),
        "Skewness": np.where(m2 == 0, 0.0, m3 / safe**1.5),
        "TotalEnergy": energy * float(np.prod(spacing)),
        "Uniformity": np.sum(p**2, 1),
        "Variance": m2,
    }


def _nanmean_rows(rows: list[Batch], names: Sequence[str], k: int) -> Batch:
    if not rows:
        return {n: np.full(k, np.nan) for n in names}
    return {n: np.nanmean(np.stack([r[n] for r in rows]), 0) for n in names}


def glcm(binned: np.ndarray, mask: np.ndarray, force2d: bool) -> Batch:
    """GLCM features (symmetrical, distance 1, averaged over the directions that hold pairs), MCC excluded."""
    k = binned.shape[0]
    ng = binned[:, mask].max(1).astype(np.int64)  # per image: highest grey level (pyradiomics' Ng)
    NG = int(ng.max())
    base = NG + 1
    kk = np.arange(k)
    ngf = ng.astype(np.float64)[:, None]
    kDiff = np.arange(NG, dtype=np.float64)[None, :]
    kSum = np.arange(2, 2 * NG + 1, dtype=np.float64)[None, :]
    rows: list[Batch] = []
    for d in directions(force2d):
        sa, sb = _pair_slices(mask.shape, d)
        both = mask[sa] & mask[sb]
        if not both.any():
            continue
        ga = binned[(slice(None), *sa)][:, both].astype(np.int64)
        gb = binned[(slice(None), *sb)][:, both].astype(np.int64)
        off = (kk * base * base)[:, None]
        codes = np.concatenate([off + ga * base + gb, off + gb * base + ga], 1).ravel()
        if k * base * base <= 8_000_000:  # dense count, then the non-zero cells (faster than sorting)
            full = np.bincount(codes, minlength=k * base * base)
            uniq = np.flatnonzero(full)
            cnt = full[uniq]
        else:
            uniq, cnt = np.unique(codes, return_counts=True)
        ki = uniq // (base * base)
        rem = uniq % (base * base)
        iv = rem // base
        jv = rem % base
        p = cnt / (2.0 * ga.shape[1])
        i = iv.astype(np.float64)
        j = jv.astype(np.float64)

        def s(w: np.ndarray, ki: np.ndarray = ki) -> np.ndarray:
            return _bc(ki, w, k)

        ux = s(p * i)
        uy = s(p * j)
        sm = i + j - ux[ki] - uy[ki]
        di = i - ux[ki]
        dj = j - uy[ki]
        sigx = np.sqrt(s(p * di**2))
        sigy = np.sqrt(s(p * dj**2))
        corm = s(p * di * dj)
        corr = np.where(sigx * sigy == 0, 1.0, corm / (sigx * sigy + EPS))
        pxSuby = _bc(ki * NG + np.abs(iv - jv), p, k * NG).reshape(k, NG)
        pxAddy = _bc(ki * (2 * NG + 1) + iv + jv, p, k * (2 * NG + 1)).reshape(k, 2 * NG + 1)[:, 2:]
        px = _bc(ki * base + iv, p, k * base).reshape(k, base)
        hxy = -s(p * np.log2(p + EPS))
        hx = -np.sum(px * np.log2(px + EPS), 1)
        pxpy_e = px[ki, iv] * px[ki, jv]
        hxy1 = -s(p * np.log2(pxpy_e + EPS))
        # HXY2 = -sum_ij px(i) px(j) log2(px(i) px(j) + eps) = 2 HX up to eps / (px(i) px(j)) (< 1e-9 here)
        with np.errstate(divide="ignore", invalid="ignore"):
            hxy2 = -2 * np.sum(np.where(px > 0, px * np.log2(px), 0.0), 1)
        imc1 = np.where(hx != 0, (hxy - hxy1) / np.where(hx != 0, hx, 1), 0.0)
        with np.errstate(invalid="ignore"):
            imc2 = np.where(hxy2 == hxy, 0.0, np.sqrt(1 - np.exp(-2 * (hxy2 - hxy))))
        diffavg = np.sum(kDiff * pxSuby, 1)
        maxp = np.zeros(k)
        starts = np.flatnonzero(np.r_[True, ki[1:] != ki[:-1]])  # cells are sorted by image
        maxp[ki[starts]] = np.maximum.reduceat(p, starts)
        rows.append(
            {
                "Autocorrelation": s(p * i * j),
                "ClusterProminence": s(p * sm**4),
                "ClusterShade": s(p * sm**3),
                "ClusterTendency": s(p * sm**2),
                "Contrast": s(p * (i - j) ** 2),
                "Correlation": corr,
                "DifferenceAverage": diffavg,
                "DifferenceEntropy": -np.sum(pxSuby * np.log2(pxSuby + EPS), 1),
                "DifferenceVariance": np.sum(pxSuby * (kDiff - diffavg[:, None]) ** 2, 1),
                "Id": np.sum(pxSuby / (1 + kDiff), 1),
                "Idm": np.sum(pxSuby / (1 + kDiff**2), 1),
                "Idmn": np.sum(pxSuby / (1 + kDiff**2 / ngf**2), 1),
                "Idn": np.sum(pxSuby / (1 + kDiff / ngf), 1),
                "Imc1": imc1,
                "Imc2": imc2,
                "InverseVariance": np.sum(pxSuby[:, 1:] / kDiff[:, 1:] ** 2, 1),
                "JointAverage": ux,
                "JointEnergy": s(p**2),
                "JointEntropy": hxy,
                "MaximumProbability": maxp,
                "SumAverage": np.sum(kSum * pxAddy, 1),
                "SumEntropy": -np.sum(pxAddy * np.log2(pxAddy + EPS), 1),
                "SumSquares": s(p * di**2),
            }
        )
    from medimg.radiomics.features import GLCM

    return _nanmean_rows(rows, [n for n in GLCM if n != "MCC"], k)


def _run_order(shape: Sequence[int], d: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat voxel order that lists the lines along ``d`` one after another, and where a new line starts."""
    idx = np.indices(shape).reshape(3, -1)
    a = next(x for x in range(3) if d[x] != 0)
    t = idx[a] * d[a]
    key = idx - t[None, :] * np.asarray(d)[:, None]
    order = np.lexsort((t, key[2], key[1], key[0]))
    kz, tt = key[:, order], t[order]
    newline = np.ones(order.size, dtype=bool)
    newline[1:] = np.any(kz[:, 1:] != kz[:, :-1], 0) | (tt[1:] != tt[:-1] + 1)
    return order, newline


def glrlm(binned: np.ndarray, mask: np.ndarray, force2d: bool) -> Batch:
    """GLRLM features, averaged over the directions that hold runs."""
    k = binned.shape[0]
    base = int(binned[:, mask].max()) + 1
    nr = int(max(mask.shape))
    vals = np.where(mask[None], binned, 0).reshape(k, -1)
    ivec = np.arange(base, dtype=np.float64)
    ivec[0] = 1.0  # level 0 never holds runs; avoids 0/0
    jvec = np.arange(1, nr + 1, dtype=np.float64)
    rows: list[Batch] = []
    for d in directions(force2d):
        order, newline = _run_order(mask.shape, d)
        v = vals[:, order]
        brk = np.ones(v.shape, dtype=bool)
        brk[:, 1:] = (v[:, 1:] != v[:, :-1]) | newline[None, 1:]
        starts = np.flatnonzero(brk.ravel())
        lengths = np.diff(np.append(starts, v.size))
        g = v.ravel()[starts]
        keep = g > 0
        if not keep.any():
            continue
        ki = starts[keep] // v.shape[1]
        g, ln = g[keep], lengths[keep]
        codes = (ki * base + g) * nr + (ln - 1)
        P = _bc(codes, None, k * base * nr).reshape(k, base, nr).astype(np.float64)
        Nr = P.sum((1, 2))
        pr = P.sum(1)
        pg = P.sum(2)
        prn = pr / Nr[:, None]
        pgn = pg / Nr[:, None]
        u_i = np.sum(pgn * ivec, 1, keepdims=True)
        u_j = np.sum(prn * jvec, 1, keepdims=True)
        pn = P / Nr[:, None, None]
        i2 = ivec[None, :, None] ** 2
        j2 = jvec[None, None, :] ** 2
        rows.append(
            {
                "GrayLevelNonUniformity": np.sum(pg**2, 1) / Nr,
                "GrayLevelNonUniformityNormalized": np.sum(pg**2, 1) / Nr**2,
                "GrayLevelVariance": np.sum(pgn * (ivec - u_i) ** 2, 1),
                "HighGrayLevelRunEmphasis": np.sum(pg * ivec**2, 1) / Nr,
                "LongRunEmphasis": np.sum(pr * jvec**2, 1) / Nr,
                "LongRunHighGrayLevelEmphasis": np.sum(P * j2 * i2, (1, 2)) / Nr,
                "LongRunLowGrayLevelEmphasis": np.sum(P * j2 / i2, (1, 2)) / Nr,
                "LowGrayLevelRunEmphasis": np.sum(pg / ivec**2, 1) / Nr,
                "RunEntropy": -np.sum(pn * np.log2(pn + EPS), (1, 2)),
                "RunLengthNonUniformity": np.sum(pr**2, 1) / Nr,
                "RunLengthNonUniformityNormalized": np.sum(pr**2, 1) / Nr**2,
                "RunPercentage": Nr / np.sum(pr * jvec, 1),
                "RunVariance": np.sum(prn * (jvec - u_j) ** 2, 1),
                "ShortRunEmphasis": np.sum(pr / jvec**2, 1) / Nr,
                "ShortRunHighGrayLevelEmphasis": np.sum(P * i2 / j2, (1, 2)) / Nr,
                "ShortRunLowGrayLevelEmphasis": np.sum(P / (i2 * j2), (1, 2)) / Nr,
            }
        )
    from medimg.radiomics.features import GLRLM

    return _nanmean_rows(rows, GLRLM, k)


def glszm(binned: np.ndarray, mask: np.ndarray, force2d: bool) -> Batch:
    """GLSZM features: zones = connected voxels of one grey level inside the mask (26- / 8-connectivity)."""
    k = binned.shape[0]
    nv = int(mask.sum())
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[mask] = np.arange(nv)
    rows, cols = [], []
    for d in directions(force2d):
        sa, sb = _pair_slices(mask.shape, d)
        both = mask[sa] & mask[sb]
        ia, ib = index[sa][both], index[sb][both]
        same = binned[(slice(None), *sa)][:, both] == binned[(slice(None), *sb)][:, both]  # (K, pairs)
        kk, pp = np.nonzero(same)
        rows.append(kk * nv + ia[pp])
        cols.append(kk * nv + ib[pp])
    n = k * nv
    r = np.concatenate(rows)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, np.concatenate(cols))), shape=(n, n))
    nz, zone = connected_components(graph, directed=False)
    size = np.bincount(zone, minlength=nz)
    first = np.zeros(nz, dtype=np.int64)
    first[zone[::-1]] = np.arange(n)[::-1]
    zk = first // nv
    g = binned[:, mask].ravel()[first].astype(np.float64)
    sz = size.astype(np.float64)
    Nz = np.bincount(zk, minlength=k).astype(np.float64)
    Np = _bc(zk, sz, k)

    def s(w: np.ndarray) -> np.ndarray:
        return _bc(zk, w, k)

    base = int(g.max()) + 1
    pg = _bc(zk * base + g.astype(np.int64), None, k * base).reshape(k, base).astype(np.float64)
    ps = _bc(zk * nv + size - 1, None, k * nv).reshape(k, nv).astype(np.float64)
    levels = np.arange(base, dtype=np.float64)
    jv = np.arange(1, nv + 1, dtype=np.float64)
    pgn = pg / Nz[:, None]
    psn = ps / Nz[:, None]
    u_i = np.sum(pgn * levels, 1, keepdims=True)
    u_j = np.sum(psn * jv, 1, keepdims=True)
    _, cnt_inv, counts = np.unique(
        (zk * base + g.astype(np.int64)) * (nv + 1) + size, return_inverse=True, return_counts=True
    )
    # entropy of the normalised GLSZM: each distinct (image, level, size) cell counted once
    cell_first = np.zeros(counts.size, dtype=np.int64)
    cell_first[cnt_inv[::-1]] = np.arange(cnt_inv.size)[::-1]
    pc = counts / Nz[zk[cell_first]]
    entropy = _bc(zk[cell_first], -pc * np.log2(pc + EPS), k)
    return {
        "GrayLevelNonUniformity": np.sum(pg**2, 1) / Nz,
        "GrayLevelNonUniformityNormalized": np.sum(pg**2, 1) / Nz**2,
        "GrayLevelVariance": np.sum(pgn * (levels - u_i) ** 2, 1),
        "HighGrayLevelZoneEmphasis": s(g**2) / Nz,
        "LargeAreaEmphasis": s(sz**2) / Nz,
        "LargeAreaHighGrayLevelEmphasis": s(g**2 * sz**2) / Nz,
        "LargeAreaLowGrayLevelEmphasis": s(sz**2 / g**2) / Nz,
        "LowGrayLevelZoneEmphasis": s(1 / g**2) / Nz,
        "SizeZoneNonUniformity": np.sum(ps**2, 1) / Nz,
        "SizeZoneNonUniformityNormalized": np.sum(ps**2, 1) / Nz**2,
        "SmallAreaEmphasis": s(1 / sz**2) / Nz,
        "SmallAreaHighGrayLevelEmphasis": s(g**2 / sz**2) / Nz,
        "SmallAreaLowGrayLevelEmphasis": s(1 / (g**2 * sz**2)) / Nz,
        "ZoneEntropy": entropy,
        "ZonePercentage": Nz / Np,
        "ZoneVariance": np.sum(psn * (jv - u_j) ** 2, 1),
    }


def ngtdm(binned: np.ndarray, mask: np.ndarray, force2d: bool) -> Batch:
    """NGTDM features (neighbours at distance 1 inside the mask; voxels without one left out)."""
    k = binned.shape[0]
    kern = _neighbour_kernel(force2d)
    vals = np.where(mask[None], binned, 0).astype(np.float64)
    ssum = ndimage.convolve(vals, kern[None], mode="constant", cval=0.0)
    cnt = ndimage.convolve(mask.astype(np.float64), kern, mode="constant", cval=0.0)
    valid = mask & (cnt > 0)
    g = binned[:, valid].astype(np.int64)  # (K, M)
    diff = np.abs(g - ssum[:, valid] / cnt[valid][None])
    base = int(g.max()) + 1
    keys = (np.arange(k)[:, None] * base + g).ravel()
    n_i = _bc(keys, None, k * base).reshape(k, base).astype(np.float64)
    s_i = _bc(keys, diff.ravel(), k * base).reshape(k, base)
    i = np.arange(base, dtype=np.float64)[None, :]
    Nvp = n_i.sum(1)
    p = n_i / Nvp[:, None]
    present = p > 0
    ngp = present.sum(1).astype(np.float64)
    ps = np.sum(p * s_i, 1)
    coarse = np.where(ps != 0, 1 / np.where(ps != 0, ps, 1), 1e6)
    e1 = np.sum(p * i, 1)
    e2 = np.sum(p * i**2, 1)
    div = ngp * (ngp - 1)
    con = 2 * (e2 - e1**2) * np.sum(s_i, 1) / Nvp  # sum_ij p_i p_j (i - j)^2 = 2 Var(i)
    contrast = np.where(div != 0, con / np.where(div != 0, div, 1), 0.0)
    # busyness: sum over present pairs of |a_i - a_j|, a = i p_i: from the sorted values
    ip = np.where(present, i * p, np.inf)
    srt = np.sort(ip, 1)
    rank = np.arange(base, dtype=np.float64)[None, :]
    coef = 2 * rank - ngp[:, None] + 1
    absdiff = 2 * np.sum(np.where(np.isfinite(srt), srt * coef, 0.0), 1)
    busy = np.where(absdiff != 0, ps / np.where(absdiff != 0, absdiff, 1), 0.0)
    # strength: sum over present pairs of (p_i + p_j)(i - j)^2 = 2 sum_i p_i (Ngp i^2 - 2 i S1 + S2)
    s1 = np.sum(np.where(present, i, 0), 1, keepdims=True)
    s2 = np.sum(np.where(present, i**2, 0), 1, keepdims=True)
    st = 2 * np.sum(p * (ngp[:, None] * i**2 - 2 * i * s1 + s2), 1)
    ssi = np.sum(s_i, 1)
    strength = np.where(ssi != 0, st / np.where(ssi != 0, ssi, 1), 0.0)
    # complexity: over the grey levels present in any image of the batch
    cols = np.flatnonzero(present.any(0))
    pc, sc, ic = p[:, cols], s_i[:, cols], i[:, cols]
    pisi = pc * sc
    num = pisi[:, :, None] + pisi[:, None, :]
    pr = (pc > 0)[:, :, None] & (pc > 0)[:, None, :]
    den = pc[:, :, None] + pc[:, None, :]
    den = np.where(den == 0, 1, den)
    complexity = np.sum(np.where(pr, np.abs(ic[:, :, None] - ic[:, None, :]) * num / den, 0), (1, 2)) / Nvp
    return {
        "Busyness": busy,
        "Coarseness": coarse,
        "Complexity": complexity,
        "Contrast": contrast,
        "Strength": strength,
    }
