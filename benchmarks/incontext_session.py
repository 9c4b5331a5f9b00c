"""Images already segmented as context for the next (issue 16, MultiverSeg-style): clicks per image as the set of
finished images grows, on unseen hippocampus volumes.

    python benchmarks/incontext_session.py [--data ../shared/data/hippocampus] [--images 9] [--orders 3]
        [--max-clicks 10] [--context 8] [--method learned|random_walker] [--json FILE]

A simulated user segments a sequence of held-out hippocampus volumes (the whole hippocampus, labels 1 and 2, as one
structure) one after the other with `InteractiveSession` (the bundled promptable model, its 3D refinement on). The
first image starts empty: one click at the centre of the structure, then corrective clicks at the centre of the
largest error region. Every later image starts from the in-context segmentation made from the images finished
before it (`medimg.seg.incontext`: the last ``--context`` finished images registered to this one with
``speed="fast"``, labels fused by local weighted voting; a finished image's label is its reference, since the user
corrected it), then the same corrective clicks. Reported per position in the sequence (= number of context
images): Dice before any click and after 1 / 3 / 5 clicks, NoC@85 / NoC@90 (interactions to reach that Dice,
``--max-clicks`` when never), seconds spent on the context segmentation. ``--orders`` random orders of the
sequence, averaged.

Split: the held-out cases of benchmarks/splits/hippocampus_80_20.json (the promptable model never trained on them;
the context segmentation trains nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.image import LabelMap
from medimg.interactive.promptable import PromptableModel
from medimg.interactive.session import InteractiveSession
from medimg.interactive.simulate import dice, first_prompts, next_click
from medimg.io._atomic import atomic_path
from medimg.seg.incontext import SupportSet, segment_in_context
from medimg.seg.train import load_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _seg_common import machine  # noqa: E402


def noc(dices: list[float], thr: float, max_clicks: int) -> int:
    """Interactions until Dice >= thr (``dices[0]`` is before any click), ``max_clicks`` when never."""
    return next((i for i, d in enumerate(dices) if d >= thr), max_clicks)


def session_curve(
    img: Any, gt: np.ndarray, model: PromptableModel, initial: np.ndarray | None, max_clicks: int, method: str
) -> tuple[list[float], list[float]]:
    """Dice before any click (0 without an initial mask) and after each click; latency of each click (s)."""
    s = InteractiveSession(img, method=method, model=model if method == "learned" else None, initial_mask=initial)
    mask = s.mask
    dices = [dice(mask, gt) if initial is not None else 0.0]
    todo = first_prompts(gt, "click") if initial is None else ([c] if (c := next_click(mask, gt)) else [])
    lat = []
    for _ in range(max_clicks):
        if not todo:
            dices.append(dices[-1])
            continue
        t0 = time.perf_counter()
        mask = s.add_many(todo)
        lat.append(time.perf_counter() - t0)
        dices.append(dice(mask, gt))
        c = next_click(mask, gt)
        todo = [c] if c is not None else []
    return dices, lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--split", type=Path, default=HERE / "splits" / "hippocampus_80_20.json")
    ap.add_argument("--images", type=int, default=9)
    ap.add_argument("--orders", type=int, default=3)
    ap.add_argument("--max-clicks", type=int, default=10)
    ap.add_argument("--context", type=int, default=8, help="at most this many finished images as context")
    ap.add_argument("--method", default="learned", help="session method: learned (default), random_walker")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "incontext_session.json")
    args = ap.parse_args()
    t_all = time.perf_counter()
    held = load_split(args.split)["val"]
    model = PromptableModel.load()
    cache: dict[str, tuple[Any, LabelMap]] = {}

    def case(cid: str) -> tuple[Any, LabelMap]:
        if cid not in cache:
            img = medimg.read(next((args.data / "imagesTr").glob(f"{cid}.*")))
            lab = medimg.read_labels(next((args.data / "labelsTr").glob(f"{cid}.*")))
            cache[cid] = (img, lab.with_array((lab.array > 0).astype(np.uint8)))
        return cache[cid]

    rows: list[dict[str, Any]] = []
    for order in range(args.orders):
        seq = [held[i] for i in np.random.default_rng(order).permutation(len(held))[: args.images]]
        print(f"== order {order}: {', '.join(seq)}", flush=True)
        for pos, cid in enumerate(seq):
            img, lab = case(cid)
            gt = lab.array > 0
            initial, ctx_s, agreement = None, 0.0, None
            if pos:
                ctx = seq[max(0, pos - args.context) : pos]
                support = SupportSet(
                    Path("context"),
                    ctx,
                    [case(c)[0] for c in ctx],
                    [case(c)[1] for c in ctx],
                    {0: "background", 1: "hippocampus"},
                )
                t0 = time.perf_counter()
                fused, rep = segment_in_context(img, support, speed="fast")
                ctx_s = time.perf_counter() - t0
                initial, agreement = fused.array > 0, rep["agreement"]
            dices, lat = session_curve(img, gt, model, initial, args.max_clicks, args.method)
            rows.append(
                {
                    "order": order,
                    "position": pos,
                    "context_images": min(pos, args.context),
                    "case": cid,
                    "dice": [round(d, 4) for d in dices],
                    "noc85": noc(dices, 0.85, args.max_clicks),
                    "noc90": noc(dices, 0.90, args.max_clicks),
                    "context_seconds": round(ctx_s, 3),
                    "agreement": agreement,
                    "click_latency_ms_mean": round(1000 * float(np.mean(lat)), 1) if lat else None,
                }
            )
            r = rows[-1]
            print(
                f"  {pos} context  {cid}: Dice {dices[0]:.3f} -> 1 click {dices[1]:.3f}, 5 clicks {dices[5]:.3f}; "
                f"NoC@85 {r['noc85']} NoC@90 {r['noc90']}  (context {ctx_s:.2f} s)",
                flush=True,
            )
    table = []
    for pos in range(args.images):
        sel = [r for r in rows if r["position"] == pos]
        d = np.asarray([r["dice"] for r in sel])
        table.append(
            {
                "context_images": sel[0]["context_images"],
                "n": len(sel),
                "dice_0": float(d[:, 0].mean()),
                "dice_1": float(d[:, 1].mean()),
                "dice_3": float(d[:, 3].mean()),
                "dice_5": float(d[:, 5].mean()),
                "noc85": float(np.mean([r["noc85"] for r in sel])),
                "noc90": float(np.mean([r["noc90"] for r in sel])),
                "context_seconds": float(np.mean([r["context_seconds"] for r in sel])),
            }
        )
    print("| context images | Dice, no click | 1 click | 3 clicks | 5 clicks | NoC@85 | NoC@90 | context s |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        print(
            f"| {t['context_images']} | {t['dice_0']:.3f} | {t['dice_1']:.3f} | {t['dice_3']:.3f} | {t['dice_5']:.3f} "
            f"| {t['noc85']:.1f} | {t['noc90']:.1f} | {t['context_seconds']:.2f} |"
        )
    result = {
        "benchmark": "incontext_session",
        "data": str(args.data),
        "split": str(args.split),
        "images": args.images,
        "orders": args.orders,
        "max_clicks": args.max_clicks,
        "context_limit": args.context,
        "structure": "whole hippocampus (labels 1 and 2 as one)",
        "method": args.method,
        "table": table,
        "rows": rows,
        "medimg_version": medimg.__version__,
        "machine": machine(),
        "timing_note": f"1/5/15-minute load average at the end: {[round(v, 2) for v in os.getloadavg()]}",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "command": "python benchmarks/incontext_session.py " + " ".join(sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
