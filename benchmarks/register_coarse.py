"""Exploration, not a comparison: how fast can medimg's deformable registration get on the ACDC pairs when the
affine stage is skipped (same-session cine frames are already aligned) and only coarse pyramid levels run?

    python benchmarks/register_coarse.py

The same 6 ACDC pairs as ``register_benchmark.py --task acdc`` (end-diastole <-> end-systole of 3 patients, both
directions, voxel units), ``register_deformable(fixed, moving, None, **settings)`` for each setting below; mean
Dice over RV/MYO/LV of the warped moving labels, mean seconds per pair (the first pair also pays PyTorch's one-time
warm-up), largest % folding. ANTs SyN is not run here (antspyx is not in the project environment): its figures are
in benchmarks/results/register_acdc.json from register_benchmark.py. Results: benchmarks/results/register_coarse.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from medimg.register.deformable import register_deformable

try:
    from _seg_common import machine
    from register_benchmark import acdc_pairs, evaluate
except ImportError:  # run as a module
    from benchmarks._seg_common import machine
    from benchmarks.register_benchmark import acdc_pairs, evaluate

HERE = Path(__file__).parent
SETTINGS = {
    "4x, 30 steps": {"levels": (4,), "iterations": (30,)},
    "4x, 15 steps, 4 squarings": {"levels": (4,), "iterations": (15,), "squaring_steps": 4},
    "4x then 2x, 40 + 20 steps": {"levels": (4, 2), "iterations": (40, 20)},
    "default pyramid (4-2-1, 60-40-20)": {},
}


def main() -> None:
    t_all = time.perf_counter()
    pairs = acdc_pairs(HERE.parents[1] / "shared" / "data" / "acdc", 6)
    rows = {}
    for name, opts in SETTINGS.items():
        dice, secs, fold = [], [], []
        for _, f, f_lab, m, m_lab in pairs:
            t0 = time.perf_counter()
            tr, rep = register_deformable(f, m, None, **opts)
            secs.append(time.perf_counter() - t0)
            dice.append(evaluate(f_lab, tr.apply_labels(m_lab, f, "nearest"), None, f.spacing)["mean_dice"])
            fold.append(rep["folding_percent"])
        rows[name] = {
            "mean_dice": float(np.mean(dice)),
            "seconds_per_pair": float(np.mean(secs)),
            "max_folding_percent": float(np.max(fold)),
        }
        print(name, rows[name], flush=True)
    out = {
        "benchmark": "register_coarse",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "pairs": len(pairs),
        "settings": rows,
        "total_seconds": time.perf_counter() - t_all,
    }
    (HERE / "results" / "register_coarse.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
