"""One site of a federation: local training rounds on the site's own cases, with medimg's segmentation Trainer.

A :class:`Site` owns a dataset folder (imagesTr/labelsTr; the data never leaves it) and a work folder for its
preprocessed cache and privacy ledger. Each round it receives the global weights and the round's settings, trains
``local_steps`` steps (or until the round's deadline), and returns its new weights with the number of training cases
(FedAvg's weight). Everything a round needs -- the plan, the learning-rate schedule position, FedProx' ``mu``, the
privacy target -- comes in the round's configuration, so the same code runs in Flower's simulation and as a real
Flower client (:mod:`medimg.federated.flower`).

Learning rate: the plan's poly schedule over the whole federation (``global step = round * local_steps + step``),
so FedAvg with one site and one round is plain training. The optimiser (the plan's AdamW) starts afresh every
round, as in plain FedAvg.

Differential privacy (``dp_epsilon``): see :mod:`medimg.federated.dp`. The site calibrates its noise to its own
target from the planned total steps, samples cases by Poisson sampling, and keeps a ledger
(``privacy_ledger.json`` in its work folder) of the steps it made, from which the epsilon spent is computed.
"""

from __future__ import annotations

import json
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.io._atomic import atomic_path
from medimg.seg.dataset import SegDataset
from medimg.seg.train import Trainer, dice_ce_loss, make_split, prepare_cache

#: Per-case gradient clipping norm for differential privacy (DP-SGD's C).
DP_MAX_GRAD_NORM = 1.0


class _SiteTrainer(Trainer):
    """The segmentation Trainer with a FedProx term and a federation-wide learning-rate schedule."""

    prox_mu: float = 0.0
    anchor: list[Any] | None = None
    lr_total: int = 1

    def learning_rate(self, iteration: int) -> float:
        total = max(1, self.lr_total)
        return float(self.plan["training"]["lr"] * (1 - min(iteration, total - 1) / total) ** 0.9)

    def loss(self, outputs: Any, target: Any) -> Any:
        base = super().loss(outputs, target)
        if self.prox_mu > 0 and self.anchor is not None:
            prox = sum(((p - a) ** 2).sum() for p, a in zip(self.net.parameters(), self.anchor, strict=True))
            base = base + 0.5 * self.prox_mu * prox
        return base


class Site:
    """A site's local trainer (see the module docstring).

    ``val_fraction`` of the site's labelled cases (at least one) are kept for the site's own validation; the split
    is seeded and stored in the work folder, so it is the same in every round."""

    def __init__(
        self,
        data_dir: str | Path,
        work_dir: str | Path,
        plan: dict[str, Any],
        *,
        val_fraction: float = 0.1,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        import torch

        from medimg.seg import load_dataset

        if threads:
            torch.set_num_threads(threads)
        self.data_dir, self.work = Path(data_dir), Path(work_dir)
        self.ds: SegDataset = load_dataset(self.data_dir)
        ids = [c.case_id for c in self.ds.cases if c.label is not None]
        if len(ids) < 2:
            raise MedimgError(
                f"Site {self.data_dir} has {len(ids)} labelled case(s); a site needs at least 2 (one to train on, "
                "one to validate)."
            )
        self.work.mkdir(parents=True, exist_ok=True)
        split_path = self.work / "split.json"
        if split_path.exists():
            self.split = json.loads(split_path.read_text())
        else:
            self.split = make_split(ids, val_fraction, seed)
            with atomic_path(split_path) as tmp:
                tmp.write_text(json.dumps(self.split, indent=1))
        self.plan = plan
        self.trainer = _SiteTrainer(self.ds, plan, self.work, self.split, time_budget_s=0.0)
        self.trainer.precision = "fp32"
        self.cache = prepare_cache(self.ds, plan, self.work / "preprocessed", self.split["train"] + self.split["val"])
        self._dp: tuple[Any, Any] | None = None

    # ------------------------------------------------------------------ weights
    @property
    def n_train(self) -> int:
        return len(self.split["train"])

    def get_weights(self) -> list[np.ndarray]:
        """The network's state (parameters and buffers) as float32 arrays, in ``state_dict`` order."""
        return [v.detach().cpu().float().numpy() for v in self.trainer.net.state_dict().values()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        import torch

        sd = self.trainer.net.state_dict()
        if len(weights) != len(sd):
            raise MedimgError(
                f"The server sent {len(weights)} weight arrays but this site's network has {len(sd)}: the sites and "
                "the server must use the same plan."
            )
        new = {}
        for (k, v), w in zip(sd.items(), weights, strict=True):
            if tuple(v.shape) != tuple(w.shape):
                raise MedimgError(
                    f"Weight {k}: the server sent shape {tuple(w.shape)}, this network has {tuple(v.shape)}."
                )
            new[k] = torch.from_numpy(np.asarray(w)).to(v.dtype)
        self.trainer.net.load_state_dict(new)

    # ------------------------------------------------------------------ training
    def fit(self, weights: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """One local round: returns (new weights, number of training cases, metrics).

        ``config``: ``round`` (1-based), ``local_steps``, ``rounds`` (total, for the lr schedule), optional
        ``proximal_mu`` (FedProx), ``deadline`` (Unix time to stop at), ``precision`` (``bf16`` autocast or
        ``fp32``; DP steps are always fp32), ``dp_epsilon``/``dp_delta`` (privacy target over the whole
        federation)."""
        tr = self.trainer
        self.set_weights(weights)
        rnd, steps, rounds = int(config["round"]), int(config["local_steps"]), int(config["rounds"])
        deadline = float(config.get("deadline", 0) or 0)
        tr.lr_total = rounds * steps
        tr.iteration = (rnd - 1) * steps
        tr.rng = np.random.default_rng(
            [int(self.plan["training"].get("seed", 0)), rnd, zlib.crc32(self.data_dir.name.encode())]
        )
        tr.prox_mu = float(config.get("proximal_mu", 0.0) or 0.0)
        tr.anchor = [p.detach().clone() for p in tr.net.parameters()] if tr.prox_mu > 0 else None
        eps = float(config.get("dp_epsilon", 0) or 0)
        t0 = time.perf_counter()
        losses: list[float] = []
        if eps > 0:
            done, sigma, q = self._fit_private(steps, rounds, eps, float(config["dp_delta"]), deadline, losses)
            metrics: dict[str, Any] = {"noise_multiplier": sigma, "sample_rate": q}
        else:
            bf16 = config.get("precision") == "bf16"
            tr.precision = "bf16" if bf16 else "fp32"
            tr.opt = tr.build_optimizer()  # fresh optimiser state every round (plain FedAvg)
            done = 0
            for _ in range(steps):
                if deadline and time.time() >= deadline:
                    break
                img, lab = tr.sample_batch(
                    self.cache, self.split["train"], self.plan["batch_size"], self.plan["foreground_oversampling"]
                )
                img, lab = tr.augment(img, lab)
                losses.append(tr._step(img, lab, bf16=bf16))
                tr.iteration += 1
                done += 1
            metrics = {}
        seconds = time.perf_counter() - t0
        metrics.update(
            {
                "steps": done,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "seconds": seconds,
                "seconds_per_step": seconds / max(1, done),
            }
        )
        if eps > 0:
            metrics["epsilon_spent"] = self.privacy()["epsilon"]
        return self.get_weights(), self.n_train, metrics

    def _fit_private(
        self, steps: int, rounds: int, eps: float, delta: float, deadline: float, losses: list[float]
    ) -> tuple[int, float, float]:
        """DP-SGD steps with Poisson sampling of cases (one patch per sampled case); updates the ledger."""
        import torch

        from medimg.federated import dp

        tr = self.trainer
        n = self.n_train
        batch = int(self.plan["batch_size"])
        q = min(1.0, batch / n)
        sigma = dp.noise_multiplier(eps, delta, q, rounds * steps)
        if self._dp is None:
            tr.net.train()  # Opacus validates a network in training mode (evaluate() leaves it in eval mode)
            gsm, opt = dp.make_private(tr.net, tr.build_optimizer(), sigma, DP_MAX_GRAD_NORM, batch)
            self._dp = (gsm, opt)
        gsm, opt = self._dp
        opt.noise_multiplier = sigma
        ledger = self._ledger()
        if ledger and (ledger["noise_multiplier"] != sigma or ledger["sample_rate"] != q):
            raise MedimgError(
                f"The privacy settings changed between rounds at site {self.data_dir} (noise "
                f"{ledger['noise_multiplier']} -> {sigma}); start a new federation with a new output folder."
            )
        left = rounds * steps - int(ledger.get("steps", 0))  # the noise was calibrated for rounds x steps
        if left <= 0:
            raise MedimgError(
                f"Site {self.data_dir} has spent its privacy budget (epsilon {eps} over {rounds * steps} steps); "
                "it trains no further round. Start a new federation to train more."
            )
        ids = self.split["train"]
        done = 0
        for _ in range(min(steps, left)):
            if deadline and time.time() >= deadline:
                break
            chosen = [cid for cid in ids if tr.rng.random() < q]
            for g in opt.param_groups:
                g["lr"] = tr.learning_rate(tr.iteration)
            opt.zero_grad(set_to_none=True)
            if chosen:
                img, lab = self._one_patch_each(chosen)
                img, lab = tr.augment(img, lab)
                gsm.train()
                out = gsm(img)
                loss = torch.stack(
                    [
                        dice_ce_loss(out[i : i + 1], lab[i : i + 1], tr.n_classes, ignore_index=tr.ignore_label)
                        for i in range(len(chosen))
                    ]
                ).mean()
                with warnings.catch_warnings():  # "full backward hook ... no inputs require gradients": expected
                    warnings.simplefilter("ignore", UserWarning)
                    loss.backward()
                losses.append(float(loss.detach()))
            else:  # an empty Poisson batch still costs privacy; the optimiser adds noise only
                for p in gsm.parameters():
                    p.grad_sample = torch.zeros((0, *p.shape))
            opt.step()
            tr.iteration += 1
            done += 1
        self._record(sigma, q, delta, eps, done)
        return done, sigma, q

    def _one_patch_each(self, ids: list[str]) -> tuple[Any, Any]:
        """One patch per case (foreground-centred with the plan's oversampling probability)."""
        tr, p = self.trainer, self.plan["foreground_oversampling"]
        return tr.to_batch(
            [tr.patch_of(self.cache, cid, centred=bool(self.cache.fg[cid]) and tr.rng.random() < p) for cid in ids]
        )

    # ------------------------------------------------------------------ privacy ledger
    def _ledger(self) -> dict[str, Any]:
        return _read_ledger(self.work)

    def _record(self, sigma: float, q: float, delta: float, target: float, steps: int) -> None:
        led = self._ledger() or {
            "noise_multiplier": sigma,
            "sample_rate": q,
            "delta": delta,
            "target_epsilon": target,
            "max_grad_norm": DP_MAX_GRAD_NORM,
            "steps": 0,
            "privacy_unit": "case",
        }
        led["steps"] = int(led["steps"]) + steps
        with atomic_path(self.work / "privacy_ledger.json") as tmp:
            tmp.write_text(json.dumps(led, indent=1))

    def privacy(self) -> dict[str, Any]:
        """The site's privacy ledger with the epsilon spent so far (Opacus RDP accountant); {} without DP."""
        return site_privacy(self.work)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, weights: list[np.ndarray]) -> tuple[float, int, dict[str, Any]]:
        """Pseudo-Dice of ``weights`` on fixed patches of the site's validation cases: (1 - Dice, cases, metrics)."""
        tr = self.trainer
        self.set_weights(weights)
        saved, tr.rng = tr.rng, np.random.default_rng(int(self.plan["training"].get("seed", 0)) + 1)
        n_val = max(1, int(self.plan["training"].get("val_patches", 16)) // self.plan["batch_size"])
        batches = [tr.sample_batch(self.cache, self.split["val"], self.plan["batch_size"], 0.5) for _ in range(n_val)]
        tr.rng = saved
        d = tr.pseudo_dice(batches)
        return 1.0 - d, len(self.split["val"]), {"pseudo_dice": d}


def _read_ledger(work_dir: Path) -> dict[str, Any]:
    p = work_dir / "privacy_ledger.json"
    return json.loads(p.read_text()) if p.exists() else {}


def site_privacy(work_dir: str | Path) -> dict[str, Any]:
    """A site's privacy ledger (in its work folder) with the epsilon spent, recomputed from the steps it made by
    Opacus' RDP accountant; {} when the site trained without DP."""
    from medimg.federated import dp

    led = _read_ledger(Path(work_dir))
    if not led:
        return {}
    eps = dp.epsilon_spent(led["noise_multiplier"], led["sample_rate"], led["steps"], led["delta"])
    return {**led, "epsilon": eps, "accountant": f"opacus {dp.ACCOUNTANT}"}
