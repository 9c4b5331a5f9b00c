"""Dataset fingerprint -> training plan (plain JSON a person can read and edit) -> preprocessing.

The plan follows nnU-Net's recipe, scaled for a CPU: target spacing = median spacing; patch = median shape after
resampling (rounded to the network's stride), capped by a voxel budget; axes with coarse spacing are not
downsampled until the others catch up; per-case z-score for MR-like data, dataset-wide clip + z-score for CT.

``make_plan(fp, resize_to=[400, 272])`` plans instead for collections where the field of view, not the voxel size, is
what images share (ultrasound zoomed onto the structure: HC18's pixels are 0.05-0.33 mm but every head fills a
similar share of its image): each image is resampled to that many voxels over its own extent (``"resize_to"`` in
the plan; :func:`to_network_grid`), and predictions are mapped back onto the input's exact grid as usual.

Configurations (nnU-Net's names): ``"3d_fullres"`` (the default: a 3D network on 3D patches) and ``"2d"`` for 3D
data (a 2D network on single slices across the *slice axis*, the one with the coarsest spacing -- or, when the
spacing is unknown, the fewest voxels; each image keeps its own spacing along that axis). Thick-slice MR (cardiac
cine, abdominal T2 at 5-10 mm between slices) is often segmented better slice by slice. :func:`configurations_for`
says which configurations a dataset is worth training; ``medimg train --configurations`` trains several within one
budget and keeps the one with the better validation Dice (:func:`medimg.seg.model.train_model`).

Label sets with left/right pairs (a label name containing "left" or "right", e.g. ``kidney_left``) are never
mirrored along the patient's left-right axis, neither in training nor in test-time augmentation: a mirrored left
kidney looks like a right one but would keep its label.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap
from medimg.io._atomic import atomic_path
from medimg.seg.dataset import SegDataset, size_mismatch_error

#: Largest patch (voxels) planned for CPU training.
PATCH_VOXEL_BUDGET = 64**3
#: Largest in-plane patch (pixels) planned for the 2D configuration (a whole 256 x 256 slice and a little more).
PATCH_PIXEL_BUDGET_2D = 320**2
#: Configuration names (nnU-Net's).
CONFIGURATIONS = ("3d_fullres", "2d")
#: Slice spacing / in-plane spacing ratio from which a 3D dataset is also worth a 2D configuration (nnU-Net trains
#: both for every 3D dataset; a CPU budget is better spent on one unless the data are clearly anisotropic).
ANISOTROPY_FOR_2D = 3.0
_LATERAL = re.compile(r"(?i)(?<![a-z])(left|right)(?![a-z])")
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
    lr_axes: list[int] = []
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
        if lab.ndim == 3:  # the index axis closest to the patient's left-right (world x) axis
            lr_axes.append(int(np.argmax(np.abs(np.asarray(lab.direction)[0]))))
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
        "lr_axes": lr_axes,
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


def slice_axis(fp: dict[str, Any]) -> int:
    """The axis a 2D configuration slices across: the coarsest median spacing (ties: fewest voxels); with unknown
    spacing, the axis with the fewest median voxels (e.g. 10 short-axis slices of 200 x 200 pixels)."""
    spacing = np.asarray(fp["median_spacing"], np.float64)
    shape = np.asarray(fp["median_shape"], np.float64)
    if fp["spacing_known"] and spacing.max() > spacing.min() * 1.0001:
        coarse = np.flatnonzero(spacing >= spacing.max() / 1.0001)
        return int(coarse[np.argmin(shape[coarse])])
    return int(np.argmin(shape))


def anisotropy(fp: dict[str, Any]) -> float:
    """How much coarser the slice axis is than the finest in-plane axis: the spacing ratio, or (spacing unknown)
    the in-plane / slice voxel-count ratio, a proxy that is large for stacks of a few big slices."""
    k = slice_axis(fp)
    spacing = np.asarray(fp["median_spacing"], np.float64)
    shape = np.asarray(fp["median_shape"], np.float64)
    others = [a for a in range(len(spacing)) if a != k]
    if fp["spacing_known"]:
        return float(spacing[k] / spacing[others].min())
    return float(shape[others].min() / max(shape[k], 1.0))


def configurations_for(fp: dict[str, Any]) -> list[str]:
    """The configurations ``--configurations auto`` trains: 2D data -> ``["2d"]``; 3D data -> ``["3d_fullres"]``,
    plus ``"2d"`` when the slice axis is at least :data:`ANISOTROPY_FOR_2D` times coarser than the others."""
    if len(fp["median_spacing"]) == 2:
        return ["2d"]
    return ["3d_fullres", "2d"] if anisotropy(fp) >= ANISOTROPY_FOR_2D else ["3d_fullres"]


def _lateral_axes(fp: dict[str, Any], n: int) -> list[int]:
    """Index axes that must not be mirrored: the patient's left-right axis when a label names a side."""
    names = [str(v) for v in (fp.get("labels") or {}).values()]
    if n != 3 or not any(_LATERAL.search(v) for v in names):
        return []
    return sorted(set(fp.get("lr_axes") or [0]))  # no record (an older fingerprint): world x = index axis 0


def make_plan(
    fp: dict[str, Any],
    *,
    dims: int | None = None,
    base_filters: int = 16,
    max_filters: int = 128,
    patch_budget: int | None = None,
    resize_to: list[int] | None = None,
    configuration: str = "3d_fullres",
) -> dict[str, Any]:
    """Turn a fingerprint into a plan dictionary (see module docstring). ``configuration`` is ``"3d_fullres"`` or
    ``"2d"``; on 2D data both mean the same (a 2D network)."""
    if configuration not in CONFIGURATIONS:
        raise MedimgError(f"Unknown configuration {configuration!r}; use {' or '.join(CONFIGURATIONS)}.")
    spacing = [float(s) for s in fp["median_spacing"]]
    n = dims or len(spacing)
    spacing = spacing[:n]
    spacings = np.asarray(fp["spacings"])[:, :n]
    in_plane = configuration == "2d" and n == 3 and resize_to is None
    k_slice = slice_axis(fp) if in_plane else None
    axes = [a for a in range(n) if a != k_slice]  # the axes the network convolves over
    rel = np.abs(spacings / np.asarray(spacing) - 1)[:, axes]
    resample = bool(fp["spacing_known"]) and bool(np.any(rel > 0.05))
    shapes = np.asarray(fp["shapes"])[:, :n] * (spacings / np.asarray(spacing) if resample else 1.0)
    if in_plane:
        shapes[:, k_slice] = np.asarray(fp["shapes"])[:, k_slice]  # each image keeps its slices
    topo_spacing = spacing
    if resize_to is not None:
        if len(resize_to) != n or min(resize_to) < 8:
            raise MedimgError(f"resize_to needs {n} sizes of at least 8 voxels, got {resize_to}.")
        resample = False  # the network grid follows each image's own extent instead
        shapes = np.asarray([resize_to] * len(shapes), np.float64)
        topo_spacing = [1.0] * n
    median_shape = np.median(shapes, axis=0)
    budget = patch_budget or (PATCH_PIXEL_BUDGET_2D if in_plane else PATCH_VOXEL_BUDGET)
    patch = [math.ceil(s) for s in np.percentile(shapes, 75, axis=0)]
    if k_slice is not None:
        patch[k_slice] = 1
    while int(np.prod(patch)) > budget:  # shrink the largest physical extent first
        a = int(
            np.argmax([p * s if i != k_slice else 0 for i, (p, s) in enumerate(zip(patch, topo_spacing, strict=True))])
        )
        patch[a] = max(8, int(patch[a] * 0.9))
    kernels, strides, total = _network_topology([patch[a] for a in axes], [topo_spacing[a] for a in axes])
    for a, t in zip(axes, total, strict=True):
        patch[a] = int(math.ceil(patch[a] / t) * t)
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
    lateral = _lateral_axes(fp, n)
    mirror = [a for a in axes if a not in lateral]
    aug_2d = {"rotation_plane": axes} if k_slice is not None else {}
    import medimg

    return {
        "medimg_version": medimg.__version__,
        "dims": n,
        "configuration": "2d" if k_slice is not None or n == 2 else "3d_fullres",
        **({"slice_axis": k_slice} if k_slice is not None else {}),
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
            "mirror_axes": mirror,
            **aug_2d,
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
        target = list(plan["target_spacing"])
        if plan.get("slice_axis") is not None:  # 2D configuration: slices stay where they are
            target[plan["slice_axis"]] = img.spacing[plan["slice_axis"]]
        return resample_to_spacing(img, target, interpolation)
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
