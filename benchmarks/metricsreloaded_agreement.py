"""medimg's ``convention="metricsreloaded"`` against the MetricsReloaded library itself, same masks, same run.

MetricsReloaded (github.com/Project-MONAI/MetricsReloaded) is not on PyPI. It installs from its source into
a separate virtual environment (its ``setup.py`` imports ``pkg_resources``, hence ``setuptools<80``):

    python3.11 -m venv /tmp/mr-venv
    /tmp/mr-venv/bin/pip install numpy scipy scikit-image pandas scikit-learn nibabel 'setuptools<80' wheel
    /tmp/mr-venv/bin/pip install --no-build-isolation --no-deps <MetricsReloaded checkout>

This script runs MetricsReloaded's ``BinaryPairwiseMeasures`` (``dsc``, ``hd``, ``hd_perc`` at 95, ``assd``,
``masd``, ``nsd`` at tau) in that environment as a subprocess, and medimg's
``segmentation_metrics(..., convention="metricsreloaded")`` here, on the same binary masks.

Data (real label maps, one binary mask per structure):
  * the 5 MSD hippocampus label maps in tests/data/hippocampus/labelsTr (1 mm isotropic; anterior, posterior);
  * when ../shared/data is present, the first 2 CHAOS T2-SPIR label maps (1.25 x 1.25 x 7.7 mm, anisotropic;
    liver, kidneys, spleen) and the pyradiomics brain1 lesion (0.78 x 0.78 x 6.5 mm).
Predictions are perturbed references: erosion by 1 voxel, dilation by 1 voxel, a shift of (2, 1, 0) voxels,
shift + dilation; plus the two edge cases on the first structure: an empty prediction, and both empty.
Each pair is cropped to the bounding box of its union plus a 3-voxel zero margin (both libraries get the same
array; distances do not change with the crop). Reports the largest absolute and relative difference per metric,
whether NaNs agree, the time of both, and writes benchmarks/results/metricsreloaded_agreement.json.

    python benchmarks/metricsreloaded_agreement.py [--mr-python /tmp/mr-venv/bin/python] [--mr-source DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

import medimg
from medimg.io._atomic import atomic_path
from medimg.metrics.segmentation import segmentation_metrics

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("dice", "hd", "hd95", "assd", "masd", "nsd")
MR_NAMES = {"dice": "dsc", "hd": "hd", "hd95": "hd_perc", "assd": "assd", "masd": "masd", "nsd": "nsd"}

MR_WORKER = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
from MetricsReloaded.metrics.pairwise_measures import BinaryPairwiseMeasures
data = np.load(sys.argv[1])
tau = float(sys.argv[2])
n = int(data["n"])
out = []
t0 = time.perf_counter()
for i in range(n):
    p, r, sp = data[f"pred{i}"].astype(np.int32), data[f"ref{i}"].astype(np.int32), tuple(data[f"sp{i}"].tolist())
    m = BinaryPairwiseMeasures(p, r, measures=["dsc", "hd", "hd_perc", "assd", "masd", "nsd"], pixdim=sp,
                               dict_args={"hd_perc": 95, "nsd": tau})
    out.append({"dsc": float(m.dsc()), "hd": float(m.measured_hausdorff_distance()),
                "hd_perc": float(m.measured_hausdorff_distance_perc()), "assd": float(m.measured_average_distance()),
                "masd": float(m.measured_masd()), "nsd": float(m.normalised_surface_distance())})
elapsed = time.perf_counter() - t0
from importlib.metadata import version
import scipy
json.dump({"values": out, "seconds": elapsed, "version": version("MetricsReloaded"),
           "numpy": np.__version__, "scipy": scipy.__version__, "python": sys.version.split()[0]},
          open(sys.argv[3], "w"))
"""


def crop_pair(pred: np.ndarray, ref: np.ndarray, margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus ``margin`` zero voxels on every side."""
    union = pred | ref
    if not union.any():
        return np.zeros((5,) * pred.ndim, bool), np.zeros((5,) * pred.ndim, bool)
    box = ndimage.find_objects(union.astype(np.uint8))[0]
    p = np.pad(pred[box], margin)
    r = np.pad(ref[box], margin)
    return p, r


def perturbations(ref: np.ndarray) -> dict[str, np.ndarray]:
    shifted = ndimage.shift(ref.astype(np.uint8), (2, 1, 0), order=0).astype(bool)
    return {
        "erode1": ndimage.binary_erosion(ref),
        "dilate1": ndimage.binary_dilation(ref),
        "shift(2,1,0)": shifted,
        "shift+dilate": ndimage.binary_dilation(shifted),
    }


def load_pairs(shared: Path | None) -> tuple[list[dict[str, Any]], list[str]]:
    sources: list[tuple[str, Path, dict[int, str]]] = []
    for f in sorted((ROOT / "tests" / "data" / "hippocampus" / "labelsTr").glob("*.nii.gz")):
        sources.append(("MSD hippocampus (tests/data)", f, {1: "anterior", 2: "posterior"}))
    if shared is not None and shared.is_dir():
        for f in sorted((shared / "chaos_mr" / "labelsTr").glob("*.nii.gz"))[:2]:
            sources.append(
                ("CHAOS T2-SPIR (shared/data)", f, {1: "liver", 2: "right kidney", 3: "left kidney", 4: "spleen"})
            )
        brain = shared / "lesions" / "brain1_label.nrrd"
        if brain.is_file():
            sources.append(("pyradiomics brain1 lesion (shared/data)", brain, {1: "lesion"}))
    pairs: list[dict[str, Any]] = []
    used: list[str] = []
    for dataset, f, names in sources:
        lab = medimg.read_labels(f)
        sp = tuple(float(s) for s in lab.spacing)
        used.append(f"{dataset}: {f.name} {lab.shape} spacing {sp}")
        for c, name in names.items():
            ref = np.asarray(lab.array) == c
            if not ref.any():
                continue
            for pert, pred in perturbations(ref).items():
                p, r = crop_pair(pred, ref)
                pairs.append(
                    {
                        "dataset": dataset,
                        "case": f.name,
                        "structure": name,
                        "perturbation": pert,
                        "spacing": sp,
                        "pred": p,
                        "ref": r,
                    }
                )
    first = pairs[0]
    pairs.append({**first, "perturbation": "empty prediction", "pred": np.zeros_like(first["ref"])})
    pairs.append(
        {**first, "perturbation": "both empty", "pred": np.zeros_like(first["ref"]), "ref": np.zeros_like(first["ref"])}
    )
    return pairs, used


def run_metricsreloaded(pairs: list[dict[str, Any]], mr_python: str, tau: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as td:
        arrays: dict[str, Any] = {"n": np.asarray(len(pairs))}
        for i, p in enumerate(pairs):
            arrays[f"pred{i}"], arrays[f"ref{i}"] = p["pred"], p["ref"]
            arrays[f"sp{i}"] = np.asarray(p["spacing"])
        npz, out, worker = Path(td) / "pairs.npz", Path(td) / "mr.json", Path(td) / "worker.py"
        np.savez(npz, **arrays)
        worker.write_text(MR_WORKER)
        proc = subprocess.run([mr_python, str(worker), str(npz), str(tau), str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"MetricsReloaded failed (is it installed in {mr_python}?):\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mr-python", default="/tmp/mr-venv/bin/python")
    ap.add_argument("--mr-source", default="/tmp/mr-src", help="MetricsReloaded checkout (for its commit id)")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--tau", type=float, default=2.0, help="NSD tolerance in mm")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "metricsreloaded_agreement.json"))
    args = ap.parse_args()

    pairs, used = load_pairs(Path(args.shared))
    print(f"{len(pairs)} mask pairs from {len(used)} label maps")
    t0 = time.perf_counter()
    ours = [
        segmentation_metrics(
            p["pred"].astype(np.uint8),
            p["ref"].astype(np.uint8),
            spacing=p["spacing"],
            labels=[1],
            metrics=METRICS,
            convention="metricsreloaded",
            nsd_tolerance_mm=args.tau,
            workers=1,
        )[1]
        for p in pairs
    ]
    t_medimg = time.perf_counter() - t0
    t1 = time.perf_counter()
    mr = run_metricsreloaded(pairs, args.mr_python, args.tau)
    t_mr_total = time.perf_counter() - t1

    per_metric: dict[str, Any] = {}
    rows = []
    for m in METRICS:
        abs_d, rel_d, nan_agree, nan_disagree = [], [], 0, 0
        for a, b in zip(ours, mr["values"], strict=True):
            x, y = float(a[m]), float(b[MR_NAMES[m]])
            if math.isnan(x) or math.isnan(y):
                nan_agree += math.isnan(x) and math.isnan(y)
                nan_disagree += math.isnan(x) != math.isnan(y)
                continue
            d = abs(x - y)
            abs_d.append(d)
            rel_d.append(d / abs(y) if y else (0.0 if d == 0 else math.inf))
        per_metric[m] = {
            "n_compared": len(abs_d),
            "max_abs_diff": max(abs_d) if abs_d else None,
            "max_rel_diff": max(rel_d) if rel_d else None,
            "both_nan": nan_agree,
            "nan_mismatch": nan_disagree,
        }
    for p, a, b in zip(pairs, ours, mr["values"], strict=True):
        rows.append(
            {
                "dataset": p["dataset"],
                "case": p["case"],
                "structure": p["structure"],
                "perturbation": p["perturbation"],
                "spacing": p["spacing"],
                "shape": list(p["ref"].shape),
                "medimg": {m: float(a[m]) for m in METRICS},
                "metricsreloaded": {m: float(b[MR_NAMES[m]]) for m in METRICS},
            }
        )
    commit = None
    src = Path(args.mr_source)
    if (src / "COMMIT").is_file():
        commit = (src / "COMMIT").read_text().strip()
    result = {
        "what": "medimg segmentation_metrics(convention='metricsreloaded') vs MetricsReloaded BinaryPairwiseMeasures",
        "data": used,
        "pairs": len(pairs),
        "perturbations": ["erode1", "dilate1", "shift(2,1,0)", "shift+dilate", "empty prediction", "both empty"],
        "crop": "bounding box of the union + 3 zero voxels, same arrays for both libraries",
        "nsd_tolerance_mm": args.tau,
        "hd_percentile": 95,
        "agreement": per_metric,
        "max_abs_diff_all": max((v["max_abs_diff"] or 0.0) for v in per_metric.values()),
        "max_rel_diff_all": max((v["max_rel_diff"] or 0.0) for v in per_metric.values()),
        "seconds": {
            "medimg": round(t_medimg, 3),
            "metricsreloaded": round(mr["seconds"], 3),
            "metricsreloaded_subprocess_total": round(t_mr_total, 3),
            "note": "wall time of one run on a machine shared with other jobs: an agreement check, not a speed test",
        },
        "metricsreloaded": {
            "version": mr["version"],
            "commit": commit,
            "python": mr["python"],
            "numpy": mr["numpy"],
            "scipy": mr["scipy"],
            "install": "pip install 'setuptools<80' && pip install --no-build-isolation --no-deps <src>",
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "medimg": medimg.__version__,
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    for m, v in per_metric.items():
        print(
            f"{m:5s} n={v['n_compared']:3d} max|diff|={v['max_abs_diff']:.3g} max rel={v['max_rel_diff']:.3g} "
            f"both NaN={v['both_nan']} NaN mismatch={v['nan_mismatch']}"
        )
    print(f"time: medimg {t_medimg:.2f} s, MetricsReloaded {mr['seconds']:.2f} s ({len(pairs)} pairs); wrote {out}")


if __name__ == "__main__":
    main()
