"""The server side of a real (multi-machine) federation: ``medimg federated server``.

The server never sees data. It reads the plan the sites agreed on (``medimg plan DATASET`` at one site, or the
``plan.json`` of an earlier model), sends it with every round, waits for ``n_sites`` clients
(``medimg federated client SITE --server HOST:PORT``) and aggregates their weights with Flower's FedAvg or FedProx.
At the end it writes a model folder that ``medimg predict -m`` uses: ``plan.json``, ``model.pt``, ``model.json``,
``federated.json`` (per-round, per-site metrics), ``training_log.csv``/``training_curve.svg`` and ``rounds.csv``.
Validation is each site's pseudo-Dice on its own validation cases, reported by the sites every round.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medimg.errors import MedimgError
from medimg.seg.plan import save_json


def run_server(
    plan_path: str | Path,
    out_dir: str | Path,
    *,
    n_sites: int,
    rounds: int,
    local_steps: int,
    strategy: str = "fedavg",
    proximal_mu: float = 0.01,
    address: str = "0.0.0.0:8080",
    seed: int = 0,
    on_status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Serve ``rounds`` rounds to ``n_sites`` sites and write the model folder; returns model.json."""
    import torch

    import medimg
    from medimg.federated import flower
    from medimg.federated.train import write_weights_and_log
    from medimg.seg.train import build_network

    say = on_status or (lambda s: None)
    plan_p, out = Path(plan_path), Path(out_dir)
    if not plan_p.is_file():
        raise MedimgError(f"Plan {str(plan_p)!r} does not exist; make one with `medimg plan DATASET` at a site.")
    try:
        plan = json.loads(plan_p.read_text())
    except json.JSONDecodeError as e:
        raise MedimgError(f"{plan_p} is not valid JSON: {e}") from e
    if not isinstance(plan, dict) or "network" not in plan or "labels" not in plan:
        raise MedimgError(f"{plan_p} is not a medimg plan (no network/labels); use `medimg plan DATASET`.")
    if n_sites < 1 or rounds < 1 or local_steps < 1:
        raise MedimgError("--sites, --rounds and --local-steps must be at least 1.")
    if out.exists() and any(out.iterdir()):
        raise MedimgError(f"{out} exists and is not empty; give a new folder with -o.")
    plan = {**plan, "training": {**plan["training"], "seed": seed}}
    plan_json = json.dumps(plan)
    torch.manual_seed(seed)
    net = build_network(plan)
    initial = [v.detach().float().numpy() for v in net.state_dict().values()]
    strat = flower.make_strategy(
        initial,
        n_sites=n_sites,
        strategy=strategy,
        fit_config=lambda r: {"round": r, "rounds": rounds, "local_steps": local_steps, "plan": plan_json},
        eval_config=lambda r: {"plan": plan_json},
        proximal_mu=proximal_mu,
        on_round=lambda e: say(f"round {e['round']}: validation pseudo-Dice {e['val_pseudo_dice']:.4f}"),
    )
    say(f"waiting for {n_sites} site(s) on {address}")
    t0 = time.perf_counter()
    flower.serve(strat, rounds, address)
    if len(strat.history) < rounds:
        raise MedimgError(f"The federation ended after {len(strat.history)} of {rounds} rounds; nothing was written.")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_weights_and_log(out, plan, strat.weights, strat.history)
        save_json(plan, out / "plan.json")
        import flwr

        save_json(
            {
                "framework": f"flower {flwr.__version__} (gRPC server)",
                "strategy": strategy,
                "rounds": rounds,
                "local_steps": local_steps,
                "sites": n_sites,
                "rounds_log": strat.history,
            },
            out / "federated.json",
        )
        last = strat.history[-1]
        info = {
            "name": out.name,
            "task": "segmentation",
            "labels": plan["labels"],
            "channels": plan["channels"],
            "dims": plan["dims"],
            "medimg_version": medimg.__version__,
            "dataset": "+".join(sorted(last.get("fit", {}))),
            "federated": {"strategy": strategy, "sites": n_sites, "rounds": rounds, "local_steps": local_steps},
            "training_seconds": round(time.perf_counter() - t0, 1),
            "seed": seed,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (server)",
            "validation_pseudo_dice": float(last.get("val_pseudo_dice", float("nan"))),
        }
        save_json(info, out / "model.json")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return info
