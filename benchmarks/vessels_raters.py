"""Training from two annotators' masks vs from one: CHASE_DB1 retinal vessels, in one script, same split and budget.

    python benchmarks/vessels_raters.py [--time-budget 10m] [--work /tmp/medimg_vessel_raters]

Data: ../shared/data/chasedb1 (20 RGB fundus photographs of 10 children, vessel masks by two annotators ``_1stHO``
and ``_2ndHO``; CC BY 4.0); the split by child of ``benchmarks/vessels_model.py``
(``benchmarks/splits/chasedb1_patients.json``: 14 training images, 6 held out).

Two datasets are imported from the same images:
* ``first``: ``medimg dataset import chasedb1 --label-suffix _1stHO`` (the bundled ``vessels`` model's labels);
* ``staple``: ``--label-suffix _1stHO,_2ndHO --fuse staple`` (both annotators fused by STAPLE; each annotator's
  sensitivity/specificity in raters.json).
A model is trained on each (``medimg train``'s trainer, same plan rules, seed and ``--time-budget``), and each
held-out image is predicted whole and scored (Dice, sensitivity, specificity) against the first annotator, the
second annotator and their STAPLE fusion; the two annotators' mutual Dice is the human level.

Results: benchmarks/results/vessels_raters.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import medimg

try:
    from _seg_common import machine, train_printing
    from vessels_model import SHARED, SPLIT, _scores
except ImportError:  # run as a module
    from benchmarks._seg_common import machine, train_printing
    from benchmarks.vessels_model import SHARED, SPLIT, _scores

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "vessels_raters.json"
SOURCES = {"first": ("_1stHO", None), "staple": ("_1stHO,_2ndHO", "staple")}


def evaluate(model: Path, ds: Path, staple_ds: Path, data: Path) -> dict[str, Any]:
    from medimg.seg import Predictor

    pred = Predictor(model)
    rows = []
    for c in json.loads(SPLIT.read_text())["val"]:
        imgs = [medimg.read(ds / "imagesTr" / f"{c}_{k:04d}.nii.gz") for k in range(3)]
        out = np.asarray(pred(imgs).array)
        refs = {
            "first": np.asarray(medimg.read(data / f"{c}_1stHO.png").array),
            "second": np.asarray(medimg.read(data / f"{c}_2ndHO.png").array),
            "staple": np.asarray(medimg.read_labels(staple_ds / "labelsTr" / f"{c}.nii.gz").array),
        }
        refs = {k: (v[..., 0] if v.ndim == 3 else v) for k, v in refs.items()}
        rows.append({"image": c, **{k: _scores(out, v) for k, v in refs.items()}})
    return {
        ref: {m: float(np.mean([r[ref][m] for r in rows])) for m in ("dice", "sensitivity", "specificity")}
        for ref in ("first", "second", "staple")
    } | {"per_image": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg_vessel_raters"))
    ap.add_argument("--time-budget", default="10m")
    args = ap.parse_args()
    from medimg.seg.importer import import_collection
    from medimg.seg.train import parse_duration

    t_all = time.perf_counter()
    budget = parse_duration(args.time_budget)
    args.work.mkdir(parents=True, exist_ok=True)
    ds = {}
    for name, (suffix, fuse) in SOURCES.items():
        ds[name] = args.work / f"ds_{name}"
        if not (ds[name] / "dataset.json").exists():
            import_collection(args.data, ds[name], label_suffix=suffix, fuse=fuse, labels={1: "vessel"})
    split = json.loads(SPLIT.read_text())
    raters = json.loads((ds["staple"] / "raters.json").read_text())["mean"]
    human = [
        _scores(
            np.asarray(medimg.read(args.data / f"{c}_2ndHO.png").array),
            np.asarray(medimg.read(args.data / f"{c}_1stHO.png").array),
        )["dice"]
        for c in split["val"]
    ]
    result: dict[str, Any] = {
        "benchmark": "vessels_raters",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "data": "CHASE_DB1, split by child (benchmarks/splits/chasedb1_patients.json): 14 train / 6 held out",
        "time_budget_s": budget,
        "rater_quality_vs_staple_mean_over_all_images": raters,
        "second_vs_first_annotator_dice_heldout": float(np.mean(human)),
        "runs": {},
    }
    for name in SOURCES:
        model = args.work / f"model_{name}"
        info = train_printing(ds[name], model, budget, split, f"vessels-{name}")
        ev = evaluate(model, ds["first"], ds["staple"], args.data)
        result["runs"][name] = {
            "training": {k: info[k] for k in ("training_seconds", "iterations", "precision", "n_train")},
            "heldout": ev,
        }
        print(name, json.dumps({k: v for k, v in ev.items() if k != "per_image"}), flush=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    result["total_seconds"] = time.perf_counter() - t_all
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
