"""Federated benchmark (issue 20): 3 sites split from the hippocampus training cases, the same wall-clock budget
for centralised training (`medimg train` on all their cases), federated FedAvg (`medimg federated`, Flower's
simulation runtime) and federated FedAvg with differential privacy (Opacus DP-SGD, epsilon = 8 per site); held-out
Dice on the same 40 cases for all three.

    python benchmarks/federated_hippocampus.py [--data ../shared/data/hippocampus] [--time-budget 10m]
        [--runs central,fedavg,dp] [--rounds 10] [--dp-epsilon 8] [--dp-delta 1e-3] [--out /tmp/medimg_fed]
        [--json FILE]

Split: benchmarks/splits/hippocampus_80_20.json (160 training cases, dealt to 3 sites of 53/53/54 by a seeded
shuffle; 40 held-out). Each site keeps 10 % of its cases for its own validation (the centralised run validates on
the held-out cases only, so it trains on all 160). Targets: federated held-out Dice >= 0.82; with epsilon 8:
>= 0.70, with the accounting recorded.

Results: ``--json`` (default benchmarks/results/federated_hippocampus.json) with machine, date, versions, budget,
wall time per run, held-out Dice per class, and each site's epsilon. A budget under 10 minutes is marked
``"smoke": true``.
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

NAMES = {1: "anterior", 2: "posterior"}


def make_sites(
    data: Path, train_ids: list[str], test_ids: list[str], root: Path, n_sites: int, seed: int
) -> list[Path]:
    """Site folders (symlinks to the cases) and a test folder; the training cases dealt round-robin after a seeded
    shuffle."""
    order = [train_ids[i] for i in np.random.default_rng(seed).permutation(len(train_ids))]
    groups = {f"site{k + 1}": order[k::n_sites] for k in range(n_sites)}
    groups["test"] = test_ids
    for name, ids in groups.items():
        d = root / name
        if d.exists():
            shutil.rmtree(d)
        for sub in ("imagesTr", "labelsTr"):
            (d / sub).mkdir(parents=True)
            for cid in ids:
                src = next((data / sub).glob(f"{cid}.*"))
                (d / sub / src.name).symlink_to(src.resolve())
    return [root / f"site{k + 1}" for k in range(n_sites)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--split", type=Path, default=HERE / "splits" / "hippocampus_80_20.json")
    ap.add_argument("--time-budget", default="10m")
    ap.add_argument("--runs", default="central,fedavg,dp")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--dp-epsilon", type=float, default=8.0)
    ap.add_argument("--dp-delta", type=float, default=1e-3)
    ap.add_argument("--dp-rounds", type=int, default=None, help="rounds of the DP run (default --rounds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/medimg_fed"))
    ap.add_argument("--json", type=Path, default=HERE / "results" / "federated_hippocampus.json")
    args = ap.parse_args()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from medimg.federated import train_federated

    t_all = time.perf_counter()
    budget = parse_duration(args.time_budget)
    split = load_split(args.split)
    args.out.mkdir(parents=True, exist_ok=True)
    sites = make_sites(args.data, split["train"], split["val"], args.out / "data", args.sites, args.seed)
    test = args.out / "data" / "test"
    ds_test = load_dataset(test)
    ds_test.labels = {0: "background", **NAMES}
    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    runs: dict[str, Any] = dict(previous.get("runs", {})) if previous.get("time_budget_s") == budget else {}
    for run in args.runs.split(","):
        model = args.out / f"model_{run}"
        shutil.rmtree(model, ignore_errors=True)
        t0 = time.perf_counter()
        print(f"== {run}", flush=True)
        if run == "central":
            ds = load_dataset(args.data)
            info = train_model(
                ds,
                model,
                time_budget_s=budget,
                split=split,
                name="hippocampus_central",
                resume=False,
                on_epoch=lambda e: print(
                    f"  it {e['iteration']:5d}/{e['total_iterations']}  {e['elapsed_s']:6.1f}s  "
                    f"pseudo-Dice {e['val_pseudo_dice']:.3f}",
                    flush=True,
                ),
            )
            res: dict[str, Any] = {"n_train": info["n_train"], "iterations": info["iterations"]}
        elif run in ("fedavg", "fedprox", "dp"):
            dp = run == "dp"
            info = train_federated(
                sites,
                model,
                time_budget_s=budget,
                rounds=(args.dp_rounds or args.rounds) if dp else args.rounds,
                strategy="fedprox" if run == "fedprox" else "fedavg",
                dp_epsilon=args.dp_epsilon if dp else None,
                dp_delta=args.dp_delta,
                seed=args.seed,
                on_round=lambda e: print(
                    f"  round {e['round']:3d}  {e['elapsed_s']:6.1f}s  pseudo-Dice {e['val_pseudo_dice']:.3f}",
                    flush=True,
                ),
                on_status=lambda s: print(f"  {s}", flush=True),
            )
            fed = json.loads((model / "federated.json").read_text())
            res = {
                "n_train": info["n_train"],
                "rounds": fed["rounds"],
                "local_steps": fed["local_steps"],
                "steps_per_site": {
                    s: int(sum(h["fit"][s]["steps"] for h in fed["rounds_log"])) for s in fed["rounds_log"][0]["fit"]
                },
                "site_validation_mean_dice": {
                    k: v["mean_dice"] for k, v in json.loads((model / "validation.json").read_text())["sites"].items()
                },
            }
            if dp:
                res["privacy"] = json.loads((model / "privacy.json").read_text())
        else:
            raise SystemExit(f"unknown run {run!r}: central, fedavg, fedprox or dp")
        res["training_seconds"] = info["training_seconds"]
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        res.update(held_out_dice(model, ds_test, [c.case_id for c in ds_test.cases]))
        print(f"  held-out mean Dice {res['mean_dice']:.4f}", flush=True)
        runs[run] = res
        write_result(args, budget, sites, ds_test, runs, t_all)  # after every run: a crash keeps what finished


def write_result(args: Any, budget: float, sites: list[Path], ds_test: Any, runs: dict[str, Any], t_all: float) -> None:
    """Write the results JSON (all runs so far)."""
    result = {
        "benchmark": "federated_hippocampus",
        "smoke": budget < 600,
        "data": str(args.data),
        "split": str(args.split),
        "sites": {s.name: len(list((s / "imagesTr").iterdir())) for s in sites},
        "held_out_cases": len(ds_test.cases),
        "time_budget_s": budget,
        "dp": {"epsilon": args.dp_epsilon, "delta": args.dp_delta, "privacy_unit": "case"},
        "runs": runs,
        "targets": "federated held-out Dice >= 0.82 (centralised beside it); epsilon 8: >= 0.70",
        "medimg_version": medimg.__version__,
        "versions": {m: __import__(m).__version__ for m in ("flwr", "opacus", "torch", "ray")},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "timing_note": f"1/5/15-minute load average at the end: {[round(v, 2) for v in os.getloadavg()]}",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds_this_invocation": round(time.perf_counter() - t_all, 1),
        "command": "python benchmarks/federated_hippocampus.py " + " ".join(sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
