"""Train the learned (VoxelMorph-style) registration network on MSD Task04 hippocampus crops within a CPU budget.

    python benchmarks/register_learned.py [--time-budget 10m] [--ship]

Training cases: every case of ../shared/data/hippocampus except the first 20 in sorted order, which form the 10
evaluation pairs of ``benchmarks/register_benchmark.py --task hippocampus`` (so those pairs are unseen). Unsupervised
NCC + diffusion, bidirectional, plus a soft-Dice term on the anterior/posterior labels (weight 1). ``--ship`` stores
the float16 weights as the bundled ``hippocampus_flow`` model (src/medimg/register/models/). Results:
benchmarks/results/register_learned_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import medimg
from medimg.register.learned import BUNDLED_DIR, train_learned
from medimg.seg.train import parse_duration

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--time-budget", default="10m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medimg_hippocampus_flow"))
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args()
    ids = sorted(p.name.replace(".nii.gz", "") for p in (args.data / "imagesTr").glob("*.nii.gz"))
    train_ids = ids[20:]
    imgs = [medimg.read(args.data / "imagesTr" / f"{c}.nii.gz") for c in train_ids]
    labs = [medimg.read_labels(args.data / "labelsTr" / f"{c}.nii.gz") for c in train_ids]
    info = train_learned(
        imgs, args.out, parse_duration(args.time_budget), labels=labs, on_log=lambda e: print(e, flush=True)
    )
    info.update(
        training_cases=len(train_ids), held_out_cases=ids[:20], machine=f"{platform.machine()}, {os.cpu_count()} cores"
    )
    (HERE / "results" / "register_learned_training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{info['steps']} steps in {info['seconds']:.0f} s on grid {info['grid']}")
    if args.ship:
        dest = BUNDLED_DIR / "hippocampus_flow"
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("flow.pt", "flow.json"):
            shutil.copy(args.out / f, dest / f)
        print(f"shipped to {dest}")


if __name__ == "__main__":
    main()
