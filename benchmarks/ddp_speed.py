"""Data-parallel training speed: ``medimg train --devices 1`` vs ``--devices 2`` on the MSD hippocampus set.

Usage: python benchmarks/ddp_speed.py [--shared ../shared/data] [--iterations 20] [--cases 20]
       [--out benchmarks/results/ddp_speed.json]

Every run uses the plan ``medimg plan`` makes for the dataset (DynUNet, its patch and batch size) with one fixed
``--precision`` (default bf16, what ``auto`` picks on this project's CPUs when they are quiet) and ``--cases``
cases (80 % from the start of benchmarks/splits/hippocampus_80_20.json's train list, 20 % from its val list), for a
fixed number of iterations (``max_iterations``; no time budget). The first epoch (5 iterations: worker start-up,
warm-up) is not timed: the rate is taken between the first and the last epoch entry of the training log (rank 0's
clock; the pseudo-Dice on one validation batch per epoch is included, equally for all runs).

Runs: one process with torch's default threads (:class:`medimg.seg.Trainer`, the ``--devices 1`` path); two
processes (:func:`medimg.seg.distributed.train_distributed`, 1 thread each on 2 cores); and, as a control, one
process with 1 thread (what each DDP worker gets), run last. Each process draws the plan's batch, so 2 processes
train on twice the patches per iteration: the comparison is in **patches per second**.
The 2-process run's ranks must end with identical weights (checked).

The machine is shared: the load average before and after is recorded, and the JSON says ``measured_under_load``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WARMUP_ITERATIONS = 5  # one epoch, not timed


def _rate(log: list[dict[str, Any]]) -> tuple[int, float]:
    """(iterations, seconds) between the first and the last epoch entry."""
    first, last = log[0], log[-1]
    return last["iteration"] - first["iteration"], last["elapsed_s"] - first["elapsed_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--iterations", type=int, default=20, help="timed iterations after the warm-up epoch")
    ap.add_argument("--cases", type=int, default=20, help="cases used (train + val, from the 80/20 split)")
    ap.add_argument(
        "--precision",
        default="bf16",
        choices=["bf16", "fp32", "auto"],
        help="the same for every run (auto: timed per run, which under load can pick differently)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_speed.json")
    args = ap.parse_args()

    import numpy as np
    import torch

    import medimg
    from medimg.seg import Trainer, fingerprint, load_dataset, make_plan
    from medimg.seg.distributed import cpu_count, train_distributed

    load_before = os.getloadavg()
    t_all = time.perf_counter()
    ds = load_dataset(args.shared / "hippocampus")
    split_all = json.loads((ROOT / "benchmarks" / "splits" / "hippocampus_80_20.json").read_text())
    n_val = max(1, args.cases // 5)
    split = {"train": split_all["train"][: args.cases - n_val], "val": split_all["val"][:n_val]}
    keep = set(split["train"] + split["val"])
    ds.cases = [c for c in ds.cases if c.case_id in keep]
    plan = make_plan(fingerprint(ds))
    plan["training"].update(
        iterations_per_epoch=WARMUP_ITERATIONS, val_patches=plan["batch_size"], precision=args.precision
    )
    total = WARMUP_ITERATIONS + args.iterations
    total -= total % WARMUP_ITERATIONS  # whole epochs: the last log entry is the last iteration
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ddp-speed-") as tmp:
        out1, out2, out3 = Path(tmp) / "one", Path(tmp) / "two", Path(tmp) / "one_1thread"
        t0 = time.perf_counter()
        tr = Trainer(ds, plan, out1, split, time_budget_s=3600, max_iterations=total)
        res1 = tr.run(resume=False)
        wall1 = time.perf_counter() - t0
        shutil.copytree(out1 / "preprocessed", out2 / "preprocessed")  # the same cache, not re-made
        shutil.copytree(out1 / "preprocessed", out3 / "preprocessed")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # control: one process with the threads one DDP worker gets
        t0 = time.perf_counter()
        res3 = Trainer(ds, plan, out3, split, time_budget_s=3600, max_iterations=total).run(resume=False)
        wall3 = time.perf_counter() - t0
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        res2 = train_distributed(ds, plan, out2, split, 3600, devices=2, max_iterations=total, resume=False)
        wall2 = time.perf_counter() - t0
    for name, res, wall, devices in (
        ("devices_1", res1, wall1, 1),
        ("devices_2", res2, wall2, 2),
        ("devices_1_one_thread", res3, wall3, 1),
    ):
        its, secs = _rate(res["log"])
        patches = its * plan["batch_size"] * devices
        runs[name] = {
            "devices": devices,
            "threads_per_process": res.get("threads_per_process", 1 if name.endswith("one_thread") else threads),
            "precision": res["precision"],
            "timed_iterations": its,
            "timed_seconds": round(secs, 2),
            "iterations_per_s": round(its / secs, 3),
            "patches_per_iteration": plan["batch_size"] * devices,
            "patches_per_s": round(patches / secs, 3),
            "wall_s_including_startup": round(wall, 1),
            "final_train_loss": round(float(res["log"][-1]["train_loss"]), 4),
        }
    digests = res2["weight_digests"]
    if len(set(digests)) != 1:
        raise SystemExit(f"ranks ended with different weights: {digests}")
    ratio = runs["devices_2"]["patches_per_s"] / runs["devices_1"]["patches_per_s"]
    load_after = os.getloadavg()
    result = {
        "benchmark": "ddp_speed",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({cpu_count()} usable), "
        f"Python {platform.python_version()}",
        "measured_under_load": True,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "note": "measured briefly while the 2-core machine was shared with other people's jobs (marked under load "
        "regardless of the load average); rerun quietly for figures to quote",
        "data": f"../shared/data/hippocampus (MSD Task04): {len(split['train'])} training + {len(split['val'])} "
        "validation cases from benchmarks/splits/hippocampus_80_20.json",
        "plan": {
            "patch_size": plan["patch_size"],
            "batch_size_per_process": plan["batch_size"],
            "filters": plan["network"]["filters"],
            "precision": args.precision,
        },
        "iterations": {"warmup_untimed": WARMUP_ITERATIONS, "total": total},
        "versions": {"medimg": medimg.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "runs": runs,
        "patches_per_s_ratio_2_over_1": round(ratio, 3),
        "iterations_per_s_ratio_2_over_1": round(
            runs["devices_2"]["iterations_per_s"] / runs["devices_1"]["iterations_per_s"], 3
        ),
        "patches_per_s_ratio_2_over_1_one_thread": round(
            runs["devices_2"]["patches_per_s"] / runs["devices_1_one_thread"]["patches_per_s"], 3
        ),
        "ranks_identical_weights": True,
        "wall_time_s": round(time.perf_counter() - t_all, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"runs": runs, "patches_per_s_ratio_2_over_1": result["patches_per_s_ratio_2_over_1"]}, indent=2))


if __name__ == "__main__":
    main()
