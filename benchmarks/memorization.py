"""Memorisation detection: planted near-copies of training images among genuinely new (held-out real) images.

For each data set, TRAIN is a set of real images and the samples are (a) held-out real images never in TRAIN
("new") and (b) near-copies of randomly chosen TRAIN images, one perturbation type at a time and mixed:

  copy       exact copy
  shift      sub-pixel shift of 1-3 px per axis for 28 px images (3.6-10.7 % of the field; HC18 the same
             fraction), random sign
  scale      zoom 0.9-1.1 about the centre (same image size)
  intensity  gamma 0.7-1.4, then contrast x0.8-1.2 and brightness +-10 % of the range
  noise      additive Gaussian noise, SD 2-5 % of the range
  flip       left-right mirror
  mixed      shift + scale + intensity + noise together
  mixed_mild the four together at about half strength (shift 0.5-1.5 px, zoom 0.95-1.05, gamma 0.85-1.2,
             contrast x0.9-1.1, brightness +-5 %, noise SD 1-2.5 %)

medimg.memorization.find_memorized runs with its defaults (threshold calibrated on TRAIN's leave-one-out nearest
neighbours at 5 % false alarms; calibration_size 500 here). Reported per type: recall (flagged), recall with the
right training image named, the false-alarm rate on the new images at the calibrated threshold, and (ROC view)
recall at the threshold that flags exactly <= 5 % of the new images. Wall time is for the whole call
(preparation, calibration, queries) on a 2-core machine shared with other jobs (times vary from run to run).

Data: ../shared/data/pneumoniamnist (train 3882 images = TRAIN, val = new), ../shared/data/hc18 (images
800 x 540 block-averaged 4x to 200 x 135; the first 200 = TRAIN, the next 100 = new) and, 3D,
../shared/data/hippocampus (MSD hippocampus MRI, ~35 x 50 x 35, each min-max scaled to 0-255; the first 150 =
TRAIN, the next 50 = new; 30 planted copies per type; shifts/zooms in all three axes, flips along x).

    python benchmarks/memorization.py [--copies 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

import medimg
from medimg.memorization import find_memorized

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def perturbations(rng: np.random.Generator) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    def shift(a: np.ndarray) -> np.ndarray:
        px = a.shape[-1] / 28
        n = a.ndim
        return ndimage.shift(a, rng.uniform(1, 3, n) * px * rng.choice([-1, 1], n), order=1, mode="nearest")

    def scale(a: np.ndarray) -> np.ndarray:
        s = rng.uniform(0.9, 1.1)
        c = (np.array(a.shape) - 1) / 2
        return ndimage.affine_transform(a, np.eye(a.ndim) / s, offset=c - c / s, order=1, mode="nearest")

    def intensity(a: np.ndarray) -> np.ndarray:
        x = np.clip(a / 255, 0, 1) ** rng.uniform(0.7, 1.4)
        return 255 * (rng.uniform(0.8, 1.2) * x + rng.uniform(-0.1, 0.1))

    def noise(a: np.ndarray) -> np.ndarray:
        return a + rng.normal(0, rng.uniform(0.02, 0.05) * 255, a.shape)

    def flip(a: np.ndarray) -> np.ndarray:
        return a[..., ::-1].copy()

    def mixed(a: np.ndarray) -> np.ndarray:
        return noise(intensity(scale(shift(a))))

    def mixed_mild(a: np.ndarray) -> np.ndarray:  # each change at about half the strength
        px = a.shape[-1] / 28
        n = a.ndim
        a = ndimage.shift(a, rng.uniform(0.5, 1.5, n) * px * rng.choice([-1, 1], n), order=1, mode="nearest")
        s = rng.uniform(0.95, 1.05)
        c = (np.array(a.shape) - 1) / 2
        a = ndimage.affine_transform(a, np.eye(a.ndim) / s, offset=c - c / s, order=1, mode="nearest")
        x = np.clip(a / 255, 0, 1) ** rng.uniform(0.85, 1.2)
        a = 255 * (rng.uniform(0.9, 1.1) * x + rng.uniform(-0.05, 0.05))
        return a + rng.normal(0, rng.uniform(0.01, 0.025) * 255, a.shape)

    return {
        "copy": lambda a: a.copy(),
        "shift": shift,
        "scale": scale,
        "intensity": intensity,
        "noise": noise,
        "flip": flip,
        "mixed": mixed,
        "mixed_mild": mixed_mild,
    }


def run_set(name: str, train: list[np.ndarray], new: list[np.ndarray], copies: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    pert = perturbations(rng)
    src = rng.choice(len(train), min(copies, len(train)), replace=False)
    samples = [a.astype(np.float32) for a in new]
    kinds = ["new"] * len(new)
    truth = [-1] * len(new)
    for k, f in pert.items():
        for i in src:
            samples.append(f(train[i].astype(np.float32)).astype(np.float32))
            kinds.append(k)
            truth.append(int(i))
    t0 = time.perf_counter()
    res = find_memorized(samples, train, train_names=[str(i) for i in range(len(train))], calibration_size=500)
    secs = time.perf_counter() - t0
    kinds_a = np.array(kinds)
    sim = np.array([m.similarity for m in res.matches])
    flag = np.array([m.memorized for m in res.matches])
    right = np.array([m.match == str(t) for m, t in zip(res.matches, truth, strict=True)])
    new_sims = np.sort(sim[kinds_a == "new"])
    thr5 = float(new_sims[int(np.ceil(0.95 * len(new_sims))) - 1])  # flags <= 5 % of the new images
    rows = {}
    for k in pert:
        s = kinds_a == k
        rows[k] = {
            "n": int(s.sum()),
            "recall": float(flag[s].mean()),
            "recall_right_match": float((flag & right)[s].mean()),
            "recall_at_5pct_empirical_fa": float((sim[s] > thr5).mean()),
            "similarity_median": float(np.median(sim[s])),
        }
    return {
        "name": name,
        "n_train": len(train),
        "n_new": len(new),
        "image_shape": list(train[0].shape),
        "threshold": res.calibration.threshold,
        "calibration": {"n": res.calibration.n, **res.calibration.quantiles},
        "false_alarm_rate_new": float(flag[kinds_a == "new"].mean()),
        "empirical_5pct_threshold": thr5,
        "per_perturbation": rows,
        "seconds": round(secs, 2),
        "n_queries": len(samples),
    }


def distribution_demo() -> dict:
    """gen_metrics (the operation, on PNG folders) for a reference of 100 normal PneumoniaMNIST training images
    against: 100 other normal training images (same distribution), 100 pneumonia images, the reference blurred
    (Gaussian sigma 1 px: a "generator" that loses detail), and 10 other normal images repeated 10x each with
    slight noise (mode collapse)."""
    import tempfile

    from PIL import Image as PILImage

    from medimg.ops import Context, run

    d = np.load(SHARED / "pneumoniamnist" / "pneumoniamnist.npz")
    x, y = d["train_images"], d["train_labels"][:, 0]
    normal, pneu = x[y == 0], x[y == 1]
    rng = np.random.default_rng(0)
    ref = normal[:100].astype(np.float32)
    sets = {
        "same_distribution": normal[100:200].astype(np.float32),
        "pneumonia": pneu[:100].astype(np.float32),
        "blurred_reference": np.stack([ndimage.gaussian_filter(a, 1.0) for a in ref]),
        "mode_collapse_10": np.stack([normal[200 + i // 10] + rng.normal(0, 2, (28, 28)) for i in range(100)]),
    }
    out: dict = {"reference": "100 normal PneumoniaMNIST training images", "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:

        def write(name: str, arr: np.ndarray) -> str:
            f = Path(tmp) / name
            f.mkdir()
            for i, a in enumerate(arr):
                PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(f / f"{i:03d}.png")
            return str(f)

        a = write("ref", ref)
        for name, arr in sets.items():
            t0 = time.perf_counter()
            r = run("gen_metrics", {"set_a": a, "set_b": write(name, arr)}, Context()).model_dump()
            out["rows"][name] = {
                "frd": r["frd"],
                "spaces": r["spaces"],
                "diversity_a": r["diversity_a"],
                "diversity_b": r["diversity_b"],
                "seconds": round(time.perf_counter() - t0, 2),
            }
            print(name, json.dumps(out["rows"][name]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memorization.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    d = np.load(SHARED / "pneumoniamnist" / "pneumoniamnist.npz")
    sets = [run_set("pneumoniamnist", list(d["train_images"]), list(d["val_images"][:200]), args.copies)]
    print(json.dumps(sets[-1]["per_perturbation"]), sets[-1]["false_alarm_rate_new"], flush=True)
    files = sorted((SHARED / "hc18" / "images").glob("*.png"))[:300]
    imgs = []
    for f in files:
        a = np.asarray(medimg.read(f).array, np.float32).T  # (y, x)
        a = a[: a.shape[0] // 4 * 4, : a.shape[1] // 4 * 4]
        imgs.append(a.reshape(a.shape[0] // 4, 4, a.shape[1] // 4, 4).mean((1, 3)))
    sets.append(run_set("hc18", imgs[:200], imgs[200:300], min(args.copies, 50)))
    print(json.dumps(sets[-1]["per_perturbation"]), sets[-1]["false_alarm_rate_new"], flush=True)
    vols = []
    for f in sorted((SHARED / "hippocampus" / "imagesTr").glob("*.nii.gz"))[:200]:
        v = np.asarray(medimg.read(f).array, np.float32).transpose(2, 1, 0)  # (z, y, x)
        vols.append(255 * (v - v.min()) / max(float(v.max() - v.min()), 1e-6))
    sets.append(run_set("hippocampus_3d", vols[:150], vols[150:200], min(args.copies, 30)))
    print(json.dumps(sets[-1]["per_perturbation"]), sets[-1]["false_alarm_rate_new"], flush=True)
    dist = distribution_demo()
    out = {
        "benchmark": "memorization",
        "description": __doc__.split("\n\n")[0],
        "sets": sets,
        "distribution_metrics": dist,
        "note": "times measured on a 2-core machine shared with 3 other engineers' jobs; they vary between runs",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "versions": {"medimg": medimg.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
