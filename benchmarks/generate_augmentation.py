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
images (2000 resamples; the same resample for every seed and both arms). Results:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/pneumoniamnist/pneumoniamnist.npz")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--gen-budget", default="6m")
    ap.add_argument("--clf-budget", type=float, default=90.0)
    ap.add_argument("--synthetic-per-class", type=int, default=250)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg_gen_augmentation"))
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
    probs: dict[str, list[np.ndarray]] = {"real": [], "real+synthetic": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        pool = train.subset(label_subset(train, args.fraction, seed))
        tr_idx, te_idx = stratified_split(pool, 0.2, seed)
        real, calib = pool.subset(tr_idx), pool.subset(te_idx)
        work = args.work / f"seed{seed}"
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
        row: dict = {
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
        for arm, data in (("real", real), ("real+synthetic", aug)):
            out = work / f"clf_{arm.replace('+', '_')}"
            cfg = {"seed": seed, "select": "last", "batch_size": 128}
            t1 = time.perf_counter()
            ci = train_classifier(data, out, args.clf_budget, val=calib, config=cfg)
            p = ClassifierModel(out).predict_proba(val.images)[:, 1]
            probs[arm].append(p)
            row[arm] = {**scores(val.labels, p), "steps": ci["steps"], "seconds": round(time.perf_counter() - t1, 1)}
            print(f"seed {seed} {arm}: {row[arm]}", flush=True)
        row["auroc_difference"] = row["real+synthetic"]["auroc"] - row["real"]["auroc"]
        res["seeds"].append(row)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    # mean over seeds of the AUROC difference, paired bootstrap over the validation images
    rng = np.random.default_rng(0)
    y = val.labels

    def mean_diff(ix: np.ndarray) -> float:
        return float(
            np.mean(
                [
                    auroc(y[ix], a[ix]) - auroc(y[ix], b[ix])
                    for a, b in zip(probs["real+synthetic"], probs["real"], strict=True)
                ]
            )
        )

    point = mean_diff(np.arange(len(y)))
    boots = np.array([mean_diff(rng.integers(0, len(y), len(y))) for _ in range(2000)])
    res["summary"] = {
        "auroc_real_mean": float(np.mean([r["real"]["auroc"] for r in res["seeds"]])),
        "auroc_real_synthetic_mean": float(np.mean([r["real+synthetic"]["auroc"] for r in res["seeds"]])),
        "auroc_difference_mean": point,
        "auroc_difference_ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
        "balanced_accuracy_real_mean": float(np.mean([r["real"]["balanced_accuracy"] for r in res["seeds"]])),
        "balanced_accuracy_real_synthetic_mean": float(
            np.mean([r["real+synthetic"]["balanced_accuracy"] for r in res["seeds"]])
        ),
    }
    res["total_seconds"] = round(time.perf_counter() - t_all, 1)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["summary"], indent=2))


if __name__ == "__main__":
    main()
