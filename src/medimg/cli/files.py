"""``medimg info | convert | resample | demo``: inspecting and converting files."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medimg.cli._common import (
    IrregularOpt,
    KeyOpt,
    NonfiniteOpt,
    SeriesOpt,
    SpacingInOpt,
    _floats,
    _parse_names,
    _read_kwargs,
    _run,
    app,
    console,
    err_console,
)
from medimg.cli.predict import FillNonfiniteOpt, RayCpusOpt, RayOpt, _run_calls
from medimg.errors import MedimgError
from medimg.transforms.intensity import fill_nonfinite as fill_nonfinite_values


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
        shown = [str(ser.get("series_uid_short", ser["series_uid"])) for ser in s["series"]]
        for c in ("series UID (for --series)", "modality", "files", "frames", "rows x cols", "description"):
            if c.startswith("series UID"):
                st.add_column(c, no_wrap=True, min_width=max(len(u) for u in shown))
            else:
                st.add_column(c)
        for ser, uid in zip(s["series"], shown, strict=True):
            st.add_row(
                uid,
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
    fill_nonfinite: FillNonfiniteOpt = None,
    ext: Annotated[
        str | None, typer.Option("--ext", help="Folder mode (SRC a folder of images): output format, e.g. .nrrd.")
    ] = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = None,
) -> None:
    """Convert between formats, e.g. DICOM folder -> NIfTI, NIfTI label -> DICOM SEG (--reference DICOM_DIR).

    Folder mode: SRC a folder of image files (not a DICOM series) and DST a folder; each file is written as
    DST/<case><--ext> (failed files are reported, the others written); --ray converts them as Ray tasks."""
    import medimg
    from medimg.ops.catalog import is_image_folder
    from medimg.transforms import reorient

    def body() -> None:
        if is_image_folder(src):
            _convert_folder(src, dst, ext, as_labels, names, reference, ray, ray_cpus, extra_options_given)
            return
        if ext is not None or ray is not None or ray_cpus is not None:
            raise MedimgError(
                f"--ext and --ray are for folder mode (SRC a folder of image files); {str(src)!r} is not one."
            )
        kw = _read_kwargs(series, key, input_spacing, allow_irregular, allow_nonfinite or fill_nonfinite is not None)
        label_names = _parse_names(names)
        is_seg_out = dst.suffix.lower() == ".dcm" or dst.name.lower().endswith(".seg.nrrd")
        img = (
            medimg.read_labels(src, names=label_names, **kw)
            if (as_labels or is_seg_out or label_names)
            else medimg.read(src, **kw)
        )
        if fill_nonfinite is not None and not isinstance(img, medimg.LabelMap):
            img = fill_nonfinite_values(img, fill_nonfinite)
        if reorient_to:
            img = reorient(img, reorient_to)
        out = medimg.write(img, dst, reference=reference)
        console.print(
            f"wrote [bold]{out}[/] ({img.shape}, spacing {tuple(round(s, 4) for s in img.spacing)} mm, "
            f"{img.orientation})"
        )

    extra_options_given = [
        o
        for o, v in (
            ("--reorient", reorient_to),
            ("--series", series),
            ("--key", key),
            ("--input-spacing", input_spacing),
            ("--allow-irregular", allow_irregular),
            ("--allow-nonfinite", allow_nonfinite),
            ("--fill-nonfinite", fill_nonfinite is not None),
        )
        if v
    ]
    _run(body)


def _convert_folder(
    src: Path,
    dst: Path,
    ext: str | None,
    as_labels: bool,
    names: str | None,
    reference: Path | None,
    ray: str | None,
    ray_cpus: int | None,
    unsupported: list[str],
) -> None:
    """Folder mode of ``convert``: one ``convert`` operation call per file, here or as Ray tasks."""
    from medimg.scale import convert_calls, raise_for_failures

    if unsupported:
        raise MedimgError(
            f"{', '.join(unsupported)} cannot be used in folder mode; convert those files one at a time "
            "(medimg convert FILE OUT)."
        )
    params = {
        "source": str(src),
        "output": str(dst),
        "ext": ext,
        "labels": as_labels,
        "names": _parse_names(names),
        "reference": str(reference) if reference else None,
    }
    outcomes = _run_calls(convert_calls(params), ray, ray_cpus, "converting")
    for o in outcomes:
        if o.ok:
            console.print(f"{o.case} -> {Path(o.result.output).name} {tuple(o.result.shape)}", highlight=False)
        else:
            err_console.print(f"[red]{o.case}: failed[/] {o.error_type}: {o.error}", highlight=False)
    console.print(f"wrote {sum(o.ok for o in outcomes)} file(s) to {dst}/")
    raise_for_failures(outcomes, "The other files were written.")


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
    allow_irregular: IrregularOpt = False,
    fill_nonfinite: FillNonfiniteOpt = None,
) -> None:
    """Resample to a voxel spacing (mm) or onto a reference image's grid."""
    import medimg
    from medimg.transforms import resample_to, resample_to_spacing

    def body() -> None:
        if (spacing is None) == (reference is None):
            raise MedimgError("Give exactly one of --spacing or --reference.")
        kw: dict[str, Any] = {"series": series, "key": key, "allow_irregular": allow_irregular}
        img: Any
        if as_labels:
            img = medimg.read_labels(src, **kw)
        else:
            img = medimg.read(src, allow_nonfinite=fill_nonfinite is not None, **kw)
            if fill_nonfinite is not None:
                img = fill_nonfinite_values(img, fill_nonfinite)
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
