"""Scaffolding shared by the segmentation benchmark scripts that train, evaluate and bundle a model.

Not a benchmark itself: ``machine()`` (the line every result records), ``train_printing`` (``train_model`` with a
one-line-per-epoch printer) and ``ship_bundle`` (float16 weights, model card, domain description).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> str:
    """The machine line recorded in every result file."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def train_printing(ds: Any, model: Path, budget_s: float, split: dict[str, list[str]], name: str, **kw: Any) -> dict:
    """``medimg.seg.model.train_model`` from scratch (``resume=False``) on ``ds`` (a dataset folder or a loaded
    ``SegDataset``), printing one line per epoch."""
    from medimg.seg.dataset import load_dataset
    from medimg.seg.model import train_model

    return train_model(
        load_dataset(ds) if isinstance(ds, (str, Path)) else ds,
        model,
        time_budget_s=budget_s,
        split=split,
        name=name,
        resume=False,
        on_note=lambda n: print(n, flush=True),
        on_epoch=lambda e: print(
            f"  it {e['iteration']:5d}/{e['total_iterations']}  {e['elapsed_s']:7.1f}s  "
            f"loss {e['train_loss']:.3f}  pseudo-Dice {e['val_pseudo_dice']:.3f}",
            flush=True,
        ),
        **kw,
    )


def ship_bundle(model: Path, bundle: Path, card: str, description: str, modality: str | None) -> None:
    """Bundle a trained model folder into ``bundle`` (float16 weights, the card) and describe its domain."""
    from medimg.seg.model import package_model

    package_model(model, bundle, card)
    domain = json.loads((bundle / "domain.json").read_text())
    domain.update(description=description, modality=modality)
    (bundle / "domain.json").write_text(json.dumps(domain, indent=2) + "\n")
    print(f"bundled into {bundle}")
