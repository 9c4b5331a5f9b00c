"""``medimg federated``: train one segmentation model across sites whose data stays where it is (Flower FedAvg /
FedProx, optional differential privacy with Opacus), within a wall-clock budget.

Steps: every site fingerprints its own cases; the fingerprints (spacings, shapes, pooled intensity statistics --
no images) are merged into one plan (:func:`merge_fingerprints`, :func:`medimg.seg.plan.make_plan`); every site
preprocesses its cases; a few timed steps fix the local steps per round from the budget; then Flower runs the
rounds (:mod:`medimg.federated.flower`). The result is an ordinary medimg model folder (``medimg predict -m``
uses it) plus ``federated.json`` (rounds, per-site metrics) and, with privacy, ``privacy.json`` (each site's
epsilon, delta, noise multiplier, sampling rate and steps, from Opacus' RDP accountant).

Validation: each site's validation cases (``val_fraction`` of its cases, split by the site), predicted whole with
medimg's Predictor (Dice per class); the "global" figure is the held-out ``test`` dataset when given, else all the
sites' validation cases together.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.io._atomic import atomic_path
from medimg.seg.plan import fingerprint, make_plan, save_json


def merge_fingerprints(fps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One dataset fingerprint from the sites' fingerprints (what a server can know without seeing images).

    Spacings and shapes are pooled per case; foreground intensity mean/std are pooled exactly (moments weighted by
    each site's foreground voxel count: exact when no case has more foreground voxels than the fingerprint samples),
    percentiles are the weighted mean of the sites' percentiles (an approximation), min/max the extremes. The sites must
    agree on channels and label values."""
    if not fps:
        raise MedimgError("No site to merge.")
    first = fps[0]
    for i, fp in enumerate(fps[1:], 1):
        if list(fp["channels"]) != list(first["channels"]):
            raise MedimgError(
                f"Site {i + 1} has channels {fp['channels']}, site 1 {first['channels']}; they must agree."
            )
        if set(fp["labels"]) != set(first["labels"]):
            raise MedimgError(
                f"Site {i + 1} has label values {sorted(fp['labels'])}, site 1 {sorted(first['labels'])}; all sites "
                "must declare the same labels (dataset.json)."
            )
    n = np.array([fp["n_cases"] for fp in fps], dtype=np.float64)
    # intensity statistics are pooled by foreground voxels (what the per-case samples of a fingerprint hold, up to
    # its per-case sample cap), falling back to case counts for sites without foreground
    fg = np.array([sum(int(v) for k, v in fp["class_voxels"].items() if k != "0") for fp in fps], dtype=np.float64)
    w = fg / fg.sum() if fg.all() else n / n.sum()
    spacings = [s for fp in fps for s in fp["spacings"]]
    shapes = [s for fp in fps for s in fp["shapes"]]
    stats = []
    for c in range(len(first["foreground_intensity"])):
        per = [fp["foreground_intensity"][c] for fp in fps]
        mean = float(sum(wi * p["mean"] for wi, p in zip(w, per, strict=True)))
        var = float(sum(wi * (p["std"] ** 2 + (p["mean"] - mean) ** 2) for wi, p in zip(w, per, strict=True)))
        stats.append(
            {
                "mean": mean,
                "std": math.sqrt(var),
                "p00_5": float(sum(wi * p["p00_5"] for wi, p in zip(w, per, strict=True))),
                "p99_5": float(sum(wi * p["p99_5"] for wi, p in zip(w, per, strict=True))),
                "min": float(min(p["min"] for p in per)),
                "max": float(max(p["max"] for p in per)),
            }
        )
    voxels: dict[str, int] = {}
    for fp in fps:
        for k, v in fp["class_voxels"].items():
            voxels[k] = voxels.get(k, 0) + int(v)
    return {
        "n_cases": int(n.sum()),
        "spacings": spacings,
        "shapes": shapes,
        "spacing_known": all(bool(fp["spacing_known"]) for fp in fps),
        "median_spacing": [float(x) for x in np.median(np.asarray(spacings), axis=0)],
        "median_shape": [float(x) for x in np.median(np.asarray(shapes), axis=0)],
        "foreground_intensity": stats,
        "class_voxels": voxels,
        "channels": first["channels"],
        "labels": first["labels"],
        **({"ignore_label": first["ignore_label"]} if first.get("ignore_label") is not None else {}),
        "n_sites": len(fps),
    }


def _dice_on(model_dir: Path, ds: Any, ids: Sequence[str]) -> dict[str, Any]:
    """Mean Dice per class of the model over ``ids`` of ``ds`` (whole volumes, medimg's Predictor)."""
    import medimg
    from medimg.metrics import segmentation_metrics
    from medimg.seg.predict import Predictor

    pred = Predictor(model_dir)
    classes = sorted(pred.names)
    per: dict[int, list[float]] = {c: [] for c in classes}
    for cid in ids:
        case = ds.case(cid)
        out = pred([medimg.read(p) for p in case.images])
        m = segmentation_metrics(out, medimg.read_labels(case.label), labels=classes, metrics=("dice",))
        for c in classes:
            per[c].append(m[c]["dice"])
    dice = {str(c): float(np.nanmean(v)) for c, v in per.items()}
    return {"n_cases": len(ids), "dice": dice, "mean_dice": float(np.nanmean(list(dice.values())))}


def _check_sites(site_dirs: Sequence[Path]) -> list[Any]:
    from medimg.seg import load_dataset

    if len(site_dirs) < 2:
        raise MedimgError("A federation needs at least 2 site folders (each an imagesTr/labelsTr dataset).")
    names = [Path(d).name for d in site_dirs]
    if len(set(names)) != len(names):
        raise MedimgError(f"Site folder names must differ (they name the sites in the results): {names}.")
    out = []
    for d in site_dirs:
        if not Path(d).is_dir():
            raise MedimgError(f"Site folder {str(d)!r} does not exist.")
        out.append(load_dataset(d))
    return out


def train_federated(
    site_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    time_budget_s: float,
    rounds: int = 10,
    strategy: str = "fedavg",
    proximal_mu: float = 0.01,
    dp_epsilon: float | None = None,
    dp_delta: float = 1e-3,
    local_steps: int | None = None,
    val_fraction: float = 0.1,
    test_dir: str | Path | None = None,
    parallel: int | None = None,
    seed: int = 0,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a segmentation model across ``site_dirs`` with Flower's simulation runtime; returns model.json.

    ``time_budget_s`` covers the rounds (not fingerprinting and preprocessing, as for ``medimg train``); each round
    has an equal share and a site stops its local steps at the round's deadline. ``parallel`` sites train at once
    (default: one per CPU core), one thread each (more sites than cores share them; the step count allows for it);
    local steps use bfloat16 autocast when the plan says ``auto`` and it times faster (never with DP).
    ``dp_epsilon`` turns on DP-SGD at every site with that (epsilon, ``dp_delta``) target over the whole run."""
    from medimg.domain import ImageDomain
    from medimg.federated import flower
    from medimg.federated.site import Site, site_privacy
    from medimg.seg import load_dataset
    from medimg.seg.train import build_network

    say = on_status or (lambda s: None)
    dirs = [Path(d) for d in site_dirs]
    out = Path(out_dir)
    if rounds < 1:
        raise MedimgError(f"--rounds must be at least 1, not {rounds}.")
    if time_budget_s <= 0:
        raise MedimgError("--time-budget must be positive, e.g. 10m.")
    if strategy not in ("fedavg", "fedprox"):
        raise MedimgError(f"Unknown strategy {strategy!r}; use fedavg or fedprox.")
    if dp_epsilon is not None:
        from medimg.federated.dp import check_budget

        check_budget(dp_epsilon, dp_delta)
    if out.exists() and any(out.iterdir()):
        raise MedimgError(f"{out} exists and is not empty; give a new folder with -o (a federation is not resumed).")
    datasets = _check_sites(dirs)
    test_ds = load_dataset(test_dir) if test_dir is not None else None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        say(f"fingerprinting {len(dirs)} sites")
        fps = [fingerprint(ds) for ds in datasets]
        for d, fp in zip(dirs, fps, strict=True):
            if fp["n_cases"] < 2:
                raise MedimgError(f"Site {d} has {fp['n_cases']} labelled case(s); a site needs at least 2.")
        fp = merge_fingerprints(fps)
        plan = make_plan(fp)
        plan["training"]["seed"] = seed
        save_json(fp, out / "fingerprint.json")
        save_json(plan, out / "plan.json")
        plan_json = json.dumps(plan)
        work = out / "sites"
        works = [work / f"site_{i}_{d.name}" for i, d in enumerate(dirs)]
        say("preprocessing at each site")
        sites = [Site(d, w, plan, val_fraction=val_fraction, threads=1) for d, w in zip(dirs, works, strict=True)]
        cpus = os.cpu_count() or 1
        slots = max(1, min(len(dirs), parallel or cpus))
        waves = math.ceil(len(dirs) / slots)
        share = max(1.0, slots / cpus)  # sites running at once on fewer cores each get 1/share of one
        import torch

        torch.manual_seed(seed)
        initial = [v.detach().float().numpy() for v in build_network(plan).state_dict().values()]
        dp = (float(dp_epsilon), float(dp_delta)) if dp_epsilon is not None else None
        precision = "fp32"
        if local_steps is None or (not dp and plan["training"].get("precision", "auto") == "auto"):
            say("timing a few local steps")
            timings = {}
            for prec in ("fp32",) if dp else ("fp32", "bf16"):
                cfg: dict[str, Any] = {"round": 1, "local_steps": 2, "rounds": 1, "precision": prec}
                if dp:
                    cfg.update(dp_epsilon=dp[0], dp_delta=dp[1])
                sites[0].fit(initial, cfg)  # warm-up
                timings[prec] = sites[0].fit(initial, cfg)[2]["seconds_per_step"]
                (works[0] / "privacy_ledger.json").unlink(missing_ok=True)  # the probe is not part of the run
            if plan["training"].get("precision", "auto") == "auto":
                precision = "bf16" if timings.get("bf16", math.inf) < 0.8 * timings["fp32"] else "fp32"
            else:
                precision = "bf16" if plan["training"]["precision"] == "bf16" and not dp else "fp32"
            if local_steps is None:
                local_steps = max(1, int(0.9 * time_budget_s / rounds / waves / (timings[precision] * share)))
            say("seconds per local step: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        del sites
        say(f"{rounds} rounds of {local_steps} local steps per site ({precision}), {slots} site(s) at a time")
        t_start = time.time()

        def fit_config(r: int) -> dict[str, Any]:
            return {
                "round": r,
                "rounds": rounds,
                "local_steps": local_steps,
                "deadline": t_start + r * time_budget_s / rounds,
                "precision": precision,
                "plan": plan_json,
            }

        strat = flower.make_strategy(
            initial,
            n_sites=len(dirs),
            strategy=strategy,
            fit_config=fit_config,
            eval_config=lambda r: {"plan": plan_json},
            proximal_mu=proximal_mu,
            on_round=on_round,
        )
        flower.simulate(dirs, work, plan, strat, rounds, parallel=slots, val_fraction=val_fraction, dp=dp)
        seconds = time.time() - t_start
        write_weights_and_log(out, plan, strat.weights, strat.history)
        say("validating")
        splits = [json.loads((w / "split.json").read_text()) for w in works]
        site_val = {d.name: _dice_on(out, ds, sp["val"]) for d, ds, sp in zip(dirs, datasets, splits, strict=True)}
        if test_ds is not None:
            test_ids = [c.case_id for c in test_ds.cases if c.label is not None]
            glob = {**_dice_on(out, test_ds, test_ids), "data": str(test_dir)}
        else:
            n = sum(v["n_cases"] for v in site_val.values())
            classes = list(next(iter(site_val.values()))["dice"])
            dice = {c: float(sum(v["dice"][c] * v["n_cases"] for v in site_val.values()) / n) for c in classes}
            glob = {
                "n_cases": n,
                "dice": dice,
                "mean_dice": float(np.mean(list(dice.values()))),
                "data": "site validation cases",
            }
        save_json({**glob, "sites": site_val}, out / "validation.json")
        privacy = {d.name: site_privacy(w) for d, w in zip(dirs, works, strict=True)} if dp else {}
        if dp:
            save_json(privacy, out / "privacy.json")
        import flwr

        import medimg

        fed = {
            "framework": f"flower {flwr.__version__} (simulation runtime)",
            "strategy": strategy,
            **({"proximal_mu": proximal_mu} if strategy == "fedprox" else {}),
            "sites": [{"name": d.name, "n_train": len(sp["train"])} for d, sp in zip(dirs, splits, strict=True)],
            "rounds": rounds,
            "local_steps": local_steps,
            "parallel_sites": slots,
            "precision": precision,
            "rounds_log": strat.history,
            **({"privacy": privacy} if dp else {}),
        }
        save_json(fed, out / "federated.json")
        info = {
            "name": out.name,
            "task": "segmentation",
            "labels": plan["labels"],
            "channels": plan["channels"],
            "dims": plan["dims"],
            "medimg_version": medimg.__version__,
            "dataset": "+".join(d.name for d in dirs),
            "n_train": sum(s["n_train"] for s in fed["sites"]),
            "n_val": glob["n_cases"],
            "federated": {"strategy": strategy, "sites": len(dirs), "rounds": rounds, "local_steps": local_steps},
            **(
                {
                    "differential_privacy": {
                        k: {"epsilon": v["epsilon"], "delta": v["delta"]} for k, v in privacy.items()
                    }
                }
                if dp
                else {}
            ),
            "time_budget_s": time_budget_s,
            "training_seconds": round(seconds, 1),
            "seed": seed,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "validation_mean_dice": glob["mean_dice"],
            "validation_dice": glob["dice"],
        }
        save_json(info, out / "model.json")
        ImageDomain.from_fingerprint(fp, "images of the federation's sites", None).save(out / "domain.json")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for p in out.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        raise
    return info


def write_weights_and_log(
    out: Path, plan: dict[str, Any], weights: list[np.ndarray], history: list[dict[str, Any]]
) -> None:
    """``model.pt`` from the aggregated weights (float32, keyed as the plan's network), the per-round
    ``training_log.csv`` / ``training_curve.svg`` and the per-site ``rounds.csv``."""
    import torch

    from medimg.seg.train import build_network, write_training_log

    keys = list(build_network(plan).state_dict())
    state = {k: torch.from_numpy(np.asarray(w)).float() for k, w in zip(keys, weights, strict=True)}
    with atomic_path(out / "model.pt") as tmp:
        torch.save(state, tmp)
    write_training_log(
        _round_log(history), out, {"val pseudo-Dice (sites)": "val_pseudo_dice", "train loss": "train_loss"}
    )
    write_rounds_csv(history, out / "rounds.csv")


def _round_log(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per round for training_log.csv: elapsed time, mean local loss, steps, validation pseudo-Dice."""
    rows = []
    for h in history:
        fit = h.get("fit", {})
        losses = [v["train_loss"] for v in fit.values() if not math.isnan(v.get("train_loss", math.nan))]
        rows.append(
            {
                "round": h["round"],
                "elapsed_s": h["elapsed_s"],
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "steps": int(sum(v.get("steps", 0) for v in fit.values())),
                "val_pseudo_dice": float(h.get("val_pseudo_dice", float("nan"))),
            }
        )
    return rows


def write_rounds_csv(history: list[dict[str, Any]], path: Path) -> None:
    """Per-site, per-round metrics as CSV (round, site, steps, train loss, pseudo-Dice)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "site", "steps", "train_loss", "val_pseudo_dice"])
        for h in history:
            for site, m in h.get("fit", {}).items():
                ev = h.get("evaluate", {}).get(site, {})
                w.writerow([h["round"], site, int(m.get("steps", 0)), m.get("train_loss"), ev.get("pseudo_dice")])
