"""``medimg models list | info | export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medimg.cli._common import (
    _run,
    console,
)
from medimg.cli.seg import models_app
from medimg.errors import MedimgError


@models_app.command("list")
def models_list(
    extra: Annotated[
        list[Path] | None, typer.Option("--dir", help="Also list model folders inside this folder.")
    ] = None,
) -> None:
    """List bundled models (and model folders in --dir)."""
    from medimg.seg import list_models

    t = Table()
    for c in ("name", "task", "classes / labels", "validation", "trained", "path"):
        t.add_column(c, no_wrap=c in ("name", "validation"))
    for m in list_models(extra or []):
        if m.get("task") == "classification":
            labels = ", ".join(m["classes"])
            val = f"AUROC {m['validation']['auroc']:.4f}"
            task = f"classification ({m['dims']}D, {'x'.join(str(v) for v in m['input_size'])})"
        else:
            labels = ", ".join(v for k, v in m["labels"].items() if k != "0")
            val = f"Dice {m.get('validation_mean_dice', float('nan')):.4f}"
            task = m.get("task", "")
        t.add_row(
            m["name"],
            task,
            labels,
            val,
            f"{m.get('training_seconds', 0) / 60:.1f} min, {m.get('n_train', '?')} cases",
            m["path"],
        )
    from medimg.interactive.promptable import bundled_models

    for m in bundled_models():
        tr = m.get("training", {})
        t.add_row(
            m["name"],
            "interactive (clicks, boxes, scribbles; 2D, 3D by propagation)",
            "any prompted structure",
            "see model card",
            f"{tr.get('seconds', 0) / 60:.1f} min, {sum(tr.get('families', {}).values())} 2D tasks",
            m["path"],
        )
    console.print(t)


@models_app.command("info")
def models_info(name: Annotated[str, typer.Argument(help="Bundled model name or model folder.")]) -> None:
    """Show a model's model.json and plan summary."""
    from medimg.seg import resolve_model

    def body() -> None:
        try:
            d = resolve_model(name)
        except MedimgError:
            from medimg.classify import resolve_classifier

            info = json.loads((resolve_classifier(name) / "model.json").read_text())
            sys.stdout.write(json.dumps(info, indent=2) + "\n")
            return
        info = json.loads((d / "model.json").read_text())
        plan = json.loads((d / "plan.json").read_text())
        info["plan"] = {
            k: plan[k] for k in ("target_spacing", "patch_size", "batch_size", "normalization", "postprocessing")
        }
        sys.stdout.write(json.dumps(info, indent=2) + "\n")

    _run(body)


@models_app.command("export")
def models_export(
    name: Annotated[str, typer.Argument(help="Bundled model name or model folder.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="TorchScript file to write (.pt / .ts).")],
) -> None:
    """Export the network to TorchScript (traced); `medimg.seg.predict.Predictor(model, torchscript=FILE)` uses it."""
    from medimg.seg import resolve_model
    from medimg.seg.predict import export_torchscript

    def body() -> None:
        export_torchscript(resolve_model(name), out)
        console.print(f"wrote {out}")

    _run(body)
