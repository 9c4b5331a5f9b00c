"""Semi-supervised benchmark (issue 18): 20 labelled hippocampus cases alone vs the same 20 plus the other training
cases as unlabelled images (`medimg train --unlabeled DIR --method M`), same wall-clock budget; Dice on
the 40 held-out cases. Each semi-supervised run (``--runs``: mean-teacher, self-training, copy-paste) is compared with
the supervised run by a paired bootstrap of the per-case Dice difference.

    python benchmarks/semi_supervised.py [--data ../shared/data/hippocampus] [--labelled 20] [--time-budget 10m]
        [--runs supervised,self-training,copy-paste] [--seed 0] [--out /tmp/medimg_semi] [--json FILE]

Split: benchmarks/splits/hippocampus_80_20.json. The 160 training cases are shuffled with ``--seed``; the first
``--labelled`` keep their labels, and the other 140 become an unlabelled image folder. The shared copy of the
dataset has 200 labelled cases, so 40 are held out and 140 (not the issue's 180) are unlabelled. The 40 held-out
cases are the models' validation set, so validation only measures and never selects. Target: held-out Dice +0.02 or
more from the unlabelled images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.io._atomic import atomic_path
from medimg.seg import load_dataset, parse_duration, train_model
from medimg.seg.train import load_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hippocampus_heldout import held_out_dice  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--split", type=Path, default=HERE / "splits" / "hippocampus_80_20.json")
    ap.add_argument("--labelled", type=int, default=20)
    ap.add_argument("--time-budget", default="10m")
    ap.add_argument("--runs", default="supervised,self-training,copy-paste")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/medimg_semi"))
    ap.add_argument("--json", type=Path, default=HERE / "results" / "semi_supervised.json")
    args = ap.parse_args()
    t_all = time.perf_counter()
    budget = parse_duration(args.time_budget)
    split = load_split(args.split)
    order = [split["train"][i] for i in np.random.default_rng(args.seed).permutation(len(split["train"]))]
    labelled, unlabelled = order[: args.labelled], order[args.labelled :]
    u_dir = args.out / "unlabelled"
    shutil.rmtree(u_dir, ignore_errors=True)
    u_dir.mkdir(parents=True)
    for cid in unlabelled:
        src = next((args.data / "imagesTr").glob(f"{cid}.*"))
        (u_dir / src.name).symlink_to(src.resolve())
    ds = load_dataset(args.data)
    ds.labels = {0: "background", 1: "anterior", 2: "posterior"}
    sub = {"train": labelled, "val": split["val"]}
    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    same = previous.get("time_budget_s") == budget and previous.get("seed") == args.seed
    runs: dict[str, Any] = dict(previous.get("runs", {})) if same else {}
    for run in args.runs.split(","):
        model = args.out / f"model_{run}"
        shutil.rmtree(model, ignore_errors=True)
        print(f"== {run}", flush=True)
        t0 = time.perf_counter()
        info = train_model(
            ds,
            model,
            time_budget_s=budget,
            split=sub,
            name=f"hippocampus_{run}",
            resume=False,
            unlabeled=u_dir if run != "supervised" else None,
            method=run if run != "supervised" else None,
            on_epoch=lambda e: print(
                f"  it {e['iteration']:5d}/{e['total_iterations']}  {e['elapsed_s']:6.1f}s  "
                f"loss {e['train_loss']:.3f}  pseudo-Dice {e['val_pseudo_dice']:.3f}",
                flush=True,
            ),
        )
        res = {k: info[k] for k in ("iterations", "training_seconds", "n_train", "precision") if k in info}
        if "pseudo_label_rounds" in info.get("semi_supervised", {}):
            res["pseudo_label_rounds"] = info["semi_supervised"]["pseudo_label_rounds"]
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        res.update(held_out_dice(model, ds, split["val"]))
        print(f"  held-out mean Dice {res['mean_dice']:.4f}", flush=True)
        runs[run] = res
    summary: dict[str, Any] = {}
    for run in runs:
        if run == "supervised" or "supervised" not in runs:
            continue
        a = np.asarray(runs[run]["per_case_mean_dice"])
        b = np.asarray(runs["supervised"]["per_case_mean_dice"])
        d = a - b
        rng = np.random.default_rng(0)
        boots = [float(d[rng.integers(0, len(d), len(d))].mean()) for _ in range(2000)]
        summary[run] = {
            "dice_gain": float(d.mean()),
            "dice_gain_ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "cases_improved": int((d > 0).sum()),
        }
    result = {
        "benchmark": "semi_supervised",
        "smoke": budget < 600,
        "data": str(args.data),
        "split": str(args.split),
        "seed": args.seed,
        "n_labelled": len(labelled),
        "n_unlabelled": len(unlabelled),
        "held_out_cases": len(split["val"]),
        "time_budget_s": budget,
        "runs": runs,
        "paired_difference": summary,
        "target": "held-out Dice +0.02 or more with the unlabelled images (20 labelled, 10-minute budget)",
        "medimg_version": medimg.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "timing_note": f"1/5/15-minute load average at the end: {[round(v, 2) for v in os.getloadavg()]}",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "command": "python benchmarks/semi_supervised.py " + " ".join(sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
