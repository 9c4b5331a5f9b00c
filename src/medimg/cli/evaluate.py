"""``medimg evaluate`` (metrics of predicted label maps against references) and ``medimg compare`` (two
methods on the same references: paired differences with bootstrap CIs and Wilcoxon tests)."""

from __future__ import annotations

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
    err_console,
)
from medimg.cli.predict import RayCpusOpt, RayOpt, _make_runner
from medimg.errors import MedimgError

ConventionOpt = Annotated[
    str, typer.Option("--convention", help="deepmind (surfels, default) | monai | metricsreloaded.")
]
NsdOpt = Annotated[
    str,
    typer.Option("--nsd-tolerance", help="NSD tolerance in mm: one value (2) or per class ('1=1.0,2=2.0')."),
]
FailuresOpt = Annotated[
    str,
    typer.Option(
        "--failures",
        help="worst (default): a missing/unreadable/empty prediction of a class the reference has (or a class the "
        "reference lacks) scores Dice 0 and distances = image diagonal (mm); exclude: leave it out of the means.",
    ),
]
LesionOpt = Annotated[
    bool,
    typer.Option("--lesion-metrics", help="Add lesion-wise F1/precision/recall, mean lesion Dice, panoptic quality."),
]
ExtraOpt = Annotated[
    str | None, typer.Option("--extra-metrics", help="Also compute: boundary_iou,cldice (comma-separated).")
]
ResampleOpt = Annotated[bool, typer.Option("--resample", help="Resample predictions onto the reference grid.")]
SpacingFromOpt = Annotated[
    str | None, typer.Option("--spacing-from", help="'ref': use the reference geometry for same-shape predictions.")
]
NamesOpt = Annotated[str | None, typer.Option("--labels", help="Class names, e.g. '1=anterior,2=posterior'.")]


def _common_kwargs(
    names: str | None,
    convention: str,
    nsd_tolerance: str,
    failures: str,
    lesion: bool,
    extra: str | None,
    resample: bool,
    spacing_from: str | None,
) -> dict[str, Any]:
    from medimg.evaluate import FAILURE_POLICIES, parse_nsd_tolerance
    from medimg.metrics.segmentation import DEFAULT_METRICS

    if spacing_from not in (None, "ref"):
        raise MedimgError("--spacing-from accepts only 'ref'.")
    if failures not in FAILURE_POLICIES:
        raise MedimgError(f"--failures must be one of {', '.join(FAILURE_POLICIES)} (got {failures!r}).")
    extra_m = tuple(m.strip() for m in extra.split(",")) if extra else ()
    return {
        "names": _parse_names(names),
        "metrics": DEFAULT_METRICS + extra_m,
        "convention": convention,
        "nsd_tolerance_mm": parse_nsd_tolerance(nsd_tolerance),
        "failures": failures,
        "lesion_metrics": lesion,
        "resample": resample,
        "spacing_from": spacing_from,
    }


def _cell(s: dict[str, Any], n_cases: int) -> str:
    if "mean" not in s:
        return "—"
    n = f" (n={s['n']})" if s["n"] != n_cases else ""
    return f"{s['mean']:.4f} ± {s['std']:.3f}{n}"


def _print_summary(summary: dict[str, Any]) -> None:
    tol = summary["nsd_tolerance_mm"]
    nsd_head = f"NSD@{tol:g}mm" if isinstance(tol, float | int) else "NSD (per-class τ)"
    t = Table(
        title=f"{summary['n_cases']} cases ({summary['n_failed_cases']} with a failure), convention "
        f"{summary['convention']}, failures: {summary['failure_policy']}",
        title_justify="left",
    )
    cols = ["class", "n", "failed", "absent", "Dice", "HD95 (mm)", "ASSD (mm)", nsd_head]
    lesion = bool(summary.get("lesion_metrics"))
    if lesion:
        cols += ["lesion F1", "PQ"]
    for c in cols:
        t.add_column(c, justify="left" if c == "class" else "right")
    for lab, c in summary["classes"].items():
        n = c["n_cases"]
        cells = [f"{lab} {c['name']}", str(n), str(c["n_failed"]), str(c["n_absent"])]
        cells += [_cell(c[m], n) if m in c else "—" for m in ("dice", "hd95", "assd", "nsd")]
        if lesion:
            cells += [_cell(c["lesion_f1"], n), _cell(c["panoptic_quality"], n)]
        t.add_row(*cells)
    console.print(t)
    console.print(f"[dim]{summary['failure_policy_text']}.[/]", highlight=False)
    if summary["missing_predictions"]:
        console.print(f"[yellow]missing predictions:[/] {', '.join(summary['missing_predictions'])}")
    if summary["unreadable_predictions"]:
        console.print(f"[yellow]unreadable predictions:[/] {', '.join(summary['unreadable_predictions'])}")


@app.command()
def evaluate(
    pred: Annotated[
        list[Path],
        typer.Option("--pred", help="Folder of predicted label maps (one; to compare two, use `medimg compare`)."),
    ],
    ref: Annotated[Path, typer.Option("--ref", help="Folder of reference label maps (same case ids).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (per_case.csv, summary.csv/json, report.html).")
    ],
    names: NamesOpt = None,
    convention: ConventionOpt = "deepmind",
    nsd_tolerance: NsdOpt = "2",
    failures: FailuresOpt = "worst",
    lesion_metrics: LesionOpt = False,
    extra: ExtraOpt = None,
    resample: ResampleOpt = False,
    spacing_from: SpacingFromOpt = None,
    metadata: Annotated[Path | None, typer.Option("--metadata", help="CSV of case metadata (a 'case' column).")] = None,
    group_by: Annotated[
        str | None, typer.Option("--group-by", help="Metadata column for a subgroup breakdown.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of images for the worst-case overlays.")
    ] = None,
    ignore_label: Annotated[
        int | None,
        typer.Option(
            "--ignore-label",
            help="Label value of unannotated reference voxels (nnU-Net 'ignore'): no metric counts them.",
        ),
    ] = None,
    dataset_json: Annotated[
        Path | None,
        typer.Option(
            "--dataset-json",
            help="dataset.json of the references: class names, and its 'ignore' label as --ignore-label; "
            "undeclared reference values are an error.",
        ),
    ] = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = None,
) -> None:
    """Evaluate predicted label maps against references: per-case CSV, summary JSON, HTML report; failed cases
    are counted (n, failed per class) and scored worst-case unless --failures exclude. With --ignore-label (or an
    'ignore' label in --dataset-json) unannotated reference voxels are left out of every metric."""
    from medimg.evaluate import evaluate_folders

    def body() -> None:
        if len(pred) != 1:
            raise MedimgError(
                f"evaluate takes one --pred folder (got {len(pred)}: {', '.join(map(str, pred))}). To compare two "
                "methods use `medimg compare --ref REF --pred A --pred B -o OUT`."
            )
        if group_by and not metadata:
            raise MedimgError("--group-by needs --metadata CSV.")
        kw = _common_kwargs(names, convention, nsd_tolerance, failures, lesion_metrics, extra, resample, spacing_from)
        ignore, declared = ignore_label, None
        if dataset_json is not None:
            from medimg.seg.dataset import read_dataset_labels

            classes, ds_ignore = read_dataset_labels(dataset_json)
            if ignore is not None and ds_ignore is not None and ignore != ds_ignore:
                raise MedimgError(
                    f"--ignore-label {ignore} differs from the ignore label {ds_ignore} of {dataset_json}; drop "
                    "--ignore-label (the dataset.json one is used) or fix dataset.json."
                )
            ignore = ignore if ignore is not None else ds_ignore
            declared = set(classes) - {0}
            kw["names"] = {**{k: v for k, v in classes.items() if k}, **(kw["names"] or {})}
        if ignore is not None and ignore <= 0:
            raise MedimgError(f"--ignore-label must be a positive label value (got {ignore}); 0 is background.")
        evaluate_fn: Any = evaluate_folders
        if ray is not None or ray_cpus is not None:  # per-case metric rows as Ray tasks, same summary and report
            from functools import partial

            from medimg.scale import evaluate_with_runner

            runner = _make_runner(ray, ray_cpus)
            err_console.print(f"starting Ray ({ray}) ...", highlight=False)
            runner.start()
            evaluate_fn = partial(evaluate_with_runner, runner)
        try:
            summary = evaluate_fn(
                pred[0],
                ref,
                out,
                ignore_label=ignore,
                declared=declared,
                metadata_csv=metadata,
                group_by=group_by,
                images_dir=images,
                progress=_progress,
                **kw,
            )
        finally:
            if ray is not None:
                runner.close()
        _print_summary(summary)
        if "ignore_label" in summary:
            console.print(f"voxels of label {summary['ignore_label']} (ignore) in the references were not measured")
        if "subgroups" in summary:
            console.print(f"fairness gap ({group_by}): {summary['subgroups']['fairness_gap']:.4f}")
        console.print(f"wrote {out}/per_case.csv, summary.csv, summary.json, report.html")

    _run(body)


@app.command()
def compare(
    ref: Annotated[Path, typer.Option("--ref", help="Folder of reference label maps.")],
    pred: Annotated[
        list[Path], typer.Option("--pred", help="Prediction folder of a method; give exactly two: --pred A --pred B.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (comparison.json/csv/html + one per method).")
    ],
    method_names: Annotated[
        str | None, typer.Option("--method-names", help="Method names 'A,B' (default: the folder names).")
    ] = None,
    metrics: Annotated[
        str, typer.Option("--metrics", help="Metrics compared (comma-separated): dice,hd95,assd,nsd (+ lesion ones).")
    ] = "dice,hd95,assd,nsd",
    names: NamesOpt = None,
    convention: ConventionOpt = "deepmind",
    nsd_tolerance: NsdOpt = "2",
    failures: FailuresOpt = "worst",
    lesion_metrics: LesionOpt = False,
    resample: ResampleOpt = False,
    spacing_from: SpacingFromOpt = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 10000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
) -> None:
    """Compare two methods on the same references: per class and metric, both means, the paired difference
    A - B with its bootstrap 95 % CI and p, the Wilcoxon signed-rank p, wins and failures per method."""
    from medimg.evaluate import compare_folders

    def body() -> None:
        if len(pred) != 2:
            raise MedimgError(
                f"compare needs exactly two --pred folders (got {len(pred)}), e.g. --pred nnunet/ --pred medimg/."
            )
        mnames = [m.strip() for m in method_names.split(",")] if method_names else None
        kw = _common_kwargs(names, convention, nsd_tolerance, failures, lesion_metrics, None, resample, spacing_from)
        result = compare_folders(
            pred,
            ref,
            out,
            method_names=mnames,
            compare_metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()),
            n_boot=n_boot,
            seed=seed,
            progress=_progress,
            **kw,
        )
        a, b = list(result["methods"])
        t = Table(
            title=f"A = {a}, B = {b}: {len(result['cases'])} paired cases, convention {result['convention']}, "
            f"failures: {result['failure_policy']}",
            title_justify="left",
        )
        for c in (
            "class",
            "metric",
            "n",
            "failed A/B",
            f"mean {a}",
            f"mean {b}",
            "Δ A-B [95% CI]",
            "p boot",
            "p Wilcoxon",
        ):
            t.add_column(c, justify="left" if c in ("class", "metric") else "right")
        for e in result["comparisons"]:
            diff = (
                f"{e['mean_difference']:+.4g} [{e['ci95_low']:+.4g}, {e['ci95_high']:+.4g}]"
                if "mean_difference" in e
                else "—"
            )
            t.add_row(
                f"{e['class']} {e['name']}",
                e["metric"] + (" ↑" if e["higher_is_better"] else " ↓"),
                str(e["n"]),
                f"{e[f'n_failed_{a}']}/{e[f'n_failed_{b}']}",
                f"{e[f'mean_{a}']:.4g}",
                f"{e[f'mean_{b}']:.4g}",
                diff,
                e.get("bootstrap_p_text", "—"),
                e.get("wilcoxon_p_text", "—"),
            )
        console.print(t)
        console.print(f"[dim]{result['failure_policy_text']}.[/]", highlight=False)
        console.print(f"wrote {out}/comparison.json, comparison.csv, comparison.html, {a}/, {b}/")

    _run(body)
