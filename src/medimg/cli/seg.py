"""``medimg dataset | plan | train | predict | segment``: self-configuring segmentation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medimg.cli._common import (
    DeviceOpt,
    _floats,
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
            ignore = f", ignore label {ds.ignore_label} (no loss, no metric)" if ds.ignore_label is not None else ""
            console.print(
                f"{ds.name}: {len(rows)} cases, channels {ds.channels}, labels {ds.labels or '(from data)'}{ignore}"
            )
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


@dataset_app.command("export-nnunet")
def dataset_export_nnunet(
    path: Annotated[Path, typer.Argument(help="Dataset folder medimg reads (MSD, nnU-Net, plain folders).")],
    out: Annotated[
        Path, typer.Argument(help="New nnU-Net v2 raw dataset folder, e.g. nnUNet_raw/Dataset501_Hippocampus.")
    ],
) -> None:
    """Write DATASET as an nnU-Net v2 raw dataset (imagesTr/<case>_0000.nii.gz, labelsTr/, dataset.json)."""
    import re

    from medimg.seg import load_dataset
    from medimg.seg.dataset import export_nnunet

    def body() -> None:
        meta = export_nnunet(load_dataset(path), out, progress=_progress)
        console.print(
            f"wrote {out}: {meta['numTraining']} training cases, channels {list(meta['channel_names'].values())}, "
            f"labels {meta['labels']}"
        )
        if "medimg_label_mapping" in meta:
            mapping = meta["medimg_label_mapping"]
            console.print(f"[yellow]label values renumbered[/] (nnU-Net needs 0, 1, 2, ...): {mapping}")
        m = re.fullmatch(r"Dataset(\d{3})_\w+", out.name)
        console.print(
            f"next: nnUNetv2_plan_and_preprocess -d {int(m.group(1))} --verify_dataset_integrity (with {out.parent} "
            "as nnUNet_raw)"
            if m
            else "note: nnU-Net finds raw datasets as nnUNet_raw/DatasetXXX_Name (three digits); rename the folder "
            "to use it with nnUNetv2_plan_and_preprocess -d XXX"
        )

    _run(body)


@dataset_app.command("import")
def dataset_import(
    src: Annotated[
        Path,
        typer.Argument(
            help="Folder with images/ + masks/ (or labels/, annotations/), one folder with --label-suffix, "
            "an .npz file, or a folder of .h5 files."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="New dataset folder (imagesTr/, labelsTr/, dataset.json).")],
    spacing: Annotated[
        str | None, typer.Option("--spacing", help="Voxel spacing in mm for every image, e.g. 0.1,0.1 or 1.5,1.5,8.")
    ] = None,
    spacing_csv: Annotated[
        Path | None, typer.Option("--spacing-csv", help="CSV with each image's spacing (file name + spacing column).")
    ] = None,
    spacing_column: Annotated[
        str | None, typer.Option("--spacing-column", help="The --spacing-csv column holding the spacing (mm).")
    ] = None,
    label_suffix: Annotated[
        str | None,
        typer.Option(
            "--label-suffix",
            help="Masks are named like their image plus this, e.g. _mask or _1stHO; several raters: _1stHO,_2ndHO "
            "with --fuse.",
        ),
    ] = None,
    image_key: Annotated[str | None, typer.Option("--image-key", help="NPZ/HDF5: the image array's name.")] = None,
    label_key: Annotated[str | None, typer.Option("--label-key", help="NPZ/HDF5: the label array's name.")] = None,
    axes: Annotated[
        str, typer.Option("--axes", help="NPZ/HDF5 axis order: zyx (numpy image order, default) or xyz.")
    ] = "zyx",
    labels: Annotated[
        str | None, typer.Option("--labels", help="Label names, e.g. '1=head' or '1=liver,2=kidney'.")
    ] = None,
    fill_holes: Annotated[
        bool, typer.Option("--fill-holes", help="Fill drawn outlines into regions (e.g. HC18's head ellipses).")
    ] = False,
    grey: Annotated[bool, typer.Option("--grey", help="Convert RGB images to one luminance channel.")] = False,
    fuse: Annotated[
        str | None,
        typer.Option(
            "--fuse",
            help="Several raters' masks (--label-suffix a,b): train on their fusion, majority, staple or "
            "multi-staple (each rater's sensitivity/specificity in raters.json).",
        ),
    ] = None,
) -> None:
    """Import an image collection (PNG/JPEG/NIfTI... pairs, NPZ, HDF5) as a dataset `medimg train` reads.

    Masks stored as 0/255 become 0/1; RGB images become three channels (R, G, B) unless --grey. Without --spacing
    or --spacing-csv, files without a spacing (PNG, NPZ) are marked as having an unknown spacing."""
    from medimg.ops import Context, run

    def body() -> None:
        sp = _floats(spacing, "--spacing")
        params = {
            "source": str(src),
            "output": str(out),
            "spacing": list(sp) if sp else None,
            "spacing_csv": str(spacing_csv) if spacing_csv else None,
            "spacing_column": spacing_column,
            "label_suffix": label_suffix,
            "image_key": image_key,
            "label_key": label_key,
            "axes": axes,
            "labels": _parse_names(labels, "--labels"),
            "fill_holes": fill_holes,
            "grey": grey,
            "fuse": fuse,
        }
        meta = run("dataset_import", params, Context(progress=_progress)).model_dump(mode="json")
        console.print(
            f"wrote {out}: {meta['n_cases']} cases, channels {meta['channels']}, labels "
            f"{meta['labels']}, spacing {'known' if meta['spacing_known'] else '[yellow]unknown[/] (give --spacing)'}"
        )
        console.print(f"next: medimg dataset check {out}  then  medimg train {out} -o MODEL")

    _run(body)


@app.command("plan")
def plan_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write plan.json.")] = Path("plan.json"),
    configuration: Annotated[
        str, typer.Option("--configuration", help="3d_fullres (3D patches) or 2d (one slice at a time).")
    ] = "3d_fullres",
) -> None:
    """Fingerprint a dataset and write an editable training plan (JSON)."""
    from medimg.seg import fingerprint, load_dataset, make_plan
    from medimg.seg.plan import save_json

    def body() -> None:
        fp = fingerprint(load_dataset(dataset), _progress)
        plan = make_plan(fp, configuration=configuration)
        save_json(plan, out)
        console.print(
            f"wrote {out}: {plan['configuration']}, patch {plan['patch_size']}, spacing {plan['target_spacing']} mm, "
            f"batch {plan['batch_size']}, filters {plan['network']['filters']}"
            + (f"; ignore label {plan['ignore_label']} (no loss, no metric)" if "ignore_label" in plan else "")
        )

    _run(body)


@app.command()
def train(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to create (or resume).")],
    time_budget: Annotated[str, typer.Option("--time-budget", help="Wall-clock training budget, e.g. 20m.")] = "20m",
    fold: Annotated[
        int | None,
        typer.Option(
            "--fold",
            help="Cross-validation fold: of --split (or DATASET/splits_final.json) when it is an nnU-Net "
            "splits_final.json, else of a seeded 5-fold split (0-4).",
        ),
    ] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Validation share of a random split.")] = 0.2,
    split: Annotated[
        Path | None,
        typer.Option("--split", help="JSON with 'train' and 'val' case ids, or nnU-Net's splits_final.json."),
    ] = None,
    plan: Annotated[Path | None, typer.Option("--plan", help="Use this (edited) plan.json.")] = None,
    names: Annotated[str | None, typer.Option("--labels", help="Class names, e.g. '1=anterior,2=posterior'.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (split, sampling, augmentation).")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from checkpoint.pt.")] = True,
    devices: Annotated[
        int,
        typer.Option(
            "--devices",
            help="Training processes (data-parallel, torch DDP on CPU): each samples its own batch, so the "
            "effective batch is N x the plan's batch size.",
        ),
    ] = 1,
    oversubscribe: Annotated[
        bool, typer.Option("--oversubscribe", help="Allow --devices above the number of CPU cores.")
    ] = False,
    unlabeled: Annotated[
        Path | None,
        typer.Option("--unlabeled", help="Folder of unlabelled images: semi-supervised training in the same budget."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="Semi-supervised method: mean-teacher, self-training or copy-paste (default with --unlabeled: "
            "mean-teacher). self-training / copy-paste also fill a sparse dataset's ignored voxels, with or "
            "without --unlabeled.",
        ),
    ] = None,
    configurations: Annotated[
        str,
        typer.Option(
            "--configurations",
            help="auto, 3d_fullres, 2d, or several (3d_fullres,2d): several share the budget and the better one by "
            "validation Dice is kept. auto adds 2d to 3d_fullres for thick-slice data (slices >= 3x coarser).",
        ),
    ] = "auto",
    device: DeviceOpt = "auto",
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
        split_file = split
        if split_file is None and fold is not None and (dataset / "splits_final.json").is_file():
            split_file = dataset / "splits_final.json"
        if split_file is not None:
            sp = load_split(split_file, fold, ids)
            which = f"fold {fold} of " if fold is not None else ""
            console.print(f"split: {which}{split_file} ({len(sp['train'])} train, {len(sp['val'])} val)")
        else:
            sp = make_split(ids, val_fraction, seed, fold)
        if plan is not None and configurations != "auto":
            raise MedimgError(
                "--plan fixes the configuration (its network and patch); drop --configurations, or drop --plan."
            )
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
            on_note=lambda note: console.print(f"[yellow]{note}[/]"),
            devices=devices,
            oversubscribe=oversubscribe,
            unlabeled=unlabeled,
            method=method,
            configurations=None if plan_d is not None else configurations.split(","),
            device=device,
        )
        for c, r in info.get("configurations", {}).items():
            console.print(
                f"configuration {c}: validation mean Dice {r['validation_mean_dice']:.4f} "
                f"({r['iterations']} iterations, {r['training_seconds'] / 60:.1f} min)"
                + ("  [green]kept[/]" if c == info["configuration"] else "")
            )
        console.print(
            f"[green]model ready[/] in {out}: validation Dice "
            + ", ".join(f"{info['labels'][k]} {v:.4f}" for k, v in info["validation_dice"].items())
            + f" (mean {info['validation_mean_dice']:.4f}); {info['iterations']} iterations, "
            f"{info['training_seconds'] / 60:.1f} min, {info['precision']}"
            + (f", {info['devices']} processes" if info.get("devices") else "")
        )

    _run(body)
