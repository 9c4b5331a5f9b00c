"""nnU-Net v2 (3d_fullres, CPU) on the same hippocampus split with the same training budget as medimg.

nnU-Net is an optional benchmark dependency, never a runtime one. Install it next to medimg (its full dependency
chain pulls timm -> torchvision -> CUDA torch, so without dependencies, then the ones it needs):

    pip install --no-deps nnunetv2==2.8.1 acvl-utils==0.2.6 dynamic-network-architectures==0.4.4 \
        batchgenerators==0.25.5 batchgeneratorsv2==0.3.6
    pip install pandas scikit-learn yacs einops blosc2 imagecodecs tqdm graphviz requests threadpoolctl \
        matplotlib seaborn connected-components-3d

What runs, all through nnU-Net's own unmodified API: fingerprint extraction, planning and 3d_fullres
preprocessing of the 200 cases; our committed split (benchmarks/splits/hippocampus_80_20.json) as fold 0 of
splits_final.json; training with ``nnUNetTrainer`` resolved directly (nnU-Net's trainer lookup imports every variant,
one of which needs torchvision) through a minimal subclass, ``nnUNetTrainer_TimeBudget``, in the spirit of nnU-Net's
training-length variants: epochs of 10 iterations, as many as fit the budget at nnU-Net's measured speed here (its
standard 250-iteration epoch took 34 min on this machine, longer than the whole budget; the shortest shipped
variant, ``nnUNetTrainer_1epoch``, does not fit), so that its PolyLR schedule spans the budget; if the budget runs
out first, training ends there through nnU-Net's own ``on_train_end``. Then ``nnUNetPredictor`` on the 40
held-out cases with and without mirroring, timed per case, Dice computed with medimg.

    python benchmarks/nnunet_hippocampus.py [--time-budget 20m] [--work /tmp/nnunet_bench]

Results: benchmarks/results/nnunet_hippocampus.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
#: nnU-Net's speed on this machine, measured in a first run of this script (62 s per 10-iteration epoch including
#: its validation step and logging); sizes the epoch count to the budget.
SECONDS_PER_ITERATION = 6.2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "hippocampus")
    ap.add_argument("--time-budget", default="20m")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nnunet_bench"))
    ap.add_argument(
        "--predict-only",
        action="store_true",
        help="Reuse a finished training in --work (timings come from nnU-Net's checkpoint log).",
    )
    args = ap.parse_args()
    from medimg.seg import parse_duration
    from medimg.seg.train import load_split

    budget = parse_duration(args.time_budget)
    split = load_split(HERE / "splits" / "hippocampus_80_20.json")
    work = args.work
    if not args.predict_only:
        shutil.rmtree(work, ignore_errors=True)
        for sub in ("raw", "pre", "res"):
            (work / sub).mkdir(parents=True)
    # nnU-Net reads its folders from environment variables at import time: set them before importing it
    os.environ.update(
        nnUNet_raw=str(work / "raw"),
        nnUNet_preprocessed=str(work / "pre"),
        nnUNet_results=str(work / "res"),
        nnUNet_n_proc_DA="2",
    )
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import medimg
    from medimg.metrics import segmentation_metrics

    t_all = time.perf_counter()
    raw = work / "raw" / "Dataset004_Hippocampus"
    preprocess_s = math.nan
    if not args.predict_only:
        (raw / "imagesTr").mkdir(parents=True)
        (raw / "labelsTr").mkdir()
        cases = split["train"] + split["val"]
        for cid in cases:
            shutil.copy(args.data / "imagesTr" / f"{cid}.nii.gz", raw / "imagesTr" / f"{cid}_0000.nii.gz")
            shutil.copy(args.data / "labelsTr" / f"{cid}.nii.gz", raw / "labelsTr" / f"{cid}.nii.gz")
        (raw / "dataset.json").write_text(
            json.dumps(
                {
                    "channel_names": {"0": "MRI"},
                    "labels": {"background": 0, "anterior": 1, "posterior": 2},
                    "numTraining": len(cases),
                    "file_ending": ".nii.gz",
                }
            )
        )
        t0 = time.perf_counter()
        extract_fingerprints([4], num_processes=2, check_dataset_integrity=True)
        plan_experiments([4])
        preprocess([4], configurations=("3d_fullres",), num_processes=(2,))
        preprocess_s = time.perf_counter() - t0
    pre = work / "pre" / "Dataset004_Hippocampus"
    (pre / "splits_final.json").write_text(json.dumps([{"train": split["train"], "val": split["val"]}]))

    iters_per_epoch = 10
    n_epochs = max(1, round(budget / (iters_per_epoch * SECONDS_PER_ITERATION)))

    class BudgetSpent(Exception):
        pass

    class nnUNetTrainer_TimeBudget(nnUNetTrainer):
        """Short epochs whose count fits the budget (so PolyLR spans it); training ends at the budget."""

        def __init__(
            self,
            plans: dict,
            configuration: str,
            fold: int,
            dataset_json: dict,
            device: torch.device = torch.device("cpu"),  # noqa: B008
        ) -> None:  # nnU-Net introspects these names
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = n_epochs
            self.num_iterations_per_epoch = iters_per_epoch
            self.num_val_iterations_per_epoch = 1
            self.deadline = math.inf

        def on_train_start(self) -> None:
            super().on_train_start()
            self.deadline = time.perf_counter() + budget

        def on_epoch_end(self) -> None:
            super().on_epoch_end()
            if time.perf_counter() > self.deadline:
                raise BudgetSpent

    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    plans["continue_training"] = False  # as nnunetv2.run.run_training.get_trainer_from_args does
    trainer = nnUNetTrainer_TimeBudget(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    if args.predict_only:
        trainer.load_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))
    else:
        try:
            trainer.run_training()
        except BudgetSpent:
            trainer.on_train_end()  # saves checkpoint_final.pth as a normal end of training does
    log = trainer.logger.get_checkpoint()  # epoch start/end timestamps, losses, pseudo-Dice per epoch
    train_s = float(log["epoch_end_timestamps"][-1] - log["epoch_start_timestamps"][0])
    trainer.set_deep_supervision_enabled(False)  # inference uses the main head only, as nnU-Net's loader builds it
    trainer.network.eval()
    # initialize_from_trained_model_folder looks the trainer up by name, importing every trainer module (one needs
    # timm -> torchvision); nnU-Net's manual_initialization takes the trained objects directly instead.
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        trainer.network,
        trainer.plans_manager,
        trainer.configuration_manager,
        [trainer.network.state_dict()],
        trainer.dataset_json,
        type(trainer).__name__,
        trainer.inference_allowed_mirroring_axes,
    )
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    timings: dict[str, list[float]] = {"no_tta": [], "tta": []}
    dice: dict[int, list[float]] = {1: [], 2: []}
    for cid in split["val"]:
        img, props = SimpleITKIO().read_images([str(raw / "imagesTr" / f"{cid}_0000.nii.gz")])
        ref = medimg.read_labels(raw / "labelsTr" / f"{cid}.nii.gz")
        for mode, mirror in (("no_tta", False), ("tta", True)):
            predictor.use_mirroring = mirror
            t1 = time.perf_counter()
            seg = predictor.predict_single_npy_array(img, props, None, None, False)
            timings[mode].append(time.perf_counter() - t1)
            if mode == "no_tta":
                lab = ref.with_array(np.asarray(seg).T.astype(np.uint8))  # nnU-Net arrays are (z, y, x)
                m = segmentation_metrics(lab, ref, labels=[1, 2], metrics=("dice",))
                dice[1].append(m[1]["dice"])
                dice[2].append(m[2]["dice"])
    result = {
        "benchmark": "nnunet_hippocampus",
        "nnunetv2": "2.8.1",
        "configuration": "3d_fullres",
        "trainer": f"nnUNetTrainer_TimeBudget (nnUNetTrainer; {n_epochs} epochs x {iters_per_epoch} iterations sized "
        "to the budget; ends early at the budget)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "time_budget_s": budget,
        "preprocess_seconds": preprocess_s,
        "training_seconds": train_s,
        "epochs_done": len(log["epoch_end_timestamps"]),
        "iterations_per_epoch": iters_per_epoch,
        "planned_epochs": n_epochs,
        "patch_size": plans["configurations"]["3d_fullres"]["patch_size"],
        "batch_size": plans["configurations"]["3d_fullres"]["batch_size"],
        "dice": {"anterior": float(np.mean(dice[1])), "posterior": float(np.mean(dice[2]))},
        "mean_dice": float(np.mean(dice[1] + dice[2])),
        "predict_seconds_per_case": float(np.mean(timings["no_tta"])),
        "predict_seconds_per_case_tta": float(np.mean(timings["tta"])),
        "total_seconds": time.perf_counter() - t_all,
    }
    print(json.dumps(result, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "nnunet_hippocampus.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
