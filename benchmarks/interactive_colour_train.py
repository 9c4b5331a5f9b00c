"""Fine-tune a grey 2D promptable network into one that reads any number of channels (a per-channel stem,
network.py) — how the bundled model was made:

    python benchmarks/interactive_colour_train.py --init git:037ced8 --time-budget 35m [--ship]

``--init git:037ced8`` is the grey model that was bundled until then (extracted from this clone's git history;
``--init DIR`` any model folder; default: the bundled model, which already has the stem: a further fine-tune).
A grey model gets the stem by ``with_channel_stem`` (before fine-tuning it computes exactly what the grey model
computes on the channels' mean) and trains on the same grey bank as the bundled model
(benchmarks/interactive_data.py, ACDC left out: research use) plus the colour tasks of
benchmarks/interactive_colour_data.py (CHASE_DB1 colour fundus patients 01-08, colour superpixels and blobs on
scikit-image's photographs); ``--colour-p`` of the grey samples are turned into 2-4 channel images
(``medimg.interactive.train.colourise``: own contrast per channel; 40 % with the target in one channel only).
Evaluation targets (CHASE_DB1 patients 09-10, the MS longitudinal set, every grey evaluation case) are never
used. Writes benchmarks/models/promptable_channels/ (not in git); ``--ship`` makes it the package's bundled 2D
model (src/medimg/interactive/models/promptable/).
Run nothing else meanwhile: the budget is wall-clock.
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

from interactive_colour_data import colour_tasks, load_model
from interactive_data import load_bank, training_tasks
from interactive_train import RESEARCH_USE, WEIGHTS, parse_budget
from medimg.interactive.promptable import BUNDLED
from medimg.interactive.train import Task, train_promptable

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--time-budget", default="35m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stem", type=int, default=8, help="stem features per channel")
    ap.add_argument("--colour-p", type=float, default=0.3, help="fraction of grey samples made multi-channel")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--init", default="bundled", help="model to start from: a folder, git:<commit> or bundled")
    ap.add_argument("--ship", action="store_true", help="copy the model into the package")
    args = ap.parse_args()
    budget = parse_budget(args.time_budget)
    grey, _, _ = load_bank(args.data, seed=args.seed)
    train = [t for t in training_tasks(grey, RESEARCH_USE[0]) if t.family not in RESEARCH_USE]
    colour, _ = colour_tasks(args.data, seed=args.seed)
    train += [Task(t.image, t.mask, t.family.replace("synthetic:", "synthetic_")) for t in colour]
    init = load_model(args.init)
    out = HERE / "models" / "promptable_channels"
    print(f"{len(train)} tasks, {budget:.0f} s, from {args.init}", flush=True)
    t0 = time.perf_counter()
    model, summary = train_promptable(
        train,
        time_budget=budget,
        out_dir=out,
        family_weights=WEIGHTS,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        init=init,
        stem=args.stem,
        colour_p=args.colour_p,
        progress=lambda e: (
            print(f"  step {e['step']:5d}  {e['seconds']:6.0f} s  loss {e['loss']:.4f}", flush=True)
            if e["step"] % 250 == 0
            else None
        ),
    )
    summary.update(
        {
            "init": args.init,
            "left_out": list(RESEARCH_USE),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "wall_s": round(time.perf_counter() - t0, 1),
            "date": time.strftime("%Y-%m-%d"),
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    if args.ship:
        dest = HERE.parent / "src" / "medimg" / "interactive" / "models" / BUNDLED
        dest.mkdir(parents=True, exist_ok=True)
        model.save(
            dest, extra={"trained_by": "python benchmarks/interactive_colour_train.py " + " ".join(sys.argv[1:])}
        )
        shutil.copy(out / "training_log.csv", dest / "training_log.csv")
        print(f"shipped to {dest}")


if __name__ == "__main__":
    main()
