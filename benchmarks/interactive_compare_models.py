"""Two 2D promptable models side by side on the grey evaluation targets of interactive_benchmark.py (same targets,
same simulated sessions), 2D and 3D (slice propagation with the 3D refinement).

    python benchmarks/interactive_compare_models.py [--a git:037ced8] [--b bundled]

Used to decide which model ships as the default (issue 16: the network that reads any number of channels, ``b``,
vs the grey one it was fine-tuned from, ``a``: the bundled model of commit 037ced8, from git history). Models: a
folder, ``bundled`` or ``git:<commit>``. Results: benchmarks/results/interactive_compare_models.json (mean Dice
after each interaction, NoC@85/90, ms per interaction, and the difference b - a after 5 interactions per family
and start).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _seg_common import machine
from interactive_benchmark import pick, run_family
from interactive_colour_data import GREY_COMMIT, load_model
from interactive_data import FAMILIES, lesion_eval_all, load_bank

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--a", default=f"git:{GREY_COMMIT}", help="model folder, bundled or git:<commit>")
    ap.add_argument("--b", default="bundled", help="model folder, bundled or git:<commit>")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--per-family", type=int, default=24)
    ap.add_argument("--per-family-3d", type=int, default=6)
    ap.add_argument("--starts", default="click,box,scribble")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "interactive_compare_models.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_all = time.perf_counter()
    _, ev2, ev3 = load_bank(args.data)
    models = {"a": load_model(args.a), "b": load_model(args.b)}
    starts = args.starts.split(",")
    results: dict[str, dict] = {"2d": {}, "3d": {}}
    diffs: dict[str, float] = {}
    for fam in FAMILIES:
        t2 = pick(
            lesion_eval_all(args.data) if fam == "lesions" else [e for e in ev2 if e.family == fam], args.per_family
        )
        t3 = pick([e for e in ev3 if e.family == fam], args.per_family_3d)
        for dims, targets in (("2d", t2), ("3d", t3)):
            if not targets:
                continue
            r = run_family(targets, models, starts, args.clicks, ())
            results[dims][fam] = r
            for start in starts:
                a, b = r[f"a from {start}"]["mean_dice"][4], r[f"b from {start}"]["mean_dice"][4]
                diffs[f"{dims} {fam} from {start}"] = round(b - a, 4)
                print(f"{dims} {fam:12s} {start:8s} a {a:.3f}  b {b:.3f}  b - a {b - a:+.3f}", flush=True)
    mean = {d: round(float(np.mean([v for k, v in diffs.items() if k.startswith(d)])), 4) for d in ("2d", "3d")}
    print("mean b - a after 5 interactions:", mean)
    result = {
        "a": args.a,
        "b": args.b,
        "results": results,
        "dice5_b_minus_a": diffs,
        "mean_b_minus_a": mean,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
