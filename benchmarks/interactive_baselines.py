"""Zero-training interactive baselines (random walker, region growing) under simulated sessions.

    python benchmarks/interactive_baselines.py [--data ../shared/data/hippocampus] [--cases 10] [--clicks 10]

For each of the first ``--cases`` MSD Task04 hippocampus cases (sorted) and each label (anterior, posterior):
2D sessions on the axial slice with the most target voxels and 3D sessions on the whole crop, starting from a
centre click or the bounding box, followed by corrective clicks from ``medimg.interactive.simulate.next_click``.
Reports mean Dice after each interaction, NoC@85 / NoC@90 (interactions needed to reach that Dice; sessions that
never reach it count as ``--clicks``) and mean latency per interaction. Results:
benchmarks/results/interactive_baselines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import medimg
from medimg.interactive import InteractiveSession, simulate

HERE = Path(__file__).parent


def noc(curve: list[float], level: float, n: int) -> int:
    return next((i + 1 for i, d in enumerate(curve) if d >= level), n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--clicks", type=int, default=10)
    args = ap.parse_args()
    t_all = time.perf_counter()
    ids = sorted(p.name.replace(".nii.gz", "") for p in (args.data / "imagesTr").glob("*.nii.gz"))[: args.cases]
    runs: dict[str, list[dict]] = {}
    for cid in ids:
        img = medimg.read(args.data / "imagesTr" / f"{cid}.nii.gz")
        lab = medimg.read_labels(args.data / "labelsTr" / f"{cid}.nii.gz")
        for label in (1, 2):
            gt = lab.array == label
            z = int(np.argmax(gt.sum((0, 1))))
            for dims, image, target in (("2d", img.array[:, :, z], gt[:, :, z]), ("3d", img, gt)):
                for method in ("random_walker", "region_growing"):
                    for start in ("click", "box"):
                        r = simulate(lambda i=image, m=method: InteractiveSession(i, m), target, args.clicks, start)
                        runs.setdefault(f"{dims} {method} from {start}", []).append(r)
    summary = {}
    for key, rs in runs.items():
        curves = np.array([r["dice"] for r in rs])
        summary[key] = {
            "sessions": len(rs),
            "mean_dice_per_interaction": [round(float(v), 4) for v in curves.mean(0)],
            "noc85": float(np.mean([noc(list(c), 0.85, args.clicks) for c in curves])),
            "noc90": float(np.mean([noc(list(c), 0.90, args.clicks) for c in curves])),
            "mean_latency_ms": 1000 * float(np.mean([np.mean(r["latency_s"]) for r in rs])),
        }
        s = summary[key]
        print(
            f"{key:32s} Dice@1 {s['mean_dice_per_interaction'][0]:.3f} @5 {s['mean_dice_per_interaction'][4]:.3f} "
            f"@10 {s['mean_dice_per_interaction'][-1]:.3f}  NoC85 {s['noc85']:.1f} NoC90 {s['noc90']:.1f}  "
            f"{s['mean_latency_ms']:.0f} ms",
            flush=True,
        )
    result = {
        "data": str(args.data),
        "cases": ids,
        "clicks": args.clicks,
        "summary": summary,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "seconds": time.perf_counter() - t_all,
    }
    (HERE / "results" / "interactive_baselines.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
