"""Train, evaluate and bundle the `abdomen` segmentation model (liver, kidneys, spleen in T2 MR, CHAOS).

    python benchmarks/abdomen_model.py --stage all --time-budget 20m [--configurations auto] [--ship]
    python benchmarks/abdomen_model.py --stage evaluate --model DIR

Data: ../shared/data/chaos_mr (CHAOS challenge, 16 abdominal T2-SPIR MR volumes, 256x256x31-46 at 1.25x1.25x7.7 mm,
labels 1 liver, 2 right kidney, 3 left kidney, 4 spleen; CC BY-SA 4.0).

* split (written once, seed 0, one volume per patient): 4 held-out test volumes never used in training or in any
  choice, 2 validation volumes (configuration choice, post-processing), 10 training volumes:
  benchmarks/splits/chaos_split.json.
* train: medimg's self-configuring trainer with ``--configurations`` (default auto: 3d_fullres and, because the
  slices are 6x coarser than the pixels, 2d), each on half of ``--time-budget``; the better by validation Dice is kept.
* evaluate: every test volume predicted on its own grid with each trained configuration: Dice per organ and the
  95th-percentile Hausdorff distance (mm); the kept one is what the bundle ships.
* ship (``--ship``): float16 weights and a model card in src/medimg/seg/models/abdomen/.

Results: benchmarks/results/abdomen_model.json.
"""

from __future__ import annotations

import argparse
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
SHARED = HERE.parents[1] / "shared" / "data" / "chaos_mr"
SPLIT = HERE / "splits" / "chaos_split.json"
RESULTS = HERE / "results" / "abdomen_model.json"
BUNDLE = ROOT / "src" / "medimg" / "seg" / "models" / "abdomen"
ORGANS = {1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}


def make_split(data: Path) -> dict[str, list[str]]:
    """4 test / 2 validation / 10 training volumes, seed 0 (written once, then read)."""
    if not SPLIT.exists():
        cases = sorted(p.name.removesuffix(".nii.gz") for p in (data / "labelsTr").glob("*.nii.gz"))
        perm = [cases[i] for i in np.random.default_rng(0).permutation(len(cases))]
        split = {"test": sorted(perm[:4]), "val": sorted(perm[4:6]), "train": sorted(perm[6:])}
        SPLIT.write_text(json.dumps(split, indent=1) + "\n")
    return json.loads(SPLIT.read_text())


def evaluate(model: Path, data: Path, cases: list[str]) -> dict:
    from medimg.seg import Predictor

    pred = Predictor(model)
    rows = []
    for c in cases:
        img = medimg.read(data / "imagesTr" / f"{c}.nii.gz")
        ref = medimg.read_labels(data / "labelsTr" / f"{c}.nii.gz")
        t0 = time.perf_counter()
        out = pred(img)
        sec = time.perf_counter() - t0
        m = segmentation_metrics(out, ref, labels=list(ORGANS), metrics=("dice", "hd95"))
        rows.append(
            {
                "case": c,
                **{f"dice_{n}": m[k]["dice"] for k, n in ORGANS.items()},
                **{f"hd95_mm_{n}": m[k]["hd95"] for k, n in ORGANS.items()},
                "seconds": sec,
            }
        )
    dice = {n: float(np.mean([r[f"dice_{n}"] for r in rows])) for n in ORGANS.values()}
    return {
        "n_volumes": len(rows),
        "dice": dice,
        "mean_dice": float(np.mean(list(dice.values()))),
        "hd95_mm": {n: float(np.mean([r[f"hd95_mm_{n}"] for r in rows])) for n in ORGANS.values()},
        "seconds_per_volume": float(np.mean([r["seconds"] for r in rows])),
        "per_volume": rows,
    }


def ship(model: Path, result: dict) -> None:
    plan = json.loads((model / "plan.json").read_text())
    tr, ho = result["training"], result["heldout"]
    confs = tr.get("configurations") or {}
    if confs:
        choice = "kept by validation mean Dice among " + ", ".join(
            f"{c} {v['validation_mean_dice']:.3f}" for c, v in confs.items()
        )
    elif result.get("choice_run"):
        prev = result["choice_run"]["training"]["configurations"]
        choice = (
            "chosen by validation mean Dice in a 20-minute `--configurations auto` run ("
            + ", ".join(f"{c} {v['validation_mean_dice']:.3f}" for c, v in prev.items())
            + "; `choice_run` in benchmarks/results/abdomen_model.json), then trained alone on the whole budget"
        )
    else:
        choice = "the only configuration trained"
    card = (
        (HERE / "model_cards" / "abdomen.md")
        .read_text()
        .format(
            minutes=tr["training_seconds"] / 60,
            budget=tr["time_budget_s"] / 60,
            iterations=tr["iterations"],
            precision=tr["precision"],
            n_train=tr["n_train"],
            n_val=tr["n_val"],
            n_test=ho["n_volumes"],
            configuration=tr["configuration"],
            choice=choice,
            dice=ho["mean_dice"],
            liver=ho["dice"]["liver"],
            rk=ho["dice"]["right_kidney"],
            lk=ho["dice"]["left_kidney"],
            spleen=ho["dice"]["spleen"],
            hd95=float(np.mean(list(ho["hd95_mm"].values()))),
            sec=ho["seconds_per_volume"],
            spacing="x".join(f"{s:.2f}" for s in plan["target_spacing"]),
            patch="x".join(str(p) for p in plan["patch_size"]),
            batch=plan["batch_size"],
        )
    )
    ship_bundle(model, BUNDLE, card, "CHAOS abdominal T2-SPIR MR (axial, about 1.25 mm pixels, 5-10 mm slices)", "MR")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["train", "evaluate", "all"], default="all")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--model", type=Path, default=Path("/tmp/medimg_abdomen/model"))
    ap.add_argument("--time-budget", default="20m")
    ap.add_argument("--configurations", default="auto", help="auto, 3d_fullres, 2d or several (comma-separated)")
    ap.add_argument("--ship", action="store_true", help="bundle the model into src/medimg/seg/models/abdomen")
    args = ap.parse_args()
    from medimg.seg.train import parse_duration

    t_all = time.perf_counter()
    split = make_split(args.data)
    result: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update(
        {
            "benchmark": "abdomen_model",
            "medimg_version": medimg.__version__,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "data": "CHAOS T2-SPIR MR, 16 volumes: 10 train / 2 validation / 4 test "
            "(benchmarks/splits/chaos_split.json)",
        }
    )
    if args.stage in ("train", "all"):
        budget = parse_duration(args.time_budget)
        info = train_printing(
            args.data,
            args.model,
            budget,
            {"train": split["train"], "val": split["val"]},
            "abdomen",
            configurations=args.configurations.split(","),
        )
        result["training"] = {
            k: info.get(k)
            for k in (
                "time_budget_s",
                "training_seconds",
                "iterations",
                "precision",
                "n_train",
                "n_val",
                "configuration",
                "configurations",
                "validation_mean_dice",
            )
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if args.stage in ("evaluate", "all"):
        result["heldout"] = evaluate(args.model, args.data, split["test"])
        print(json.dumps({k: v for k, v in result["heldout"].items() if k != "per_volume"}, indent=2))
        per_conf = {}
        for sub in sorted((args.model / "configurations").glob("*")):
            if (sub / "model.pt").exists():
                r = evaluate(sub, args.data, split["test"])
                per_conf[sub.name] = {"mean_dice": r["mean_dice"], "dice": r["dice"]}
        result.pop("heldout_by_configuration", None)  # only for a run that trained several
        if per_conf:
            result["heldout_by_configuration"] = per_conf
            print(json.dumps(per_conf, indent=2))
    result["total_seconds_this_run"] = time.perf_counter() - t_all
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if args.ship:
        ship(args.model, result)


if __name__ == "__main__":
    main()
