"""Flower adapter: a medimg :class:`~medimg.federated.site.Site` as a Flower ``NumPyClient``, the server strategy
(FedAvg or FedProx from Flower, recording each round), and the three ways to run them:

* :func:`simulate` -- all sites on this machine in Flower's simulation runtime (Ray; one CPU per site at a time);
* :func:`serve` -- a Flower server (gRPC) that real sites connect to;
* :func:`connect` -- one real site: a Flower client that trains on its own data folder.

The same ``MedimgClient`` runs in all three. The server sends the plan (JSON) and the round's settings in every
round's configuration; the data and the preprocessed cache never leave a site.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError

Weights = list[np.ndarray]

_SITES: dict[tuple[str, str, str], Any] = {}


def _site(data_dir: str, work_dir: str, plan_json: str, threads: int | None, val_fraction: float) -> Any:
    """The Site for this data folder in this process (built once: preprocessing happens on first use)."""
    from medimg.federated.site import Site

    key = (data_dir, work_dir, plan_json)
    if key not in _SITES:
        _SITES[key] = Site(data_dir, work_dir, json.loads(plan_json), threads=threads, val_fraction=val_fraction)
    return _SITES[key]


def _quiet_flower() -> None:
    warnings.filterwarnings("ignore", module="flwr")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("flwr", "flower"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_client(
    data_dir: str | Path,
    work_dir: str | Path,
    *,
    threads: int | None = None,
    val_fraction: float = 0.1,
    dp: tuple[float, float] | None = None,
) -> Any:
    """A Flower ``NumPyClient`` training on ``data_dir`` (work files in ``work_dir``).

    ``dp=(epsilon, delta)`` is the site's own privacy target: a site enforces it whatever the server asks."""
    from flwr.client import NumPyClient

    data, work = str(Path(data_dir).absolute()), str(Path(work_dir).absolute())
    name = Path(data_dir).name

    class MedimgClient(NumPyClient):
        def _get(self, config: dict[str, Any]) -> Any:
            if "plan" not in config:
                raise MedimgError("The server sent no plan; start the server with `medimg federated server`.")
            return _site(data, work, str(config["plan"]), threads, val_fraction)

        def get_parameters(self, config: dict[str, Any]) -> Weights:
            weights: Weights = self._get(config).get_weights()
            return weights

        def fit(self, parameters: Weights, config: dict[str, Any]) -> tuple[Weights, int, dict[str, Any]]:
            cfg = dict(config)
            if dp is not None:
                cfg["dp_epsilon"], cfg["dp_delta"] = dp
            w, n, metrics = self._get(config).fit(parameters, cfg)
            return w, n, {"site": name, **{k: float(v) for k, v in metrics.items()}}

        def evaluate(self, parameters: Weights, config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
            loss, n, metrics = self._get(config).evaluate(parameters)
            return float(loss), n, {"site": name, **{k: float(v) for k, v in metrics.items()}}

    return MedimgClient()


def make_strategy(
    initial: Weights,
    *,
    n_sites: int,
    strategy: str,
    fit_config: Callable[[int], dict[str, Any]],
    eval_config: Callable[[int], dict[str, Any]],
    proximal_mu: float = 0.01,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Flower's FedAvg (or FedProx with ``proximal_mu``) waiting for all ``n_sites`` every round, recording the
    aggregated weights (``.weights``) and each round's per-site metrics (``.history``)."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg, FedProx

    if strategy not in ("fedavg", "fedprox"):
        raise MedimgError(f"Unknown strategy {strategy!r}; use fedavg or fedprox.")
    base = FedProx if strategy == "fedprox" else FedAvg
    kwargs: dict[str, Any] = {"proximal_mu": proximal_mu} if strategy == "fedprox" else {}

    class Recording(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(
                fraction_fit=1.0,
                fraction_evaluate=1.0,
                min_fit_clients=n_sites,
                min_evaluate_clients=n_sites,
                min_available_clients=n_sites,
                on_fit_config_fn=fit_config,
                on_evaluate_config_fn=eval_config,
                initial_parameters=ndarrays_to_parameters(initial),
                accept_failures=False,
                **kwargs,
            )
            self.weights: Weights = initial
            self.history: list[dict[str, Any]] = []
            self._t0 = time.perf_counter()

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if failures:
                raise MedimgError(f"Round {server_round}: {len(failures)} site(s) failed: {failures[0]!r}")
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is not None:
                self.weights = parameters_to_ndarrays(params)
            self.history.append(
                {
                    "round": server_round,
                    "elapsed_s": round(time.perf_counter() - self._t0, 2),
                    "fit": {str(r.metrics.get("site")): {**r.metrics, "n": r.num_examples} for _, r in results},
                }
            )
            return params, metrics

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            loss, metrics = super().aggregate_evaluate(server_round, results, failures)
            entry = next((h for h in self.history if h["round"] == server_round), None)
            if entry is not None:
                entry["evaluate"] = {str(r.metrics.get("site")): {**r.metrics, "n": r.num_examples} for _, r in results}
                n = sum(r.num_examples for _, r in results)
                entry["val_pseudo_dice"] = (
                    sum(r.metrics["pseudo_dice"] * r.num_examples for _, r in results) / n if n else float("nan")
                )
                if on_round:
                    on_round(entry)
            return loss, metrics

    return Recording()


def simulate(
    site_dirs: Sequence[Path],
    work_dir: Path,
    plan: dict[str, Any],
    strategy: Any,
    rounds: int,
    *,
    parallel: int,
    val_fraction: float,
    dp: tuple[float, float] | None,
) -> None:
    """Run the federation in Flower's simulation runtime (Ray), ``parallel`` sites at a time, one thread each."""
    from flwr.client import ClientApp
    from flwr.common import Context
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    _quiet_flower()
    dirs = [str(Path(d).absolute()) for d in site_dirs]
    works = [str((work_dir / f"site_{i}_{Path(d).name}").absolute()) for i, d in enumerate(site_dirs)]

    def client_fn(context: Context) -> Any:
        i = int(context.node_config["partition-id"])
        return make_client(dirs[i], works[i], threads=1, val_fraction=val_fraction, dp=dp).to_client()

    def server_fn(context: Context) -> Any:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": parallel, "include_dashboard": False, "log_to_driver": False},
    }
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=len(dirs),
        backend_config=backend,  # type: ignore[arg-type]
    )
    if len(strategy.history) < rounds:
        raise MedimgError(
            f"The federation stopped after {len(strategy.history)} of {rounds} rounds (a site failed; run with "
            "--debug to see Flower's log)."
        )


def serve(strategy: Any, rounds: int, address: str) -> None:
    """A Flower server on ``address`` (gRPC, insecure: use it inside a VPN or an SSH tunnel) running ``rounds``."""
    from flwr.server import ServerConfig, start_server

    _quiet_flower()
    start_server(server_address=address, config=ServerConfig(num_rounds=rounds), strategy=strategy)


def wait_for_server(address: str, wait_s: float) -> None:
    """Block until something listens on ``address`` (host:port), for at most ``wait_s`` seconds."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise MedimgError(f"--server must be host:port (e.g. 10.0.0.5:8080), not {address!r}.")
    end = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError:
            if time.monotonic() >= end:
                raise MedimgError(
                    f"No Flower server answers at {address} (waited {wait_s:.0f} s). Start `medimg federated server` "
                    "there first, check --server, or wait longer with --wait."
                ) from None
            time.sleep(1.0)


def connect(client: Any, address: str, wait_s: float = 60.0) -> None:
    """Run one site as a Flower client of the server at ``address`` until the server ends the federation, waiting
    up to ``wait_s`` seconds for the server to come up."""
    import grpc
    from flwr.client import start_client

    _quiet_flower()
    wait_for_server(address, wait_s)
    try:
        start_client(server_address=address, client=client.to_client(), insecure=True)
    except grpc.RpcError as e:
        raise MedimgError(f"Lost the Flower server at {address}: {e.code().name}. Rerun the client to rejoin.") from e
