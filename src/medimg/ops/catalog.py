"""The user-facing operations, each defined once (typed parameters and results; see :mod:`medimg.ops.base`).

Units are in the field names: ``_mm``, ``_ml`` (millilitres), ``_mm2`` (2D areas), ``_pct``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from medimg.errors import MedimgError
from medimg.ops.base import Context, OpParams, OpResult, operation

# ----------------------------------------------------------------------------------------------------------- info


class InfoParams(OpParams):
    path: str = Field(description="Image or label map file, or DICOM folder.")


class InfoResult(OpResult):
    path: str
    kind: str = Field(description="'image' or 'label map'.")
    shape: list[int]
    spacing_mm: list[float]
    spacing_known: bool
    origin_mm: list[float] = Field(description="World position of voxel (0,0,0), LPS, mm.")
    orientation: str
    extent_mm: list[float]
    dtype: str
    modality: str | None = None
    labels: list[dict[str, Any]] | None = Field(None, description="value, name, voxels, volume_ml per label.")


@operation("info", "Size, voxel spacing (mm), origin, orientation, dtype and labels of an image.", reads=("path",))
def info(p: InfoParams, ctx: Context) -> InfoResult:
    from medimg.info import path_summary

    s = path_summary(p.path)
    return InfoResult(
        path=p.path,
        kind=s["kind"],
        shape=list(s["shape"]),
        spacing_mm=list(s["spacing_mm"]),
        spacing_known=bool(s["spacing_known"]),
        origin_mm=list(s["origin_mm"]),
        orientation=s["orientation"],
        extent_mm=list(s["extent_mm"]),
        dtype=s["dtype"],
        modality=s.get("modality"),
        labels=s.get("labels"),
    )


# -------------------------------------------------------------------------------------------------------- volumes


class StructureSize(BaseModel):
    label: int
    name: str
    voxels: int
    volume_ml: float | None = Field(None, description="3D: volume in mL.")
    area_mm2: float | None = Field(None, description="2D: area in mm².")


class CaseSizes(BaseModel):
    case: str
    path: str
    dims: int
    spacing_mm: list[float]
    spacing_known: bool
    structures: list[StructureSize]


class VolumesParams(OpParams):
    path: str = Field(description="A label map, or a folder of label maps (one case per file).")
    names: dict[int, str] | None = Field(None, description="Label names, e.g. {1: 'liver'} (override the file's).")
    output_csv: str | None = Field(None, description="CSV to write: a row per case, a column per structure.")
    key: str | None = Field(None, description="HDF5/NPZ: the array holding the labels.")
    input_spacing_mm: list[float] | None = Field(None, description="Voxel spacing for files that store none.")


class VolumesResult(OpResult):
    cases: list[CaseSizes]


def measure_labels(path: Path, names: dict[int, str] | None = None, **read_kwargs: Any) -> CaseSizes:
    """Every non-zero label of a label map: voxels and mL (3D) or mm² (2D), named by the file or ``names``."""
    import medimg
    from medimg.io._atomic import split_ext

    lab = medimg.read_labels(path, names=names, **read_kwargs)
    counts = lab.voxel_counts()
    out = []
    for v in sorted(counts):
        size = counts[v] * lab.voxel_volume_mm3
        out.append(
            StructureSize(
                label=int(v),
                name=lab.name_of(v),
                voxels=int(counts[v]),
                volume_ml=size / 1000.0 if lab.ndim == 3 else None,
                area_mm2=size if lab.ndim == 2 else None,
            )
        )
    case = split_ext(path)[0] if path.is_file() else path.name
    return CaseSizes(
        case=case,
        path=str(path),
        dims=lab.ndim,
        spacing_mm=[float(s) for s in lab.spacing],
        spacing_known=lab.spacing_known,
        structures=out,
    )


def label_files(path: Path) -> list[Path]:
    """``path`` when it is a file, else the readable files of the folder (by extension), sorted by name."""
    from medimg.io import EXTENSIONS
    from medimg.io._atomic import split_ext

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MedimgError(f"{str(path)!r} does not exist: give a label map file or a folder of them.")
    files = [
        q
        for q in sorted(path.iterdir())
        if q.is_file() and not q.name.startswith(".") and split_ext(q)[1].lower() in EXTENSIONS
    ]
    if not files:
        raise MedimgError(f"No label map files in {str(path)!r}; give a folder of label maps or one file.")
    return files


def write_volumes_csv(cases: list[CaseSizes], out: Path) -> None:
    """A row per case (``case, file, dims, spacing_mm, <name>_mL | <name>_mm2 ...``), written atomically."""
    import csv

    from medimg.io._atomic import atomic_path

    cols: list[str] = []
    for c in cases:
        for s in c.structures:
            col = f"{s.name}_{'mL' if c.dims == 3 else 'mm2'}"
            if col not in cols:
                cols.append(col)
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case", "file", "dims", "spacing_mm", *cols])
        for c in cases:
            sizes = {
                f"{s.name}_{'mL' if c.dims == 3 else 'mm2'}": (s.volume_ml or s.area_mm2 or 0.0) for s in c.structures
            }
            sp = "x".join(f"{v:g}" for v in c.spacing_mm) + ("" if c.spacing_known else " (unknown)")
            w.writerow([c.case, Path(c.path).name, c.dims, sp, *[f"{sizes.get(k, 0.0):.6f}" for k in cols]])


@operation(
    "volumes",
    "Volume (mL; area in mm² for 2D) of every structure in a label map or a folder of label maps.",
    reads=("path",),
    writes=("output_csv",),
)
def volumes(p: VolumesParams, ctx: Context) -> VolumesResult:
    if p.output_csv:
        from medimg.io._atomic import check_output_path

        check_output_path(p.output_csv)
    files = label_files(Path(p.path))
    kw: dict[str, Any] = {"key": p.key}
    if p.input_spacing_mm:
        kw["spacing"] = tuple(p.input_spacing_mm)
    cases = [measure_labels(f, p.names, **kw) for f in ctx.iterate(files, "measuring")]
    res = VolumesResult(cases=cases)
    if p.output_csv:
        write_volumes_csv(cases, Path(p.output_csv))
        res.files = [p.output_csv]
    return res


# ------------------------------------------------------------------------------------------------ convert/resample


class ConvertParams(OpParams):
    source: str = Field(description="Input image, label map or DICOM folder.")
    output: str = Field(description="Output file; the format follows the extension (.nii.gz, .seg.nrrd, .dcm ...).")
    labels: bool = Field(False, description="Treat the input as a label map.")
    names: dict[int, str] | None = None
    reference: str | None = Field(None, description="DICOM series folder (for DICOM SEG output).")
    ext: str | None = Field(
        None,
        description="Folder mode (source a folder of image files, not a DICOM series): the output extension, e.g. "
        "'.nrrd'; each file becomes OUTPUT/<case><ext>.",
    )


class WrittenImage(OpResult):
    output: str
    shape: list[int]
    spacing_mm: list[float]
    orientation: str


class ConvertResult(WrittenImage):
    cases: list[WrittenImage] = Field(
        default_factory=list, description="Folder mode: every converted file (the fields above are the first one's)."
    )


def convert_pairs(source: Path, output: Path, ext: str | None) -> list[tuple[Path, Path]]:
    """Folder mode of ``convert``: ``(input file, output file)`` for every image file of the folder ``source``
    (sorted by name; hidden files and unreadable extensions skipped), named ``output/<case><ext>``."""
    from medimg.io import EXTENSIONS
    from medimg.io._atomic import split_ext

    if not ext:
        raise MedimgError(
            f"{str(source)!r} is a folder of image files: give the output format for each of them with --ext "
            "(e.g. --ext .nrrd; the operation's 'ext')."
        )
    ext = ext if ext.startswith(".") else "." + ext
    files = [
        q
        for q in sorted(source.iterdir())
        if q.is_file() and not q.name.startswith(".") and split_ext(q)[1].lower() in EXTENSIONS
    ]
    if not files:
        raise MedimgError(
            f"No image files in {str(source)!r}; give an image file, a DICOM folder or a folder of images."
        )
    if output.exists() and not output.is_dir():
        raise MedimgError(f"Folder mode writes into a folder, but {str(output)!r} is a file; give a folder.")
    if output.resolve() == source.resolve():
        raise MedimgError("The output folder is the input folder; choose another output folder.")
    return [(f, output / (split_ext(f)[0] + ext)) for f in files]


def is_image_folder(path: Path) -> bool:
    """A folder holding image files of a non-DICOM format (by extension): the folder mode of ``convert``; any other
    folder is read as a DICOM series."""
    from medimg.io import EXTENSIONS
    from medimg.io._atomic import split_ext

    if not path.is_dir():
        return False
    return any(
        f.is_file() and split_ext(f)[1].lower() in set(EXTENSIONS) - {".dcm", ".dicom"}
        for f in path.iterdir()
        if not f.name.startswith(".")
    )


@operation(
    "convert",
    "Convert an image or label map between formats (DICOM, NIfTI, NRRD/seg.nrrd, DICOM SEG, MHA, PNG...).",
    reads=("source", "reference"),
    writes=("output",),
)
def convert(p: ConvertParams, ctx: Context) -> ConvertResult:
    import medimg

    if is_image_folder(Path(p.source)):
        pairs = convert_pairs(Path(p.source), Path(p.output), p.ext)
        Path(p.output).mkdir(parents=True, exist_ok=True)
        done = [
            convert(p.model_copy(update={"source": str(s), "output": str(d), "ext": None}), ctx)
            for s, d in ctx.iterate(pairs, "converting")
        ]
        first = done[0]
        return ConvertResult(
            output=p.output,
            shape=first.shape,
            spacing_mm=first.spacing_mm,
            orientation=first.orientation,
            cases=[
                WrittenImage(**c.model_dump(include={"output", "shape", "spacing_mm", "orientation"})) for c in done
            ],
            files=[c.output for c in done],
        )
    seg_out = p.output.lower().endswith((".dcm", ".seg.nrrd"))
    img = medimg.read_labels(p.source, names=p.names) if (p.labels or p.names or seg_out) else medimg.read(p.source)
    medimg.write(img, p.output, reference=p.reference)
    return ConvertResult(
        output=p.output,
        shape=list(img.shape),
        spacing_mm=list(img.spacing),
        orientation=img.orientation,
        files=[p.output],
    )


class ResampleParams(OpParams):
    source: str
    output: str
    spacing_mm: list[float] | None = Field(None, description="Target spacing (one value for isotropic).")
    reference: str | None = Field(None, description="Resample onto this image's grid instead.")
    labels: bool = Field(False, description="The input is a label map (nearest-neighbour).")


@operation(
    "resample",
    "Resample an image to a voxel spacing in mm, or onto another image's grid.",
    reads=("source", "reference"),
    writes=("output",),
)
def resample(p: ResampleParams, ctx: Context) -> WrittenImage:
    import medimg
    from medimg.transforms import resample_to, resample_to_spacing

    if (p.spacing_mm is None) == (p.reference is None):
        raise MedimgError("Give exactly one of spacing_mm or reference.")
    img = medimg.read_labels(p.source) if p.labels else medimg.read(p.source)
    interp: Literal["nearest", "linear"] = "nearest" if p.labels else "linear"
    if p.reference:
        out = resample_to(img, medimg.read(p.reference), interp)
    else:
        sp = p.spacing_mm or []
        out = resample_to_spacing(img, sp[0] if len(sp) == 1 else tuple(sp), interp)
    medimg.write(out, p.output)
    return WrittenImage(
        output=p.output,
        shape=list(out.shape),
        spacing_mm=list(out.spacing),
        orientation=out.orientation,
        files=[p.output],
    )


# -------------------------------------------------------------------------------------------------------- segment


class SegmentParams(OpParams):
    image: str = Field(description="Image file or DICOM folder to segment.")
    output: str = Field(description="Label map to write (.nii.gz, .seg.nrrd, .dcm ...).")
    model: str = Field("hippocampus", description="Bundled model name or model folder.")
    tta: bool = Field(False, description="Mirroring test-time augmentation.")
    force: bool = Field(False, description="Run even when the image is outside the model's training domain.")
    channel: str | None = Field(None, description="Channel of a multi-channel image: an index or 'grey'.")
    fill_nonfinite: float | None = Field(None, description="Replace NaN/Inf voxels with this value.")
    allow_irregular: bool = Field(False, description="DICOM: interpolate a series with missing slices.")
    input_spacing_mm: list[float] | None = Field(None, description="Voxel spacing for files that store none.")
    onnx: str | None = Field(
        None, description="ONNX file exported from this model (medimg models export): run the network in ONNX Runtime."
    )
    device: str = Field("auto", description="Where the network runs: auto (a GPU when there is one), cpu, cuda[:N].")
    support: str | None = Field(
        None,
        description="Segment in context instead of with a model: a dataset folder of a few labelled examples "
        "(imagesTr/labelsTr); each is registered to the image and their labels fused. No training.",
    )
    fusion: Literal["weighted", "majority", "staple"] = Field(
        "weighted", description="With support: how the support cases' labels are fused."
    )
    registration_speed: Literal["fast", "default"] = Field(
        "fast", description="With support: the registration's speed (fast: one coarse deformable level)."
    )


class SegmentResult(OpResult):
    output: str
    model: str
    structures: list[StructureSize]
    domain: dict[str, Any] = Field(description="The domain check: in_domain, forced, differences.")
    in_context: dict[str, Any] | None = Field(
        None, description="With support: agreement between the support cases, per-case Dice with the fused result."
    )


@operation(
    "segment",
    "Segment an image with a bundled or trained model, or in context from a support set of labelled examples "
    "(support: no training); returns the structures' volumes in mL. Refuses images outside the model's (or the "
    "support set's) domain unless force.",
    reads=("image",),
    writes=("output",),
)
def segment(p: SegmentParams, ctx: Context) -> SegmentResult:
    from medimg.ops.segmentation import predict_case
    from medimg.seg import Predictor, resolve_model

    if p.support is not None:
        return _segment_in_context(p, ctx)
    pred = Predictor(resolve_model(p.model), force=p.force, onnx=p.onnx, device=p.device)
    pred.progress = ctx.progress
    out = Path(p.output)
    read_kw = {
        "channel": p.channel,
        "fill_nonfinite": p.fill_nonfinite,
        "allow_irregular": p.allow_irregular,
        "input_spacing_mm": p.input_spacing_mm,
    }
    lab = predict_case(
        pred, [Path(p.image)], out, tta=p.tta, reference=None, probabilities=False, force=p.force, read_kw=read_kw
    )
    return SegmentResult(
        output=p.output,
        model=pred.info.get("name", p.model),
        structures=_every_structure(Path(p.output), pred.names, lab.ndim),
        domain=lab.meta["provenance"]["domain"],
        in_context=None,
        files=[p.output],
    )


def _every_structure(path: Path, names: dict[int, str], ndim: int) -> list[StructureSize]:
    """The size of every named structure of the label map at ``path``, in label order; a structure the map does not
    hold is listed with 0 voxels (0 mL / 0 mm²) rather than left out."""
    named = {s.label: s for s in measure_labels(path, names).structures}
    return [
        named.get(
            k,
            StructureSize(
                label=k,
                name=v,
                voxels=0,
                volume_ml=0.0 if ndim == 3 else None,
                area_mm2=0.0 if ndim == 2 else None,
            ),
        )
        for k, v in sorted(names.items())
    ]


def _segment_in_context(p: SegmentParams, ctx: Context) -> SegmentResult:
    """The ``support`` path of :func:`segment` (:mod:`medimg.seg.incontext`)."""
    import medimg
    from medimg.ops.segmentation import input_record, load_input
    from medimg.seg.incontext import load_support, segment_in_context

    if p.onnx is not None or p.tta:
        raise MedimgError("support segments without a model: drop onnx / tta (they apply to a model).")
    assert p.support is not None
    support = load_support(p.support)
    img = load_input(Path(p.image), p.channel, p.fill_nonfinite, p.allow_irregular, p.input_spacing_mm)
    lab, rep = segment_in_context(
        img, support, fusion=p.fusion, speed=p.registration_speed, force=p.force, progress=ctx.progress
    )
    lab.meta["provenance"] = {
        "software": f"medimg {medimg.__version__}",
        "model": f"in context: {support.root.name}",
        "in_context": {k: v for k, v in rep.items() if k != "per_case"},
        "domain": rep["domain"],
        "inputs": [input_record(Path(p.image))],
        "support_cases": support.case_ids,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(p.output)
    medimg.write(lab, out, reference=Path(p.image) if out.suffix == ".dcm" else None, algorithm="medimg in context")
    names = {k: v for k, v in support.names.items() if k != 0}
    return SegmentResult(
        output=p.output,
        model=f"in context: {support.root}",
        structures=_every_structure(out, names, lab.ndim),
        domain=rep["domain"],
        in_context=rep,
        files=[p.output],
    )


# ------------------------------------------------------------------------------------------------------- overlap


class OverlapParams(OpParams):
    prediction: str = Field(description="Label map to assess.")
    reference: str = Field(description="Reference label map on the same grid.")
    labels: list[int] | None = Field(None, description="Labels to compare (default: every label in either).")
    convention: Literal["deepmind", "monai", "metricsreloaded"] = "deepmind"


class LabelOverlap(BaseModel):
    label: int
    name: str
    dice: float
    hd95_mm: float
    assd_mm: float
    volume_prediction_ml: float
    volume_reference_ml: float


class OverlapResult(OpResult):
    labels: list[LabelOverlap]


@operation(
    "overlap",
    "Dice, HD95 and ASSD (mm) and volumes per label between two label maps on the same grid.",
    reads=("prediction", "reference"),
)
def overlap(p: OverlapParams, ctx: Context) -> OverlapResult:
    import medimg
    from medimg.metrics import segmentation_metrics

    pred, ref = medimg.read_labels(p.prediction), medimg.read_labels(p.reference)
    labels = p.labels or sorted(set(pred.labels) | set(ref.labels))
    m = segmentation_metrics(pred, ref, labels=labels, metrics=("dice", "hd95", "assd"), convention=p.convention)
    vp, vr = pred.volumes_ml(), ref.volumes_ml()

    def name(k: int) -> str:
        return ref.names.get(k) or pred.names.get(k) or ref.name_of(k)

    return OverlapResult(
        labels=[
            LabelOverlap(
                label=k,
                name=name(k),
                dice=float(m[k]["dice"]),
                hd95_mm=float(m[k]["hd95"]),
                assd_mm=float(m[k]["assd"]),
                volume_prediction_ml=vp.get(k, 0.0),
                volume_reference_ml=vr.get(k, 0.0),
            )
            for k in labels
        ]
    )


# ------------------------------------------------------------------------------------------------ volume change


class ChangeParams(OpParams):
    before: str = Field(description="Label map of the earlier visit.")
    after: str = Field(description="Label map of the later visit.")
    labels: list[int] | None = Field(None, description="Structures to compare (default: every label in either).")


class StructureChange(BaseModel):
    label: int
    name: str
    before_ml: float
    after_ml: float
    change_ml: float
    change_pct: float | None = Field(description="Relative change in percent (None when absent before).")


class ChangeResult(OpResult):
    structures: list[StructureChange]


@operation(
    "volume_change",
    "Change of each structure's volume between two visits (mL and percent).",
    reads=("before", "after"),
)
def volume_change(p: ChangeParams, ctx: Context) -> ChangeResult:
    a, b = measure_labels(Path(p.before)), measure_labels(Path(p.after))
    if a.dims != 3 or b.dims != 3:
        raise MedimgError(
            "volume_change compares 3D volumes in mL; these label maps are "
            f"{a.dims}D and {b.dims}D. For 2D label maps compare their areas (mm²) from the volumes operation."
        )
    va = {s.label: s for s in a.structures}
    vb = {s.label: s for s in b.structures}
    labels = p.labels or sorted(set(va) | set(vb))
    out = []
    for k in labels:
        x = va[k].volume_ml or 0.0 if k in va else 0.0
        y = vb[k].volume_ml or 0.0 if k in vb else 0.0
        named = va.get(k) or vb.get(k)
        out.append(
            StructureChange(
                label=k,
                name=named.name if named else f"label {k}",
                before_ml=x,
                after_ml=y,
                change_ml=y - x,
                change_pct=100.0 * (y - x) / x if x > 0 else None,
            )
        )
    return ChangeResult(structures=out)


# ------------------------------------------------------------------------------------------------------- lesions


class LesionParams(OpParams):
    label_map: str = Field(description="Label map holding the lesions.")
    label: int | None = Field(None, description="Lesion label (default: every non-zero voxel).")
    min_volume_ml: float = Field(0.0, description="Ignore components smaller than this (mL).")
    connectivity: Literal[1, 2, 3] = Field(3, description="3D neighbourhood: 1 = faces, 3 = faces+edges+corners.")


class Lesion(BaseModel):
    index: int
    volume_ml: float = Field(
        description="3D: volume in mL. 2D label maps: area in cm² (mm²/1000), as LabelMap.volumes_ml() counts it."
    )
    voxels: int
    centroid_mm: list[float] = Field(description="World position (LPS, mm).")


class LesionResult(OpResult):
    count: int
    total_volume_ml: float
    lesions: list[Lesion]


@operation(
    "count_lesions",
    "Count the connected lesions in a label map, with each lesion's volume (mL) and position (LPS mm).",
    reads=("label_map",),
)
def count_lesions(p: LesionParams, ctx: Context) -> LesionResult:
    from scipy import ndimage

    import medimg

    lab = medimg.read_labels(p.label_map)
    mask = lab.array == p.label if p.label is not None else lab.array > 0
    structure = ndimage.generate_binary_structure(lab.ndim, min(p.connectivity, lab.ndim))
    comp, n = ndimage.label(mask, structure)
    voxel_ml = lab.voxel_volume_mm3 / 1000.0
    lesions: list[Lesion] = []
    if n:
        counts = np.bincount(comp.ravel())
        centres = ndimage.center_of_mass(mask, comp, range(1, n + 1))
        for i in range(1, n + 1):
            vol = float(counts[i] * voxel_ml)
            if vol < p.min_volume_ml:
                continue
            lesions.append(
                Lesion(
                    index=len(lesions) + 1,
                    volume_ml=vol,
                    voxels=int(counts[i]),
                    centroid_mm=[float(v) for v in lab.index_to_world(np.asarray(centres[i - 1]))],
                )
            )
    lesions.sort(key=lambda les: -les.volume_ml)
    for i, les in enumerate(lesions, 1):
        les.index = i
    return LesionResult(count=len(lesions), total_volume_ml=sum(les.volume_ml for les in lesions), lesions=lesions)


# ------------------------------------------------------------------------------------------------------ register


class RegisterParams(OpParams):
    fixed: str
    moving: str
    output_dir: str = Field(description="Folder for warped images, transform/ and metrics.json.")
    method: Literal["rigid", "affine", "deformable", "learned"] = "affine"
    moving_labels: str | None = Field(None, description="Labels to carry onto the fixed image.")
    fixed_labels: str | None = Field(None, description="Fixed labels: report the overlap after registration.")
    linear: Literal["affine", "rigid", "none"] = Field(
        "affine", description="Deformable: its linear stage; none for images already aligned (frames of one series)."
    )
    speed: Literal["default", "fast"] = Field(
        "default",
        description="fast: shorter linear stage, one coarse deformable level (about 20x faster than default).",
    )


class RegisterResult(OpResult):
    output_dir: str
    metrics: dict[str, Any]


@operation(
    "register",
    "Register a moving image to a fixed one (rigid/affine/deformable/learned); optional label overlap afterwards.",
    reads=("fixed", "moving", "moving_labels", "fixed_labels"),
    writes=("output_dir",),
)
def register(p: RegisterParams, ctx: Context) -> RegisterResult:
    import json

    import medimg
    from medimg.register.api import register as reg
    from medimg.register.api import write_outputs

    f, m = medimg.read(p.fixed), medimg.read(p.moving)
    ml = medimg.read_labels(p.moving_labels) if p.moving_labels else None
    fl = medimg.read_labels(p.fixed_labels) if p.fixed_labels else None
    res = reg(f, m, method=p.method, moving_labels=ml, fixed_labels=fl, linear_kind=p.linear, speed=p.speed)
    written = write_outputs(res, f, p.output_dir)
    metrics_path = Path(p.output_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return RegisterResult(output_dir=p.output_dir, metrics=metrics, files=[str(w) for w in written])


# ------------------------------------------------------------------------------------------------------ classify


class ClassifyParams(OpParams):
    images: str = Field(description="An image file, a folder of images, or an NPZ.")
    model: str = Field("pneumoniamnist", description="Bundled classifier name or model folder.")
    split: str = Field("val", description="NPZ split.")
    force: bool = Field(False, description="Classify images outside the model's training domain.")


class ImageClass(BaseModel):
    id: str
    predicted: str
    probabilities: dict[str, float]
    in_domain: bool


class ClassifyResult(OpResult):
    model: str
    images: list[ImageClass]


@operation(
    "classify",
    "Classify images with a bundled or trained classifier (calibrated probabilities); refuses images outside its "
    "training domain unless force.",
    reads=("images",),
)
def classify(p: ClassifyParams, ctx: Context) -> ClassifyResult:
    from medimg.classify import ClassifierModel
    from medimg.classify.data import load_images

    m = ClassifierModel(p.model)
    d = load_images(p.images, p.split, grid=m.grid)
    if m.info["channels"] == 1 and d.images.shape[1] in (3, 4):
        from medimg.transforms.intensity import select_channel_array

        d.images = select_channel_array(d.images, "grey", axis=1)
        ctx.notes.append("RGB images were converted to grey (luminance) for a one-channel model.")
    probs = m.predict_proba(d.images, force=p.force, ids=d.ids)
    return ClassifyResult(
        model=m.info.get("name", p.model),
        images=[
            ImageClass(
                id=d.ids[i],
                predicted=m.classes[int(np.argmax(row))],
                probabilities={c: float(v) for c, v in zip(m.classes, row, strict=True)},
                in_domain=bool(m.last_domain[i]["in_domain"]),
            )
            for i, row in enumerate(probs)
        ],
    )


# ------------------------------------------------------------------------------------------------------ evaluate


class EvaluateParams(OpParams):
    predictions: str = Field(description="Folder of predicted label maps.")
    references: str = Field(description="Folder of reference label maps (same case names).")
    output_dir: str = Field(description="Folder for per_case.csv, summary.json, report.html.")
    names: dict[int, str] | None = None
    failures: Literal["worst", "exclude"] = "worst"
    ignore_label: int | None = Field(
        None,
        description="Reference voxels with this value (nnU-Net's 'ignore' label of sparse annotations) are left out "
        "of every metric.",
    )


class EvaluateResult(OpResult):
    n_cases: int
    classes: dict[str, Any] = Field(description="Per class: name, n, failures and metric statistics.")


@operation(
    "evaluate",
    "Evaluate a folder of predicted label maps against references (Dice, HD95, ASSD, NSD per class; failures "
    "counted); writes CSV, JSON and an HTML report.",
    reads=("predictions", "references"),
    writes=("output_dir",),
)
def evaluate(p: EvaluateParams, ctx: Context) -> EvaluateResult:
    from medimg.evaluate import evaluate_folders

    s = evaluate_folders(
        p.predictions,
        p.references,
        p.output_dir,
        names=p.names,
        failures=p.failures,
        ignore_label=p.ignore_label,
        progress=ctx.progress,
    )
    out = Path(p.output_dir)
    return EvaluateResult(
        n_cases=int(s["n_cases"]),
        classes=s["classes"],
        files=[str(out / f) for f in ("per_case.csv", "summary.json", "report.html") if (out / f).exists()],
    )


# operations defined in their own modules register themselves on import
from medimg.ops import (  # noqa: E402
    al_op,  # noqa: F401
    dataset_op,  # noqa: F401
    deid_op,  # noqa: F401
    frd_op,  # noqa: F401
    fuse_op,  # noqa: F401
    gen_metrics_op,  # noqa: F401
    generate_op,  # noqa: F401
    measure_op,  # noqa: F401
    memorization_op,  # noqa: F401
    report_op,  # noqa: F401
)
