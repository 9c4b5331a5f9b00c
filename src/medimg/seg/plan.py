"""Dataset fingerprint -> training plan (plain JSON a person can read and edit) -> preprocessing.

The plan follows nnU-Net's recipe, scaled for a CPU: target spacing = median spacing; patch = median shape after
resampling (rounded to the network's stride), capped by a voxel budget; axes with coarse spacing are not
downsampled until the others catch up; per-case z-score for MR-like data, dataset-wide clip + z-score for CT.

``make_plan(fp, resize_to=[400, 272])`` plans instead for collections where the field of view, not the voxel size, is
what images share (ultrasound zoomed onto the structure: HC18's pixels are 0.05-0.33 mm but every head fills a
similar share of its image): each image is resampled to that many voxels over its own extent (``"resize_to"`` in
the plan; :func:`to_network_grid`), and predictions are mapped back onto the input's exact grid as usual.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap
from medimg.io._atomic import atomic_path
from medimg.seg.dataset import SegDataset, size_mismatch_error

#: Largest patch (voxels) planned for CPU training.
PATCH_VOXEL_BUDGET = 64**3
#: Voxels per batch the plan aims for (batch size = this / patch voxels, within 2..8).
BATCH_VOXELS = 360_000


def fingerprint(ds: SegDataset, progress: Any = None, samples_per_case: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Spacings, shapes, foreground intensity statistics per channel and class frequencies of a dataset.

    Voxels of the dataset's ignore label are neither foreground nor a class. Raises :class:`MedimgError` naming
    the cases whose image and label sizes differ (after reading every case, so that all are listed)."""
    import medimg
    from medimg.domain import PERCENTILES

    rng = np.random.default_rng(seed)
    spacings, shapes, known = [], [], []
    case_percentiles: list[list[float]] = []  # each case's 1st/50th/99th raw percentile, first channel
    fg_values: list[list[np.ndarray]] = [[] for _ in ds.channels]
    class_voxels: dict[int, int] = {}
    mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    items = progress(ds.cases, "fingerprint") if progress else ds.cases
    n = 0
    for c in items:
        if c.label is None:
            continue
        lab = medimg.read_labels(c.label)
        arrays = [medimg.read(p).array for p in c.images]
        bad = next((a.shape for a in arrays if a.shape[: lab.ndim] != lab.shape), None)
        if bad is not None:
            mismatches.append((c.case_id, tuple(bad), tuple(lab.shape)))
            continue
        spacings.append(list(lab.spacing))
        shapes.append(list(lab.shape))
        known.append(lab.spacing_known and ds.spacing_known)
        for k, v in lab.voxel_counts().items():
            if k != ds.ignore_label:
                class_voxels[k] = class_voxels.get(k, 0) + v
        fg = lab.array > 0
        if ds.ignore_label is not None:
            fg &= lab.array != ds.ignore_label
        for i, arr in enumerate(arrays):
            vals = arr[fg] if fg.any() else arr.ravel()
            if vals.size > samples_per_case:
                vals = rng.choice(vals, samples_per_case, replace=False)
            fg_values[i].append(vals.astype(np.float64))
        case_percentiles.append([float(v) for v in np.percentile(arrays[0], PERCENTILES)])
        n += 1
    if mismatches:
        raise size_mismatch_error(ds, mismatches)
    if n == 0:
        raise MedimgError("No labelled case to fingerprint.")
    stats = []
    for per_case in fg_values:
        fgv = np.concatenate(per_case) if per_case else np.zeros(1)
        stats.append(
            {
                "mean": float(fgv.mean()),
                "std": float(fgv.std()),
                "p00_5": float(np.percentile(fgv, 0.5)),
                "p99_5": float(np.percentile(fgv, 99.5)),
                "min": float(fgv.min()),
                "max": float(fgv.max()),
            }
        )
    return {
        "n_cases": n,
        "spacings": spacings,
        "shapes": shapes,
        "spacing_known": bool(all(known)),
        "median_spacing": [float(x) for x in np.median(np.asarray(spacings), axis=0)],
        "median_shape": [float(x) for x in np.median(np.asarray(shapes), axis=0)],
        "foreground_intensity": stats,
        "case_percentiles": case_percentiles,
        "class_voxels": {str(k): v for k, v in sorted(class_voxels.items())},
        "channels": ds.channels,
        "labels": {str(k): v for k, v in ds.labels.items()}
        if ds.labels
        else {"0": "background", **{str(k): f"label_{k}" for k in sorted(class_voxels)}},
        **({"ignore_label": ds.ignore_label} if ds.ignore_label is not None else {}),
    }


def _network_topology(patch: list[int], spacing: list[float], max_levels: int = 5) -> tuple[list, list, list[int]]:
    """Kernel sizes and strides per level (nnU-Net style): an axis is downsampled while it stays >= 8 voxels and
    its spacing is at most twice the finest one; coarse axes get kernel 1 until their spacing is comparable."""
    n = len(patch)
    sizes, sp = list(patch), list(spacing)
    kernels: list[list[int]] = [[3 if sp[a] <= 2 * min(sp) else 1 for a in range(n)]]
    strides: list[list[int]] = [[1] * n]
    for _ in range(max_levels - 1):
        s = [2 if sizes[a] // 2 >= 4 and sp[a] <= 2 * min(sp) else 1 for a in range(n)]
        if sum(x == 2 for x in s) == 0:
            break
        sizes = [sizes[a] // s[a] for a in range(n)]
        sp = [sp[a] * s[a] for a in range(n)]
        strides.append(s)
        kernels.append([3 if sp[a] <= 2 * min(sp) else 1 for a in range(n)])
    total = [int(np.prod([st[a] for st in strides])) for a in range(n)]
    return kernels, strides, total


def make_plan(
    fp: dict[str, Any],
    *,
    dims: int | None = None,
    base_filters: int = 16,
    max_filters: int = 128,
    patch_budget: int = PATCH_VOXEL_BUDGET,
    resize_to: list[int] | None = None,
) -> dict[str, Any]:
    """Turn a fingerprint into a plan dictionary (see module docstring)."""
    spacing = [float(s) for s in fp["median_spacing"]]
    n = dims or len(spacing)
    spacing = spacing[:n]
    spacings = np.asarray(fp["spacings"])[:, :n]
    resample = bool(fp["spacing_known"]) and bool(np.any(np.abs(spacings / np.asarray(spacing) - 1) > 0.05))
    shapes = np.asarray(fp["shapes"])[:, :n] * (spacings / np.asarray(spacing) if resample else 1.0)
    topo_spacing = spacing
    if resize_to is not None:
        if len(resize_to) != n or min(resize_to) < 8:
            raise MedimgError(f"resize_to needs {n} sizes of at least 8 voxels, got {resize_to}.")
        resample = False  # the network grid follows each image's own extent instead
        shapes = np.asarray([resize_to] * len(shapes), np.float64)
        topo_spacing = [1.0] * n
    median_shape = np.median(shapes, axis=0)
    patch = [math.ceil(s) for s in np.percentile(shapes, 75, axis=0)]
    while int(np.prod(patch)) > patch_budget:  # shrink the largest physical extent first
        a = int(np.argmax([p * s for p, s in zip(patch, topo_spacing, strict=True)]))
        patch[a] = max(8, int(patch[a] * 0.9))
    kernels, strides, total = _network_topology(patch, topo_spacing)
    patch = [int(math.ceil(p / t) * t) for p, t in zip(patch, total, strict=True)]
    filters = [min(max_filters, base_filters * 2**i) for i in range(len(strides))]
    stats = fp["foreground_intensity"]
    ct_like = [s["min"] < -500 and s["max"] > 500 for s in stats]  # Hounsfield-like ranges
    normalization = [
        {"scheme": "ct", "clip": [s["p00_5"], s["p99_5"]], "mean": s["mean"], "std": s["std"]}
        if ct
        else {"scheme": "zscore"}
        for s, ct in zip(stats, ct_like, strict=True)
    ]
    batch = int(min(8, max(2, BATCH_VOXELS // int(np.prod(patch)))))
    import medimg

    return {
        "medimg_version": medimg.__version__,
        "dims": n,
        "labels": fp["labels"] or {"0": "background", "1": "foreground"},
        # voxels with this value get no loss and no metric (nnU-Net's "ignore"); absent when the dataset has none
        **({"ignore_label": int(fp["ignore_label"])} if fp.get("ignore_label") is not None else {}),
        "channels": fp["channels"],
        "spacing_known": fp["spacing_known"],
        "target_spacing": spacing,
        "resample": resample,
        **({"resize_to": [int(v) for v in resize_to]} if resize_to is not None else {}),
        "median_shape_after_resampling": [float(x) for x in median_shape],
        "patch_size": patch,
        "normalization": normalization,
        "network": {
            "name": "DynUNet",
            "filters": filters,
            "kernel_sizes": kernels,
            "strides": strides,
            "norm": "instance",
            "deep_supervision": min(2, len(strides) - 2),
        },
        "batch_size": batch,
        "foreground_oversampling": 0.33,
        "augmentation": {
            "mirror_axes": list(range(n)),
            "rotation_deg": 15.0,
            "scale": [0.85, 1.15],
            "p_spatial": 0.2,
            "intensity_scale": [0.75, 1.25],
            "p_intensity": 0.15,
            "gamma": [0.7, 1.5],
            "p_gamma": 0.3,
            "noise_std": 0.1,
            "p_noise": 0.15,
        },
        "training": {
            "optimizer": "adamw",
            "lr": 3e-3,
            "momentum": 0.99,
            "weight_decay": 3e-5,
            "schedule": "poly",
            "iterations_per_epoch": 50,
            "precision": "auto",
            "val_patches": 16,
            "seed": 0,
        },
        "inference": {"overlap": 0.5, "mirror_tta": False},
        "postprocessing": {"largest_component": []},
    }


def save_json(obj: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (indented, readable)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def normalize(arr: np.ndarray, scheme: dict[str, Any]) -> np.ndarray:
    """Apply a plan's per-channel normalisation (float32 output)."""
    a = arr.astype(np.float32)
    if scheme["scheme"] == "ct":
        lo, hi = scheme["clip"]
        return (np.clip(a, lo, hi) - np.float32(scheme["mean"])) / np.float32(max(scheme["std"], 1e-8))
    return (a - np.float32(a.mean())) / np.float32(max(float(a.std()), 1e-8))


def to_network_grid(img: Image, plan: dict[str, Any], interpolation: Any) -> Image:
    """An image (or label map) on the network's grid: resized to ``plan["resize_to"]`` voxels over its own field of
    view when the plan says so (for collections whose field of view, not voxel size, is what is comparable, e.g.
    ultrasound zoomed onto the structure), else resampled to ``target_spacing`` when ``resample``, else unchanged."""
    from medimg.transforms.spatial import resample_to_shape, resample_to_spacing

    if plan.get("resize_to"):
        return resample_to_shape(img, plan["resize_to"], interpolation)
    if plan["resample"]:
        return resample_to_spacing(img, plan["target_spacing"], interpolation)
    return img


def preprocess_image(images: list[Image], plan: dict[str, Any]) -> tuple[np.ndarray, Image]:
    """Resample (if the plan says so) and normalise the channels of one case.

    Returns the ``(C, x, y[, z])`` float32 array and the image (first channel) on the network grid, whose geometry
    is used to map predictions back."""

    n_ch = len(plan["channels"])
    if len(images) == 1 and n_ch > 1 and images[0].n_channels == n_ch:  # e.g. an RGB photograph: its colours are
        one = images[0]  # the model's channels (R, G, B files in the dataset), in the file's channel order
        images = [Image(one.array[..., k], one.spacing, one.origin, one.direction, one.meta) for k in range(n_ch)]
    if len(images) != len(plan["channels"]):
        raise MedimgError(
            f"The model expects {len(plan['channels'])} channel(s) ({', '.join(plan['channels'])}), got {len(images)}."
        )
    out, grid = [], images[0]
    for i, (img, scheme) in enumerate(zip(images, plan["normalization"], strict=True)):
        img.require(ndim=plan["dims"], scalar=True, what=f"channel {i}")
        if i and not img.same_geometry(images[0]):
            raise MedimgError(f"Channel {i} does not share the grid of channel 0; resample it first.")
        img = to_network_grid(img, plan, "bspline" if img.dtype != np.uint8 else "linear")
        if i == 0:
            grid = img
        out.append(normalize(img.array, scheme))
    return np.stack(out), grid


def preprocess_label(label: LabelMap, plan: dict[str, Any]) -> np.ndarray:
    """Resample (nearest) a label map to the network grid when the plan resamples or resizes."""
    label = to_network_grid(label, plan, "nearest")  # type: ignore[assignment]
    return label.array.astype(np.uint8 if label.array.max(initial=0) < 256 else np.int16)
