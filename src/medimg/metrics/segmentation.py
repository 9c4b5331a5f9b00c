"""Segmentation metrics for every class of a label map in one call, in physical units (mm, mL).

Overlap: Dice, IoU, precision, recall, volumes (mL), volume difference, volume similarity.
Surface: Hausdorff (max), HD95 (or any percentile), ASSD, MASD, NSD (surface Dice) at a tolerance in mm,
boundary IoU (band width in mm), clDice (tubular structures).

How it is fast: one ``scipy.ndimage.find_objects`` pass gives every class's bounding box in both maps;
each class is then processed on the crop of the union of its boxes (plus a 1-voxel zero frame); surface
distances are nearest-neighbour queries between the two surfaces' points (a KD-tree, exact Euclidean
distances in mm), never a full-volume distance transform. Classes are processed in parallel threads.

Conventions (``convention=``), each reproducing its reference library:

``"deepmind"`` (default) -- DeepMind ``surface-distance``
    Surface = surfels on the voxel-corner grid (2x2x2 neighbourhood codes), each weighted by its area (its
    length in 2D) from surface-distance's lookup table. HD-percentile: area-weighted, per direction
    (``searchsorted`` on the cumulative area), the larger of the two directions. ASSD = area-weighted mean
    over both surfaces; MASD = mean of the two directed area-weighted averages; NSD = surface area within the
    tolerance over total area. Empty masks: both empty -> every metric NaN; one empty -> Dice/IoU/NSD 0,
    distances inf.
``"monai"`` -- MONAI (``compute_hausdorff_distance``, ``compute_average_surface_distance``,
    ``compute_surface_dice`` with ``use_subvoxels=False``)
    Surface = edge voxels (mask XOR its erosion with a cross structuring element), equal weights; distances
    rounded to float32 as MONAI does. HD-percentile = max of the two directed linear-interpolated quantiles;
    ASSD = mean of all distances of both directions; NSD = count within tolerance over count of edge voxels.
    Empty masks follow MONAI (both empty -> NaN; one empty -> HD and ASSD inf, HD95 NaN -- MONAI's quantile
    of infinite distances -- and NSD 0).
``"metricsreloaded"`` -- MetricsReloaded's formulas (border = mask minus its erosion, float64 distances,
    HD-percentile = max of the directed ``np.percentile``, ASSD = (sum of both directions' distances) /
    (number of border voxels), MASD = mean of the two directed means). Empty: both empty -> Dice 1 and
    distances 0 (MetricsReloaded's "correct solution"); one empty -> Dice 0, distances NaN.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from medimg.errors import DimensionError, GeometryError, MedimgError
from medimg.image import Image, LabelMap, check_same_geometry

Convention = Literal["deepmind", "monai", "metricsreloaded"]
CONVENTIONS: tuple[str, ...] = ("deepmind", "monai", "metricsreloaded")

OVERLAP_METRICS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "volume_ref_ml",
    "volume_pred_ml",
    "volume_difference_ml",
    "volume_similarity",
)
SURFACE_METRICS = ("hd", "hd95", "assd", "masd", "nsd")
OPTIONAL_METRICS = ("boundary_iou", "cldice")
DEFAULT_METRICS = OVERLAP_METRICS + SURFACE_METRICS
ALL_METRICS = DEFAULT_METRICS + OPTIONAL_METRICS


@dataclass
class _Surface:
    """Surface points (mm, crop coordinates) and their weights (areas in mm^2, lengths in mm, or 1)."""

    points: np.ndarray
    weights: np.ndarray

    @property
    def empty(self) -> bool:
        return self.points.shape[0] == 0


_DM_TABLES: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray, int]] = {}


def _deepmind_tables(spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """(neighbour-code kernel, code -> area/length table, code of a full neighbourhood) from surface-distance."""
    if spacing not in _DM_TABLES:
        from surface_distance import lookup_tables as lt

        if len(spacing) == 3:
            table = lt.create_table_neighbour_code_to_surface_area(spacing)
            _DM_TABLES[spacing] = (lt.ENCODE_NEIGHBOURHOOD_3D_KERNEL, np.asarray(table), 255)
        else:
            table = lt.create_table_neighbour_code_to_contour_length(spacing)
            _DM_TABLES[spacing] = (lt.ENCODE_NEIGHBOURHOOD_2D_KERNEL, np.asarray(table), 15)
    return _DM_TABLES[spacing]


def _surface(mask: np.ndarray, spacing: tuple[float, ...], convention: str) -> _Surface:
    """Surface of a binary crop that has a zero frame of at least one voxel."""
    sp = np.asarray(spacing)
    if convention == "deepmind":
        kernel, table, full = _deepmind_tables(spacing)
        code = ndimage.correlate(mask.astype(np.uint8), kernel, mode="constant", cval=0)
        border = (code != 0) & (code != full)
        idx = np.nonzero(border)
        return _Surface(np.stack(idx, axis=1) * sp, table[code[idx]])
    edges = mask & ~ndimage.binary_erosion(mask)
    idx = np.nonzero(edges)
    return _Surface(np.stack(idx, axis=1) * sp, np.ones(len(idx[0])))


def _distances(src: _Surface, dst: _Surface, workers: int) -> np.ndarray:
    """Distance (mm) from every point of ``src`` to the nearest point of ``dst`` (inf when ``dst`` is empty)."""
    if src.empty:
        return np.zeros(0)
    if dst.empty:
        return np.full(src.points.shape[0], np.inf)
    d, _ = cKDTree(dst.points, leafsize=32).query(src.points, k=1, workers=workers)
    return np.asarray(d, dtype=np.float64)


def _weighted_percentile(d: np.ndarray, w: np.ndarray, q: float) -> float:
    """surface-distance's area-weighted percentile: first distance whose cumulative area reaches q %."""
    if d.size == 0:
        return math.inf
    order = np.argsort(d, kind="stable")
    ds, ws = d[order], w[order]
    cum = np.cumsum(ws) / np.sum(ws)
    i = int(np.searchsorted(cum, q / 100.0))
    return float(ds[min(i, ds.size - 1)])


def _surface_metrics(
    s_ref: _Surface, s_pred: _Surface, convention: str, hd_percentile: float, nsd_tol: float, workers: int
) -> dict[str, float]:
    d_rp = _distances(s_ref, s_pred, workers)  # reference surface -> prediction
    d_pr = _distances(s_pred, s_ref, workers)  # prediction surface -> reference
    if convention == "monai":
        d_rp, d_pr = d_rp.astype(np.float32).astype(np.float64), d_pr.astype(np.float32).astype(np.float64)
    out: dict[str, float] = {}
    if convention == "deepmind":
        w_r, w_p = s_ref.weights, s_pred.weights
        out["hd"] = max(_weighted_percentile(d_rp, w_r, 100.0), _weighted_percentile(d_pr, w_p, 100.0))
        out["hd95"] = max(
            _weighted_percentile(d_rp, w_r, hd_percentile), _weighted_percentile(d_pr, w_p, hd_percentile)
        )
        a_r, a_p = float(np.sum(w_r)), float(np.sum(w_p))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_r = float(np.sum(d_rp * w_r) / a_r) if a_r else math.nan
            mean_p = float(np.sum(d_pr * w_p) / a_p) if a_p else math.nan
            total = a_r + a_p
            out["assd"] = float((np.sum(d_rp * w_r) + np.sum(d_pr * w_p)) / total) if total else math.nan
            out["masd"] = 0.5 * (mean_r + mean_p)
            within = float(np.sum(w_r[d_rp <= nsd_tol]) + np.sum(w_p[d_pr <= nsd_tol]))
            out["nsd"] = within / total if total else math.nan
        return out
    n = d_rp.size + d_pr.size
    if n == 0:
        return {k: math.nan for k in SURFACE_METRICS}

    def directed(d: np.ndarray, q: float | None) -> float:
        if d.size == 0:
            return math.nan if convention == "metricsreloaded" else -math.inf
        return float(np.max(d)) if q is None else float(np.percentile(d, q))

    out["hd"] = max(directed(d_rp, None), directed(d_pr, None))
    out["hd95"] = max(directed(d_rp, hd_percentile), directed(d_pr, hd_percentile))
    both = np.concatenate([d_rp, d_pr])
    out["assd"] = float(np.mean(both))
    out["masd"] = 0.5 * (float(np.mean(d_rp)) if d_rp.size else math.nan) + 0.5 * (
        float(np.mean(d_pr)) if d_pr.size else math.nan
    )
    out["nsd"] = float(np.count_nonzero(d_rp <= nsd_tol) + np.count_nonzero(d_pr <= nsd_tol)) / n
    return out


def _boundary_band(mask: np.ndarray, spacing: tuple[float, ...], width_mm: float) -> np.ndarray:
    """Voxels of ``mask`` within ``width_mm`` of its boundary (distance to the nearest background voxel)."""
    if not mask.any():
        return mask
    dist = ndimage.distance_transform_edt(mask, sampling=spacing)
    return mask & (np.asarray(dist) <= width_mm)


def _cldice(pred: np.ndarray, ref: np.ndarray) -> float:
    from skimage.morphology import skeletonize

    if not pred.any() and not ref.any():
        return math.nan
    if not pred.any() or not ref.any():
        return 0.0
    s_p, s_r = skeletonize(pred), skeletonize(ref)
    t_prec = float(np.count_nonzero(s_p & ref)) / max(1, int(np.count_nonzero(s_p)))
    t_sens = float(np.count_nonzero(s_r & pred)) / max(1, int(np.count_nonzero(s_r)))
    return 0.0 if t_prec + t_sens == 0 else 2 * t_prec * t_sens / (t_prec + t_sens)


def _bbox_union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _class_metrics(
    pred_crop: np.ndarray,
    ref_crop: np.ndarray,
    spacing: tuple[float, ...],
    metrics: Sequence[str],
    convention: str,
    hd_percentile: float,
    nsd_tol: float,
    biou_mm: float,
    workers: int,
) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    p, r = pred_crop, ref_crop
    tp = int(np.count_nonzero(p & r))
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    fp, fn = n_p - tp, n_r - tp
    res: dict[str, float] = {"tp_voxels": tp, "fp_voxels": fp, "fn_voxels": fn}
    both_empty = n_p == 0 and n_r == 0
    if both_empty and convention == "metricsreloaded":
        res.update(dice=1.0, iou=1.0, precision=1.0, recall=1.0)
    elif both_empty:
        res.update(dice=math.nan, iou=math.nan, precision=math.nan, recall=math.nan)
    else:
        res["dice"] = 2 * tp / (n_p + n_r)
        res["iou"] = tp / (tp + fp + fn)
        res["precision"] = tp / n_p if n_p else math.nan
        res["recall"] = tp / n_r if n_r else math.nan
    res["volume_ref_ml"] = n_r * voxel_ml
    res["volume_pred_ml"] = n_p * voxel_ml
    res["volume_difference_ml"] = (n_p - n_r) * voxel_ml
    res["volume_similarity"] = 1.0 - abs(n_p - n_r) / (n_p + n_r) if (n_p + n_r) else math.nan
    if any(m in SURFACE_METRICS for m in metrics):
        if both_empty:
            surf = {k: (0.0 if convention == "metricsreloaded" else math.nan) for k in SURFACE_METRICS}
            if convention == "metricsreloaded":
                surf["nsd"] = 1.0
        elif convention == "metricsreloaded" and (n_p == 0 or n_r == 0):
            surf = {k: math.nan for k in SURFACE_METRICS}
            surf["nsd"] = 0.0
        else:
            surf = _surface_metrics(
                _surface(r, spacing, convention),
                _surface(p, spacing, convention),
                convention,
                hd_percentile,
                nsd_tol,
                workers,
            )
            if convention == "monai" and (n_p == 0 or n_r == 0):
                # MONAI: HD inf, but HD95 NaN (torch.quantile of infinities), ASSD inf, NSD 0
                surf.update(hd=math.inf, hd95=math.nan, assd=math.inf, masd=math.inf, nsd=0.0)
        res.update(surf)
    if "boundary_iou" in metrics:
        bp, br = _boundary_band(p, spacing, biou_mm), _boundary_band(r, spacing, biou_mm)
        union = int(np.count_nonzero(bp | br))
        res["boundary_iou"] = int(np.count_nonzero(bp & br)) / union if union else math.nan
    if "cldice" in metrics:
        res["cldice"] = _cldice(p, r)
    return {k: v for k, v in res.items() if k in metrics or k.endswith("_voxels")}


def _as_arrays(
    pred: Image | np.ndarray, ref: Image | np.ndarray, spacing: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], dict[int, str]]:
    names: dict[int, str] = {}
    if isinstance(pred, Image) and isinstance(ref, Image):
        check_same_geometry(pred, ref, what="prediction and reference")
        sp = tuple(float(s) for s in (spacing if spacing is not None else ref.spacing))
        for img in (pred, ref):
            if isinstance(img, LabelMap):
                names.update(img.names)
        p, r = pred.array, ref.array
    else:
        p = np.asarray(pred.array if isinstance(pred, Image) else pred)
        r = np.asarray(ref.array if isinstance(ref, Image) else ref)
        if spacing is None:
            src = pred if isinstance(pred, Image) else ref if isinstance(ref, Image) else None
            sp = tuple(float(s) for s in src.spacing) if src is not None else (1.0,) * p.ndim
        else:
            sp = tuple(float(s) for s in spacing)
    if p.shape != r.shape:
        raise GeometryError(f"Prediction shape {p.shape} differs from reference shape {r.shape}.")
    if p.ndim not in (2, 3) or len(sp) != p.ndim:
        raise DimensionError(f"Label maps must be 2D or 3D with one spacing per axis; got {p.shape}, spacing {sp}.")
    for name, a in (("prediction", p), ("reference", r)):
        if a.dtype == bool:
            continue
        if not np.issubdtype(a.dtype, np.integer):
            if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
                continue
            raise MedimgError(f"The {name} must be an integer label map (got {a.dtype} with fractional values).")
    return p, r, sp, names


def segmentation_metrics(
    pred: Image | np.ndarray,
    ref: Image | np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    labels: Iterable[int] | None = None,
    metrics: Sequence[str] | None = None,
    convention: Convention = "deepmind",
    hd_percentile: float = 95.0,
    nsd_tolerance_mm: float | Mapping[int, float] = 2.0,
    boundary_iou_mm: float = 2.0,
    workers: int | None = None,
    ignore_label: int | None = None,
) -> dict[int, dict[str, float]]:
    """Metrics per class of two label maps on the same grid.

    Parameters
    ----------
    pred, ref:
        Label maps (:class:`LabelMap`/:class:`Image` -- their grids must agree -- or integer/bool arrays).
    spacing:
        Voxel spacing in mm (default: the images' spacing, or 1).
    labels:
        Label values to evaluate (default: every non-zero value present in either map).
    metrics:
        Names from :data:`ALL_METRICS` (default :data:`DEFAULT_METRICS`).
    convention:
        ``"deepmind"`` (default), ``"monai"`` or ``"metricsreloaded"``; see the module docstring.
    hd_percentile:
        Percentile for ``hd95`` (95 by default).
    nsd_tolerance_mm:
        NSD tolerance in mm, one value or one per label.
    boundary_iou_mm:
        Band width of boundary IoU in mm.
    workers:
        Threads used over classes (default: number of CPUs).
    ignore_label:
        Value that marks unannotated voxels in the *reference* (nnU-Net's ``ignore`` label): those voxels are set
        to background in both maps before measuring, so they count as neither true/false positive nor negative
        (overlap metrics then cover the annotated voxels only). It is never a class. Surface distances are
        measured on the masked maps: with sparsely annotated references (a few slices) prefer Dice/IoU.

    Returns ``{label: {metric: value}}`` plus ``tp_voxels``/``fp_voxels``/``fn_voxels``. Distances in mm,
    volumes in mL.
    """
    if convention not in CONVENTIONS:
        raise MedimgError(f"Unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}.")
    wanted = tuple(metrics) if metrics is not None else DEFAULT_METRICS
    unknown = [m for m in wanted if m not in ALL_METRICS]
    if unknown:
        raise MedimgError(f"Unknown metric(s) {unknown}; available: {', '.join(ALL_METRICS)}.")
    if not 0 <= hd_percentile <= 100:
        raise MedimgError(f"hd_percentile must be within 0..100, got {hd_percentile}.")
    p, r, sp, _ = _as_arrays(pred, ref, spacing)
    p_int = p.astype(np.int32, copy=False) if not np.issubdtype(p.dtype, np.integer) or p.dtype == bool else p
    r_int = r.astype(np.int32, copy=False) if not np.issubdtype(r.dtype, np.integer) or r.dtype == bool else r
    if ignore_label is not None:
        if labels is not None and int(ignore_label) in {int(v) for v in labels}:
            raise MedimgError(f"The ignore label {ignore_label} is not a class; leave it out of labels.")
        ignored = r_int == ignore_label
        if ignored.any():
            p_int, r_int = np.where(ignored, 0, p_int), np.where(ignored, 0, r_int)
    if labels is None:
        present = set(np.unique(p_int).tolist()) | set(np.unique(r_int).tolist())
        label_list = sorted(int(v) for v in present if v != 0 and v != ignore_label)
    else:
        label_list = sorted(int(v) for v in labels)
    if any(v <= 0 for v in label_list):
        raise MedimgError("Labels to evaluate must be positive integers (0 is background).")
    max_label = max(label_list, default=0)
    boxes_p = ndimage.find_objects(p_int, max_label=max_label) if max_label else []
    boxes_r = ndimage.find_objects(r_int, max_label=max_label) if max_label else []
    n_workers = workers or (os.cpu_count() or 1)

    def tol_of(c: int) -> float:
        if isinstance(nsd_tolerance_mm, Mapping):
            if c not in nsd_tolerance_mm:
                raise MedimgError(f"nsd_tolerance_mm has no tolerance for label {c}.")
            return float(nsd_tolerance_mm[c])
        return float(nsd_tolerance_mm)

    def one(c: int) -> dict[str, float]:
        box = _bbox_union(boxes_p[c - 1], boxes_r[c - 1])
        if box is None:
            crop_p = crop_r = np.zeros((3,) * p.ndim, dtype=bool)
        else:
            crop_p = np.pad(p_int[box] == c, 1)
            crop_r = np.pad(r_int[box] == c, 1)
        return _class_metrics(
            crop_p,
            crop_r,
            sp,
            wanted,
            convention,
            hd_percentile,
            tol_of(c),
            boundary_iou_mm,
            1 if n_workers > 1 else -1,
        )

    if n_workers > 1 and len(label_list) > 1:
        # largest classes first so that the threads finish together
        def size(c: int) -> int:
            b = _bbox_union(boxes_p[c - 1], boxes_r[c - 1])
            return 0 if b is None else int(np.prod([s.stop - s.start for s in b]))

        order = sorted(label_list, key=size, reverse=True)
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            results = dict(zip(order, pool.map(one, order), strict=True))
        return {c: results[c] for c in label_list}
    return {c: one(c) for c in label_list}


def instance_metrics(
    pred: Image | np.ndarray,
    ref: Image | np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    connectivity: int = 1,
    iou_threshold: float = 0.0,
) -> dict[str, Any]:
    """Lesion-wise (connected-component) detection metrics of two binary masks.

    Components are matched greedily by IoU (highest first); a pair counts as a detection when its IoU is
    above ``iou_threshold`` (0: any overlap). Returns counts, detection precision/recall/F1, the Dice of
    every matched pair (``lesion_dice``), the mean Dice over reference lesions (missed ones count 0), and the
    panoptic quality PQ = SQ x RQ computed with the usual IoU > 0.5 matching.
    """
    p, r, sp, _ = _as_arrays(pred, ref, spacing)
    p, r = p > 0, r > 0
    structure = ndimage.generate_binary_structure(p.ndim, connectivity)
    lp, n_p = ndimage.label(p, structure)
    lr, n_r = ndimage.label(r, structure)
    inter = np.bincount((lr[p & r].astype(np.int64) * (n_p + 1) + lp[p & r]), minlength=(n_r + 1) * (n_p + 1))
    inter = inter.reshape(n_r + 1, n_p + 1)
    size_r = np.bincount(lr.ravel(), minlength=n_r + 1)
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    pairs = []
    for i, j in zip(*np.nonzero(inter[1:, 1:]), strict=True):
        ov = int(inter[i + 1, j + 1])
        iou = ov / (size_r[i + 1] + size_p[j + 1] - ov)
        pairs.append((iou, int(i + 1), int(j + 1), ov))
    pairs.sort(reverse=True)

    def match(threshold: float) -> list[tuple[float, int, int, int]]:
        used_r: set[int] = set()
        used_p: set[int] = set()
        out = []
        for iou, i, j, ov in pairs:
            if iou > threshold and i not in used_r and j not in used_p:
                used_r.add(i)
                used_p.add(j)
                out.append((iou, i, j, ov))
        return out

    matched = match(iou_threshold)
    tp = len(matched)
    fp, fn = n_p - tp, n_r - tp
    lesion_dice = [2 * ov / (size_r[i] + size_p[j]) for _, i, j, ov in matched]
    pq_matches = match(0.5)
    pq_tp = len(pq_matches)
    pq_den = pq_tp + 0.5 * (n_p - pq_tp) + 0.5 * (n_r - pq_tp)
    sq = float(np.mean([m[0] for m in pq_matches])) if pq_matches else math.nan
    rq = pq_tp / pq_den if pq_den else math.nan
    return {
        "ref_lesions": int(n_r),
        "pred_lesions": int(n_p),
        "tp": tp,
        "fp": int(fp),
        "fn": int(fn),
        "precision": tp / n_p if n_p else math.nan,
        "recall": tp / n_r if n_r else math.nan,
        "f1": 2 * tp / (n_p + n_r) if (n_p + n_r) else math.nan,
        "lesion_dice": lesion_dice,
        "mean_lesion_dice": float(np.sum(lesion_dice) / n_r) if n_r else math.nan,
        "panoptic_quality": (sq * rq) if pq_matches else (0.0 if pq_den else math.nan),
        "segmentation_quality": sq,
        "recognition_quality": rq,
        "voxel_volume_ml": float(np.prod(sp)) / 1000.0,
    }
