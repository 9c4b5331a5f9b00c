"""medimg's STAPLE (``medimg.fusion``, ``medimg fuse --method staple``) against SimpleITK's ``STAPLE`` called
directly, on the same masks in the same run.

medimg's binary STAPLE is its own NumPy implementation (EM over the distinct vote patterns, following ITK's
``STAPLEImageFilter`` step for step); it does NOT call SimpleITK, so this is a comparison of two independent
implementations. (``--method multi-staple`` IS SimpleITK's ``MultiLabelSTAPLE`` underneath; part B only reports
what it estimates.)

A. CHASE_DB1 (../shared/data/chasedb1): every fundus image's two vessel annotations (``_1stHO``, ``_2ndHO``,
   999 x 960 PNG masks). Per image: both implementations' rater sensitivities / specificities, the probability
   map W, the fused mask (W > 0.5) and the iteration count; the largest differences over all images; the time
   of each.
B. 3D: MSD hippocampus label maps (../shared/data/hippocampus/labelsTr, first ``--n3d`` cases; falls back to the
   5 in tests/data) with 3 synthetic raters per case made by ``medimg.fusion.simulate_raters`` with planted
   (sensitivity, specificity) = (0.95, 0.995), (0.85, 0.99), (0.70, 0.98) on the structure (labels 1+2 as one
   foreground) -- does STAPLE recover the planted rates? Both implementations, the error of the estimates
   against the planted and against the realised rates, and the Dice with the truth of STAPLE's map, the
   majority vote and each rater. Then the 2-label maps through ``multi-staple`` (per-label sensitivity).

    python benchmarks/fusion_staple.py [--shared ../shared/data] [--n3d 20]

Writes benchmarks/results/fusion_staple.json. Times are wall-clock on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import medimg
from medimg.fusion import fuse, simulate_raters, staple_binary
from medimg.image import LabelMap
from medimg.interop import to_sitk
from medimg.io._atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]
PLANTED = [(0.95, 0.995), (0.85, 0.99), (0.70, 0.98)]


def sitk_staple(maps: list[LabelMap]) -> tuple[np.ndarray, list[float], list[float], int, float]:
    """SimpleITK's STAPLE (foreground 1, default settings): W, sensitivities, specificities, iterations, seconds."""
    t0 = time.perf_counter()
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    w = sitk.GetArrayFromImage(f.Execute([to_sitk(m) for m in maps])).T
    return (
        w,
        list(f.GetSensitivity()),
        list(f.GetSpecificity()),
        int(f.GetElapsedIterations()),
        time.perf_counter() - t0,
    )


def compare(maps: list[LabelMap]) -> dict[str, Any]:
    """Both implementations on binary maps (value 1 = foreground)."""
    t0 = time.perf_counter()
    est = staple_binary([m.array == 1 for m in maps])
    t_medimg = time.perf_counter() - t0
    w, sens, spec, its, t_sitk = sitk_staple(maps)
    return {
        "medimg": {"sensitivity": est.sensitivity, "specificity": est.specificity, "iterations": est.iterations},
        "simpleitk": {"sensitivity": sens, "specificity": spec, "iterations": its},
        "max_abs_diff_sensitivity": float(np.max(np.abs(np.subtract(est.sensitivity, sens)))),
        "max_abs_diff_specificity": float(np.max(np.abs(np.subtract(est.specificity, spec)))),
        "max_abs_diff_probability": float(np.max(np.abs(est.probability - w))),
        "fused_voxels_differing": int(np.count_nonzero((est.probability > 0.5) != (w > 0.5))),
        "fused_voxels": int(np.count_nonzero(est.probability > 0.5)),
        "seconds_medimg": t_medimg,
        "seconds_simpleitk": t_sitk,
        "_w": est.probability,
    }


def part_a(shared: Path) -> dict[str, Any]:
    d = shared / "chasedb1"
    firsts = sorted(d.glob("Image_*_1stHO.png"))
    rows = []
    for f1 in firsts:
        f2 = f1.with_name(f1.name.replace("_1stHO", "_2ndHO"))
        maps = [medimg.read_labels(f1), medimg.read_labels(f2)]
        c = compare(maps)
        c.pop("_w")
        # through the public fuse() as well (what `medimg fuse` runs): same numbers
        res = fuse(maps, "staple", names=[f1.name, f2.name])
        assert [r.labels[1].sensitivity for r in res.raters] == c["medimg"]["sensitivity"]
        inter = int(np.count_nonzero((maps[0].array == 1) & (maps[1].array == 1)))
        union = int(np.count_nonzero((maps[0].array == 1) | (maps[1].array == 1)))
        rows.append({"image": f1.name.replace("_1stHO.png", ""), "intersection": inter, "union": union, **c})
        print(
            f"{rows[-1]['image']}: sens medimg {np.round(c['medimg']['sensitivity'], 4).tolist()} SimpleITK "
            f"{np.round(c['simpleitk']['sensitivity'], 4).tolist()}, |dW|max {c['max_abs_diff_probability']:.2e}",
            flush=True,
        )
    t_m = sum(r["seconds_medimg"] for r in rows)
    t_s = sum(r["seconds_simpleitk"] for r in rows)
    return {
        "data": f"{d} ({len(rows)} images x 2 annotators, PNG masks 999 x 960)",
        "images": rows,
        "max_abs_diff_sensitivity": max(r["max_abs_diff_sensitivity"] for r in rows),
        "max_abs_diff_specificity": max(r["max_abs_diff_specificity"] for r in rows),
        "max_abs_diff_probability": max(r["max_abs_diff_probability"] for r in rows),
        "fused_voxels_differing_total": sum(r["fused_voxels_differing"] for r in rows),
        "iterations_equal": all(r["medimg"]["iterations"] == r["simpleitk"]["iterations"] for r in rows),
        "fused_equals_intersection_images": sum(r["fused_voxels"] == r["intersection"] for r in rows),
        "mean_sensitivity": {
            "1stHO": float(np.mean([r["medimg"]["sensitivity"][0] for r in rows])),
            "2ndHO": float(np.mean([r["medimg"]["sensitivity"][1] for r in rows])),
        },
        "mean_specificity": {
            "1stHO": float(np.mean([r["medimg"]["specificity"][0] for r in rows])),
            "2ndHO": float(np.mean([r["medimg"]["specificity"][1] for r in rows])),
        },
        "seconds_medimg_total": t_m,
        "seconds_simpleitk_total": t_s,
        "time_ratio_medimg_over_simpleitk": t_m / t_s if t_s else None,
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum() + b.sum())
    return 2 * float((a & b).sum()) / s if s else 1.0


def part_b(shared: Path, n3d: int) -> dict[str, Any]:
    lab_dir = shared / "hippocampus" / "labelsTr"
    if not lab_dir.is_dir():
        lab_dir = ROOT / "tests" / "data" / "hippocampus" / "labelsTr"
    files = sorted(p for p in lab_dir.iterdir() if p.name.endswith(".nii.gz") and not p.name.startswith("."))[:n3d]
    rows: list[dict[str, Any]] = []
    ms_rows: list[dict[str, Any]] = []
    for k, f in enumerate(files):
        truth = medimg.read_labels(f)
        binary = truth.with_array((truth.array > 0).astype(np.uint8))
        raters = simulate_raters(binary, [s for s, _ in PLANTED], [q for _, q in PLANTED], seed=k)
        c = compare(raters)
        w = c.pop("_w")
        t = binary.array == 1
        realised = [
            (
                float((r.array[t] == 1).mean()),
                float((r.array[~t] == 0).mean()),
            )
            for r in raters
        ]
        rows.append(
            {
                "case": f.name,
                "shape": list(truth.shape),
                "truth_voxels": int(t.sum()),
                "realised": realised,
                "dice_staple": _dice(w > 0.5, t),
                "dice_majority": _dice(fuse(raters, "majority").fused.array == 1, t),
                "dice_raters": [_dice(r.array == 1, t) for r in raters],
                **c,
            }
        )
        # two labels (anterior, posterior) through SimpleITK's MultiLabelSTAPLE
        raters2 = simulate_raters(truth, [s for s, _ in PLANTED], [q for _, q in PLANTED], seed=100 + k)
        ms = fuse(raters2, "multi-staple")
        ms_rows.append(
            {
                "case": f.name,
                "sensitivity": {str(c_): [r.labels[c_].sensitivity for r in ms.raters] for c_ in ms.labels},
                "dice": {str(c_): _dice(ms.fused.array == c_, truth.array == c_) for c_ in ms.labels},
                "undecided_voxels": ms.undecided_voxels,
            }
        )
    est_s = np.array([r["medimg"]["sensitivity"] for r in rows])
    est_q = np.array([r["medimg"]["specificity"] for r in rows])
    real = np.array([r["realised"] for r in rows])  # (cases, raters, 2)
    planted_s = np.array([s for s, _ in PLANTED])
    planted_q = np.array([q for _, q in PLANTED])
    ms_sens = np.array([[r["sensitivity"][c] for c in ("1", "2")] for r in ms_rows])  # (cases, labels, raters)
    return {
        "data": f"{lab_dir} ({len(rows)} label maps), 3 synthetic raters each (medimg.fusion.simulate_raters)",
        "planted": [{"sensitivity": s, "specificity": q} for s, q in PLANTED],
        "cases": rows,
        "mean_estimated_sensitivity": est_s.mean(0).tolist(),
        "mean_estimated_specificity": est_q.mean(0).tolist(),
        "mean_abs_error_sensitivity_vs_planted": np.abs(est_s - planted_s).mean(0).tolist(),
        "mean_abs_error_specificity_vs_planted": np.abs(est_q - planted_q).mean(0).tolist(),
        "mean_abs_error_sensitivity_vs_realised": np.abs(est_s - real[:, :, 0]).mean(0).tolist(),
        "max_abs_diff_sensitivity_vs_simpleitk": max(r["max_abs_diff_sensitivity"] for r in rows),
        "max_abs_diff_specificity_vs_simpleitk": max(r["max_abs_diff_specificity"] for r in rows),
        "max_abs_diff_probability_vs_simpleitk": max(r["max_abs_diff_probability"] for r in rows),
        "fused_voxels_differing_total": sum(r["fused_voxels_differing"] for r in rows),
        "mean_dice_with_truth": {
            "staple": float(np.mean([r["dice_staple"] for r in rows])),
            "majority": float(np.mean([r["dice_majority"] for r in rows])),
            "raters": np.mean([r["dice_raters"] for r in rows], axis=0).tolist(),
        },
        "seconds_medimg_total": sum(r["seconds_medimg"] for r in rows),
        "seconds_simpleitk_total": sum(r["seconds_simpleitk"] for r in rows),
        "multi_staple": {
            "cases": ms_rows,
            "mean_sensitivity_per_label": {
                "1": ms_sens[:, 0].mean(0).tolist(),
                "2": ms_sens[:, 1].mean(0).tolist(),
            },
            "mean_dice_per_label": {c: float(np.mean([r["dice"][c] for r in ms_rows])) for c in ("1", "2")},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--n3d", type=int, default=20, help="hippocampus label maps used in part B")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fusion_staple.json"))
    args = ap.parse_args()
    shared = Path(args.shared)
    t0 = time.perf_counter()
    a = part_a(shared)
    b = part_b(shared, args.n3d)
    wall = time.perf_counter() - t0
    result = {
        "what": "medimg STAPLE (own NumPy EM, medimg.fusion.staple_binary) vs SimpleITK STAPLEImageFilter called "
        "directly, same masks, same run",
        "independent_implementations": True,
        "chasedb1": a,
        "hippocampus_synthetic_raters": b,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_seconds": round(wall, 2),
        "timing_note": "wall times on a 2-core machine shared with other jobs (measured under load): an agreement "
        "check, not a speed test",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "versions": {
            "medimg": medimg.__version__,
            "simpleitk": sitk.Version.VersionString(),
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "command": "python benchmarks/fusion_staple.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"CHASE_DB1: max |d sens| {a['max_abs_diff_sensitivity']:.2e}, |d spec| {a['max_abs_diff_specificity']:.2e}, "
        f"|dW| {a['max_abs_diff_probability']:.2e}, fused voxels differing {a['fused_voxels_differing_total']}; "
        f"time medimg {a['seconds_medimg_total']:.2f} s, SimpleITK {a['seconds_simpleitk_total']:.2f} s"
    )
    print(
        f"3D: estimated sensitivities {np.round(b['mean_estimated_sensitivity'], 3).tolist()} (planted "
        f"{[s for s, _ in PLANTED]}), specificities {np.round(b['mean_estimated_specificity'], 4).tolist()}; "
        f"Dice staple {b['mean_dice_with_truth']['staple']:.4f} majority {b['mean_dice_with_truth']['majority']:.4f}"
    )
    print(f"wrote {out} ({wall:.1f} s)")


if __name__ == "__main__":
    main()
