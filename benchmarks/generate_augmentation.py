"""Synthetic augmentation with 10 % of the labels (PneumoniaMNIST): does adding class-conditional diffusion samples to
the labelled images change the classifier's held-out AUROC?

    python benchmarks/generate_augmentation.py [--seeds 0,1,2] [--gen-budget 6m] [--clf-budget 90]
        [--synthetic-per-class 250]

Protocol, per seed: the cleaned training split (as in classify_pneumoniamnist.py) gives a stratified 10 % labelled
subset (386 images; label_subset, the same as classify_label_efficiency.py). 20 % of it (stratified) is kept for
temperature scaling, identical in both arms; the rest (309 images) is the labelled training set. A class-conditional
diffusion generator is trained on those 309 images only (``--gen-budget`` of wall clock) and draws
``--synthetic-per-class`` images per class (DDIM 50 steps, guidance 2). Two classifiers are trained from scratch
with the same recipe and budget (``--clf-budget`` s, last EMA weights, as classify_label_efficiency.py): on the
real 309 images, and on the real 309 plus the synthetic images. Both are scored on the official validation split
(524 images, never used for training). Reported: AUROC, accuracy and balanced accuracy per arm and seed, and the
AUROC difference (synthetic - real only) averaged over seeds with a 95 % paired bootstrap CI over the validation
images (2000 resamples; the same resample for every seed and both arms). A third arm, the 309 real images tiled to
the augmented set's size, controls for the schedule: the classifier's steps per epoch and validation cadence follow
the set's size, so the augmented arm also trains more steps within the same budget. Results:
benchmarks/results/generate_augmentation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from medimg.classify import ClassifierModel, load_npz, train_classifier
from medimg.classify.data import ClassificationData, drop_duplicates
from medimg.classify.probe import label_subset
from medimg.classify.train import stratified_split
from medimg.generate import GenData, load_generator, sample, train_generator
from medimg.metrics.classification import auroc
from medimg.seg.train import parse_duration

HERE = Path(__file__).parent
CLASSES = ["normal", "pneumonia"]
RESULTS = HERE / "results" / "generate_augmentation.json"
#: real: the labelled images alone; real+synthetic: plus the generated images; real-repeated: the labelled images
#: tiled to the augmented set's size, so the classifier's schedule (steps per epoch, validation cadence) matches.
ARMS = ("real", "real+synthetic", "real-repeated")


def scores(labels: np.ndarray, p1: np.ndarray) -> dict[str, float]:
    pred = (p1 >= 0.5).astype(int)
    sens = float(np.mean(pred[labels == 1] == 1))
    spec = float(np.mean(pred[labels == 0] == 0))
    return {
        "auroc": auroc(labels, p1),
        "accuracy": float(np.mean(pred == labels)),
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
    }


def val_probs(model: Path, images: np.ndarray) -> np.ndarray:
    """p(pneumonia) of the validation images. A classifier trained on 309 images has a narrow domain (e.g. at most
    9 % near-black background) and would refuse a few validation images; both arms score all 524 (forced)."""
    return ClassifierModel(model).predict_proba(images, force=True)[:, 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/pneumoniamnist/pneumoniamnist.npz")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--gen-budget", default="6m")
    ap.add_argument("--clf-budget", type=float, default=90.0)
    ap.add_argument("--synthetic-per-class", type=int, default=250)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg_gen_augmentation"))
    ap.add_argument(
        "--resume", action="store_true", help="Reuse the seeds in the results file (their classifiers in --work)."
    )
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    t_all = time.perf_counter()
    train = load_npz(args.data, "train", CLASSES)
    val = load_npz(args.data, "val", CLASSES)
    train, cleaning = drop_duplicates(train, [val])
    res: dict = {
        "data": str(args.data),
        "protocol": __doc__.split("Protocol, per seed: ")[1].split(" Results:")[0].replace("\n", " "),
        "cleaning": cleaning,
        "fraction": args.fraction,
        "gen_budget_s": parse_duration(args.gen_budget),
        "clf_budget_s": args.clf_budget,
        "synthetic_per_class": args.synthetic_per_class,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "seeds": [],
    }
    probs: dict[str, list[np.ndarray]] = {arm: [] for arm in ARMS}
    done = {r["seed"]: r for r in json.loads(RESULTS.read_text())["seeds"]} if args.resume and RESULTS.exists() else {}

    def train_arm(arm: str, data: ClassificationData, calib: ClassificationData, seed: int, work: Path) -> dict:
        out = work / f"clf_{arm.replace('+', '_')}"
        cfg = {"seed": seed, "select": "last", "batch_size": 128}
        t1 = time.perf_counter()
        ci = train_classifier(data, out, args.clf_budget, val=calib, config=cfg)
        p = val_probs(out, val.images)
        probs[arm].append(p)
        row = {**scores(val.labels, p), "steps": ci["steps"], "seconds": round(time.perf_counter() - t1, 1)}
        print(f"seed {seed} {arm}: {row}", flush=True)
        return row

    for seed in [int(s) for s in args.seeds.split(",")]:
        work = args.work / f"seed{seed}"
        pool = train.subset(label_subset(train, args.fraction, seed))
        tr_idx, te_idx = stratified_split(pool, 0.2, seed)
        real, calib = pool.subset(tr_idx), pool.subset(te_idx)
        n_aug = len(real) + len(CLASSES) * args.synthetic_per_class
        rep = real.subset(np.resize(np.arange(len(real)), n_aug))  # the real images tiled to the augmented size
        if seed in done:  # the saved classifiers' scores (validation images scored with force=True)
            row = done[seed]
            for arm in ("real", "real+synthetic"):
                probs[arm].append(val_probs(work / f"clf_{arm.replace('+', '_')}", val.images))
            if "real-repeated" not in row:
                row["real-repeated"] = train_arm("real-repeated", rep, calib, seed, work)
            else:
                probs["real-repeated"].append(val_probs(work / "clf_real-repeated", val.images))
            res["seeds"].append(row)
            RESULTS.write_text(json.dumps(res, indent=2) + "\n")
            continue
        t0 = time.perf_counter()
        gen_dir = work / "generator"
        info = train_generator(
            GenData(real.images, "class", labels=real.labels, names=CLASSES),
            gen_dir,
            time_budget_s=parse_duration(args.gen_budget),
            seed=seed,
            source=f"PneumoniaMNIST 10 % subset, seed {seed}",
        )
        net, ginfo = load_generator(gen_dir)
        ys = np.repeat(np.arange(len(CLASSES)), args.synthetic_per_class)
        syn = sample(net, ginfo, len(ys), ys, steps=50, guidance=2.0, seed=seed).astype(np.float32)
        judge = ClassifierModel("pneumoniamnist").predict_proba(syn, force=True)
        gen_acc = float((judge.argmax(1) == ys).mean())
        row = {
            "seed": seed,
            "n_real": len(real),
            "real_class_counts": real.class_counts(),
            "n_calibration": len(calib),
            "n_synthetic": len(ys),
            "generator": {
                "steps": info["training"]["steps"],
                "seconds": info["training"]["seconds"],
                "judged_class_accuracy": gen_acc,
            },
            "generator_and_sampling_s": round(time.perf_counter() - t0, 1),
        }
        print(f"seed {seed}: generator {row['generator']}", flush=True)
        aug = ClassificationData(
            np.concatenate([real.images, syn]),
            np.concatenate([real.labels, ys]),
            CLASSES,
            [*real.ids, *[f"syn_{i}" for i in range(len(ys))]],
        )
        for arm, data in (("real", real), ("real+synthetic", aug), ("real-repeated", rep)):
            row[arm] = train_arm(arm, data, calib, seed, work)
        res["seeds"].append(row)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    # mean over seeds of the AUROC difference, paired bootstrap over the validation images
    rng = np.random.default_rng(0)
    y = val.labels
    boot_ix = [rng.integers(0, len(y), len(y)) for _ in range(2000)]

    def mean_diff(ix: np.ndarray, control: str) -> float:
        pairs = zip(probs["real+synthetic"], probs[control], strict=True)
        return float(np.mean([auroc(y[ix], a[ix]) - auroc(y[ix], b[ix]) for a, b in pairs]))

    def mean_of(arm: str, key: str) -> float:
        return float(np.mean([r[arm][key] for r in res["seeds"]]))

    res["summary"] = {f"{k}_{arm}_mean": mean_of(arm, k) for arm in ARMS for k in ("auroc", "balanced_accuracy")}
    for control in ("real", "real-repeated"):
        boots = np.array([mean_diff(ix, control) for ix in boot_ix])
        res["summary"][f"auroc_difference_vs_{control}"] = {
            "mean_over_seeds": mean_diff(np.arange(len(y)), control),
            "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "per_seed": [r["real+synthetic"]["auroc"] - r[control]["auroc"] for r in res["seeds"]],
        }
    res["total_seconds"] = round(time.perf_counter() - t_all, 1)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["summary"], indent=2))


if __name__ == "__main__":
    main()
