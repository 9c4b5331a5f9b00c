"""``medimg evaluate``: metrics of predicted label maps against references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medimg.cli._common import (
    _parse_names,
    _run,
    app,
    console,
    err_console,
)
from medimg.errors import MedimgError


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
