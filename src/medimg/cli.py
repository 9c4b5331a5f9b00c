"""The ``medimg`` command line: a thin layer over the library (parse, call, print).

Errors raised as :class:`~medimg.errors.MedimgError` are printed without a traceback and exit with code 2;
``medimg --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from medimg.errors import MedimgError

app = typer.Typer(
    name="medimg",
    help="medimg: read, inspect, convert and resample medical images with exact geometry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_STATE = {"debug": False}
T = TypeVar("T")


def _run(fn: Callable[[], T]) -> T:
    """Run a command body; print MedimgErrors (and invalid paths) cleanly with exit code 2."""
    try:
        return fn()
    except MedimgError as e:
        if _STATE["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {e}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise MedimgError(f"{what} must be comma-separated numbers, e.g. 1,1,3 (got {text!r}).") from None
    return vals


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _STATE["debug"] = debug


def _read_kwargs(
    series: str | None, key: str | None, spacing: str | None, allow_irregular: bool, allow_nonfinite: bool
) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "series": series,
        "key": key,
        "allow_irregular": allow_irregular,
        "allow_nonfinite": allow_nonfinite,
    }
    sp = _floats(spacing, "--spacing")
    if sp is not None:
        kw["spacing"] = sp
    return kw


SeriesOpt = Annotated[str | None, typer.Option("--series", help="DICOM series UID (or unique suffix) or 'largest'.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="HDF5/NPZ array name.")]
SpacingInOpt = Annotated[
    str | None, typer.Option("--input-spacing", help="Voxel spacing in mm for files without one (e.g. 1.5,1.5,8).")
]
IrregularOpt = Annotated[
    bool, typer.Option("--allow-irregular", help="DICOM: interpolate series with missing slices onto a regular grid.")
]
NonfiniteOpt = Annotated[bool, typer.Option("--allow-nonfinite", help="Accept NaN/Inf voxels.")]


def _print_summary(s: dict[str, Any]) -> None:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold cyan")
    t.add_column()

    def fmt(v: list[float]) -> str:
        return " x ".join(f"{x:.4g}" for x in v)

    t.add_row("path", s["path"])
    if "format" in s:
        t.add_row("format", str(s["format"]) + (f"  ({s['modality']})" if s.get("modality") else ""))
    t.add_row("kind", s["kind"])
    t.add_row("shape", fmt(s["shape"]) + (f"  x {s['channels']} channels" if s["channels"] > 1 else ""))
    t.add_row("dtype", s["dtype"])
    t.add_row(
        "spacing (mm)", fmt(s["spacing_mm"]) + ("" if s["spacing_known"] else "  [yellow](unknown: 1.0 assumed)[/]")
    )
    t.add_row("origin (mm, LPS)", ", ".join(f"{x:.4g}" for x in s["origin_mm"]))
    t.add_row("orientation", s["orientation"])
    t.add_row("extent (mm)", fmt(s["extent_mm"]))
    if s["min"] is not None:
        t.add_row("range", f"{s['min']:.6g} .. {s['max']:.6g} (mean {s['mean']:.6g})")
    if s["nonfinite_voxels"]:
        t.add_row("non-finite", f"[red]{s['nonfinite_voxels']} NaN/Inf voxels[/]")
    if s.get("overlap_voxels"):
        t.add_row("overlaps", f"[yellow]{s['overlap_voxels']} voxels in more than one segment[/]")
    if s.get("note"):
        t.add_row("note", s["note"])
    console.print(t)
    if "series" in s:
        st = Table(title="DICOM series", title_justify="left")
        for c in ("series UID", "modality", "files", "frames", "rows x cols", "description"):
            st.add_column(c)
        for ser in s["series"]:
            st.add_row(
                ser["series_uid"],
                ser["modality"],
                str(ser["files"]),
                str(ser["frames"]),
                f"{ser['rows']} x {ser['columns']}",
                ser["description"],
            )
        console.print(st)
    if "arrays" in s:
        at = Table(title="arrays", title_justify="left")
        for c in ("name", "shape", "dtype"):
            at.add_column(c)
        for k, v in s["arrays"].items():
            at.add_row(k, " x ".join(map(str, v["shape"])), v["dtype"])
        console.print(at)
    if "labels" in s:
        unit = "volume (mL)" if s["dimensions"] == 3 else "area (mm² / 1000)"
        lt = Table(title="labels", title_justify="left")
        for c in ("value", "name", "voxels", unit):
            lt.add_column(c, justify="right" if c != "name" else "left")
        for lab in s["labels"]:
            lt.add_row(str(lab["value"]), lab["name"], str(lab["voxels"]), f"{lab['volume_ml']:.3f}")
        if not s["labels"]:
            lt.add_row("-", "(empty: no non-zero voxels)", "0", "0")
        console.print(lt)


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="Image file or DICOM folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    labels: Annotated[
        bool | None, typer.Option("--labels/--no-labels", help="Force/forbid the label-map summary.")
    ] = None,
    series: SeriesOpt = None,
    key: KeyOpt = None,
    input_spacing: SpacingInOpt = None,
    allow_irregular: IrregularOpt = False,
) -> None:
    """Shape, spacing, orientation, dtype, range; labels with voxel counts and volumes in mL."""
    from medimg.info import path_summary

    def body() -> None:
        kw = _read_kwargs(series, key, input_spacing, allow_irregular, True)
        s = path_summary(path, labels=labels, **kw)
        if as_json:
            sys.stdout.write(json.dumps(s, indent=2) + "\n")
        else:
            _print_summary(s)

    _run(body)


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="Input image file or DICOM folder.")],
    dst: Annotated[Path, typer.Argument(help="Output file; format from the extension (.nii.gz, .seg.nrrd, .dcm ...).")],
    reference: Annotated[
        Path | None, typer.Option("--reference", help="DICOM series folder the labels belong to (for .dcm SEG output).")
    ] = None,
    as_labels: Annotated[bool, typer.Option("--labels", help="Treat the input as a label map.")] = False,
    names: Annotated[str | None, typer.Option("--names", help="Label names, e.g. '1=liver,2=spleen'.")] = None,
    reorient_to: Annotated[str | None, typer.Option("--reorient", help="Reorient first, e.g. RAS or LPS.")] = None,
    series: SeriesOpt = None,
    key: KeyOpt = None,
    input_spacing: SpacingInOpt = None,
    allow_irregular: IrregularOpt = False,
    allow_nonfinite: NonfiniteOpt = False,
) -> None:
    """Convert between formats, e.g. DICOM folder -> NIfTI, NIfTI label -> DICOM SEG (--reference DICOM_DIR)."""
    import medimg
    from medimg.transforms import reorient

    def body() -> None:
        kw = _read_kwargs(series, key, input_spacing, allow_irregular, allow_nonfinite)
        label_names = _parse_names(names)
        is_seg_out = dst.suffix.lower() == ".dcm" or dst.name.lower().endswith(".seg.nrrd")
        img = (
            medimg.read_labels(src, names=label_names, **kw)
            if (as_labels or is_seg_out or label_names)
            else medimg.read(src, **kw)
        )
        if reorient_to:
            img = reorient(img, reorient_to)
        out = medimg.write(img, dst, reference=reference)
        console.print(
            f"wrote [bold]{out}[/] ({img.shape}, spacing {tuple(round(s, 4) for s in img.spacing)} mm, "
            f"{img.orientation})"
        )

    _run(body)


def _parse_names(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    out: dict[int, str] = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip().isdigit():
            raise MedimgError(f"--names must look like '1=liver,2=spleen' (got {part!r}).")
        out[int(k)] = v.strip()
    return out


@app.command()
def resample(
    src: Annotated[Path, typer.Argument(help="Input image.")],
    dst: Annotated[Path, typer.Argument(help="Output image.")],
    spacing: Annotated[str | None, typer.Option("--spacing", help="Target spacing in mm, e.g. 1,1,1 or 1.5.")] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Resample onto this image's grid.")] = None,
    interpolation: Annotated[
        str | None,
        typer.Option(
            "--interpolation", help="nearest | linear | bspline | label (default: linear, nearest for --labels)."
        ),
    ] = None,
    as_labels: Annotated[bool, typer.Option("--labels", help="Input is a label map (nearest interpolation).")] = False,
    fill: Annotated[float, typer.Option("--fill", help="Value outside the input.")] = 0.0,
    series: SeriesOpt = None,
    key: KeyOpt = None,
) -> None:
    """Resample to a voxel spacing (mm) or onto a reference image's grid."""
    import medimg
    from medimg.transforms import resample_to, resample_to_spacing

    def body() -> None:
        if (spacing is None) == (reference is None):
            raise MedimgError("Give exactly one of --spacing or --reference.")
        kw: dict[str, Any] = {"series": series, "key": key}
        img = medimg.read_labels(src, **kw) if as_labels else medimg.read(src, **kw)
        if reference is not None:
            out = resample_to(img, medimg.read(reference), interpolation, fill)  # type: ignore[arg-type]
        else:
            sp = _floats(spacing, "--spacing")
            assert sp is not None
            out = resample_to_spacing(img, sp[0] if len(sp) == 1 else sp, interpolation, fill)  # type: ignore[arg-type]
        medimg.write(out, dst)
        console.print(
            f"wrote [bold]{dst}[/]: {img.shape} @ {tuple(round(s, 4) for s in img.spacing)} mm -> "
            f"{out.shape} @ {tuple(round(s, 4) for s in out.spacing)} mm"
        )

    _run(body)


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predicted label maps.")],
    ref: Annotated[Path, typer.Option("--ref", help="Folder of reference label maps (same case ids).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (per_case.csv, summary.json, report.html).")],
    names: Annotated[str | None, typer.Option("--labels", help="Class names, e.g. '1=anterior,2=posterior'.")] = None,
    convention: Annotated[
        str, typer.Option("--convention", help="deepmind (surfels, default) | monai | metricsreloaded.")
    ] = "deepmind",
    nsd_tolerance: Annotated[float, typer.Option("--nsd-tolerance", help="NSD tolerance in mm.")] = 2.0,
    extra: Annotated[
        str | None, typer.Option("--extra-metrics", help="Also compute: boundary_iou,cldice (comma-separated).")
    ] = None,
    resample: Annotated[bool, typer.Option("--resample", help="Resample predictions onto the reference grid.")] = False,
    spacing_from: Annotated[
        str | None, typer.Option("--spacing-from", help="'ref': use the reference geometry for same-shape predictions.")
    ] = None,
    metadata: Annotated[Path | None, typer.Option("--metadata", help="CSV of case metadata (a 'case' column).")] = None,
    group_by: Annotated[
        str | None, typer.Option("--group-by", help="Metadata column for a subgroup breakdown.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of images for the worst-case overlays.")
    ] = None,
) -> None:
    """Evaluate predicted label maps against references: per-case CSV, summary JSON, HTML report."""
    from rich.progress import track

    from medimg.evaluate import evaluate_folders
    from medimg.metrics.segmentation import DEFAULT_METRICS

    def body() -> None:
        if spacing_from not in (None, "ref"):
            raise MedimgError("--spacing-from accepts only 'ref'.")
        if group_by and not metadata:
            raise MedimgError("--group-by needs --metadata CSV.")
        extra_m = tuple(m.strip() for m in extra.split(",")) if extra else ()
        summary = evaluate_folders(
            pred,
            ref,
            out,
            names=_parse_names(names),
            metrics=DEFAULT_METRICS + extra_m,
            convention=convention,
            nsd_tolerance_mm=nsd_tolerance,
            resample=resample,
            spacing_from=spacing_from,
            metadata_csv=metadata,
            group_by=group_by,
            images_dir=images,
            progress=lambda items, what: track(items, description=what, console=err_console),
        )
        t = Table(title=f"{summary['n_cases']} cases, convention {summary['convention']}", title_justify="left")
        for c in ("class", "Dice", "HD95 (mm)", "ASSD (mm)", f"NSD@{nsd_tolerance:g}mm"):
            t.add_column(c, justify="left" if c == "class" else "right")

        def cell(s: dict[str, Any]) -> str:
            return f"{s['mean']:.4f} ± {s['std']:.3f}" if "mean" in s else "—"

        for lab, c in summary["classes"].items():
            t.add_row(f"{lab} {c['name']}", cell(c["dice"]), cell(c["hd95"]), cell(c["assd"]), cell(c["nsd"]))
        console.print(t)
        if summary["missing_predictions"]:
            console.print(f"[yellow]missing predictions:[/] {', '.join(summary['missing_predictions'])}")
        if "subgroups" in summary:
            console.print(f"fairness gap ({group_by}): {summary['subgroups']['fairness_gap']:.4f}")
        console.print(f"wrote {out}/per_case.csv, summary.json, report.html")

    _run(body)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo outputs.")] = Path("medimg_demo"),
) -> None:
    """Run medimg on the bundled samples: show their info and write converted files and an overlay PNG."""
    from medimg.demo import run_demo

    def body() -> None:
        t0 = time.perf_counter()
        written = run_demo(out, console=console, print_summary=_print_summary)
        console.print(f"\n[bold green]demo done[/] in {time.perf_counter() - t0:.1f} s; {len(written)} files in {out}/")
        for w in written:
            console.print(f"  {w}")

    _run(body)


dataset_app = typer.Typer(help="Segmentation datasets (MSD / nnU-Net layouts, plain folders).", no_args_is_help=True)
models_app = typer.Typer(help="Trained models (bundled and your own folders).", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(models_app, name="models")


def _progress(items: Any, what: str) -> Any:
    from rich.progress import track

    return track(items, description=what, console=err_console, transient=True)


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


@app.command()
def predict(
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or bundled model name.")],
    inp: Annotated[Path, typer.Option("--input", "-i", help="Image file, DICOM folder, or folder of images.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output file, or folder when the input is a folder.")],
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
    ext: Annotated[str, typer.Option("--ext", help="Output extension for folders: .nii.gz, .seg.nrrd ...")] = ".nii.gz",
    reference: Annotated[Path | None, typer.Option("--reference", help="DICOM series for .dcm SEG output.")] = None,
    probabilities: Annotated[bool, typer.Option("--probabilities", help="Also write class probabilities.")] = False,
) -> None:
    """Segment an image or a folder of images with a trained model (output on each input's exact grid)."""
    from medimg.seg import Predictor, resolve_model

    def body() -> None:
        pred = Predictor(resolve_model(model))
        if inp.is_dir() and not _is_dicom_dir(inp):
            out.mkdir(parents=True, exist_ok=True)
            files = [p for p in sorted(inp.iterdir()) if not p.name.startswith(".")]
            for f in _progress(files, "segmenting"):
                from medimg.io._atomic import split_ext

                _predict_one(pred, f, out / (split_ext(f)[0] + ext), tta, None, probabilities)
            console.print(f"wrote {len(files)} segmentations to {out}/")
        else:
            lab = _predict_one(pred, inp, out, tta, reference, probabilities)
            _print_volumes(lab)
            console.print(f"wrote {out}")

    _run(body)


def _is_dicom_dir(p: Path) -> bool:
    from medimg.io._sniff import sniff

    files = [f for f in p.iterdir() if f.is_file()][:3]
    try:
        return bool(files) and all(sniff(f) == "dicom" for f in files)
    except MedimgError:
        return False


def _predict_one(pred: Any, src: Path, dst: Path, tta: bool, reference: Path | None, probabilities: bool) -> Any:
    import medimg
    from medimg.io._atomic import split_ext

    img = medimg.read(src)
    if probabilities:
        lab, prob = pred.predict_with_probabilities(img, tta=tta)
        stem, ext = split_ext(dst)
        medimg.write(prob, dst.with_name(stem + "_probabilities" + (ext if ext != ".seg.nrrd" else ".nrrd")))
    else:
        lab = pred(img, tta=tta)
    medimg.write(
        lab,
        dst,
        reference=reference if reference else (src if dst.suffix == ".dcm" else None),
        algorithm="medimg " + pred.info.get("name", "model"),
    )
    return lab


def _print_volumes(lab: Any) -> None:
    t = Table(title="segmented volumes", title_justify="left")
    for c in ("label", "name", "voxels", "volume (mL)"):
        t.add_column(c, justify="left" if c == "name" else "right")
    counts, vols = lab.voxel_counts(), lab.volumes_ml()
    for k in sorted(lab.names):
        t.add_row(str(k), lab.names[k], str(counts.get(k, 0)), f"{vols.get(k, 0.0):.3f}")
    console.print(t)


@app.command()
def segment(
    image: Annotated[Path, typer.Argument(help="Image file or DICOM folder.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output label map (.nii.gz, .seg.nrrd, .dcm).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Bundled model name or model folder.")] = "hippocampus",
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
) -> None:
    """One command from a scan to a mask (like TotalSegmentator): segment IMAGE with a bundled model."""
    from medimg.seg import Predictor, resolve_model

    def body() -> None:
        pred = Predictor(resolve_model(model))
        lab = _predict_one(pred, image, out, tta, image if out.suffix == ".dcm" else None, False)
        _print_volumes(lab)
        console.print(f"wrote {out}")

    _run(body)


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


from medimg.cli_classify import classify_app, pretrain_cmd, probe_cmd  # noqa: E402

app.add_typer(classify_app, name="classify")
app.command("pretrain")(pretrain_cmd)
app.command("probe")(probe_cmd)

from medimg.cli_register import register_cmd, warp_cmd  # noqa: E402

app.command("register")(register_cmd)
app.command("warp")(warp_cmd)

from medimg.cli_interactive import interact_cmd  # noqa: E402

app.command("interact")(interact_cmd)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
