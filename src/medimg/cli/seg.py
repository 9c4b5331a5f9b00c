"""``medimg dataset | plan | train | predict | segment``: self-configuring segmentation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medimg.cli._common import (
    _parse_names,
    _progress,
    _run,
    app,
    console,
)
from medimg.errors import MedimgError

dataset_app = typer.Typer(help="Segmentation datasets (MSD / nnU-Net layouts, plain folders).", no_args_is_help=True)
models_app = typer.Typer(help="Trained models (bundled and your own folders).", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(models_app, name="models")


@dataset_app.command("check")
def dataset_check(
    path: Annotated[Path, typer.Argument(help="Dataset folder (imagesTr/ + labelsTr/ [+ dataset.json]).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify every case: label present, geometry of image/label pairs, channels, label values, NaNs."""
    from medimg.seg import check_dataset, load_dataset

    def body() -> None:
        ds = load_dataset(path)
        rows = check_dataset(ds, _progress)
        bad = [r for r in rows if r["problems"]]
        if as_json:
            sys.stdout.write(json.dumps({"cases": len(rows), "with_problems": len(bad), "rows": rows}, indent=2) + "\n")
        else:
            console.print(f"{ds.name}: {len(rows)} cases, channels {ds.channels}, labels {ds.labels or '(from data)'}")
            for r in bad:
                console.print(f"[red]{r['case']}[/]: " + "; ".join(r["problems"]))
            warned = [r for r in rows if r["warnings"]]
            if warned:
                console.print(
                    f"[yellow]warning[/] ({len(warned)} case(s)): "
                    + "; ".join(sorted({w for r in warned for w in r["warnings"]}))
                )
            console.print("[green]no problems found[/]" if not bad else f"[yellow]{len(bad)} case(s) with problems[/]")
        if bad:
            raise typer.Exit(1)

    _run(body)


@app.command("plan")
def plan_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write plan.json.")] = Path("plan.json"),
) -> None:
    """Fingerprint a dataset and write an editable training plan (JSON)."""
    from medimg.seg import fingerprint, load_dataset, make_plan
    from medimg.seg.plan import save_json

    def body() -> None:
        fp = fingerprint(load_dataset(dataset), _progress)
        plan = make_plan(fp)
        save_json(plan, out)
        console.print(
            f"wrote {out}: patch {plan['patch_size']}, spacing {plan['target_spacing']} mm, batch "
            f"{plan['batch_size']}, filters {plan['network']['filters']}"
        )

    _run(body)


@app.command()
def train(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to create (or resume).")],
    time_budget: Annotated[str, typer.Option("--time-budget", help="Wall-clock training budget, e.g. 20m.")] = "20m",
    fold: Annotated[int | None, typer.Option("--fold", help="Cross-validation fold (0-4) instead of a split.")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Validation share of a random split.")] = 0.2,
    split: Annotated[Path | None, typer.Option("--split", help="JSON with 'train' and 'val' case ids.")] = None,
    plan: Annotated[Path | None, typer.Option("--plan", help="Use this (edited) plan.json.")] = None,
    names: Annotated[str | None, typer.Option("--labels", help="Class names, e.g. '1=anterior,2=posterior'.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (split, sampling, augmentation).")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from checkpoint.pt.")] = True,
) -> None:
    """Train a segmentation model (plans itself unless --plan); writes a complete model folder."""
    from medimg.seg import load_dataset, make_split, parse_duration, train_model
    from medimg.seg.train import load_split

    def body() -> None:
        ds = load_dataset(dataset)
        label_names = _parse_names(names)
        if label_names:
            ds.labels = {0: "background", **label_names}
        ids = [c.case_id for c in ds.cases if c.label is not None]
        sp = load_split(split) if split else make_split(ids, val_fraction, seed, fold)
        plan_d = json.loads(plan.read_text()) if plan else None
        if plan_d is not None:
            plan_d["training"]["seed"] = seed

        def on_epoch(e: dict[str, Any]) -> None:
            console.print(
                f"it {e['iteration']:5d}/{e['total_iterations']}  {e['elapsed_s'] / 60:5.1f} min  "
                f"loss {e['train_loss']:.3f}  val pseudo-Dice {e['val_pseudo_dice']:.3f} "
                f"(EMA {e['val_pseudo_dice_ema']:.3f})"
            )

        info = train_model(
            ds,
            out,
            time_budget_s=parse_duration(time_budget),
            split=sp,
            plan=plan_d,
            progress=_progress,
            on_epoch=on_epoch,
            resume=resume,
        )
        console.print(
            f"[green]model ready[/] in {out}: validation Dice "
            + ", ".join(f"{info['labels'][k]} {v:.4f}" for k, v in info["validation_dice"].items())
            + f" (mean {info['validation_mean_dice']:.4f}); {info['iterations']} iterations, "
            f"{info['training_seconds'] / 60:.1f} min, {info['precision']}"
        )

    _run(body)
