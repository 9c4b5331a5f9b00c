"""The ``dataset_import`` operation: an image collection (paired files, NPZ, HDF5) as a segmentation dataset
(engine: :mod:`medimg.seg.importer`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medimg.ops.base import Context, OpParams, OpResult, operation


class DatasetImportParams(OpParams):
    source: str = Field(
        description="Folder with images/ and masks/ (or labels/, annotations/); one folder with label_suffix; an "
        ".npz file; or a folder of .h5 files."
    )
    output: str = Field(description="New dataset folder (must not exist or be empty).")
    spacing: list[float] | None = Field(
        None, min_length=1, max_length=3, description="Voxel spacing in mm for every image (one value or per axis)."
    )
    spacing_csv: str | None = Field(None, description="CSV with each image's spacing (file name + spacing column).")
    spacing_column: str | None = Field(None, description="The spacing CSV's column with the spacing in mm.")
    label_suffix: str | None = Field(
        None,
        description="Masks are named like their image plus this, e.g. _mask; several raters' suffixes "
        "comma-separated (_1stHO,_2ndHO) together with fuse.",
    )
    image_key: str | None = Field(None, description="NPZ/HDF5: the image array's name.")
    label_key: str | None = Field(None, description="NPZ/HDF5: the label array's name.")
    axes: str = Field("zyx", description="NPZ/HDF5 axis order: zyx (numpy image order) or xyz.")
    labels: dict[int, str] | None = Field(None, description="Label names, e.g. {1: 'head'}.")
    fill_holes: bool = Field(False, description="Fill drawn outlines into regions.")
    grey: bool = Field(False, description="Convert RGB images to one luminance channel.")
    fuse: Literal["majority", "staple", "multi-staple"] | None = Field(
        None, description="Several raters' masks per image: train on their fusion (raters.json: their quality)."
    )


class DatasetImportResult(OpResult):
    output: str
    n_cases: int
    channels: list[str]
    labels: dict[str, int] = Field(description="dataset.json's labels: name -> value.")
    spacing_known: bool


@operation(
    "dataset_import",
    "Import an image collection (image/mask file pairs, NPZ or HDF5) as a segmentation dataset (imagesTr/, "
    "labelsTr/, dataset.json) that `train` reads; spacing from an option or a per-image CSV.",
    reads=("source", "spacing_csv"),
    writes=("output",),
)
def dataset_import(p: DatasetImportParams, ctx: Context) -> DatasetImportResult:
    from medimg.seg.importer import import_collection

    meta = import_collection(
        p.source,
        p.output,
        spacing=p.spacing,
        spacing_csv=p.spacing_csv,
        spacing_column=p.spacing_column,
        label_suffix=p.label_suffix,
        image_key=p.image_key,
        label_key=p.label_key,
        axes=p.axes,
        labels=p.labels,
        fill_holes=p.fill_holes,
        grey=p.grey,
        fuse=p.fuse,
        progress=ctx.progress,
    )
    return DatasetImportResult(
        output=p.output,
        n_cases=int(meta["numTraining"]),
        channels=list(meta["channel_names"].values()),
        labels={str(k): int(v) for k, v in meta["labels"].items()},
        spacing_known=bool(meta["spacing_known"]),
    )
