"""Label efficiency on PneumoniaMNIST: self-supervised pre-training (SimCLR, masked-image modelling) on the training
images without their labels, then a linear probe, k-NN and fine-tuning with 1 %, 10 % and 100 % of the labels —
against the same network from scratch (random initialisation), evaluated on the official validation split.

    python benchmarks/classify_label_efficiency.py [--data .../pneumoniamnist.npz] [--pretrain-budget 6m]
        [--methods simclr,mae] [--finetune-budgets 45,90,180] [--fractions 0.01,0.1,1]

Protocol: the training split is cleaned as in classify_pneumoniamnist.py (duplicates and images also in the
validation split dropped). Label subsets are stratified and seeded, identical for every initialisation. Fine-tuning
uses the subset only (20 % of it held out for temperature scaling; the last EMA weights are kept, no early stopping
on a tiny split) with the same recipe and budget per fraction for every initialisation. Metrics on the 524
validation images with 95 % bootstrap CIs (1000 resamples). Results: benchmarks/results/classify_label_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from medimg.classify import ClassifierModel, load_npz, train_classifier
from medimg.classify.data import drop_duplicates
from medimg.classify.networks import build_encoder, default_encoder_config
from medimg.classify.probe import label_subset, metrics_with_ci, probe_encoder
from medimg.classify.ssl import pretrain
from medimg.classify.train import load_encoder
from medimg.seg.train import parse_duration

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/pneumoniamnist/pneumoniamnist.npz")
    ap.add_argument("--pretrain-budget", default="6m")
    ap.add_argument("--methods", default="simclr,mae")
    ap.add_argument("--fractions", default="0.01,0.1,1")
    ap.add_argument("--finetune-budgets", default="45,90,180", help="Seconds per fraction.")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg_label_efficiency"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_all = time.perf_counter()
    classes = ["normal", "pneumonia"]
    train = load_npz(args.data, "train", classes)
    val = load_npz(args.data, "val", classes)
    train, cleaning = drop_duplicates(train, [val])
    fractions = [float(v) for v in args.fractions.split(",")]
    budgets = [float(v) for v in args.finetune_budgets.split(",")]
    size = list(train.images.shape[2:])
    inits: dict[str, Path | None] = {"scratch": None}
    pretraining = {}
    for method in [m for m in args.methods.split(",") if m]:
        enc_dir = args.work / f"encoder_{method}"
        info = pretrain(train.images, enc_dir, method, parse_duration(args.pretrain_budget), seed=args.seed)
        pretraining[method] = {k: info[k] for k in ("steps", "seconds", "final_loss", "batch_size")}
        print(f"pre-trained {method}: {pretraining[method]}", flush=True)
        inits[method] = enc_dir
    rows = []
    for name, enc_dir in inits.items():
        if enc_dir is None:
            torch.manual_seed(args.seed)
            encoder = build_encoder(default_encoder_config(2, 1, size))
        else:
            cfg, state = load_encoder(enc_dir)
            encoder = build_encoder(cfg)
            encoder.load_state_dict(state)
        t0 = time.perf_counter()
        for r in probe_encoder(encoder, size, train, val, fractions, args.seed):
            rows.append({"init": name, **r})
        print(f"{name}: probes in {time.perf_counter() - t0:.0f} s", flush=True)
        for frac, budget in zip(fractions, budgets, strict=True):
            sub = train.subset(label_subset(train, frac, args.seed))
            out = args.work / f"ft_{name}_{frac:g}"
            cfg = {"seed": args.seed, "val_fraction": 0.2, "select": "last", "batch_size": 128}
            info = train_classifier(sub, out, budget, config=cfg, init_encoder=enc_dir)
            m = ClassifierModel(out)
            res = metrics_with_ci(val.labels, m.predict_proba(val.images), 1000, args.seed)
            rows.append(
                {
                    "init": name,
                    "fraction": frac,
                    "n_labels": len(sub),
                    "probe": "fine-tune",
                    "seconds": info["training_seconds"],
                    "steps": info["steps"],
                    **res,
                }
            )
            print(
                f"{name} fine-tune {frac:g} ({len(sub)} labels): AUROC {res['auroc']:.4f} ACC {res['accuracy']:.4f}",
                flush=True,
            )
    print("\ninit     labels        probe      AUROC [95% CI]            ACC      ECE")
    for r in rows:
        print(
            f"{r['init']:8s} {r['fraction']:<5g} ({r['n_labels']:4d}) {r['probe']:10s} {r['auroc']:.4f} "
            f"[{r['auroc_ci95'][0]:.3f}, {r['auroc_ci95'][1]:.3f}]  {r['accuracy']:.4f}  {r['ece']:.4f}"
        )
    result = {
        "data": str(args.data),
        "cleaning": cleaning,
        "pretrain_budget_s": parse_duration(args.pretrain_budget),
        "pretraining": pretraining,
        "finetune_budgets_s": dict(zip([str(f) for f in fractions], budgets, strict=True)),
        "rows": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "total_seconds": time.perf_counter() - t_all,
    }
    (HERE / "results" / "classify_label_efficiency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
