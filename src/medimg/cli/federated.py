"""``medimg federated``: federated training on Flower (engine: :mod:`medimg.federated`).

* ``medimg federated SITE_DIR SITE_DIR ... -o MODEL`` (or ``federated train ...``): all sites on this machine, in
  Flower's simulation runtime;
* ``medimg federated server --plan PLAN -o MODEL --sites N`` and ``medimg federated client SITE_DIR --server
  HOST:PORT``: the same training with real sites over gRPC.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from medimg.cli._common import _run, app, console, default_command
from medimg.errors import MedimgError

fed_app = typer.Typer(
    help="Federated training: one segmentation model from several sites' data, which never leaves the site "
    "(Flower FedAvg/FedProx, optional differential privacy with Opacus). `medimg federated SITE_DIR ... -o MODEL` "
    "runs all sites here; `server` and `client` run real sites.",
    no_args_is_help=True,
    cls=default_command("train", options_too=False),  # `federated SITE ...` = `federated train SITE ...`
)

DpEpsilon = Annotated[
    float | None,
    typer.Option("--dp-epsilon", help="Differential privacy: each site's epsilon for the whole run (e.g. 8)."),
]
DpDelta = Annotated[float, typer.Option("--dp-delta", help="Differential privacy: delta (below 1 / cases per site).")]


@fed_app.command("train")
def train_cmd(
    sites: Annotated[
        list[Path], typer.Argument(metavar="SITE_DIR", help="Site dataset folders (imagesTr/ + labelsTr/ each).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to create.")],
    time_budget: Annotated[
        str, typer.Option("--time-budget", help="Wall-clock budget of the rounds, e.g. 10m.")
    ] = "10m",
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 10,
    strategy: Annotated[str, typer.Option("--strategy", help="fedavg | fedprox.")] = "fedavg",
    mu: Annotated[float, typer.Option("--proximal-mu", help="FedProx: weight of the proximal term.")] = 0.01,
    dp_epsilon: DpEpsilon = None,
    dp_delta: DpDelta = 1e-3,
    test: Annotated[
        Path | None, typer.Option("--test", help="Held-out dataset for the global validation (else the sites' own).")
    ] = None,
    local_steps: Annotated[
        int | None, typer.Option("--local-steps", help="Local steps per round (default: from the budget).")
    ] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of each site kept to validate.")] = 0.1,
    parallel: Annotated[
        int | None, typer.Option("--parallel", help="Sites training at once, one thread each (default: CPU count).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Train across SITE_DIRs on this machine (Flower simulation); writes a complete model folder."""
    from medimg.federated import train_federated
    from medimg.seg import parse_duration

    def on_round(e: dict[str, Any]) -> None:
        steps = sum(int(v.get("steps", 0)) for v in e.get("fit", {}).values())
        console.print(
            f"round {e['round']:3d}  {e['elapsed_s'] / 60:5.1f} min  {steps} local steps  "
            f"val pseudo-Dice {e['val_pseudo_dice']:.3f}  "
            + "  ".join(f"{s} {v['pseudo_dice']:.3f}" for s, v in e.get("evaluate", {}).items()),
            markup=False,
            highlight=False,
        )

    def body() -> None:
        info = train_federated(
            sites,
            out,
            time_budget_s=parse_duration(time_budget),
            rounds=rounds,
            strategy=strategy,
            proximal_mu=mu,
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
            local_steps=local_steps,
            val_fraction=val_fraction,
            test_dir=test,
            parallel=parallel,
            seed=seed,
            on_round=on_round,
            on_status=lambda s: console.print(s, markup=False, highlight=False),
        )
        val = json.loads((out / "validation.json").read_text())
        console.print(
            f"[green]model ready[/] in {out}: {val['data']} Dice "
            + ", ".join(f"{info['labels'][k]} {v:.4f}" for k, v in info["validation_dice"].items())
            + f" (mean {info['validation_mean_dice']:.4f}); {info['training_seconds'] / 60:.1f} min"
        )
        for s, v in val["sites"].items():
            console.print(f"  site {s}: mean Dice {v['mean_dice']:.4f} on {v['n_cases']} case(s)", markup=False)
        for s, p in info.get("differential_privacy", {}).items():
            console.print(f"  site {s}: epsilon {p['epsilon']:.2f} at delta {p['delta']:g}", markup=False)

    _run(body)


@fed_app.command("server")
def server_cmd(
    plan: Annotated[Path, typer.Option("--plan", help="The plan all sites train (`medimg plan DATASET` at one site).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to create.")],
    sites: Annotated[int, typer.Option("--sites", help="Sites to wait for in every round.")] = 2,
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 10,
    local_steps: Annotated[int, typer.Option("--local-steps", help="Local steps per round at each site.")] = 50,
    strategy: Annotated[str, typer.Option("--strategy", help="fedavg | fedprox.")] = "fedavg",
    mu: Annotated[float, typer.Option("--proximal-mu", help="FedProx: weight of the proximal term.")] = 0.01,
    address: Annotated[str, typer.Option("--address", help="Where to listen (host:port).")] = "0.0.0.0:8080",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initial weights.")] = 0,
) -> None:
    """Run the Flower server: waits for --sites clients, runs --rounds, writes the model folder (plan.json, model.pt,
    model.json, federated.json)."""
    from medimg.federated.deploy import run_server

    def body() -> None:
        t0 = time.perf_counter()
        info = run_server(
            plan,
            out,
            n_sites=sites,
            rounds=rounds,
            local_steps=local_steps,
            strategy=strategy,
            proximal_mu=mu,
            address=address,
            seed=seed,
            on_status=lambda s: console.print(s, markup=False, highlight=False),
        )
        console.print(
            f"[green]model ready[/] in {out}: {info['federated']['rounds']} rounds with {sites} sites, "
            f"{(time.perf_counter() - t0) / 60:.1f} min; last validation pseudo-Dice "
            f"{info['validation_pseudo_dice']:.4f}"
        )

    _run(body)


@fed_app.command("client")
def client_cmd(
    site: Annotated[Path, typer.Argument(help="This site's dataset folder (imagesTr/ + labelsTr/).")],
    server: Annotated[str, typer.Option("--server", help="The server's host:port.")],
    work: Annotated[
        Path | None, typer.Option("--work", help="Work folder (cache, split, privacy ledger); default SITE/.medimg_fl.")
    ] = None,
    dp_epsilon: DpEpsilon = None,
    dp_delta: DpDelta = 1e-3,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of the site kept to validate.")] = 0.1,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the server to come up.")] = 60.0,
) -> None:
    """Run this site as a Flower client until the server ends the federation (the data stays here)."""
    from medimg.federated import flower
    from medimg.federated.dp import check_budget

    def body() -> None:
        if not site.is_dir():
            raise MedimgError(f"Site folder {str(site)!r} does not exist.")
        if dp_epsilon is not None:
            check_budget(dp_epsilon, dp_delta)
        client = flower.make_client(
            site,
            work or site / ".medimg_fl",
            val_fraction=val_fraction,
            dp=(dp_epsilon, dp_delta) if dp_epsilon is not None else None,
        )
        console.print(f"site {site.name}: connecting to {server}", markup=False, highlight=False)
        flower.connect(client, server, wait)
        console.print(f"[green]site {site.name}: federation finished[/]")

    _run(body)


app.add_typer(fed_app, name="federated")
