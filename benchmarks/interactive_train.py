"""Train the promptable network(s): leave-one-family-out models and the full model that ships with medimg.

    python benchmarks/interactive_train.py --held-out all --time-budget 6m      # one model per held-out family
    python benchmarks/interactive_train.py --held-out none --time-budget 15m --ship   # the bundled model

On a machine with a GPU and without ../shared/data (e.g. the lent GPU machine): record the bank's source arrays
here once, carry the archive there, and train from it (the bank rebuilt from it is identical):

    python benchmarks/interactive_train.py --export-sources benchmarks/gpu/sources.pkl.xz
    python benchmarks/interactive_train.py --sources benchmarks/gpu/sources.pkl.xz --device cuda --workers 3 \
        --batch-size 32 --held-out cardiac_mri --time-budget 8m

Tasks come from benchmarks/interactive_data.py (every labelled set in ../shared/data, grouped into families, with
evaluation cases removed, plus synthetic superpixel / blob tasks on the same images). Models are written to
benchmarks/models/promptable_<name>/ (not in git; ``--ship`` also copies the full model into the package with its
training summary). Run nothing else on the machine meanwhile: the budget is wall-clock.

The "full" model (``--held-out none``) leaves out the families whose data are marked *research use* in
../shared/data/README.md (ACDC: ``cardiac_mri``) so that the weights shipped in the package derive only from
openly licensed data; ``--include-research-use`` trains on them too (for local use, not for shipping).
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

from interactive_data import FAMILIES, Sources, load_bank, training_tasks
from medimg.interactive.train import train_promptable

HERE = Path(__file__).parent
WEIGHTS = {"lesions": 0.3, "synthetic": 1.5}
RESEARCH_USE = ("cardiac_mri",)


def parse_budget(text: str) -> float:
    text = text.strip().lower()
    if text.endswith("m"):
        return float(text[:-1]) * 60
    if text.endswith("h"):
        return float(text[:-1]) * 3600
    return float(text.rstrip("s"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--held-out", default="all", help="a family, 'all' (each in turn) or 'none' (the full model)")
    ap.add_argument("--time-budget", default="6m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ship", action="store_true", help="copy the full model into the package")
    ap.add_argument("--include-research-use", action="store_true", help="full model: train on ACDC too")
    ap.add_argument("--sources", type=Path, help="build the bank from an archive written by --export-sources")
    ap.add_argument("--export-sources", type=Path, help="record the bank's source arrays to this archive and stop")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    ap.add_argument("--workers", type=int, default=0, help="sample-drawing worker processes (0: none)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--widths", default="8,16,32,64,128", help="U-Net channels per level")
    args = ap.parse_args()
    if args.export_sources:
        src = Sources(args.data)
        load_bank(args.data, seed=args.seed, sources=src)
        args.export_sources.parent.mkdir(parents=True, exist_ok=True)
        src.save(args.export_sources)
        print(f"wrote {args.export_sources} ({args.export_sources.stat().st_size / 1e6:.1f} MB)")
        return
    if args.ship and args.include_research_use:
        raise SystemExit("Not shipping a model trained on research-use data (ACDC): drop --include-research-use.")
    budget = parse_budget(args.time_budget)
    sources = Sources(archive=args.sources) if args.sources else None
    tasks, _, _ = load_bank(None if sources else args.data, seed=args.seed, sources=sources)
    runs = list(FAMILIES) if args.held_out == "all" else [args.held_out]
    for held in runs:
        name = "full" if held == "none" else f"without_{held}"
        train = training_tasks(tasks, None if held == "none" else held)
        if held == "none" and not args.include_research_use:
            train = [t for t in training_tasks(tasks, RESEARCH_USE[0]) if t.family not in RESEARCH_USE]
        out = HERE / "models" / f"promptable_{name}"
        print(f"== {name}: {len(train)} tasks, {budget:.0f} s", flush=True)
        t0 = time.perf_counter()
        model, summary = train_promptable(
            train,
            time_budget=budget,
            out_dir=out,
            family_weights=WEIGHTS,
            seed=args.seed,
            device=args.device,
            workers=args.workers,
            batch_size=args.batch_size,
            lr=args.lr,
            widths=tuple(int(v) for v in args.widths.split(",")),
            progress=lambda e: (
                print(f"  step {e['step']:5d}  {e['seconds']:6.0f} s  loss {e['loss']:.4f}", flush=True)
                if e["step"] % 500 == 0
                else None
            ),
        )
        summary.update(
            {
                "held_out": None if held == "none" else held,
                "left_out": list(RESEARCH_USE) if held == "none" and not args.include_research_use else [],
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "wall_s": round(time.perf_counter() - t0, 1),
                "date": time.strftime("%Y-%m-%d"),
            }
        )
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary), flush=True)
        if args.ship and held == "none":
            dest = HERE.parent / "src" / "medimg" / "interactive" / "models" / "promptable"
            dest.mkdir(parents=True, exist_ok=True)
            model.save(
                dest,
                extra={"trained_by": "python benchmarks/interactive_train.py " + " ".join(sys.argv[1:])},
            )
            shutil.copy(out / "training_log.csv", dest / "training_log.csv")
            print(f"shipped to {dest}")


if __name__ == "__main__":
    main()
