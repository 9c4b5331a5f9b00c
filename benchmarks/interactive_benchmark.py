"""Promptable network vs zero-training baselines under simulated sessions, leave-one-family-out.

    python benchmarks/interactive_train.py --held-out all --time-budget 6m     # first: the held-out models
    python benchmarks/interactive_benchmark.py [--clicks 10] [--per-family 24] [--per-family-3d 6]

For every dataset family of benchmarks/interactive_data.py and every evaluation target of that family (cases no
model trained on), simulated sessions of ``--clicks`` interactions start from a click (centre of the target), a
box (its bounding box) or a scribble (a deformed, possibly broken stroke), then add a corrective click at the
centre of the largest error after each result (the session feeds its previous mask back). Methods:

- ``learned_unseen``: the promptable network trained WITHOUT this family (benchmarks/models/promptable_without_<f>),
  i.e. the honest number for a modality / task the model never saw;
- ``learned_bundled``: the bundled model (trained on all families' training cases; lesions: it saw brain1's
  slices, so its lesion numbers are not "unseen");
- ``random_walker`` and ``region_growing``: the zero-training baselines behind the same session API.

Reports mean Dice after each interaction, NoC@85 / NoC@90 (interactions to reach that Dice; never = ``--clicks``),
latency per interaction, and the target check: unseen-family Dice after 5 interactions minus the best baseline's.
3D sessions (a prompt on one slice -> a 3D result by propagation) run on up to ``--per-family-3d`` volumes per
family. Latency is also measured on a 256 x 256 image and a 128^3 crop. Results:
benchmarks/results/interactive_benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from interactive_baselines import noc
from interactive_data import FAMILIES, EvalTarget, lesion_eval_all, load_bank
from medimg.interactive import InteractiveSession, simulate
from medimg.interactive.promptable import PromptableModel

HERE = Path(__file__).parent
BASELINES = ("random_walker", "region_growing")


def summarise(runs: list[dict], n: int) -> dict:
    curves = np.array([r["dice"] for r in runs])
    mean = curves.mean(0)
    lat = [v for r in runs for v in r["latency_s"] if v > 0]
    return {
        "sessions": len(runs),
        "mean_dice": [round(float(v), 4) for v in mean],
        "noc85": round(float(np.mean([noc(list(c), 0.85, n) for c in curves])), 2),
        "noc90": round(float(np.mean([noc(list(c), 0.90, n) for c in curves])), 2),
        "latency_ms_mean": round(1000 * float(np.mean(lat)), 1) if lat else 0.0,
        "latency_ms_max": round(1000 * float(np.max(lat)), 1) if lat else 0.0,
        "monotonic": bool(np.all(np.diff(mean) >= -1e-3)),
    }


def pick(targets: list[EvalTarget], k: int, seed: int = 0) -> list[EvalTarget]:
    if len(targets) <= k:
        return targets
    idx = np.random.default_rng(seed).choice(len(targets), k, replace=False)
    return [targets[i] for i in sorted(idx)]


def run_family(
    targets: list[EvalTarget], models: dict[str, PromptableModel], starts: list[str], n: int, baselines: tuple[str, ...]
) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for start in starts:
        for name in [*models, *baselines]:
            runs = []
            for i, t in enumerate(targets):
                if name in models:
                    make = lambda t=t, m=models[name]: InteractiveSession(t.image, "learned", m)  # noqa: E731
                else:
                    make = lambda t=t, meth=name: InteractiveSession(t.image, meth)  # noqa: E731
                runs.append(simulate(make, t.mask, n, start, seed=i))
            out[f"{name} from {start}"] = summarise(runs, n)
    return out


def latency(model: PromptableModel, data: Path) -> dict[str, float]:
    """Per-interaction latency on a 256 x 256 image and a 128^3 crop (10-interaction sessions, centre clicks)."""
    res = {}
    vm = np.load(data / "voxelmorph" / "test_scan.npz")
    vol, seg = vm["vol"].astype(np.float32), vm["seg"]
    # 2D: a 256 x 256 slice (the 160 x 192 slice padded) with the lateral ventricle as target
    z = 112
    img2 = np.zeros((256, 256), np.float32)
    img2[48:208, 32:224] = vol[:, :, z]
    gt2 = np.zeros((256, 256), bool)
    gt2[48:208, 32:224] = seg[:, :, z] == 4
    r = simulate(lambda: InteractiveSession(img2, "learned", model), gt2, 10, "click")
    res["2d_256_ms_mean"] = 1000 * float(np.mean(r["latency_s"]))
    res["2d_256_ms_max"] = 1000 * float(np.max(r["latency_s"]))
    # 3D: a 128^3 crop around the left cerebral white matter (label 2) — a structure that spans every slice
    c = np.argwhere(seg == 2).mean(0).astype(int)
    lo = np.clip(c - 64, 0, np.array(vol.shape) - 128)
    sl = tuple(slice(a, a + 128) for a in lo)
    r = simulate(lambda: InteractiveSession(vol[sl], "learned", model), seg[sl] == 2, 10, "click")
    res["3d_128_ms_mean"] = 1000 * float(np.mean(r["latency_s"]))
    res["3d_128_ms_max"] = 1000 * float(np.max(r["latency_s"]))
    res["3d_128_dice_after_10"] = float(r["dice"][-1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--models", type=Path, default=HERE / "models")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--per-family", type=int, default=24)
    ap.add_argument("--per-family-3d", type=int, default=6)
    ap.add_argument("--starts", default="click,box,scribble")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "interactive_benchmark.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_all = time.perf_counter()
    _, ev2, ev3 = load_bank(args.data)
    bundled = PromptableModel.load(None)
    starts = args.starts.split(",")
    results: dict[str, dict] = {"2d": {}, "3d": {}}
    check: dict[str, dict] = {}
    for fam in args.families.split(","):
        unseen = PromptableModel.load(args.models / f"promptable_without_{fam}")
        models = {"learned_unseen": unseen, "learned_bundled": bundled}
        t2 = lesion_eval_all(args.data) if fam == "lesions" else [e for e in ev2 if e.family == fam]
        t2 = pick(t2, args.per_family)
        t0 = time.perf_counter()
        results["2d"][fam] = run_family(t2, models, starts, args.clicks, BASELINES)
        results["2d"][fam]["targets"] = len(t2)  # type: ignore[assignment]
        t3 = pick([e for e in ev3 if e.family == fam], args.per_family_3d)
        if t3:
            results["3d"][fam] = run_family(t3, models, starts, args.clicks, ("random_walker",))
            results["3d"][fam]["targets"] = len(t3)  # type: ignore[assignment]
        print(f"== {fam}: {len(t2)} 2D / {len(t3)} 3D targets, {time.perf_counter() - t0:.0f} s", flush=True)
        for dims in ("2d", "3d"):
            if fam not in results[dims]:
                continue
            for key, s in results[dims][fam].items():
                if key == "targets":
                    continue
                d = s["mean_dice"]
                print(
                    f"  {dims} {key:34s} Dice@1 {d[0]:.3f} @3 {d[2]:.3f} @5 {d[4]:.3f} @10 {d[-1]:.3f}  "
                    f"NoC85 {s['noc85']:.1f} NoC90 {s['noc90']:.1f}  {s['latency_ms_mean']:.0f} ms",
                    flush=True,
                )
            for start in starts:
                r = results[dims][fam]
                best = max(
                    BASELINES if dims == "2d" else ("random_walker",),
                    key=lambda b: r[f"{b} from {start}"]["mean_dice"][4],
                )
                u = r[f"learned_unseen from {start}"]["mean_dice"][4]
                b = r[f"{best} from {start}"]["mean_dice"][4]
                check[f"{dims} {fam} from {start}"] = {
                    "unseen_dice5": u,
                    "best_baseline": best,
                    "baseline_dice5": b,
                    "margin": round(u - b, 4),
                }
    lat = latency(bundled, args.data)
    print("latency", json.dumps(lat))
    print("target check (unseen-family Dice@5 - best baseline Dice@5; goal >= +0.15):")
    for k, v in check.items():
        print(
            f"  {k:34s} {v['unseen_dice5']:.3f} vs {v['best_baseline']} {v['baseline_dice5']:.3f}: {v['margin']:+.3f}"
        )
    result = {
        "data": str(args.data),
        "clicks": args.clicks,
        "results": results,
        "target_check": check,
        "latency": lat,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))


def markdown(result: dict) -> str:
    """Tables for docs/interactive.md and the README: per family and start, Dice after 1 / 3 / 5 / 10
    interactions, NoC@85 / NoC@90 and ms per interaction for every method; then the target check."""
    lines = [
        f"Measured {result['date']} on {result['machine']} in {result['seconds'] / 60:.0f} min "
        f"(`python benchmarks/interactive_benchmark.py`).",
        "",
    ]
    for dims in ("2d", "3d"):
        lines += [
            f"**{dims.upper()}** — Dice after 1 / 3 / 5 / 10 interactions, NoC@85 / NoC@90, ms per interaction",
            "",
            "| family (targets) | start | learned, family unseen | learned, bundled | random walker | region growing |",
            "|---|---|---|---|---|---|",
        ]
        for fam, r in result["results"][dims].items():
            starts = sorted({k.split(" from ")[1] for k in r if " from " in k})
            for start in starts:
                cells = []
                for m in ("learned_unseen", "learned_bundled", "random_walker", "region_growing"):
                    v = r.get(f"{m} from {start}")
                    if v is None:
                        cells.append("—")
                        continue
                    d = v["mean_dice"]
                    cells.append(
                        f"{d[0]:.2f} / {d[2]:.2f} / {d[4]:.2f} / {d[-1]:.2f}; {v['noc85']:.1f} / {v['noc90']:.1f}; "
                        f"{v['latency_ms_mean']:.0f}"
                    )
                lines.append(f"| {fam} ({r['targets']}) | {start} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Target check: unseen-family Dice after 5 interactions minus the best baseline's (goal >= +0.15)", ""]
    lines += ["| session | learned (unseen) | best baseline | margin |", "|---|---|---|---|"]
    for k, v in result["target_check"].items():
        lines.append(
            f"| {k} | {v['unseen_dice5']:.3f} | {v['best_baseline']} {v['baseline_dice5']:.3f} | {v['margin']:+.3f} |"
        )
    lat = result["latency"]
    lines += [
        "",
        f"Latency (bundled model, 10-interaction sessions): 2D 256 x 256 mean {lat['2d_256_ms_mean']:.1f} ms "
        f"(max {lat['2d_256_ms_max']:.1f}); 3D 128^3 crop mean {lat['3d_128_ms_mean']:.0f} ms "
        f"(max {lat['3d_128_ms_max']:.0f}, the first interaction, which propagates through every slice).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
