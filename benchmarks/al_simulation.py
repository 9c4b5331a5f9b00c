"""Active-learning simulation (issue 18): grow a labelled set from a pool of hippocampus training cases, one round
at a time, choosing the next cases with each strategy of :mod:`medimg.active`, retraining after every round, and
measuring Dice on held-out cases.

    python benchmarks/al_simulation.py [--data ../shared/data/hippocampus] [--strategies random,entropy,...]
        [--seeds 0,1,2] [--start-fraction 0.05] [--step-fraction 0.05] [--max-fraction 0.5] [--rounds N]
        [--time-budget-per-round 5m | --iterations-per-round N] [--precision auto] [--passes 4] [--full-reference]
        [--out /tmp/medimg_al] [--json FILE]

Protocol. Split: benchmarks/splits/hippocampus_80_20.json -- the 160 ``train`` cases are the pool, the 40 ``val``
cases are held out (full labels) and give the Dice after every round. For each seed: a seeded random start set of
``start-fraction`` of the pool (the same for every strategy), a model trained on it for the per-round budget
(shared by the strategies: round 0 is trained once per seed); then, for each strategy, each round ranks the
still-unlabelled pool cases with the previous round's model (``medimg.active.rank_cases``; coreset and hybrid use
the labelled cases as centres) and adds the top ``step-fraction`` of the pool, and a model is trained from
scratch on the grown set (same plan, training seed = the run's seed, ``--time-budget-per-round`` of wall-clock).
Held-out Dice = mean over the 40 cases and both classes, without post-processing (validation.json's
``dice_without_postprocessing``: the largest-component choice is made on those same cases, so it is left out).
``--full-reference`` also trains on the whole pool with the same budget, per seed (the "full-data Dice").

The plan comes from fingerprinting the pool once; the preprocessed cases are shared by every model (one cache).

``--iterations-per-round N`` trains every model for exactly N iterations instead of a wall-clock budget: the same
work per model whatever else runs on the machine (and a cheaper protocol than the 5-minute one: the full design is
about 14.5 h here). The result file is rewritten after every model, so an interrupted run keeps what it measured.

Results: ``--json`` (default benchmarks/results/al_simulation.json) with the machine, date, versions, settings and
wall time; a run with fewer than 3 seeds, fewer than all 6 strategies or a budget under 5 minutes per round is
marked ``"smoke": true``: it shows the pipeline works, its Dice figures compare nothing.
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
from medimg.active import STRATEGIES, Candidate, rank_cases
from medimg.io._atomic import atomic_path
from medimg.seg import Predictor, fingerprint, load_dataset, make_plan, parse_duration, train_model
from medimg.seg.plan import save_json
from medimg.seg.train import load_split

HERE = Path(__file__).resolve().parent
NAMES = {0: "background", 1: "anterior", 2: "posterior"}


def train_round(
    ds: Any,
    model_dir: Path,
    plan: dict[str, Any],
    fp_path: Path,
    cache: Path,
    labelled: list[str],
    val: list[str],
    budget: float,
    max_iterations: int | None = None,
) -> dict[str, Any]:
    """Train one model from scratch on ``labelled`` (validated on the held-out ``val``); its figures."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    shutil.copy(fp_path, model_dir / "fingerprint.json")  # the domain record comes from it (no re-fingerprinting)
    (model_dir / "preprocessed").symlink_to(cache, target_is_directory=True)  # one shared preprocessed cache
    t0 = time.perf_counter()
    info = train_model(
        ds,
        model_dir,
        time_budget_s=budget,
        split={"train": sorted(labelled), "val": val},
        plan=plan,
        resume=False,
        max_iterations=max_iterations,
    )
    val_json = json.loads((model_dir / "validation.json").read_text())
    raw = val_json["dice_without_postprocessing"]
    return {
        "n_labelled": len(labelled),
        "held_out_mean_dice": float(np.mean([raw[k] for k in sorted(raw)])),
        "held_out_dice": {NAMES[int(k)]: float(v) for k, v in raw.items()},
        "iterations": info["iterations"],
        "training_seconds": info["training_seconds"],
        "train_and_validate_seconds": round(time.perf_counter() - t0, 1),
    }


def summary_table(result: dict[str, Any]) -> str:
    """Markdown: held-out mean Dice per strategy and labelled fraction, mean (min-max) over the seeds finished by
    every strategy (``n`` seeds)."""
    seeds = [str(sd) for sd in result.get("seeds_finished", [])]
    fracs = sorted(
        {round(h["fraction"], 3) for runs in result["runs"].values() for hist in runs.values() for h in hist}
    )
    lines = ["| strategy | " + " | ".join(f"{f:.0%}" for f in fracs) + " |", "|---" * (len(fracs) + 1) + "|"]
    for strategy, runs in result["runs"].items():
        cells = []
        for f in fracs:
            vals = [h["held_out_mean_dice"] for sd in seeds for h in runs.get(sd, []) if round(h["fraction"], 3) == f]
            cells.append(f"{np.mean(vals):.4f} ({min(vals):.3f}-{max(vals):.3f})" if vals else "--")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    full = [r["held_out_mean_dice"] for sd, r in result.get("full_reference", {}).items() if sd in seeds]
    if full:
        lines.append(f"| (whole pool, 100 %) | {np.mean(full):.4f} ({min(full):.3f}-{max(full):.3f}) |")
    return f"n = {len(seeds)} seed(s): {', '.join(seeds) or 'none finished'}\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--split", type=Path, default=HERE / "splits" / "hippocampus_80_20.json")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--start-fraction", type=float, default=0.05)
    ap.add_argument("--step-fraction", type=float, default=0.05)
    ap.add_argument("--max-fraction", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (round 0 = start set)")
    ap.add_argument("--time-budget-per-round", default="5m", help="wall-clock training budget of every model")
    ap.add_argument(
        "--iterations-per-round",
        type=int,
        default=None,
        help="train every model for exactly this many iterations (no wall-clock budget)",
    )
    ap.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="training precision; auto times both on the first batch (costs ~6 iterations per model)",
    )
    ap.add_argument("--passes", type=int, default=4, help="tta mirror combinations / mc-dropout passes")
    ap.add_argument("--full-reference", action="store_true", help="also train on the whole pool, per seed")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medimg_al"))
    ap.add_argument("--json", type=Path, default=HERE / "results" / "al_simulation.json")
    ap.add_argument("--summary", action="store_true", help="print the Dice table of the --json result and stop")
    args = ap.parse_args()
    if args.summary:
        print(summary_table(json.loads(args.json.read_text())))
        return
    t_all = time.perf_counter()
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise SystemExit(f"unknown strategies {bad}; choose from {', '.join(STRATEGIES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    budget = parse_duration(args.time_budget_per_round)
    iters = args.iterations_per_round
    if iters is not None:
        if iters < 1:
            raise SystemExit("--iterations-per-round must be positive")
        budget = 10 * 24 * 3600.0  # the iteration count decides
    split = load_split(args.split)
    pool_ids, val = sorted(split["train"]), sorted(split["val"])
    n_pool = len(pool_ids)
    n_start = max(1, round(args.start_fraction * n_pool))
    step = max(1, round(args.step_fraction * n_pool))
    n_max = min(n_pool, round(args.max_fraction * n_pool))
    rounds = 1 + max(0, -(-(n_max - n_start) // step))
    if args.rounds is not None:
        rounds = min(rounds, args.rounds)

    ds = load_dataset(args.data)
    ds.labels = dict(NAMES)
    args.out.mkdir(parents=True, exist_ok=True)
    fp_path = args.out / "fingerprint.json"
    if not fp_path.exists():
        pool_ds = load_dataset(args.data)
        pool_ds.labels = dict(NAMES)
        pool_ds.cases = [c for c in pool_ds.cases if c.case_id in set(pool_ids)]
        save_json(fingerprint(pool_ds), fp_path)
    base_plan = make_plan(json.loads(fp_path.read_text()))
    cache = args.out / "preprocessed"
    cache.mkdir(exist_ok=True)
    images = {c.case_id: list(c.images) for c in ds.cases}

    runs: dict[str, Any] = {}
    full_ref: dict[str, Any] = {}

    def write() -> None:
        """(Re)write the result file with every model measured so far."""
        done = [sd for sd in seeds if all(str(sd) in runs.get(st, {}) for st in strategies)]
        complete = len(done) >= 3 and set(strategies) == set(STRATEGIES) and (iters is not None or budget >= 300)
        note = ""
        if not complete:
            note = (
                "smoke run (fewer than 3 seeds finished, not every strategy, or under 5 minutes per round): it shows "
                "the pipeline works end to end; its Dice figures compare nothing"
            )
        elif iters is not None:
            note = (
                f"reduced protocol: every model trained for {iters} iterations (not to convergence), so the Dice "
                "levels are below a full training's; the strategies are compared at equal work"
            )
        result = {
            "benchmark": "al_simulation",
            "smoke": not complete,
            "note": note,
            "seeds_finished": done,
            "data": str(args.data),
            "split": str(args.split),
            "pool_cases": n_pool,
            "held_out_cases": len(val),
            "start_cases": n_start,
            "step_cases": step,
            "max_cases": n_max,
            "rounds": rounds,
            "strategies": strategies,
            "seeds": seeds,
            "time_budget_per_round_s": None if iters is not None else budget,
            "iterations_per_round": iters,
            "passes": args.passes,
            "precision": args.precision,
            "metric": "held-out mean Dice over 40 cases x 2 classes, no post-processing",
            "runs": runs,
            "full_reference": full_ref,
            "medimg_version": medimg.__version__,
            "torch_version": __import__("torch").__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "timing_note": "run on a machine shared with other jobs (timings measured under load)",
            "date": time.strftime("%Y-%m-%d"),
            "wall_seconds": round(time.perf_counter() - t_all, 1),
            "command": "python benchmarks/al_simulation.py " + " ".join(sys.argv[1:]),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")

    for seed in seeds:
        plan = json.loads(json.dumps(base_plan))
        plan["training"]["seed"] = seed
        plan["training"]["precision"] = args.precision
        start = sorted(np.random.default_rng(seed).choice(pool_ids, n_start, replace=False).tolist())
        print(f"seed {seed}: start set of {n_start} cases, {rounds} round(s), {budget:.0f} s per round", flush=True)
        r0_dir = args.out / f"seed{seed}" / "round0"
        r0 = train_round(ds, r0_dir, plan, fp_path, cache, start, val, budget, iters)
        print(f"  round 0 ({n_start} cases): held-out Dice {r0['held_out_mean_dice']:.4f}", flush=True)
        if args.full_reference:
            full_ref[str(seed)] = train_round(
                ds, args.out / f"seed{seed}" / "full", plan, fp_path, cache, pool_ids, val, budget, iters
            )
            write()
            print(f"  full pool: held-out Dice {full_ref[str(seed)]['held_out_mean_dice']:.4f}", flush=True)
        for strategy in strategies:
            labelled = list(start)
            history = [{"round": 0, "fraction": len(labelled) / n_pool, **r0, "added": start}]
            model_dir = r0_dir
            for rnd in range(1, rounds):
                unl = [c for c in pool_ids if c not in set(labelled)]
                k = min(step, len(unl), n_max - len(labelled))
                if k <= 0:
                    break
                t0 = time.perf_counter()
                ranking = rank_cases(
                    Predictor(model_dir),
                    [Candidate(c, images[c]) for c in unl],
                    strategy,
                    k,
                    labelled=[Candidate(c, images[c]) for c in labelled],
                    seed=seed * 1000 + rnd,
                    passes=args.passes if strategy in ("tta", "mc-dropout") else None,
                )
                score_s = time.perf_counter() - t0
                added = [c.case_id for c in ranking.top(k)]
                labelled += added
                model_dir = args.out / f"seed{seed}" / strategy / f"round{rnd}"
                res = train_round(ds, model_dir, plan, fp_path, cache, labelled, val, budget, iters)
                history.append(
                    {
                        "round": rnd,
                        "fraction": len(labelled) / n_pool,
                        **res,
                        "added": added,
                        "refused": [r.case_id for r in ranking.refused],
                        "scoring_seconds": round(score_s, 1),
                        "scoring_seconds_per_case": round(score_s / max(1, len(unl)), 3),
                    }
                )
                print(
                    f"  {strategy} round {rnd} ({len(labelled)} cases, {len(labelled) / n_pool:.0%}): held-out "
                    f"Dice {res['held_out_mean_dice']:.4f}  (scoring {score_s:.0f} s)",
                    flush=True,
                )
                runs.setdefault(strategy, {})[str(seed)] = history
                write()
            runs.setdefault(strategy, {})[str(seed)] = history

    write()
    print(f"wrote {args.json} ({time.perf_counter() - t_all:.1f} s)")


if __name__ == "__main__":
    main()
