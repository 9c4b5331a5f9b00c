"""Hippocampus segmentation benchmark: train medimg with a fixed time budget on a fixed, committed 80/20 split of
the 200 MSD hippocampus cases in ../shared/data, then report Dice per class on the 20 % split and prediction time
per case with and without mirroring TTA.

    python benchmarks/seg_hippocampus.py [--data ../shared/data/hippocampus] [--time-budget 20m] [--out DIR]

The split file is benchmarks/splits/hippocampus_80_20.json (seed 0; created by this script if absent).
Results: benchmarks/results/seg_hippocampus.json. The trained model folder is kept in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import medimg
from medimg.metrics import segmentation_metrics
from medimg.seg import Predictor, load_dataset, make_split, parse_duration, train_model
from medimg.seg.train import load_split, save_split

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--time-budget", default="20m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medimg_bench_hippocampus"))
    ap.add_argument("--split", type=Path, default=HERE / "splits" / "hippocampus_80_20.json")
    args = ap.parse_args()
    t_all = time.perf_counter()
    ds = load_dataset(args.data)
    ds.labels = {0: "background", 1: "anterior", 2: "posterior"}
    if not args.split.exists():
        save_split(make_split([c.case_id for c in ds.cases], 0.2, seed=0), args.split)
    split = load_split(args.split)
    budget = parse_duration(args.time_budget)
    info = train_model(
        ds,
        args.out,
        time_budget_s=budget,
        split=split,
        name="hippocampus",
        resume=False,
        on_epoch=lambda e: print(
            f"  it {e['iteration']:5d}/{e['total_iterations']}  "
            f"{e['elapsed_s']:7.1f}s  loss {e['train_loss']:.3f}  "
            f"pseudo-Dice {e['val_pseudo_dice']:.3f}",
            flush=True,
        ),
    )
    pred = Predictor(args.out)
    timings: dict[str, list[float]] = {"no_tta": [], "tta": []}
    dice: dict[str, list[float]] = {"1": [], "2": []}
    for cid in split["val"]:
        case = ds.case(cid)
        img = medimg.read(case.images[0])
        ref = medimg.read_labels(case.label)  # type: ignore[arg-type]
        for mode, tta in (("no_tta", False), ("tta", True)):
            t0 = time.perf_counter()
            out = pred(img, tta=tta)
            timings[mode].append(time.perf_counter() - t0)
            if mode == "no_tta":
                m = segmentation_metrics(out, ref, labels=[1, 2], metrics=("dice",))
                for c in ("1", "2"):
                    dice[c].append(m[int(c)]["dice"])
    result = {
        "benchmark": "seg_hippocampus",
        "medimg_version": medimg.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "time_budget_s": budget,
        "training_seconds": info["training_seconds"],
        "iterations": info["iterations"],
        "precision": info["precision"],
        "n_train": info["n_train"],
        "n_val": info["n_val"],
        "dice_anterior": float(np.mean(dice["1"])),
        "dice_posterior": float(np.mean(dice["2"])),
        "mean_dice": float(np.mean(dice["1"] + dice["2"])),
        "predict_seconds_per_case": float(np.mean(timings["no_tta"])),
        "predict_seconds_per_case_tta": float(np.mean(timings["tta"])),
        "postprocessing": json.loads((args.out / "plan.json").read_text())["postprocessing"],
        "total_seconds": time.perf_counter() - t_all,
    }
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "seg_hippocampus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
