"""The ``fuse`` operation: fuse several raters' label maps (majority vote, STAPLE, multi-label STAPLE) and report
each rater's sensitivity / specificity (engine: :mod:`medimg.fusion`).

Everything is checked before anything is written: at least two inputs on one voxel grid (otherwise a
:class:`~medimg.errors.GeometryError` saying how to resample), writable and distinct outputs, a probability map
only with ``staple`` and only in a format that holds floats. The fused map keeps the raters' exact geometry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from medimg.errors import MedimgError
from medimg.ops.base import Context, OpParams, OpResult, PathNotAllowedError, operation

#: Extensions that cannot hold a float probability map without loss.
_LOSSY_FOR_FLOATS = (".png", ".jpg", ".jpeg", ".bmp")


class FuseParams(OpParams):
    inputs: list[str] = Field(
        min_length=2, description="Two or more raters' label maps (masks) of one image, all on one voxel grid."
    )
    output: str = Field(description="Fused label map to write (format from the extension; e.g. .nii.gz, .png).")
    method: Literal["majority", "staple", "multi-staple"] = Field(
        "staple",
        description="majority (plurality vote, ties to the smallest label value), staple (binary STAPLE per label) "
        "or multi-staple (SimpleITK MultiLabelSTAPLE).",
    )
    probability: str | None = Field(
        None,
        description="With method staple: also write STAPLE's probability map W (float; .nii.gz/.nrrd/.mha/.tif; one "
        "channel per label when there are several).",
    )
    raters_json: str | None = Field(None, description="Also write the result (per-rater quality) as JSON here.")


class LabelQuality(BaseModel):
    sensitivity: float = Field(description="Fraction of the label's true voxels the rater marked (0..1).")
    specificity: float = Field(description="Fraction of the voxels outside the label the rater left out (0..1).")


class RaterRecord(BaseModel):
    name: str = Field(description="The rater's file name.")
    path: str
    labels: dict[str, LabelQuality] = Field(description="Per label value: sensitivity and specificity.")


class FuseResult(OpResult):
    output: str
    method: str
    labels: list[int] = Field(description="Label values fused (every non-zero value of any rater).")
    fused_voxels: dict[str, int] = Field(description="Voxels of each label in the fused map.")
    raters: list[RaterRecord]
    quality_against: str = Field(
        description="What the rater quality is measured against: STAPLE's estimate, or the fused majority vote."
    )
    iterations: dict[str, int] = Field(default_factory=dict, description="STAPLE's EM iterations per label.")
    tie_voxels: int = Field(0, description="majority: voxels whose vote was tied (given the smallest value).")
    undecided_voxels: int = Field(0, description="multi-staple: undecided voxels (given the majority vote).")
    shape: list[int]
    spacing_mm: list[float]


def _check_outputs(p: FuseParams) -> list[Path]:
    from medimg.io._atomic import check_output_path

    outs = [Path(x) for x in (p.output, p.probability, p.raters_json) if x]
    if len({o.resolve() for o in outs}) != len(outs):
        raise PathNotAllowedError("The fused map, the probability map and the JSON need different output paths.")
    for o in outs:
        check_output_path(o)
    if p.probability:
        if p.method != "staple":
            raise MedimgError(
                f"The probability map comes from STAPLE: use --method staple with --probability (got {p.method})."
            )
        if p.probability.lower().endswith(_LOSSY_FOR_FLOATS):
            raise MedimgError(
                f"{Path(p.probability).name!r}: a probability map is float; write it as .nii.gz, .nrrd, .mha or .tif."
            )
    return outs


@operation(
    "fuse",
    "Fuse several raters' label maps of one image (majority vote, STAPLE or multi-label STAPLE) into one label map "
    "on the same grid, with each rater's sensitivity and specificity per label.",
    reads=("inputs",),
    writes=("output", "probability", "raters_json"),
)
def fuse(p: FuseParams, ctx: Context) -> FuseResult:
    import medimg
    from medimg.fusion import fuse as fuse_maps
    from medimg.io._atomic import atomic_path

    _check_outputs(p)
    maps = [medimg.read_labels(x) for x in ctx.iterate(p.inputs, "reading")]
    res = fuse_maps(maps, p.method, names=p.inputs)
    js = res.to_json()
    result = FuseResult(
        output=p.output,
        method=p.method,
        labels=res.labels,
        fused_voxels=js["fused_voxels"],
        raters=[
            RaterRecord(name=Path(path).name, path=path, labels=r["labels"])
            for path, r in zip(p.inputs, js["raters"], strict=True)
        ],
        quality_against=js["quality_against"],
        iterations=js["iterations"],
        tie_voxels=res.tie_voxels,
        undecided_voxels=res.undecided_voxels,
        shape=js["shape"],
        spacing_mm=js["spacing_mm"],
    )
    medimg.write(res.fused, p.output)
    files = [p.output]
    if p.probability and res.probability is not None:
        medimg.write(res.probability, p.probability)
        files.append(p.probability)
    if p.raters_json:
        files.append(p.raters_json)
        result.files = files
        with atomic_path(p.raters_json) as tmp:
            tmp.write_text(json.dumps(result.model_dump(mode="json", exclude={"provenance"}), indent=1) + "\n")
    result.files = files
    return result
