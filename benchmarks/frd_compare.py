"""medimg's FRD against frd-score 1.0.1 + pyradiomics 3.0.1 on the same image sets, in the same run.

frd-score's pyradiomics dependency does not install from PyPI on Python >= 3.10 by an ordinary ``pip install``;
the benchmark-only environment that worked here (Python 3.11, 2026-12):

    python3.11 -m venv /work/envs/frd && . /work/envs/frd/bin/activate
    pip install numpy setuptools wheel
    pip install --no-build-isolation pyradiomics==3.0.1   # pulls SimpleITK, PyWavelets, pykwalify, six
    pip install frd-score==1.0.1                            # pulls opencv-contrib-python-headless, Pillow, scipy

(``pip install --dry-run frd-score`` showed no torch/torchvision.) frd-score runs in that environment as a
subprocess (``compute_frd([A, B], frd_version=..., num_workers=1)``, its defaults otherwise); medimg's
``medimg.frd.compute_frd`` runs here with ``workers=1``. Both read the same files; times are wall-clock seconds of
the whole computation (reading, features, distance), one process each.

Data (written as files into a temporary folder first, from ../shared/data):
  * ``pneumoniamnist``: PneumoniaMNIST training images (28 x 28 chest X-rays), the first 200 normal (A) vs the
    first 200 pneumonia (B), PNG; v1 and v0.
  * ``hc18_vs_chasedb1``: HC18 fetal-head ultrasound (first 80, 800 x 540 block-averaged 4x to 200 x 135) vs the
    20 CHASE_DB1 fundus photographs (grey = luma, 999 x 960 block-averaged 4x to 249 x 240), PNG; v1.
  * ``hc18_halves``: HC18 images 1-80 vs 81-160 (same distribution; a small FRD), PNG, v1.
  * ``hippocampus_3d``: MSD hippocampus MRI volumes, the first 30 vs the next 30 (NIfTI, 3D, v1 with LoG).

    python benchmarks/frd_compare.py [--frd-python /work/envs/frd/bin/python] [--only NAME]

Writes benchmarks/results/frd_compare.json (values, relative difference, times, speed ratio, machine, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from PIL import Image as PILImage

import medimg
from medimg.frd import compute_frd
from medimg.io._atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDIMG_SHARED_DATA", ROOT.parent / "shared" / "data"))

WORKER = r"""
import json, logging, sys, time, warnings
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
import numpy as np, radiomics, SimpleITK
from frd_score import frd
t0 = time.perf_counter()
masks = [sys.argv[4], sys.argv[5]] if len(sys.argv) > 5 else None
v = frd.compute_frd([sys.argv[1], sys.argv[2]], frd_version=sys.argv[3], num_workers=1, paths_masks=masks)
sec = time.perf_counter() - t0
print(json.dumps({"value": float(v), "seconds": sec, "pyradiomics": radiomics.__version__,
                  "simpleitk": SimpleITK.Version_VersionString(), "numpy": np.__version__,
                  "python": sys.version.split()[0]}))
"""


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))


def _save_png(arr: np.ndarray, path: Path) -> None:
    PILImage.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8)).save(path)


def make_sets(tmp: Path) -> dict[str, dict[str, Any]]:
    """Write the image sets; returns name -> {a, b, versions, description}."""
    sets: dict[str, dict[str, Any]] = {}
    d = np.load(SHARED / "pneumoniamnist" / "pneumoniamnist.npz")
    x, y = d["train_images"], d["train_labels"].ravel()
    for lab, sub in ((0, "normal"), (1, "pneumonia")):
        (tmp / "pm" / sub).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(y == lab)[:200]):
            _save_png(x[i], tmp / "pm" / sub / f"{k:04d}.png")
        # masks for v0: the whole image but one corner pixel (frd-score's v0 fails on all-ones masks:
        # pyradiomics finds "no labels"; its v1 switches that corner off itself)
        (tmp / "pm" / f"{sub}_masks").mkdir()
        m = np.ones((28, 28), np.uint8)
        m[0, 0] = 0
        for k in range(min(200, int((y == lab).sum()))):
            PILImage.fromarray(m).save(tmp / "pm" / f"{sub}_masks" / f"{k:04d}.png")
    sets["pneumoniamnist"] = {
        "a": tmp / "pm" / "normal",
        "b": tmp / "pm" / "pneumonia",
        "versions": ["v1", "v0"],
        "v0_masks": (tmp / "pm" / "normal_masks", tmp / "pm" / "pneumonia_masks"),
        "description": "PneumoniaMNIST train, 200 normal (A) vs 200 pneumonia (B), 28x28 PNG (v0: with masks "
        "= whole image but the corner pixel)",
    }
    # 2D sets are cropped so that every image has one size whose half (the 2 mm grid) is even: images of mixed
    # size parity make frd-score's v1 hinge on rounding noise (see "hc18_mixed_sizes" and docs/generative.md)
    hc = sorted((SHARED / "hc18" / "images").glob("*.png"))[:160]
    for k, f in enumerate(hc):
        g = np.asarray(PILImage.open(f).convert("L"), dtype=np.float64)
        sub = "hc_a" if k < 80 else "hc_b"
        (tmp / sub).mkdir(exist_ok=True)
        _save_png(_block_mean(g[:540, :736], 4), tmp / sub / f.name)
        (tmp / (sub + "_raw")).mkdir(exist_ok=True)
        _save_png(_block_mean(g, 4), tmp / (sub + "_raw") / f.name)
    (tmp / "chase").mkdir()
    for f in sorted((SHARED / "chasedb1").glob("Image_*.jpg")):
        g = np.asarray(PILImage.open(f).convert("L"), dtype=np.float64)
        _save_png(_block_mean(g[:960, :992], 4), tmp / "chase" / (f.stem + ".png"))
    sets["hc18_vs_chasedb1"] = {
        "a": tmp / "hc_a",
        "b": tmp / "chase",
        "versions": ["v1"],
        "description": "HC18 ultrasound 80 (540x736 crop, 4x block mean: 184x135) vs CHASE_DB1 fundus 20 (grey, "
        "960x992 crop: 248x240), PNG",
    }
    sets["hc18_halves"] = {
        "a": tmp / "hc_a",
        "b": tmp / "hc_b",
        "versions": ["v1"],
        "description": "HC18 ultrasound images 1-80 vs 81-160 (same distribution), 184x135 PNG",
    }
    sets["hc18_mixed_sizes"] = {
        "a": tmp / "hc_a_raw",
        "b": tmp / "hc_b_raw",
        "versions": ["v1"],
        "description": "HC18 1-80 vs 81-160 uncropped (4x block mean of 800x540, 797x541, 783x541, 738x541): "
        "the degenerate case, two wavelet-band means are constant in A up to rounding",
    }
    vols = sorted((SHARED / "hippocampus" / "imagesTr").glob("*.nii.gz"))[:60]
    for k, f in enumerate(vols):
        dest = tmp / ("hip_a" if k < 30 else "hip_b")
        dest.mkdir(exist_ok=True)
        shutil.copy(f, dest / f.name)
    sets["hippocampus_3d"] = {
        "a": tmp / "hip_a",
        "b": tmp / "hip_b",
        "versions": ["v1"],
        "description": "MSD hippocampus T1 MRI, volumes 1-30 vs 31-60 (~35x50x35 voxels, 1 mm), NIfTI 3D",
    }
    return sets


def run_reference(py: str, a: Path, b: Path, version: str, masks: tuple[Path, Path] | None) -> dict[str, Any]:
    extra = [str(m) for m in masks] if masks else []
    cmd = [py, "-c", WORKER, str(a), str(b), version, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr or p.stdout)[-800:]}
    return dict(json.loads(lines[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frd-python", default="/work/envs/frd/bin/python")
    ap.add_argument("--only", default=None, help="Run only this set.")
    args = ap.parse_args()
    rows = []
    ref_versions: dict[str, Any] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        sets = make_sets(Path(td))
        for name, s in sets.items():
            if args.only and name != args.only:
                continue
            for v in s["versions"]:
                masks = s.get("v0_masks") if v == "v0" else None
                t0 = time.perf_counter()
                res, _, _ = compute_frd(
                    s["a"], s["b"], v, masks[0] if masks else None, masks[1] if masks else None, workers=1
                )
                mine_s = time.perf_counter() - t0
                ref = run_reference(args.frd_python, s["a"], s["b"], v, masks)
                row: dict[str, Any] = {
                    "set": name,
                    "description": s["description"],
                    "version": v,
                    "n_a": res.n_a,
                    "n_b": res.n_b,
                    "dims": res.dims,
                    "medimg_frd": res.value,
                    "medimg_seconds": round(mine_s, 2),
                    "medimg_features": res.n_features,
                    "medimg_degenerate_features": res.degenerate,
                }
                if res.degenerate:
                    row["medimg_frd_drop_degenerate"] = compute_frd(s["a"], s["b"], v, drop_degenerate=True)[0].value
                if "error" in ref:
                    row["frd_score_error"] = ref["error"]
                else:
                    ref_versions = {k: ref[k] for k in ("pyradiomics", "simpleitk", "numpy", "python")}
                    row["frd_score_frd"] = ref["value"]
                    row["frd_score_seconds"] = round(ref["seconds"], 2)
                    row["relative_difference"] = abs(res.value - ref["value"]) / abs(ref["value"])
                    row["speed_ratio"] = round(ref["seconds"] / mine_s, 2)
                print(json.dumps(row), flush=True)
                rows.append(row)
    out = {
        "benchmark": "frd_compare",
        "what": "FRD of medimg (own radiomics) vs frd-score 1.0.1 + pyradiomics 3.0.1, same files, same run",
        "goal": "relative difference <= 2 %, medimg >= 5x faster",
        "rows": rows,
        "reference_environment": {"frd_score": "1.0.1", **ref_versions, "made_with": "see the module docstring"},
        "medimg": {"version": medimg.__version__, "numpy": np.__version__, "scipy": scipy.__version__},
        "note": "one process each (frd-score num_workers=1, medimg workers=1); wall times measured on a 2-core "
        "machine shared with other jobs, so they vary from run to run",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
    }
    dest = ROOT / "benchmarks" / "results" / "frd_compare.json"
    with atomic_path(dest) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
