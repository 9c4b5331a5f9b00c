"""``medimg predict`` and ``medimg segment``: run a segmentation model on images (thin over :mod:`medimg.seg`).

Both check every input against the model's training domain first (:mod:`medimg.domain`) and refuse input outside
it unless ``--force``. Folder outputs are named by case as nnU-Net does (``case_0000.nii.gz`` -> ``case.nii.gz``;
the ``_0000``, ``_0001`` ... files of a case are its channels) and keep the input's format unless ``--ext``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from medimg.cli._common import (
    DeviceOpt,
    IrregularOpt,
    SpacingInOpt,
    _floats,
    _progress,
    _run,
    app,
    console,
    err_console,
)
from medimg.errors import MedimgError, OutOfDomainError
from medimg.ops.segmentation import group_cases, output_ext, predict_case

ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Run even when the input is outside the model's training domain (recorded in the output's provenance).",
    ),
]
ChannelOpt = Annotated[
    str | None,
    typer.Option(
        "--channel",
        metavar="INDEX|grey",
        help="Use one channel of a multi-channel image: an index (0, 1, ...) or 'grey' (RGB -> luminance).",
    ),
]
FillNonfiniteOpt = Annotated[
    float | None,
    typer.Option("--fill-nonfinite", metavar="VALUE", help="Replace NaN/Inf voxels with VALUE before predicting."),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="local|ADDRESS",
        help="Run the cases as Ray tasks: 'local' starts Ray here, else the address of an existing cluster "
        '(HOST:6379, auto); needs pip install "medimg[scale]". See docs/scale.md.',
    ),
]
OnnxOpt = Annotated[
    Path | None,
    typer.Option(
        "--onnx",
        metavar="FILE.onnx",
        help="Run the network in ONNX Runtime from FILE (made by `medimg models export MODEL -o FILE.onnx`).",
    ),
]
RayCpusOpt = Annotated[
    int | None, typer.Option("--ray-cpus", metavar="N", help="CPUs of the local Ray instance (--ray local).")
]


def _make_runner(ray: str | None, cpus: int | None) -> Any:
    """The runner for --ray (:func:`medimg.scale.make_runner`); a missing Ray is printed without markup, so the
    install command ``pip install "medimg[scale]"`` shows as written."""
    from medimg.scale import RayNotInstalledError, make_runner

    try:
        return make_runner(ray, cpus)
    except RayNotInstalledError as e:
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: " + escape(str(e)), highlight=False)
        raise typer.Exit(2) from None


def _run_calls(calls: list[Any], ray: str | None, ray_cpus: int | None, what: str) -> list[Any]:
    """Run per-case operation calls here or on Ray (:mod:`medimg.scale`), progress aggregated; returns the
    outcomes in input order (failures included)."""
    runner = _make_runner(ray, ray_cpus)
    try:
        if ray is not None:
            err_console.print(f"starting Ray ({ray}) ...", highlight=False)
            runner.start()
            err_console.print(f"running {len(calls)} case(s) on {runner.name}", highlight=False)
        return runner.run(calls, _progress, what)
    finally:
        runner.close()


def _segment_params(
    read_kw: dict[str, Any], model: str, tta: bool, force: bool, onnx: Path | None, device: str
) -> dict[str, Any]:
    """The ``segment`` operation's parameters for each case of a folder (or --ray) run: the read options and the
    model settings (JSON-ready: the spacing as a list, the ONNX file as a string)."""
    sp = read_kw["input_spacing_mm"]
    return {
        **read_kw,
        "input_spacing_mm": list(sp) if sp else None,
        "model": model,
        "tta": tta,
        "force": force,
        "onnx": str(onnx) if onnx else None,
        "device": device,
    }


def _structures_line(structures: list[Any]) -> str:
    """``name 1.234 mL, ...`` (2D: mm² / 1000) for the ``segment`` operation's structures."""
    return ", ".join(
        f"{s.name} {(s.volume_ml if s.volume_ml is not None else (s.area_mm2 or 0.0) / 1000):.3f} "
        f"{'mL' if s.volume_ml is not None else 'mm²/1000'}"
        for s in structures
    )


def _segment_cases(
    cases: dict[str, list[Path]], out: Path, ext: str | None, params: dict[str, Any], ray: str | None, cpus: int | None
) -> None:
    """Segment each case with the ``segment`` operation (here or on Ray), print each one's volumes, and raise
    naming the failed cases (the others are written)."""
    from medimg.scale import CaseCall, raise_for_failures

    for case, srcs in cases.items():
        if len(srcs) != 1:
            raise MedimgError(
                f"Case {case!r} has {len(srcs)} channel files; --ray and folder `medimg segment` run one-channel "
                "models. Run multi-channel models without --ray (medimg predict)."
            )
    out.mkdir(parents=True, exist_ok=True)
    calls = [
        CaseCall(
            case, "segment", {**params, "image": str(srcs[0]), "output": str(out / (case + output_ext(srcs[0], ext)))}
        )
        for case, srcs in cases.items()
    ]
    outcomes = _run_calls(calls, ray, cpus, "segmenting")
    for o in outcomes:
        if not o.ok:
            err_console.print(f"[red]{o.case}: failed[/] {o.error_type}: {o.error}", highlight=False)
            continue
        r = o.result
        if r.domain.get("forced"):
            err_console.print(
                f"[yellow]warning:[/] {o.case} forced outside the model's domain ("
                + "; ".join(r.domain["differences"])
                + ")",
                highlight=False,
            )
        vols = _structures_line(r.structures)
        agree = f", support agreement {r.in_context['agreement']:.3f}" if r.in_context else ""
        console.print(f"{o.case}: {vols} -> {Path(r.output).name} ({o.seconds:.1f} s{agree})")
    console.print(f"wrote {sum(o.ok for o in outcomes)} segmentation(s) to {out}/")
    raise_for_failures(outcomes, "The other cases were written.")


def _volumes_line(lab: Any) -> str:
    vols = lab.volumes_ml()
    unit = "mL" if lab.ndim == 3 else "mm²/1000"
    return ", ".join(f"{lab.names[k]} {vols.get(k, 0.0):.3f} {unit}" for k in sorted(lab.names))


def _warn_forced(lab: Any) -> None:
    dom = lab.meta.get("provenance", {}).get("domain", {})
    if dom.get("forced"):
        err_console.print(
            "[yellow]warning:[/] forced outside the model's domain (" + "; ".join(dom["differences"]) + ")",
            highlight=False,
        )


@app.command()
def predict(
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or bundled model name.")],
    inp: Annotated[Path, typer.Option("--input", "-i", help="Image file, DICOM folder, or folder of images.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output file, or folder when the input is a folder.")],
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
    ext: Annotated[
        str | None,
        typer.Option("--ext", help="Output extension for folders (default: the input's format; .nii.gz for DICOM)."),
    ] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="DICOM series for .dcm SEG output.")] = None,
    probabilities: Annotated[bool, typer.Option("--probabilities", help="Also write class probabilities.")] = False,
    force: ForceOpt = False,
    channel: ChannelOpt = None,
    fill_nonfinite: FillNonfiniteOpt = None,
    allow_irregular: IrregularOpt = False,
    input_spacing: SpacingInOpt = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = None,
    onnx: OnnxOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Segment an image or a folder of images with a trained model (output on each input's exact grid).

    Folder outputs are named by case (nnU-Net: CASE_0000.nii.gz -> CASE.nii.gz). Inputs outside the model's
    training domain are refused (others in the folder still run) unless --force. --ray runs a folder's cases as
    Ray tasks (same outputs; one-channel models)."""
    from medimg.seg import Predictor, resolve_model

    def body() -> None:
        pred = Predictor(resolve_model(model), force=force, onnx=onnx, device=device)
        read_kw = {
            "channel": channel,
            "fill_nonfinite": fill_nonfinite,
            "allow_irregular": allow_irregular,
            "input_spacing_mm": _floats(input_spacing, "--input-spacing"),
        }
        if inp.is_dir() and not _is_dicom_dir(inp):
            files = [p for p in sorted(inp.iterdir()) if not p.name.startswith(".") and p.is_file()]
            if not files:
                raise MedimgError(f"{inp} contains no image files.")
            cases = group_cases(files, len(pred.plan["channels"]))
            if ray is not None or ray_cpus is not None:
                if probabilities:
                    raise MedimgError("--probabilities is not available with --ray; run without --ray for them.")
                seg_params = _segment_params(read_kw, model, tta, force, onnx, device)
                _segment_cases(cases, out, ext, seg_params, ray, ray_cpus)
                return
            out.mkdir(parents=True, exist_ok=True)
            refused: list[str] = []
            for case, srcs in _progress(list(cases.items()), "segmenting"):
                dst = out / (case + output_ext(srcs[0], ext))
                t0 = time.perf_counter()
                try:
                    lab = predict_case(
                        pred,
                        srcs,
                        dst,
                        tta=tta,
                        reference=None,
                        probabilities=probabilities,
                        force=force,
                        read_kw=read_kw,
                    )
                except OutOfDomainError as e:
                    refused.append(case)
                    err_console.print(f"[red]{case}: refused[/] {e}", highlight=False)
                    continue
                _warn_forced(lab)
                console.print(f"{case}: {_volumes_line(lab)} -> {dst.name} ({time.perf_counter() - t0:.1f} s)")
            console.print(f"wrote {len(cases) - len(refused)} segmentation(s) to {out}/")
            if refused:
                raise OutOfDomainError(
                    f"{len(refused)} of {len(cases)} case(s) refused as outside the model's domain "
                    f"({', '.join(refused[:10])}{' ...' if len(refused) > 10 else ''}); nothing was written for "
                    "them. Pass --force to segment them anyway."
                )
        else:
            _predict_file(pred, inp, out, tta, reference, probabilities, force, read_kw)

    _run(body)


def _predict_file(
    pred: Any,
    src: Path,
    out: Path,
    tta: bool,
    reference: Path | None,
    probabilities: bool,
    force: bool,
    read_kw: dict[str, Any],
) -> None:
    """Segment one image (file or DICOM folder), write it, print its volumes."""
    lab = predict_case(
        pred, [src], out, tta=tta, reference=reference, probabilities=probabilities, force=force, read_kw=read_kw
    )
    _warn_forced(lab)
    _print_volumes(lab)
    console.print(f"wrote {out}")


def _is_dicom_dir(p: Path) -> bool:
    from medimg.io._sniff import sniff

    files = [f for f in p.iterdir() if f.is_file()][:3]
    try:
        return bool(files) and all(sniff(f) == "dicom" for f in files)
    except MedimgError:
        return False


def _print_volumes(lab: Any) -> None:
    unit = "volume (mL)" if lab.ndim == 3 else "area (mm² / 1000)"
    t = Table(title="segmented volumes", title_justify="left")
    for c in ("label", "name", "voxels", unit):
        t.add_column(c, justify="left" if c == "name" else "right")
    counts, vols = lab.voxel_counts(), lab.volumes_ml()
    for k in sorted(lab.names):
        t.add_row(str(k), lab.names[k], str(counts.get(k, 0)), f"{vols.get(k, 0.0):.3f}")
    console.print(t)


@app.command()
def segment(
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE",
            help="Image file or DICOM folder; or a folder of image files, or several images (-o: folder).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--output", "-o", help="Output label map (.nii.gz, .seg.nrrd, .dcm); a folder for many.")
    ],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Bundled model name or model folder (default: hippocampus).")
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
    force: ForceOpt = False,
    channel: ChannelOpt = None,
    fill_nonfinite: FillNonfiniteOpt = None,
    allow_irregular: IrregularOpt = False,
    input_spacing: SpacingInOpt = None,
    ext: Annotated[
        str | None, typer.Option("--ext", help="Output extension for many images (default: the input's format).")
    ] = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = None,
    onnx: OnnxOpt = None,
    device: DeviceOpt = "auto",
    support: Annotated[
        Path | None,
        typer.Option(
            "--support",
            help="Segment in context, without a model: a dataset folder (imagesTr/labelsTr) of a few labelled "
            "examples; each is registered to the image and their labels are fused. No training.",
        ),
    ] = None,
    fusion: Annotated[
        str, typer.Option("--fusion", help="With --support: weighted (local similarity), majority or staple.")
    ] = "weighted",
    registration_speed: Annotated[
        str, typer.Option("--registration-speed", help="With --support: fast (default) or default (full pyramid).")
    ] = "fast",
) -> None:
    """One command from a scan to a mask (like TotalSegmentator): segment IMAGE with a bundled model, or from a
    few labelled examples with --support.

    The model refuses images outside its training domain (another body part, modality, size or spacing) unless
    --force; `medimg models info NAME` shows each model's domain. With --support DATASET the image is segmented
    from the dataset's labelled cases (multi-atlas registration and label fusion, seconds, no training); an image
    unlike the support images is refused the same way. Given a folder of images or several images, each is a case
    written into the -o folder (failed cases are reported, the others written); --ray runs them as Ray tasks."""
    from medimg.seg import Predictor, resolve_model

    def body() -> None:
        read_kw = {
            "channel": channel,
            "fill_nonfinite": fill_nonfinite,
            "allow_irregular": allow_irregular,
            "input_spacing_mm": _floats(input_spacing, "--input-spacing"),
        }
        many = len(images) > 1 or (images[0].is_dir() and not _is_dicom_dir(images[0]))
        if support is not None:
            _segment_in_context(
                images,
                out,
                many,
                read_kw,
                model,
                tta,
                onnx,
                force,
                device,
                support,
                fusion,
                registration_speed,
                ext,
                ray,
                ray_cpus,
            )
            return
        pred = Predictor(resolve_model(model or "hippocampus"), force=force, onnx=onnx, device=device)
        if not many:
            if ray is not None or ray_cpus is not None:
                raise MedimgError("--ray runs many cases: give a folder of images or several images.")
            image = images[0]
            _predict_file(pred, image, out, tta, image if out.suffix == ".dcm" else None, False, force, read_kw)
            return
        files = _image_files(images)
        seg_params = _segment_params(read_kw, model or "hippocampus", tta, force, onnx, device)
        _segment_cases(group_cases(files, 1), out, ext, seg_params, ray, ray_cpus)

    _run(body)


def _image_files(images: list[Path]) -> list[Path]:
    """The files of a folder-or-files ``medimg segment`` argument (a DICOM folder is one case)."""
    files: list[Path] = []
    for p in images:
        if p.is_dir() and not _is_dicom_dir(p):
            files += [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")]
        elif p.exists():
            files.append(p)
        else:
            raise MedimgError(f"{str(p)!r} does not exist; give image files, DICOM folders or folders of images.")
    if not files:
        raise MedimgError(f"No image files in {', '.join(map(str, images))}.")
    return files


def _segment_in_context(
    images: list[Path],
    out: Path,
    many: bool,
    read_kw: dict[str, Any],
    model: str | None,
    tta: bool,
    onnx: Path | None,
    force: bool,
    device: str,
    support: Path,
    fusion: str,
    registration_speed: str,
    ext: str | None,
    ray: str | None,
    ray_cpus: int | None,
) -> None:
    """``medimg segment ... --support DATASET``: the ``segment`` operation's in-context path for each case."""
    from typing import cast

    from medimg.ops import Context, run
    from medimg.ops.catalog import SegmentResult
    from medimg.register.fusion import FUSIONS
    from medimg.seg.incontext import SPEEDS

    if model is not None or onnx is not None or tta:
        raise MedimgError("--support segments from labelled examples without a model: drop -m / --onnx / --tta.")
    if fusion not in FUSIONS:
        raise MedimgError(f"Unknown --fusion {fusion!r}; choose {', '.join(FUSIONS)}.")
    if registration_speed not in SPEEDS:
        raise MedimgError(f"Unknown --registration-speed {registration_speed!r}; choose {', '.join(SPEEDS)}.")
    params = {
        **_segment_params(read_kw, "hippocampus", False, force, None, device),
        "support": str(support),
        "fusion": fusion,
        "registration_speed": registration_speed,
    }
    if many:
        _segment_cases(group_cases(_image_files(images), 1), out, ext, params, ray, ray_cpus)
        return
    if ray is not None or ray_cpus is not None:
        raise MedimgError("--ray runs many cases: give a folder of images or several images.")
    res = cast(
        SegmentResult,
        run("segment", {**params, "image": str(images[0]), "output": str(out)}, Context(progress=_progress)),
    )
    rep = res.in_context or {}
    if res.domain.get("forced"):
        err_console.print(
            "[yellow]warning:[/] forced outside the support set's domain ("
            + "; ".join(res.domain["differences"])
            + ")",
            highlight=False,
        )
    vols = _structures_line(res.structures)
    console.print(
        f"{vols} -> {out} (in context: {rep.get('n_support')} support cases, {rep.get('fusion')} fusion, "
        f"{rep.get('seconds', 0):.1f} s; agreement {rep.get('agreement', 0):.3f})",
        highlight=False,
        markup=False,
    )
    if rep.get("low_agreement"):
        err_console.print(
            "[yellow]warning:[/] the support cases disagree about this image (mean Dice with the fused result "
            f"{rep['agreement']:.2f}); check the result, or give support examples more like it.",
            highlight=False,
        )
