"""Train, evaluate and bundle the `nodule` segmentation model (lung nodules in CT crops, LIDC-IDRI).

    python benchmarks/nodule_model.py --stage all --time-budget 12m [--ship]
    python benchmarks/nodule_model.py --stage evaluate --model DIR

Data: ../shared/data/lidc_nodules (772 CT crops around lung nodules of 441 LIDC-IDRI patients, real HU, native
spacing, one nodule mask each; CC BY 3.0).

* prepare: the crops as an nnU-Net-style dataset (links, no copies) and a split by patient (every nodule of a patient
  on one side), 80/20 with seed 0, committed as benchmarks/splits/lidc_80_20.json (the malignancy classifier uses the
  same split).
* train: medimg's self-configuring trainer (fingerprint -> plan: CT normalisation from the foreground HU percentiles,
  resampling to the median spacing) within ``--time-budget`` of wall clock.
* evaluate: every held-out crop predicted on its own grid: Dice and the absolute volume difference (mm^3) against
  the reference mask, overall and by nodule diameter (the CSV's ``diameter_mm``: < 6, 6-10, >= 10 mm).
* ship (``--ship``): float16 weights and a model card in src/medimg/seg/models/nodule/.

Results: benchmarks/results/nodule_model.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

import medimg
from medimg.metrics import segmentation_metrics

try:
    from _seg_common import machine, ship_bundle, train_printing
except ImportError:  # run as a module
    from benchmarks._seg_common import machine, ship_bundle, train_printing

HERE = Path(__file__).parent
ROOT = HERE.parent
SHARED = HERE.parents[1] / "shared" / "data" / "lidc_nodules"
SPLIT = HERE / "splits" / "lidc_80_20.json"
RESULTS = HERE / "results" / "nodule_model.json"
BUNDLE = ROOT / "src" / "medimg" / "seg" / "models" / "nodule"


def metadata(data: Path) -> dict[str, dict[str, str]]:
    """crop id (``LIDC-IDRI-PPPP_R_N``) -> its CSV row."""
    with open(data / "nodule_metadata.csv", newline="") as f:
        return {f"{r['patient_id']}_R_{r['nodule_id']}": r for r in csv.DictReader(f)}


def patient(case: str) -> str:
    return case.split("_R_")[0]


def make_split(cases: list[str]) -> None:
    """80/20 by patient, seed 0 (written once)."""
    if SPLIT.exists():
        return
    patients = sorted({patient(c) for c in cases})
    rng = np.random.default_rng(0)
    held = set(rng.choice(patients, size=round(0.2 * len(patients)), replace=False).tolist())
    split = {
        "train": sorted(c for c in cases if patient(c) not in held),
        "val": sorted(c for c in cases if patient(c) in held),
    }
    SPLIT.write_text(json.dumps(split, indent=1) + "\n")


def prepare(data: Path, work: Path) -> Path:
    ds = work / "lidc_ds"
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (data / "images").glob("*.nii.gz"))
    make_split(cases)
    if (ds / "dataset.json").exists():
        return ds
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    for c in cases:
        (ds / "imagesTr" / f"{c}_0000.nii.gz").symlink_to((data / "images" / f"{c}.nii.gz").resolve())
        (ds / "labelsTr" / f"{c}.nii.gz").symlink_to((data / "masks" / f"{c}.nii.gz").resolve())
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "nodule": 1},
                "numTraining": len(cases),
                "file_ending": ".nii.gz",
            },
            indent=2,
        )
    )
    return ds


def train(ds_dir: Path, model: Path, budget_s: float) -> dict:
    return train_printing(ds_dir, model, budget_s, json.loads(SPLIT.read_text()), "nodule")


def evaluate(model: Path, ds_dir: Path, data: Path) -> dict:
    from medimg.seg import Predictor

    meta = metadata(data)
    cases = json.loads(SPLIT.read_text())["val"]
    pred = Predictor(model)
    rows = []
    for c in cases:
        img = medimg.read(ds_dir / "imagesTr" / f"{c}_0000.nii.gz")
        ref = medimg.read_labels(ds_dir / "labelsTr" / f"{c}.nii.gz")
        t0 = time.perf_counter()
        out = pred(img)
        sec = time.perf_counter() - t0
        dice = segmentation_metrics(out, ref, labels=[1], metrics=("dice",))[1]["dice"]
        vox = float(np.prod(img.spacing))
        vol_ref = float((ref.array == 1).sum()) * vox
        vol_out = float((out.array == 1).sum()) * vox
        diam = float(meta[c]["diameter_mm"]) if c in meta else float("nan")
        rows.append(
            {
                "case": c,
                "dice": dice,
                "volume_mm3": vol_out,
                "volume_ref_mm3": vol_ref,
                "diameter_mm": diam,
                "seconds": sec,
            }
        )

    def summary(sel: list[dict]) -> dict:
        return {
            "n": len(sel),
            "dice_mean": float(np.mean([r["dice"] for r in sel])) if sel else float("nan"),
            "dice_median": float(np.median([r["dice"] for r in sel])) if sel else float("nan"),
            "abs_volume_diff_mm3_median": float(np.median([abs(r["volume_mm3"] - r["volume_ref_mm3"]) for r in sel]))
            if sel
            else float("nan"),
        }

    by_size = {
        "<6mm": summary([r for r in rows if r["diameter_mm"] < 6]),
        "6-10mm": summary([r for r in rows if 6 <= r["diameter_mm"] < 10]),
        ">=10mm": summary([r for r in rows if r["diameter_mm"] >= 10]),
    }
    return {
        "n_nodules": len(rows),
        "n_patients": len({patient(c) for c in cases}),
        **summary(rows),
        "dice_min": float(np.min([r["dice"] for r in rows])),
        "empty_predictions": int(sum(r["volume_mm3"] == 0 for r in rows)),
        "by_diameter": by_size,
        "seconds_per_nodule": float(np.mean([r["seconds"] for r in rows])),
        "per_nodule": rows,
    }


def ship(model: Path, result: dict) -> None:
    plan = json.loads((model / "plan.json").read_text())
    tr, ho = result["training"], result["heldout"]
    card = (
        (HERE / "model_cards" / "nodule.md")
        .read_text()
        .format(
            minutes=tr["training_seconds"] / 60,
            iterations=tr["iterations"],
            precision=tr["precision"],
            n_train=tr["n_train"],
            n_val=tr["n_val"],
            n_heldout=ho["n_nodules"],
            n_patients=ho["n_patients"],
            dice=ho["dice_mean"],
            dice_median=ho["dice_median"],
            small=ho["by_diameter"]["<6mm"]["dice_mean"],
            mid=ho["by_diameter"]["6-10mm"]["dice_mean"],
            large=ho["by_diameter"][">=10mm"]["dice_mean"],
            ms=ho["seconds_per_nodule"] * 1000,
            spacing="x".join(f"{s:.2f}" for s in plan["target_spacing"]),
            patch="x".join(str(p) for p in plan["patch_size"]),
            batch=plan["batch_size"],
        )
    )
    ship_bundle(model, BUNDLE, card, "LIDC-IDRI CT crops centred on a lung nodule", "CT")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["prepare", "train", "evaluate", "all"], default="all")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg_nodule"))
    ap.add_argument("--model", type=Path, default=None, help="model folder (default WORK/model)")
    ap.add_argument("--time-budget", default="12m")
    ap.add_argument("--ship", action="store_true", help="bundle the model into src/medimg/seg/models/nodule")
    args = ap.parse_args()
    from medimg.seg.train import parse_duration

    t_all = time.perf_counter()
    model = args.model or args.work / "model"
    result: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update(
        {
            "benchmark": "nodule_model",
            "medimg_version": medimg.__version__,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "data": "LIDC-IDRI nodule crops (772 from 441 patients), split by patient: "
            "benchmarks/splits/lidc_80_20.json",
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
        print(json.dumps({k: v for k, v in result["heldout"].items() if k != "per_nodule"}, indent=2))
    result["total_seconds_this_run"] = time.perf_counter() - t_all
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if args.ship:
        ship(model, result)


if __name__ == "__main__":
    main()
