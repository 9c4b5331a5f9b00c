"""Segmentation in context (issue 16): segment held-out volumes from 8 labelled examples with no training
(`medimg segment IMAGE --support DATASET`, multi-atlas registration + label fusion) vs a `medimg train` model trained
3 minutes on the same 8 (the CLI's default `--configurations auto`), in one script, on the same cases.

    python benchmarks/incontext_segment.py [--task hippocampus|chaos] [--support-cases 8] [--seed 0]
        [--train-budget 3m] [--speeds fast,default] [--targets N] [--out DIR] [--json FILE]

Tasks: ``hippocampus`` (../shared/data/hippocampus, split benchmarks/splits/hippocampus_80_20.json: support from the
160 training cases, targets the 40 held-out; labels 1 anterior, 2 posterior) and ``chaos`` (../shared/data/chaos_mr,
T2 MR, split benchmarks/splits/chaos_split.json: support from the 10 training volumes, targets the 2 validation + 4
test volumes; labels 1 liver, 2 right kidney, 3 left kidney, 4 spleen). The training cases are shuffled with
``--seed``; the first ``--support-cases`` are the support set (and the trained model's whole training set: its
validation cases are the same 8, so validation only reports and never selects). For each
target every support case is registered once per speed; the propagated labels are then fused by each rule
(weighted, majority, staple): a target's in-context time is its registrations plus that fusion, the work
`segment_in_context` does. Dice per class against the full reference labels, mean over classes and targets.

Target (issue 16): in-context Dice within 0.03 of the trained model's, in a tenth of its training time or less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.io._atomic import atomic_path
from medimg.metrics import segmentation_metrics
from medimg.register.api import register
from medimg.register.fusion import majority_vote, staple, weighted_vote
from medimg.seg import load_dataset, parse_duration, train_model
from medimg.seg.incontext import load_support

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _seg_common import machine  # noqa: E402

FUSIONS = ("weighted", "majority", "staple")
TASKS: dict[str, dict[str, Any]] = {
    "hippocampus": {
        "data": "hippocampus",
        "split": "hippocampus_80_20.json",
        "targets": ["val"],
        "labels": {1: "anterior", 2: "posterior"},
        "json": "incontext_segment.json",
    },
    "chaos": {
        "data": "chaos_mr",
        "split": "chaos_split.json",
        "targets": ["val", "test"],
        "labels": {1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"},
        "json": "incontext_segment_chaos.json",
    },
}


def dice_per_class(pred: Any, ref: Any, labels: list[int]) -> list[float]:
    m = segmentation_metrics(pred, ref, labels=labels, metrics=("dice",))
    return [float(m[c]["dice"]) for c in labels]


def trained_dice(model: Path, ds: Any, ids: list[str], labels: list[int]) -> dict[str, Any]:
    """Dice per class of a trained model on ``ids`` (whole volumes through the Predictor) and seconds per case."""
    from medimg.seg import Predictor

    pred = Predictor(model)
    rows = []
    t0 = time.perf_counter()
    for cid in ids:
        case = ds.case(cid)
        out = pred([medimg.read(p) for p in case.images])
        rows.append(dice_per_class(out, medimg.read_labels(case.label), labels))
    d = np.asarray(rows)
    return {
        "dice_per_class": {str(c): float(d[:, i].mean()) for i, c in enumerate(labels)},
        "mean_dice": float(d.mean()),
        "per_case_mean_dice": [float(x) for x in d.mean(1)],
        "predict_seconds_per_case": round((time.perf_counter() - t0) / len(ids), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="hippocampus")
    ap.add_argument("--support-cases", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-budget", default="3m")
    ap.add_argument("--speeds", default="fast,default")
    ap.add_argument("--targets", type=int, default=None, help="first N held-out cases (default: all 40)")
    ap.add_argument("--skip-train", action="store_true", help="keep the trained row of an earlier --json")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default /tmp/medimg_incontext_TASK)")
    ap.add_argument("--json", type=Path, default=None, help="default benchmarks/results/incontext_segment[_chaos].json")
    args = ap.parse_args()
    task = TASKS[args.task]
    data = HERE.parents[1] / "shared" / "data" / task["data"]
    args.out = args.out or Path(f"/tmp/medimg_incontext_{args.task}")
    args.json = args.json or HERE / "results" / task["json"]
    labels = sorted(task["labels"])
    t_all = time.perf_counter()
    split_file = HERE / "splits" / task["split"]
    split = json.loads(split_file.read_text())
    order = [split["train"][i] for i in np.random.default_rng(args.seed).permutation(len(split["train"]))]
    support_ids = order[: args.support_cases]
    targets = [c for k in task["targets"] for c in split[k]]
    targets = targets[: args.targets] if args.targets else targets
    sup_dir = args.out / "support"
    shutil.rmtree(sup_dir, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        (sup_dir / sub).mkdir(parents=True)
        for cid in support_ids:
            src = next((data / sub).glob(f"{cid}.*"))
            (sup_dir / sub / src.name).symlink_to(src.resolve())
    (sup_dir / "dataset.json").write_text(
        json.dumps(
            {
                "name": f"{args.task}_support",
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, **{v: k for k, v in task["labels"].items()}},
                "numTraining": len(support_ids),
                "file_ending": ".nii.gz",
            }
        )
    )
    ds = load_dataset(data)
    ds.labels = {0: "background", **task["labels"]}
    previous = json.loads(args.json.read_text()) if args.json.exists() else {}

    # ---- the trained model on the same 8 cases
    if args.skip_train and "trained" in previous:
        trained = previous["trained"]
    else:
        model = args.out / "model"
        shutil.rmtree(model, ignore_errors=True)
        budget = parse_duration(args.train_budget)
        print(f"== medimg train on the {len(support_ids)} support cases, {args.train_budget}", flush=True)
        info = train_model(
            load_dataset(sup_dir),
            model,
            time_budget_s=budget,
            split={"train": support_ids, "val": support_ids},
            name=f"{args.task}_8",
            resume=False,
            configurations=["auto"],
        )
        trained = {k: info[k] for k in ("iterations", "training_seconds", "precision", "configuration") if k in info}
        trained["time_budget_s"] = budget
        trained.update(trained_dice(model, ds, targets, labels))
        print(f"  held-out mean Dice {trained['mean_dice']:.4f}", flush=True)

    # ---- in context
    support = load_support(sup_dir)
    rows: dict[str, Any] = {}
    for speed in args.speeds.split(","):
        per: dict[str, list[list[float]]] = {f: [] for f in FUSIONS}  # per target: Dice per class
        secs: dict[str, list[float]] = {f: [] for f in FUSIONS}
        reg_secs: list[float] = []
        print(f"== in context, registration speed {speed}", flush=True)
        register(support.images[0], support.images[1], method="deformable", speed=speed)  # untimed warm-up
        for cid in targets:
            case = ds.case(cid)
            img = medimg.read(case.images[0])
            ref = medimg.read_labels(case.label)
            t0 = time.perf_counter()
            w_imgs, w_labs = [], []
            for a_img, a_lab in zip(support.images, support.labels, strict=True):
                tr = register(img, a_img, method="deformable", speed=speed).transform
                w_imgs.append(tr.apply(a_img, img, "linear"))
                w_labs.append(tr.apply_labels(a_lab, img, "linear"))
            t_reg = time.perf_counter() - t0
            reg_secs.append(t_reg)
            for f in FUSIONS:
                t1 = time.perf_counter()
                fused = (
                    weighted_vote(img, w_imgs, w_labs)
                    if f == "weighted"
                    else (majority_vote(w_labs) if f == "majority" else staple(w_labs))
                )
                secs[f].append(t_reg + time.perf_counter() - t1)
                per[f].append(dice_per_class(fused, ref, labels))
            print(
                f"  {cid}: " + "  ".join(f"{f} {np.mean(per[f][-1]):.3f}" for f in FUSIONS) + f"  ({t_reg:.2f} s)",
                flush=True,
            )
        for f in FUSIONS:
            d = np.asarray(per[f])
            rows[f"{speed}/{f}"] = {
                "registration_speed": speed,
                "fusion": f,
                "dice_per_class": {str(c): float(d[:, i].mean()) for i, c in enumerate(labels)},
                "mean_dice": float(d.mean()),
                "per_case_mean_dice": [float(x) for x in d.mean(1)],
                "seconds_per_case": round(float(np.mean(secs[f])), 3),
                "seconds_per_case_max": round(float(np.max(secs[f])), 3),
                "dice_gap_to_trained": round(float(d.mean()) - trained["mean_dice"], 4),
                "time_ratio_to_training": round(float(np.mean(secs[f])) / trained["time_budget_s"], 4),
            }
            print(f"  {f}: mean Dice {d.mean():.4f}, {np.mean(secs[f]):.2f} s per case", flush=True)
    result = {
        "benchmark": "incontext_segment",
        "task": args.task,
        "labels": task["labels"],
        "data": str(data),
        "split": str(split_file),
        "seed": args.seed,
        "support_cases": support_ids,
        "n_targets": len(targets),
        "trained": trained,
        "in_context": rows,
        "target": "in-context Dice >= trained Dice - 0.03 (trained 3 min on the same 8), in <= 1/10 of that time",
        "medimg_version": medimg.__version__,
        "machine": machine(),
        "timing_note": f"1/5/15-minute load average at the end: {[round(v, 2) for v in os.getloadavg()]}",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "command": "python benchmarks/incontext_segment.py " + " ".join(sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in rows.items()} | {"trained": trained}, indent=1, default=str)[:4000])


if __name__ == "__main__":
    main()
