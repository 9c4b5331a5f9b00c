"""Multi-channel promptable segmentation: the bundled network (it reads any number of channels) vs the grey network
it was fine-tuned from on one channel, and the random walker, under simulated sessions (issue 16).

    python benchmarks/interactive_colour_train.py --init git:037ced8 --time-budget 35m --ship   # the model (35 min)
    python benchmarks/interactive_colour.py [--clicks 10] [--grey-per-family 12] [--grey git:037ced8]

Targets (benchmarks/interactive_colour_data.py; none was trained on):

- ``fundus_rgb``: 48 vessel crops of CHASE_DB1 patients 09-10 in colour (the promptable models trained on
  patients 01-08: same family, unseen patients);
- ``ms_new_lesions``: 37 new/enlarging MS lesions as 2-channel images (FLAIR visit 1, visit 2 on the common grid):
  a family no model saw. A new lesion shows in the second visit only, so one channel cannot say which bright spot
  is new.

Methods: ``multichannel`` (the bundled network on every channel), ``multichannel, one channel`` and ``grey bundled,
one channel`` (the bundled network and the grey one it came from — ``--grey``, by default the bundled model of
commit 037ced8, extracted from git history — on the channel a user would pick: green for fundus, visit 2 for MS),
``random walker`` on every channel (skimage, channel_axis) and on the one channel. Sessions as in
interactive_benchmark.py: a click / box / scribble, then corrective clicks at the centre of the largest error.
Also: the bundled network on the grey evaluation targets of interactive_data.py next to the grey one (fine-tuning
must not cost grey accuracy; the full comparison: interactive_compare_models.py), and ms per interaction on a
256 x 256 RGB image. Results: benchmarks/results/interactive_colour.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _seg_common import machine
from interactive_benchmark import pick, summarise
from interactive_colour_data import GREY_COMMIT, colour_tasks, load_model, ms_targets
from interactive_data import FAMILIES, EvalTarget, load_bank
from medimg.image import Image
from medimg.interactive import InteractiveSession, simulate
from medimg.interactive.promptable import PromptableModel

HERE = Path(__file__).parent
ONE_CHANNEL = {"fundus_rgb": (1, "green"), "ms_new_lesions": (1, "visit 2")}


def _methods(multi: PromptableModel, grey: PromptableModel, channel: int) -> dict[str, Callable[[EvalTarget], Any]]:
    def img(t: EvalTarget, one: bool) -> Image:
        return Image(t.image[..., channel] if one else t.image, spacing=(1.0, 1.0))

    return {
        "multichannel": lambda t: InteractiveSession(img(t, False), "learned", multi),
        "multichannel, one channel": lambda t: InteractiveSession(img(t, True), "learned", multi),
        "grey bundled, one channel": lambda t: InteractiveSession(img(t, True), "learned", grey),
        "random walker": lambda t: InteractiveSession(img(t, False), "random_walker"),
        "random walker, one channel": lambda t: InteractiveSession(img(t, True), "random_walker"),
    }


def run(targets: list[EvalTarget], makers: dict[str, Callable], starts: list[str], n: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for start in starts:
        for name, make in makers.items():
            runs = [simulate(lambda t=t, make=make: make(t), t.mask, n, start, seed=i) for i, t in enumerate(targets)]
            out[f"{name} from {start}"] = summarise(runs, n)
            d = out[f"{name} from {start}"]
            print(
                f"  {name + ' from ' + start:40s} Dice@1 {d['mean_dice'][0]:.3f} @5 {d['mean_dice'][4]:.3f} "
                f"@{n} {d['mean_dice'][-1]:.3f}  NoC85 {d['noc85']:.1f} NoC90 {d['noc90']:.1f}  "
                f"{d['latency_ms_mean']:.0f} ms",
                flush=True,
            )
    return out


def latency(model: PromptableModel) -> dict[str, float]:
    """ms per interaction on a 256 x 256 RGB image (a 10-interaction session from a centre click)."""
    from skimage import data as skdata

    rgb = skdata.astronaut()[128:384, 128:384].astype(np.float32)
    yy, xx = np.mgrid[:256, :256]
    gt = (xx - 128) ** 2 + (yy - 120) ** 2 < 40**2
    r = simulate(lambda: InteractiveSession(Image(rgb, spacing=(1.0, 1.0)), "learned", model), gt, 10, "click")
    return {
        "2d_rgb_256_ms_mean": 1000 * float(np.mean(r["latency_s"])),
        "2d_rgb_256_ms_max": 1000 * max(r["latency_s"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--starts", default="click,box,scribble")
    ap.add_argument("--grey-per-family", type=int, default=12, help="grey targets per family for the grey check")
    ap.add_argument("--model", default="bundled", help="multi-channel model: folder, git:<commit> or bundled")
    ap.add_argument("--grey", default=f"git:{GREY_COMMIT}", help="the grey model to compare with")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "interactive_colour.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_all = time.perf_counter()
    multi, grey = load_model(args.model), load_model(args.grey)
    starts = args.starts.split(",")
    families = {"fundus_rgb": colour_tasks(args.data)[1], "ms_new_lesions": ms_targets(args.data)}
    results: dict[str, dict] = {}
    check: dict[str, dict] = {}
    for fam, targets in families.items():
        t0 = time.perf_counter()
        print(f"== {fam}: {len(targets)} targets", flush=True)
        results[fam] = run(targets, _methods(multi, grey, ONE_CHANNEL[fam][0]), starts, args.clicks)
        results[fam]["targets"] = len(targets)  # type: ignore[assignment]
        results[fam]["one_channel"] = ONE_CHANNEL[fam][1]  # type: ignore[assignment]
        results[fam]["seconds"] = round(time.perf_counter() - t0, 1)  # type: ignore[assignment]
        for start in starts:
            r = results[fam]
            base = ("random walker", "random walker, one channel", "grey bundled, one channel")
            best = max(base, key=lambda b: r[f"{b} from {start}"]["mean_dice"][4])
            m = r[f"multichannel from {start}"]["mean_dice"][4]
            b = r[f"{best} from {start}"]["mean_dice"][4]
            check[f"{fam} from {start}"] = {
                "multichannel_dice5": m,
                "best_other": best,
                "other_dice5": b,
                "margin": round(m - b, 4),
            }
    # the grey check: does the multi-channel network keep the grey model's accuracy on grey images?
    _, ev2, _ = load_bank(args.data)
    grey_check: dict[str, dict] = {}
    for fam in FAMILIES:
        targets = pick([e for e in ev2 if e.family == fam], args.grey_per_family)
        makers = {
            "multichannel": lambda t: InteractiveSession(t.image, "learned", multi),
            "grey bundled": lambda t: InteractiveSession(t.image, "learned", grey),
        }
        print(f"== grey {fam}: {len(targets)} targets", flush=True)
        grey_check[fam] = run(targets, makers, starts, 5)
    lat = latency(multi)
    print("latency", json.dumps(lat))
    result = {
        "data": str(args.data),
        "clicks": args.clicks,
        "model": args.model,
        "grey_model": args.grey,
        "results": results,
        "target_check": check,
        "grey_check": grey_check,
        "latency": lat,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    """Tables for docs/interactive.md: per family, start and method Dice after 1 / 3 / 5 / 10 interactions,
    NoC@85 / NoC@90, ms per interaction; the target check; the grey check."""
    n = result["clicks"]
    lines = [
        f"Measured {result['date']} on {result['machine']} in {result['seconds'] / 60:.1f} min "
        "(`python benchmarks/interactive_colour.py`).",
        "",
        f"| targets | start | method | Dice after 1 / 3 / 5 / {n} | NoC@85 / NoC@90 | ms |",
        "|---|---|---|---|---|---|",
    ]
    for fam, r in result["results"].items():
        for key, s in r.items():
            if not isinstance(s, dict):
                continue
            method, start = key.rsplit(" from ", 1)
            d = s["mean_dice"]
            one = r["one_channel"]
            lines.append(
                f"| {fam} ({r['targets']}) | {start} | {method.replace('one channel', one)} | "
                f"{d[0]:.2f} / {d[2]:.2f} / {d[4]:.2f} / {d[-1]:.2f} | {s['noc85']:.1f} / {s['noc90']:.1f} | "
                f"{s['latency_ms_mean']:.0f} |"
            )
    lines += ["", "| session | multichannel Dice@5 | best other | margin |", "|---|---|---|---|"]
    for k, v in result["target_check"].items():
        lines.append(
            f"| {k} | {v['multichannel_dice5']:.3f} | {v['best_other']} {v['other_dice5']:.3f} | {v['margin']:+.3f} |"
        )
    lines += ["", "| grey targets | start | multichannel Dice@1 / @5 | grey bundled Dice@1 / @5 |", "|---|---|---|---|"]
    for fam, r in result["grey_check"].items():
        for start in sorted({k.rsplit(" from ", 1)[1] for k in r}):
            a, b = r[f"multichannel from {start}"]["mean_dice"], r[f"grey bundled from {start}"]["mean_dice"]
            lines.append(f"| {fam} | {start} | {a[0]:.2f} / {a[4]:.2f} | {b[0]:.2f} / {b[4]:.2f} |")
    lat = result["latency"]
    lines += [
        "",
        f"Latency, 256 x 256 RGB: mean {lat['2d_rgb_256_ms_mean']:.1f} ms (max {lat['2d_rgb_256_ms_max']:.1f}).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
