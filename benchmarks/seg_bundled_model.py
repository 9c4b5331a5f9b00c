"""Check the bundled hippocampus model on its held-out split: Dice with and without mirroring TTA, and (optionally)
agreement with the float32 weights it was packaged from.

    python benchmarks/seg_bundled_model.py [--data ../shared/data/hippocampus] [--float32-model DIR]

Results: benchmarks/results/seg_bundled_model.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import medimg
from medimg.metrics import segmentation_metrics
from medimg.seg import Predictor, resolve_model

HERE = Path(__file__).parent


def held_out_dice(pred: Predictor, data: Path, cases: list[str], tta: bool) -> dict[str, float]:
    dice: dict[int, list[float]] = {1: [], 2: []}
    for cid in cases:
        img = medimg.read(data / "imagesTr" / f"{cid}.nii.gz")
        ref = medimg.read_labels(data / "labelsTr" / f"{cid}.nii.gz")
        m = segmentation_metrics(pred(img, tta=tta), ref, labels=[1, 2], metrics=("dice",))
        for c in dice:
            dice[c].append(m[c]["dice"])
    return {
        "anterior": float(np.mean(dice[1])),
        "posterior": float(np.mean(dice[2])),
        "mean": float(np.mean(dice[1] + dice[2])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--float32-model", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    bundled = resolve_model("hippocampus")
    cases = json.loads((bundled / "split.json").read_text())["val"]
    pred = Predictor(bundled)
    result: dict = {
        "cases": len(cases),
        "bundled_float16": held_out_dice(pred, args.data, cases, False),
        "bundled_float16_tta": held_out_dice(pred, args.data, cases, True),
    }
    if args.float32_model:
        result["float32"] = held_out_dice(Predictor(args.float32_model), args.data, cases, False)
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result, indent=2))
    (HERE / "results" / "seg_bundled_model.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
