"""Sparse-annotation benchmark (issue 18): train on K annotated slices per training volume (the rest nnU-Net's
``ignore`` label: no loss) and measure Dice on held-out cases with FULL labels, within a time budget; optionally
the same budget on full labels for comparison.

    python benchmarks/sparse_train.py [--data ../shared/data/hippocampus] [--slices 3] [--axis 1]
        [--time-budget 10m] [--method self-training] [--full-baseline] [--out /tmp/medimg_sparse] [--json FILE]

Split: benchmarks/splits/hippocampus_80_20.json (160 training, 40 held-out cases). The sparse copy of the
dataset (benchmarks/sparse_labels.py; the 40 held-out cases keep their full labels) is written to
``--out/data``; the model to ``--out/model_sparse`` (and ``--out/model_full`` with ``--full-baseline``). Held-out
Dice per class comes from medimg's Predictor and ``segmentation_metrics`` on the full reference labels. The
issue's target: 3 slices per volume, 10-minute budget, held-out mean Dice >= 0.83 (full labels: 0.884).

Results: ``--json`` (default benchmarks/results/sparse_train.json) with the machine, date, versions, budget and
wall time. A run with a budget under 10 minutes says so in the JSON (``"smoke": true``): its Dice is not the
benchmark's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import medimg
from medimg.io._atomic import atomic_path
from medimg.seg import load_dataset, parse_duration, train_model
from medimg.seg.train import load_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hippocampus_heldout import held_out_dice  # noqa: E402
from sparse_labels import make_sparse_dataset  # noqa: E402

NAMES = {1: "anterior", 2: "posterior"}


def train(
    ds: Any, out: Path, budget: float, split: dict[str, list[str]], name: str, method: str | None = None
) -> dict[str, Any]:
    info = train_model(
        ds,
        out,
        time_budget_s=budget,
        split=split,
        name=name,
        resume=False,
        method=method,
        on_epoch=lambda e: print(
            f"  [{name}] it {e['iteration']:5d}/{e['total_iterations']}  {e['elapsed_s']:7.1f}s  "
            f"loss {e['train_loss']:.3f}  pseudo-Dice {e['val_pseudo_dice']:.3f}",
            flush=True,
        ),
    )
    res = {k: info[k] for k in ("training_seconds", "iterations", "precision", "n_train", "n_val") if k in info}
    if "semi_supervised" in info:
        res["method"] = info["semi_supervised"]["method"]
        res["pseudo_label_rounds"] = info["semi_supervised"].get("pseudo_label_rounds")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument(
        "--axis",
        type=int,
        default=1,
        help="array axis the annotated slices cut (1: ~8 %% of voxels; -1: orthogonal, one axis per slice in turn)",
    )
    ap.add_argument("--time-budget", default="10m")
    ap.add_argument(
        "--method",
        choices=["self-training", "copy-paste"],
        help="fill the ignored voxels with the network's confident pseudo-labels (medimg train --method)",
    )
    ap.add_argument("--full-baseline", action="store_true", help="also train on full labels, same budget")
    ap.add_argument("--split", type=Path, default=HERE / "splits" / "hippocampus_80_20.json")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medimg_sparse"))
    ap.add_argument("--json", type=Path, default=HERE / "results" / "sparse_train.json")
    args = ap.parse_args()
    t_all = time.perf_counter()
    budget = parse_duration(args.time_budget)
    split = load_split(args.split)
    sparse_dir = args.out / "data"
    if not sparse_dir.exists():
        args.out.mkdir(parents=True, exist_ok=True)
        make_sparse_dataset(args.data, sparse_dir, args.slices, args.axis, NAMES, keep_full=split["val"])
    report = json.loads((sparse_dir / "sparse_report.json").read_text())
    if report["slices_per_volume"] != args.slices or report["axis"] != args.axis:
        raise SystemExit(f"{sparse_dir} was made with other settings; remove it or choose another --out.")
    print(
        f"sparse labels: {args.slices} slices/volume along axis {args.axis}, "
        f"{report['fraction_label_voxels_kept']:.1%} of the training label voxels kept"
    )
    ds_sparse = load_dataset(sparse_dir)
    ds_full = load_dataset(args.data)
    ds_full.labels = {0: "background", **NAMES}
    runs: dict[str, Any] = {}
    runs["sparse"] = train(ds_sparse, args.out / "model_sparse", budget, split, "hippocampus_sparse", args.method)
    runs["sparse"].update(held_out_dice(args.out / "model_sparse", ds_full, split["val"]))
    if args.full_baseline:
        runs["full"] = train(ds_full, args.out / "model_full", budget, split, "hippocampus_full")
        runs["full"].update(held_out_dice(args.out / "model_full", ds_full, split["val"]))
    result = {
        "benchmark": "sparse_train",
        "smoke": budget < 600,
        "note": "budget under the issue's 10 minutes: a smoke run, not the benchmark figure" if budget < 600 else "",
        "data": str(args.data),
        "split": str(args.split),
        "slices_per_volume": args.slices,
        "axis": args.axis,
        "fraction_label_voxels_kept": report["fraction_label_voxels_kept"],
        "fraction_voxels_annotated": report["fraction_voxels_annotated"],
        "ignore_label": report["ignore_label"],
        "time_budget_s": budget,
        "method": args.method or "labels only",
        "runs": runs,
        "target": "held-out mean Dice >= 0.83 with 3 slices/volume, 10-minute budget (full labels: 0.884)",
        "medimg_version": medimg.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "timing_note": f"1/5/15-minute load average at the end: {[round(v, 2) for v in os.getloadavg()]}",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "command": "python benchmarks/sparse_train.py " + " ".join(sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"} | {"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
