"""PneumoniaMNIST (28x28 chest X-rays, normal vs pneumonia): train medimg's classifier within a CPU time budget and
report it on the official validation split, with calibration, a robustness table and an explanation figure.

    python benchmarks/classify_pneumoniamnist.py [--data ../shared/data/pneumoniamnist/pneumoniamnist.npz]
        [--time-budget 15m] [--out /tmp/medimg_pneumoniamnist] [--ship]

Protocol: the training split is cleaned first (exact duplicate images dropped, and training images that also appear
in the validation split — leakage — dropped); 10 % of it (stratified, seeded) is held out for early stopping and
temperature scaling; the official validation split (524 images) is used only for the figures reported here, with
95 % bootstrap CIs (2000 resamples). ``--ship`` stores the model (float16 weights) as the bundled
``pneumoniamnist`` model with its model card. Results: benchmarks/results/classify_pneumoniamnist.json, the
explanation figure docs/images/pneumoniamnist_explain.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from medimg.classify import ClassifierModel, load_npz, train_classifier
from medimg.classify.data import drop_duplicates
from medimg.classify.explain import explanation_figure
from medimg.classify.predict import BUNDLED_DIR
from medimg.classify.probe import metrics_with_ci
from medimg.classify.robustness import robustness_table
from medimg.classify.train import save_model
from medimg.seg.train import parse_duration

HERE = Path(__file__).parent
CLASSES = ["normal", "pneumonia"]


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/pneumoniamnist/pneumoniamnist.npz")
    ap.add_argument("--time-budget", default="15m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medimg_pneumoniamnist"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ship", action="store_true", help="Copy the model into the package as 'pneumoniamnist'.")
    ap.add_argument(
        "--config", default="{}", help='Training config overrides (JSON), e.g. \'{"augment": {"noise": 0.15}}\'.'
    )
    ap.add_argument("--tag", default="", help="Suffix for the results file and figures of a variant.")
    args = ap.parse_args()
    t_all = time.perf_counter()
    train = load_npz(args.data, "train", CLASSES)
    val = load_npz(args.data, "val", CLASSES)
    train, cleaning = drop_duplicates(train, [val])
    print(f"training split after cleaning: {cleaning}")

    def on_epoch(e: dict) -> None:
        print(
            f"epoch {e['epoch']:3d} step {e['step']:5d}/{e['total_steps']} {e['elapsed_s'] / 60:5.2f} min "
            f"loss {e['train_loss']:.4f} held-out AUROC {e['val_auroc']:.4f}",
            flush=True,
        )

    budget = parse_duration(args.time_budget)
    info = train_classifier(
        train,
        args.out,
        budget,
        config={"seed": args.seed, **json.loads(args.config)},
        name="pneumoniamnist",
        on_epoch=on_epoch,
    )
    model = ClassifierModel(args.out)
    t0 = time.perf_counter()
    probs_cal = model.predict_proba(val.images)
    predict_s = time.perf_counter() - t0
    probs_raw = model.predict_proba(val.images, calibrated=False)
    official = {
        "calibrated": metrics_with_ci(val.labels, probs_cal, n_boot=2000),
        "uncalibrated": metrics_with_ci(val.labels, probs_raw, n_boot=2000),
    }
    print("official validation:", json.dumps(official, indent=1))
    t0 = time.perf_counter()
    robust = robustness_table(lambda x: model.predict_proba(x, force=True), val.images, val.labels)
    robust_s = time.perf_counter() - t0
    suffix = f"_{args.tag}" if args.tag else ""
    fig = HERE.parent / "docs" / "images" / f"pneumoniamnist_explain{suffix}.png"
    fig.parent.mkdir(parents=True, exist_ok=True)
    # one pneumonia and one normal validation image, the first of each that the model gets right
    explained = []
    for cls in (1, 0):
        idx = int(next(i for i in range(len(val)) if val.labels[i] == cls and probs_cal[i].argmax() == cls))
        target = fig if cls == 1 else fig.with_name(f"pneumoniamnist_explain_normal{suffix}.png")
        res = explanation_figure(model, val.images[idx], target)
        explained.append({"index": idx, "label": CLASSES[cls], **res, "png": str(target.relative_to(HERE.parent))})
    result = {
        "data": str(args.data),
        "protocol": "train split cleaned (duplicates, leakage); 10% stratified held out for early stopping and "
        "temperature; official val (524) for reporting, bootstrap 2000",
        "cleaning": cleaning,
        "config_overrides": json.loads(args.config),
        "time_budget_s": budget,
        "training": {
            k: info[k]
            for k in (
                "training_seconds",
                "steps",
                "epochs",
                "best_epoch",
                "precision",
                "n_train",
                "n_val",
                "temperature",
            )
        },
        "held_out_10pct": info["validation"],
        "official_val": official,
        "predict_seconds_524_images": predict_s,
        "robustness": robust,
        "robustness_seconds": robust_s,
        "explanations": explained,
        "reference_literature": {
            "MedMNIST v2 ResNet-50 (224)": {"test_auc": 0.962, "test_acc": 0.884},
            "Google AutoML Vision": {"test_auc": 0.991, "test_acc": 0.946},
            "note": "published test-split figures, for orientation only; not run here; ours is the val split",
        },
        "machine": machine(),
        "total_seconds": time.perf_counter() - t_all,
    }
    (HERE / "results" / f"classify_pneumoniamnist{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.ship:
        dest = BUNDLED_DIR / "pneumoniamnist"
        dest.mkdir(parents=True, exist_ok=True)
        shipped = {
            **model.info,
            "name": "pneumoniamnist",
            "weights": "float16",
            "official_val": {k: official["calibrated"][k] for k in ("auroc", "accuracy", "ece")},
        }
        save_model(model.net, shipped, dest, half=True)
        shutil.copy(args.out / "training_log.csv", dest / "training_log.csv")
        check = ClassifierModel("pneumoniamnist").predict_proba(val.images)
        print(f"shipped to {dest}; max |p16 - p32| = {np.abs(check - probs_cal).max():.2e}")
    c = official["calibrated"]
    print(
        f"\nofficial val: AUROC {c['auroc']:.4f} {c['auroc_ci95']}, ACC {c['accuracy']:.4f} {c['accuracy_ci95']}, "
        f"ECE {official['uncalibrated']['ece']:.4f} -> {c['ece']:.4f}; trained {info['training_seconds'] / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
