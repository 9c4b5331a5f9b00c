"""Segmentation-metric speed and agreement: medimg vs MONAI vs DeepMind surface-distance, same run, same data.

Data: TotalSegmentator's reference files example_seg.nii.gz (reference) vs example_seg_fast.nii.gz
(prediction), 3 mm, upsampled with nearest-neighbour to 1.5 mm and 1 mm (366x303x90). Every label present
in either map is evaluated. Panel: Dice + HD95 + ASSD + NSD@2 mm.

  * medimg, convention="deepmind" vs surface-distance (compute_surface_distances + robust Hausdorff 95 +
    average surface distance + surface Dice at 2 mm, per class on the full volume);
  * medimg, convention="monai" vs MONAI (compute_dice, compute_hausdorff_distance(percentile=95),
    compute_average_surface_distance(symmetric=True), compute_surface_dice, per class, 2-channel one-hot).
Prints times, speed-up ratios and the largest relative difference between the values; writes
benchmarks/results/metrics_speed.json.

    python benchmarks/metrics_speed.py [--data ../shared/data] [--sizes 1.5 1.0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.metrics import segmentation_metrics
from medimg.transforms import resample_to_spacing

PANEL = ("dice", "hd95", "assd", "nsd")


def numpy2_shim_for_surface_distance() -> None:
    """surface-distance 0.1 uses np.Inf / np.NaN, removed in NumPy 2: restore the aliases for it."""
    np.Inf = np.inf  # type: ignore[attr-defined]
    np.NaN = np.nan  # type: ignore[attr-defined]


def run_surface_distance(pred: np.ndarray, ref: np.ndarray, labels: list[int], sp: tuple[float, ...]) -> dict:
    import surface_distance as sd

    numpy2_shim_for_surface_distance()

    out = {}
    for c in labels:
        g, p = ref == c, pred == c
        r = sd.compute_surface_distances(g, p, sp)
        a_gp, a_pg = sd.compute_average_surface_distance(r)
        w_g, w_p = r["surfel_areas_gt"], r["surfel_areas_pred"]
        assd = (a_gp * w_g.sum() + a_pg * w_p.sum()) / (w_g.sum() + w_p.sum())
        out[c] = {
            "dice": sd.compute_dice_coefficient(g, p),
            "hd95": sd.compute_robust_hausdorff(r, 95),
            "assd": assd,
            "nsd": sd.compute_surface_dice_at_tolerance(r, 2.0),
        }
    return out


def run_monai(pred: np.ndarray, ref: np.ndarray, labels: list[int], sp: tuple[float, ...]) -> dict:
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    out = {}
    for c in labels:
        g, p = ref == c, pred == c
        yp = torch.from_numpy(np.stack([~p, p])[None].astype(np.float32))
        yg = torch.from_numpy(np.stack([~g, g])[None].astype(np.float32))
        out[c] = {
            "dice": compute_dice(yp, yg, include_background=False).item(),
            "hd95": compute_hausdorff_distance(yp, yg, percentile=95, spacing=sp).item(),
            "assd": compute_average_surface_distance(yp, yg, symmetric=True, spacing=sp).item(),
            "nsd": compute_surface_dice(yp, yg, class_thresholds=[2.0], spacing=sp).item(),
        }
    return out


def finite_mean(values: dict, key: str) -> float:
    """Mean over the classes where the metric is finite (classes present in both maps)."""
    return float(np.mean([v[key] for v in values.values() if math.isfinite(v[key])]))


def max_rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for c in a:
        for k in PANEL:
            x, y = float(a[c][k]), float(b[c][k])
            if (math.isnan(x) and math.isnan(y)) or x == y:
                continue
            worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return worst


def run_case(case: str, pred: Any, ref: Any, labels: list[int]) -> dict[str, Any]:
    """Time the four contenders on one pair and compare their values."""
    sp = ref.spacing
    contenders = {
        "medimg[deepmind]": lambda: segmentation_metrics(pred, ref, metrics=PANEL, convention="deepmind"),
        "medimg[monai]": lambda: segmentation_metrics(pred, ref, metrics=PANEL, convention="monai"),
        "surface-distance": lambda: run_surface_distance(pred.array, ref.array, labels, sp),
        "MONAI": lambda: run_monai(pred.array, ref.array, labels, sp),
    }
    timings: dict[str, float] = {}
    values: dict[str, dict] = {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        values[name] = fn()
        timings[name] = time.perf_counter() - t0
        print(f"  {case}: {name:18s} {timings[name]:8.2f} s", flush=True)
    dm, mo = values["medimg[deepmind]"], values["medimg[monai]"]
    return {
        "case": case,
        "seconds": timings,
        "speedup_vs_surface_distance": timings["surface-distance"] / timings["medimg[deepmind]"],
        "speedup_vs_monai": timings["MONAI"] / timings["medimg[monai]"],
        "max_rel_diff_vs_surface_distance": max_rel_diff(dm, values["surface-distance"]),
        "max_rel_diff_vs_monai": max_rel_diff(mo, values["MONAI"]),
        "mean_hd95_deepmind": finite_mean(dm, "hd95"),
        "mean_hd95_monai": finite_mean(mo, "hd95"),
        "classes_in_both_maps": sum(math.isfinite(v["hd95"]) for v in dm.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--sizes", type=float, nargs="+", default=[1.5, 1.0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics_speed.json")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t_all = time.perf_counter()
    ref3 = medimg.read_labels(args.data / "totalsegmentator" / "example_seg.nii.gz")
    pred3 = medimg.read_labels(args.data / "totalsegmentator" / "example_seg_fast.nii.gz")
    rows: list[dict[str, Any]] = []
    for mm in args.sizes:
        ref, pred = resample_to_spacing(ref3, mm), resample_to_spacing(pred3, mm)
        labels = sorted(set(ref.labels) | set(pred.labels))
        case = f"TotalSegmentator seg vs seg_fast @ {mm} mm {ref.shape}, {len(labels)} classes"
        rows.append(run_case(case, pred, ref, labels))
    elapsed = time.perf_counter() - t_all
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\nmedimg {medimg.__version__} metrics benchmark on {machine} (panel: Dice+HD95+ASSD+NSD@2mm)")
    for r in rows:
        t = r["seconds"]
        print(r["case"])
        print(
            f"  medimg[deepmind] {t['medimg[deepmind]']:.2f} s vs surface-distance {t['surface-distance']:.2f} s -> "
            f"{r['speedup_vs_surface_distance']:.1f}x faster; max rel. diff {r['max_rel_diff_vs_surface_distance']:.1e}"
        )
        print(
            f"  medimg[monai]    {t['medimg[monai]']:.2f} s vs MONAI {t['MONAI']:.2f} s -> "
            f"{r['speedup_vs_monai']:.1f}x faster; max rel. diff {r['max_rel_diff_vs_monai']:.1e}"
        )
        print(
            f"  mean HD95 over the {r['classes_in_both_maps']} classes in both maps: "
            f"{r['mean_hd95_deepmind']:.3f} mm (surfels) vs {r['mean_hd95_monai']:.3f} mm (edge voxels)"
        )
    print(f"total benchmark time {elapsed:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "metrics_speed",
                "medimg_version": medimg.__version__,
                "machine": machine,
                "date": time.strftime("%Y-%m-%d"),
                "total_seconds": elapsed,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
