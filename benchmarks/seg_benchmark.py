"""Segmentation benchmarks: train medimg with a fixed time budget on a fixed, committed split, then report Dice per
class on the held-out cases and the prediction time per case with and without mirroring TTA.

Tasks (data from ../shared/data):
  hippocampus  MSD Task04, 200 cases, 80/20 split (benchmarks/splits/hippocampus_80_20.json, seed 0)
  acdc         ACDC end-diastole + end-systole HDF5 volumes, 20 patients split by patient: the 4 test patients of
               benchmarks/splits/acdc_patients.json (seed 0) stay held out; of the other 16, 3 (seed 0) validate
               (configuration choice, post-processing) and 13 train: benchmarks/splits/acdc_3way.json. No spacing
               is stored in these files, so the volumes are used in voxel units (spacing_known = false).

    python benchmarks/seg_benchmark.py --task hippocampus [--time-budget 20m] [--configurations auto] [--out DIR]

``--configurations`` (auto, 3d_fullres, 2d or several) is medimg train's option: several share the budget and the
better by validation Dice is kept; every trained configuration is also scored on the test cases.

Results: benchmarks/results/seg_<task>.json; the model folder stays in --out (default /tmp/medimg_bench_<task>).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import medimg
from medimg.metrics import segmentation_metrics
from medimg.seg import Predictor, load_dataset, make_split, parse_duration
from medimg.seg.dataset import SegDataset, import_hdf5
from medimg.seg.plan import save_json
from medimg.seg.train import load_split, save_split

try:
    from _seg_common import machine, train_printing
except ImportError:  # run as a module
    from benchmarks._seg_common import machine, train_printing

HERE = Path(__file__).parent
DATA = HERE.parents[1] / "shared" / "data"
TASKS = {
    "hippocampus": {"labels": {1: "anterior", 2: "posterior"}, "split": "hippocampus_80_20.json", "group": None},
    "acdc": {"labels": {1: "RV", 2: "MYO", 3: "LV"}, "split": "acdc_3way.json", "group": r"patient\d+"},
}


def load_task(task: str, data: Path, work: Path) -> SegDataset:
    if task == "hippocampus":
        ds = load_dataset(data / "hippocampus")
    else:
        ds = import_hdf5(data / "acdc", work / "acdc_dataset", labels=TASKS["acdc"]["labels"])
    ds.labels = {0: "background", **TASKS[task]["labels"]}
    return ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--time-budget", default="20m")
    ap.add_argument("--configurations", default="auto", help="auto, 3d_fullres, 2d or several (comma-separated)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(f"/tmp/medimg_bench_{args.task}")
    t_all = time.perf_counter()
    ds = load_task(args.task, args.data, out.parent)
    split_file = HERE / "splits" / TASKS[args.task]["split"]
    if args.task == "acdc" and not split_file.exists():
        held = load_split(HERE / "splits" / "acdc_patients.json")
        inner = make_split(held["train"], 3 / 16, seed=0, group_pattern=TASKS["acdc"]["group"])
        save_json({"train": inner["train"], "val": inner["val"], "test": held["val"]}, split_file)
    if not split_file.exists():
        save_split(
            make_split([c.case_id for c in ds.cases], 0.2, seed=0, group_pattern=TASKS[args.task]["group"]), split_file
        )
    split = load_split(split_file)
    test_ids = json.loads(split_file.read_text()).get("test", split["val"])
    budget = parse_duration(args.time_budget)
    info = train_printing(ds, out, budget, split, args.task, configurations=args.configurations.split(","))
    classes = sorted(TASKS[args.task]["labels"])
    names = TASKS[args.task]["labels"]

    def test_dice(model: Path) -> dict[str, float]:
        p = Predictor(model)
        per = {c: [] for c in classes}
        for cid in test_ids:
            case = ds.case(cid)
            m = segmentation_metrics(
                p(medimg.read(case.images[0])), medimg.read_labels(case.label), labels=classes, metrics=("dice",)
            )
            for c in classes:
                per[c].append(m[c]["dice"])
        d = {names[c]: float(np.nanmean(per[c])) for c in classes}
        return {**d, "mean": float(np.mean(list(d.values())))}

    by_conf = {sub.name: test_dice(sub) for sub in sorted((out / "configurations").glob("*")) if sub.is_dir()}
    pred = Predictor(out)
    timings: dict[str, list[float]] = {"no_tta": [], "tta": []}
    dice: dict[int, list[float]] = {c: [] for c in classes}
    for cid in test_ids:
        case = ds.case(cid)
        img = medimg.read(case.images[0])
        ref = medimg.read_labels(case.label)  # type: ignore[arg-type]
        for mode, tta in (("no_tta", False), ("tta", True)):
            t0 = time.perf_counter()
            seg = pred(img, tta=tta)
            timings[mode].append(time.perf_counter() - t0)
            if mode == "no_tta":
                m = segmentation_metrics(seg, ref, labels=classes, metrics=("dice",))
                for c in classes:
                    dice[c].append(m[c]["dice"])
    result = {
        "benchmark": f"seg_{args.task}",
        "medimg_version": medimg.__version__,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "time_budget_s": budget,
        "training_seconds": info["training_seconds"],
        "iterations": info["iterations"],
        "precision": info["precision"],
        "n_train": info["n_train"],
        "n_val": info["n_val"],
        "n_test": len(test_ids),
        "split": str(split_file.relative_to(HERE.parent)),
        "configuration": info.get("configuration"),
        "configurations": info.get("configurations"),
        "test_dice_by_configuration": by_conf or None,
        "dice": {TASKS[args.task]["labels"][c]: float(np.nanmean(dice[c])) for c in classes},
        "mean_dice": float(np.nanmean([np.nanmean(dice[c]) for c in classes])),
        "predict_seconds_per_case": float(np.mean(timings["no_tta"])),
        "predict_seconds_per_case_tta": float(np.mean(timings["tta"])),
        "postprocessing": json.loads((out / "plan.json").read_text())["postprocessing"],
        "total_seconds": time.perf_counter() - t_all,
    }
    print(json.dumps(result, indent=2))
    res_file = HERE / "results" / f"seg_{args.task}.json"
    res_file.parent.mkdir(parents=True, exist_ok=True)
    res_file.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
