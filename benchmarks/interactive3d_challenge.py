"""The 3D interactive challenge protocol (CVPR 2025 "foundation models for interactive 3D biomedical image
segmentation"): a 3D box of the structure (its tight bounding box), then up to 5 corrective clicks, each at the
centre (deepest voxel) of the largest connected error region, positive where structure is missed — on held-out
3D targets (interactive3d_data.py). Every method gets the same prompts rule and its own previous result.

Methods: ``3d`` (the bundled 3D promptable network on a crop), ``slices`` (the bundled 2D network: slice
propagation + 3D random-walker refinement on near-isotropic volumes), ``random_walker`` (3D, scikit-image, same
prompts as seeds). Reported per family and over all targets: Dice after the box, Dice after 5 clicks, the area
under the Dice and NSD (2 mm) curves over the 6 steps (trapezoid, divided by 5: 1.0 = perfect from the box on),
and model compute per interaction (ms, mean and max).

    python benchmarks/interactive3d_challenge.py                       # all methods, all held-out targets
    python benchmarks/interactive3d_challenge.py --methods 3d --families hippocampus,lesions --model DIR
    python benchmarks/interactive3d_challenge.py --start click --out benchmarks/results/interactive3d_click.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import medimg
from _seg_common import machine
from interactive3d_data import Target3, load_bank3
from medimg.interactive import InteractiveSession
from medimg.interactive.simulate import dice
from medimg.interactive.train3d import error_centre
from medimg.metrics import segmentation_metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def nsd(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> float:
    if not pred.any():
        return 0.0
    r = segmentation_metrics(pred.astype(np.uint8), gt.astype(np.uint8), spacing=spacing, labels=[1], metrics=["nsd"])
    return float(r[1]["nsd"])


def run_target(t: Target3, method: str, n_clicks: int, model: str | None, start: str = "box") -> dict:
    image = medimg.Image(t.image, spacing=t.spacing)
    if method == "random_walker":
        s = InteractiveSession(image, "random_walker")
    else:
        s = InteractiveSession(image, "learned", model=model if method == "3d" else None, engine=method)
    idx = np.argwhere(t.mask)
    lo, hi = idx.min(0), idx.max(0)
    dices, nsds, ms = [], [], []
    t0 = time.perf_counter()
    if start == "box":
        s.add_box(tuple(int(v) for v in lo), tuple(int(v) for v in hi))
    else:  # one click at the centre of the structure (its deepest voxel), as the first corrective click would be
        c0 = error_centre(np.zeros_like(t.mask), t.mask)
        assert c0 is not None
        s.add_click(tuple(int(v) for v in c0[0]))
    pred = s.mask
    ms.append((time.perf_counter() - t0) * 1000)
    dices.append(dice(pred, t.mask))
    nsds.append(nsd(pred, t.mask, t.spacing))
    for _ in range(n_clicks):
        c = error_centre(pred, t.mask)
        if c is None:
            dices.append(dices[-1])
            nsds.append(nsds[-1])
            continue
        t0 = time.perf_counter()
        s.add_click(tuple(int(v) for v in c[0]), positive=c[1])
        pred = s.mask
        ms.append((time.perf_counter() - t0) * 1000)
        dices.append(dice(pred, t.mask))
        nsds.append(nsd(pred, t.mask, t.spacing))

    def auc(v: list[float]) -> float:
        return float(np.trapezoid(v) / (len(v) - 1))

    return {
        "target": t.name,
        "family": t.family,
        "dice": [round(v, 4) for v in dices],
        "nsd": [round(v, 4) for v in nsds],
        "auc_dice": round(auc(dices), 4),
        "auc_nsd": round(auc(nsds), 4),
        "ms": [round(v, 1) for v in ms],
        "voxels": int(t.mask.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--methods", default="3d,slices,random_walker")
    ap.add_argument("--families", default=None, help="comma-separated (default: all held-out families)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many targets per family")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument(
        "--start", choices=("box", "click"), default="box", help="box: the challenge protocol; click: a centre click"
    )
    ap.add_argument("--model", default=None, help="3D model folder (default: the bundled one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "interactive3d_challenge.json")
    a = ap.parse_args()
    t_start = time.time()
    _, targets = load_bank3(a.data, eval_only=True)
    if a.families:
        keep = set(a.families.split(","))
        targets = [t for t in targets if t.family in keep]
    if a.limit:
        per: dict[str, int] = {}
        sel = []
        for t in targets:
            if per.get(t.family, 0) < a.limit:
                sel.append(t)
                per[t.family] = per.get(t.family, 0) + 1
        targets = sel
    methods = a.methods.split(",")
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    for t in targets:
        line = [f"{t.family:12s} {t.name:32s}"]
        for m in methods:
            r = run_target(t, m, a.clicks, a.model, a.start)
            rows[m].append(r)
            line.append(f"{m} {r['dice'][0]:.3f}->{r['dice'][-1]:.3f}")
        print("  ".join(line), flush=True)
    fams = sorted({t.family for t in targets})
    summary: dict[str, dict] = {}
    for m in methods:
        summary[m] = {}
        for f in [*fams, "all"]:
            rs = [r for r in rows[m] if f == "all" or r["family"] == f]
            ms = [v for r in rs for v in r["ms"]]
            summary[m][f] = {
                "n": len(rs),
                "dice_box": round(float(np.mean([r["dice"][0] for r in rs])), 4),
                "dice_final": round(float(np.mean([r["dice"][-1] for r in rs])), 4),
                "auc_dice": round(float(np.mean([r["auc_dice"] for r in rs])), 4),
                "auc_nsd": round(float(np.mean([r["auc_nsd"] for r in rs])), 4),
                "ms_mean": round(float(np.mean(ms)), 1),
                "ms_max": round(float(np.max(ms)), 1),
            }
    print()
    print("| family (n) | method | Dice box | Dice box+5 | AUC Dice | AUC NSD | ms / interaction (max) |")
    print("|---|---|---|---|---|---|---|")
    for f in [*fams, "all"]:
        for m in methods:
            s = summary[m][f]
            print(
                f"| {f} ({s['n']}) | {m} | {s['dice_box']:.3f} | {s['dice_final']:.3f} | {s['auc_dice']:.3f} | "
                f"{s['auc_nsd']:.3f} | {s['ms_mean']:.0f} ({s['ms_max']:.0f}) |"
            )
    minutes = (time.time() - t_start) / 60
    out = {
        "benchmark": "interactive3d_challenge",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "minutes": round(minutes, 1),
        "command": " ".join(sys.argv),
        "protocol": f"start: {a.start} (box: the tight 3D box; click: at the structure's centre), then up to N "
        "clicks at the centre of the largest error region",
        "clicks": a.clicks,
        "summary": summary,
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\n{minutes:.1f} min; written {a.out}")


if __name__ == "__main__":
    main()
