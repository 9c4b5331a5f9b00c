"""Held-out Dice of a hippocampus model, shared by the benchmarks that train on benchmarks/splits/hippocampus_80_20.json
(sparse_train.py, federated_hippocampus.py, semi_supervised.py): whole volumes through medimg's Predictor, Dice per
class (1 anterior, 2 posterior) against the full reference labels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.metrics import segmentation_metrics
from medimg.seg import Predictor


def held_out_dice(model: Path, ds: Any, ids: list[str]) -> dict[str, Any]:
    """Mean Dice per class and overall, each case's mean Dice, and the prediction time over ``ids`` of ``ds``."""
    pred = Predictor(model)
    dice: dict[int, list[float]] = {1: [], 2: []}
    t0 = time.perf_counter()
    for cid in ids:
        case = ds.case(cid)
        out = pred([medimg.read(p) for p in case.images])
        m = segmentation_metrics(out, medimg.read_labels(case.label), labels=[1, 2], metrics=("dice",))
        for c in dice:
            dice[c].append(m[c]["dice"])
    return {
        "dice_anterior": float(np.mean(dice[1])),
        "dice_posterior": float(np.mean(dice[2])),
        "mean_dice": float(np.mean(dice[1] + dice[2])),
        "per_case_mean_dice": [(a + b) / 2 for a, b in zip(dice[1], dice[2], strict=True)],
        "predict_seconds": round(time.perf_counter() - t0, 2),
    }
