"""Lasso prompts: what a closed outline on one slice gives, against the bounding-box reading it replaced.

Usage: python benchmarks/lasso_prompt.py [--shared ../shared/data] [--out benchmarks/results/lasso_prompt.json]

Data: the 20 MSD Task04 hippocampus cases the bundled promptable model never saw in training (the last 20 by name,
docs/interactive.md). Per case the "user" traces the outline of the whole hippocampus (labels 1 + 2) on its
largest axial slice (the longest iso-contour of the reference on that slice, rounded to voxels), then:

* ``lasso``: the workbench's lasso — :func:`medimg.interactive.lasso_prompts` (inside filled with positive
  scribbles, a negative scribble 2 voxels outside) with :func:`~medimg.interactive.prompts.lasso_constraint` as the
  interaction's ``within`` (the result held exactly to the outline on its slice);
* ``lasso_soft``: the same prompts without the constraint;
* ``bbox_slice``: the previous reading — the lasso's bounding box as a box prompt on that slice only.

Reports Dice on the drawn slice and over the volume, voxels outside the outline on the drawn slice, and the time
per prompt (the learned engine; 3D refinement on, as in the workbench).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / max(1, a.sum() + b.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lasso_prompt.json")
    ap.add_argument("--cases", type=int, default=20, help="the last N cases by name (unseen in training)")
    args = ap.parse_args()

    import torch
    from skimage.measure import find_contours

    import medimg
    from medimg.interactive import Box, InteractiveSession, lasso_prompts
    from medimg.interactive.promptable import PromptableModel
    from medimg.interactive.prompts import lasso_constraint, lasso_region

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    model = PromptableModel.load(None)
    files = sorted((args.shared / "hippocampus" / "imagesTr").glob("*.nii.gz"))[-args.cases :]
    rows: list[dict[str, Any]] = []
    for f in files:
        img = medimg.read(f)
        ref = np.asarray(medimg.read_labels(args.shared / "hippocampus" / "labelsTr" / f.name).array) > 0
        z = int(np.argmax(ref.sum((0, 1))))
        sl = ref[:, :, z]
        contour = max(find_contours(np.pad(sl, 1).astype(float), 0.5), key=len) - 1
        pts = [[round(a), round(b), z] for a, b in contour]
        inside, _ = lasso_region(pts, ref.shape)
        xs, ys = np.nonzero(inside)
        row: dict[str, Any] = {"case": f.name.replace(".nii.gz", ""), "slice": z, "outline_points": len(pts)}
        variants = {
            "lasso": (lasso_prompts(pts, ref.shape), lasso_constraint(pts, ref.shape)),
            "lasso_soft": (lasso_prompts(pts, ref.shape), None),
            "bbox_slice": ([Box((int(xs.min()), int(ys.min()), z), (int(xs.max()), int(ys.max()), z))], None),
        }
        for name, (prompts, within) in variants.items():
            s = InteractiveSession(img, "learned", model)
            t0 = time.perf_counter()
            m = s.add_many(prompts, within=within)
            row[name] = {
                "dice_slice": round(dice(m[:, :, z], sl), 4),
                "dice_volume": round(dice(m, ref), 4),
                "outside_outline_voxels": int(np.sum(m[:, :, z] & ~inside)),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        rows.append(row)
        print(row["case"], {k: row[k]["dice_slice"] for k in variants})
    summary = {
        name: {
            k: round(float(np.mean([r[name][k] for r in rows])), 4)
            for k in ("dice_slice", "dice_volume", "outside_outline_voxels", "seconds")
        }
        for name in ("lasso", "lasso_soft", "bbox_slice")
    }
    out = {
        "benchmark": "lasso_prompt",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_start": [round(v, 2) for v in load0],
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
        },
        "medimg": medimg.__version__,
        "data": f"MSD Task04 hippocampus, last {len(files)} cases by name (unseen by the bundled promptable model)",
        "summary_mean": summary,
        "cases": rows,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print("\n| reading | Dice on the drawn slice | Dice over the volume | voxels outside the outline | s / prompt |")
    print("|---|---|---|---|---|")
    for name, v in summary.items():
        cells = [f"{v['dice_slice']:.3f}", f"{v['dice_volume']:.3f}", f"{v['outside_outline_voxels']:.1f}"]
        print(f"| {name} | {' | '.join(cells)} | {v['seconds']:.2f} |")
    print(
        f"wall {out['wall_s']} s; load {out['machine']['load_average_start']} -> {out['machine']['load_average_end']}"
    )


if __name__ == "__main__":
    main()
