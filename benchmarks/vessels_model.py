"""Train, evaluate and bundle the `vessels` segmentation model (retinal vessels in RGB fundus photographs, CHASE_DB1).

    python benchmarks/vessels_model.py --stage all --time-budget 15m [--ship]

Data: ../shared/data/chasedb1 (20 RGB fundus photographs 999x960 of 10 children, left and right eye, with vessel
masks by two annotators ``_1stHO`` and ``_2ndHO``; CC BY 4.0).

* prepare: ``medimg dataset import chasedb1 --label-suffix _1stHO`` (RGB -> three channels R, G, B; 0/255 masks ->
  0/1; the pixel size is not published, so the spacing is recorded as unknown and the model works in pixels). Split
  by patient: 3 of the 10 children held out (seed 0), committed as benchmarks/splits/chasedb1_patients.json.
* train: medimg's self-configuring trainer on the first annotator's masks within ``--time-budget``.
* evaluate: each held-out image predicted whole: Dice, sensitivity and specificity against the first annotator, and
  the second annotator's Dice against the first (the human level), per image and on average.
* ship (``--ship``): float16 weights and a model card in src/medimg/seg/models/vessels/.

Results: benchmarks/results/vessels_model.json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

import medimg

try:
    from _seg_common import machine, ship_bundle, train_printing
except ImportError:  # run as a module
    from benchmarks._seg_common import machine, ship_bundle, train_printing

HERE = Path(__file__).parent
ROOT = HERE.parent
SHARED = HERE.parents[1] / "shared" / "data" / "chasedb1"
SPLIT = HERE / "splits" / "chasedb1_patients.json"
RESULTS = HERE / "results" / "vessels_model.json"
BUNDLE = ROOT / "src" / "medimg" / "seg" / "models" / "vessels"


def patient(case: str) -> str:
    m = re.match(r"Image_(\d+)[LR]", case)
    return m.group(1) if m else case


def prepare(data: Path, work: Path) -> Path:
    from medimg.seg.importer import import_collection

    ds = work / "chase_ds"
    work.mkdir(parents=True, exist_ok=True)
    if not (ds / "dataset.json").exists():
        import_collection(data, ds, label_suffix="_1stHO", labels={1: "vessel"})
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (ds / "labelsTr").glob("*.nii.gz"))
    if not SPLIT.exists():
        patients = sorted({patient(c) for c in cases})
        held = set(np.random.default_rng(0).choice(patients, size=3, replace=False).tolist())
        SPLIT.write_text(
            json.dumps(
                {
                    "train": [c for c in cases if patient(c) not in held],
                    "val": [c for c in cases if patient(c) in held],
                },
                indent=1,
            )
            + "\n"
        )
    return ds


def train(ds_dir: Path, model: Path, budget_s: float) -> dict:
    return train_printing(ds_dir, model, budget_s, json.loads(SPLIT.read_text()), "vessels")


def _scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    p, r = pred > 0, ref > 0
    tp = float((p & r).sum())
    return {
        "dice": 2 * tp / max(float(p.sum() + r.sum()), 1.0),
        "sensitivity": tp / max(float(r.sum()), 1.0),
        "specificity": float((~p & ~r).sum()) / max(float((~r).sum()), 1.0),
    }


def evaluate(model: Path, ds_dir: Path, data: Path) -> dict:
    from medimg.seg import Predictor

    cases = json.loads(SPLIT.read_text())["val"]
    pred = Predictor(model)
    rows = []
    for c in cases:
        imgs = [medimg.read(ds_dir / "imagesTr" / f"{c}_{k:04d}.nii.gz") for k in range(3)]
        ref = np.asarray(medimg.read_labels(ds_dir / "labelsTr" / f"{c}.nii.gz").array)
        second = np.asarray(medimg.read(data / f"{c}_2ndHO.png").array)
        t0 = time.perf_counter()
        out = np.asarray(pred(imgs).array)
        sec = time.perf_counter() - t0
        rows.append({"image": c, **_scores(out, ref), "second_annotator": _scores(second, ref), "seconds": sec})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "sensitivity", "specificity", "seconds")}
    human = {
        k: float(np.mean([r["second_annotator"][k] for r in rows])) for k in ("dice", "sensitivity", "specificity")
    }
    return {
        "n_images": len(rows),
        "n_patients": len({patient(c) for c in cases}),
        **{f"{k}_mean": v for k, v in mean.items() if k != "seconds"},
        "second_annotator_vs_first": human,
        "seconds_per_image": mean["seconds"],
        "per_image": rows,
    }


def ship(model: Path, result: dict) -> None:

    plan = json.loads((model / "plan.json").read_text())
    tr, ho = result["training"], result["heldout"]
    card = (
        (HERE / "model_cards" / "vessels.md")
        .read_text()
        .format(
            minutes=tr["training_seconds"] / 60,
            iterations=tr["iterations"],
            precision=tr["precision"],
            n_train=tr["n_train"],
            n_val=tr["n_val"],
            n_heldout=ho["n_images"],
            n_patients=ho["n_patients"],
            dice=ho["dice_mean"],
            sens=ho["sensitivity_mean"],
            spec=ho["specificity_mean"],
            human=ho["second_annotator_vs_first"]["dice"],
            ms=ho["seconds_per_image"] * 1000,
            patch="x".join(str(p) for p in plan["patch_size"]),
            batch=plan["batch_size"],
        )
    )
    ship_bundle(model, BUNDLE, card, "CHASE_DB1 colour fundus photographs (RGB)", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["prepare", "train", "evaluate", "all"], default="all")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg_vessels"))
    ap.add_argument("--model", type=Path, default=None, help="model folder (default WORK/model)")
    ap.add_argument("--time-budget", default="15m")
    ap.add_argument("--ship", action="store_true", help="bundle the model into src/medimg/seg/models/vessels")
    args = ap.parse_args()
    from medimg.seg.train import parse_duration

    t_all = time.perf_counter()
    model = args.model or args.work / "model"
    result: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update(
        {
            "benchmark": "vessels_model",
            "medimg_version": medimg.__version__,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "data": "CHASE_DB1 (20 images of 10 children), first annotator; split by child: "
            "benchmarks/splits/chasedb1_patients.json",
        }
    )
    ds = prepare(args.data, args.work)
    if args.stage in ("train", "all"):
        budget = parse_duration(args.time_budget)
        info = train(ds, model, budget)
        result["training"] = {
            "time_budget_s": budget,
            "training_seconds": info["training_seconds"],
            "iterations": info["iterations"],
            "precision": info["precision"],
            "n_train": info["n_train"],
            "n_val": info["n_val"],
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if args.stage in ("evaluate", "all"):
        result["heldout"] = evaluate(model, ds, args.data)
        print(json.dumps({k: v for k, v in result["heldout"].items() if k != "per_image"}, indent=2))
    result["total_seconds_this_run"] = time.perf_counter() - t_all
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if args.ship:
        ship(model, result)


if __name__ == "__main__":
    main()
