"""Ray scaling: throughput (cases/s) of the ``segment`` operation over the 40 held-out hippocampus cases, plain
(here, in this process) and as Ray tasks with 1 and 2 workers, outputs checked identical, Ray's start-up separated.

Usage: python benchmarks/ray_scaling.py [--shared ../shared/data] [--out benchmarks/results/ray_scaling.json]
       (needs Ray: pip install "medimg[scale]")

Runs, each over the same 40 cases (``val`` of benchmarks/splits/hippocampus_80_20.json):

* ``plain_1_thread`` / ``plain_2_threads``: :class:`medimg.scale.LocalRunner` in this process (the code path of
  ``medimg segment FOLDER``), after one warm-up case (imports, model load) that is not timed;
* ``ray_1_worker`` / ``ray_2_workers``: ``ray.init(num_cpus=W)`` (timed apart: *start-up*), then the 40 cases
  twice: a *cold* pass (Ray starts its worker processes, each imports torch + medimg and loads the model) and a
  *warm* pass (workers reused). Each task uses 1 thread.

Every output's label array must be byte-identical to ``plain_1_thread``'s (checked; a difference fails the run).
The scaling model fitted from these numbers (per-case time, per-task overhead, start-up) is written into the JSON;
``--refit`` recomputes it from the runs already recorded (no new measurement).
The machine is shared: the load average before and after is recorded, and figures measured under load are noisy.
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


def _calls(images: list[Path], out: Path) -> list[Any]:
    from medimg.scale import CaseCall

    out.mkdir(parents=True, exist_ok=True)
    return [CaseCall(f.name.split(".")[0], "segment", {"image": str(f), "output": str(out / f.name)}) for f in images]


def _timed(runner: Any, calls: list[Any]) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    outcomes = runner.run(calls)
    wall = time.perf_counter() - t0
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise SystemExit(f"{len(bad)} case(s) failed, e.g. {bad[0].case}: {bad[0].error}")
    return wall, outcomes


def _same(a: Path, b: Path) -> bool:
    import medimg

    x, y = medimg.read_labels(a), medimg.read_labels(b)
    return x.array.dtype == y.array.dtype and x.array.tobytes() == y.array.tobytes()


def fit_model(runs: dict[str, Any], n: int) -> dict[str, Any]:
    """The scaling model from the measured runs: per-case time and per-task overhead from the 1-worker warm pass
    (in-task seconds vs wall, same run, so a load change between runs does not enter), start-up and worker
    warm-up from both Ray runs, the 2-worker prediction against the measurement, and the contention factor
    (in-task time with 2 workers / with 1: 1.0 when both workers have a free core)."""
    r1, r2 = runs["ray_1_worker"], runs["ray_2_workers"]
    case_s = r1["mean_case_s_in_task"]
    overhead_s = r1["warm_wall_s"] / n - case_s
    startup_s = (r1["startup_s"] + r2["startup_s"]) / 2
    warmup_s = ((r1["cold_wall_s"] - r1["warm_wall_s"]) + (r2["cold_wall_s"] - r2["warm_wall_s"])) / 2
    plain_case_s = runs["plain_1_thread"]["wall_s"] / n
    model: dict[str, Any] = {
        "formula": "wall_s(n, W) = startup_s + worker_warmup_s + n * (case_s + task_overhead_s) / W, for W <= free "
        "cores; with fewer free cores each task slows by the contention factor",
        "case_s": round(case_s, 4),
        "task_overhead_s": round(overhead_s, 4),
        "startup_s": round(startup_s, 3),
        "worker_warmup_s": round(warmup_s, 3),
        "plain_case_s": round(plain_case_s, 4),
        "predicted_warm_wall_s_2_workers": round(n * (case_s + overhead_s) / 2, 3),
        "measured_warm_wall_s_2_workers": r2["warm_wall_s"],
        "contention_factor_2_workers": round(r2["mean_case_s_in_task"] / case_s, 3),
        "speedup_2_vs_1_worker_warm": round(r1["warm_wall_s"] / r2["warm_wall_s"], 3),
        "speedup_ray_2_workers_warm_vs_plain_1_thread": round(runs["plain_1_thread"]["wall_s"] / r2["warm_wall_s"], 3),
        "break_even_cases_2_free_cores_vs_plain": None,
    }
    gain = plain_case_s - (case_s + overhead_s) / 2  # seconds saved per case with 2 free cores
    if gain > 0:
        model["break_even_cases_2_free_cores_vs_plain"] = round((startup_s + warmup_s) / gain)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray_scaling.json")
    ap.add_argument(
        "--refit", action="store_true", help="Only recompute the scaling model from the runs already in --out."
    )
    args = ap.parse_args()
    if args.refit:
        old = json.loads(args.out.read_text())
        old["scaling_model"] = fit_model(old["runs"], old["n_cases"])
        args.out.write_text(json.dumps(old, indent=2) + "\n")
        print(json.dumps(old["scaling_model"], indent=2))
        return

    import ray
    import torch

    import medimg
    from medimg.scale import LocalRunner, RayRunner

    t_all = time.perf_counter()
    load_before = os.getloadavg()
    split = json.loads((ROOT / "benchmarks" / "splits" / "hippocampus_80_20.json").read_text())
    images = [args.shared / "hippocampus" / "imagesTr" / f"{c}.nii.gz" for c in split["val"]]
    n = len(images)
    tmp = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    runs: dict[str, Any] = {}
    try:
        LocalRunner().run(_calls(images[:1], tmp / "warmup"))  # imports + model load, not timed
        for threads in (1, 2):
            torch.set_num_threads(threads)
            wall, outs = _timed(LocalRunner(), _calls(images, tmp / f"plain{threads}"))
            runs[f"plain_{threads}_thread{'s' if threads > 1 else ''}"] = {
                "workers": 1,
                "threads": threads,
                "wall_s": round(wall, 3),
                "cases_per_s": round(n / wall, 3),
                "mean_case_s": round(sum(o.seconds for o in outs) / n, 4),
            }
        torch.set_num_threads(1)
        ref = tmp / "plain1"
        for workers in (1, 2):
            if ray.is_initialized():
                ray.shutdown()
            runner = RayRunner(address="local", num_cpus=workers, threads_per_task=1)
            startup = runner.start()
            cold, _ = _timed(runner, _calls(images, tmp / f"ray{workers}_cold"))
            warm, outs = _timed(runner, _calls(images, tmp / f"ray{workers}_warm"))
            runner.close()
            runs[f"ray_{workers}_worker{'s' if workers > 1 else ''}"] = {
                "workers": workers,
                "threads": 1,
                "startup_s": round(startup, 3),
                "cold_wall_s": round(cold, 3),
                "warm_wall_s": round(warm, 3),
                "cases_per_s_warm": round(n / warm, 3),
                "cases_per_s_including_startup_and_cold": round(n / (startup + cold), 3),
                "mean_case_s_in_task": round(sum(o.seconds for o in outs) / n, 4),
                "distinct_worker_processes_warm": len({o.worker for o in outs}),
            }
        identical = {
            name: all(_same(ref / f.name, tmp / name / f.name) for f in images)
            for name in ("plain2", "ray1_cold", "ray1_warm", "ray2_cold", "ray2_warm")
        }
        if not all(identical.values()):
            raise SystemExit(f"outputs differ from the plain run: {identical}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    model = fit_model(runs, n)
    result = {
        "benchmark": "ray_scaling",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "measured_under_load": max(load_before[0], os.getloadavg()[0]) > 0.5 * (os.cpu_count() or 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "note": "under load when the 1-minute load average exceeded half the cores before or after; the load "
        "average is recorded either way",
        "data": f"{args.shared}/hippocampus/imagesTr, {n} held-out cases (val of "
        "benchmarks/splits/hippocampus_80_20.json)",
        "operation": "segment (model hippocampus, no TTA)",
        "versions": {"medimg": medimg.__version__, "ray": ray.__version__, "torch": torch.__version__},
        "n_cases": n,
        "runs": runs,
        "outputs_identical_to_plain": identical,
        "scaling_model": model,
        "wall_time_s": round(time.perf_counter() - t_all, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"runs": runs, "scaling_model": model, "load": result["load_average_before"]}, indent=2))


if __name__ == "__main__":
    main()
