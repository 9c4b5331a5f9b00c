"""Running a segmentation model on image files: input loading (channel choice, NaN filling, spacing), nnU-Net case
grouping and naming, output formats, and writing the label map with its provenance. Shared by the ``segment``
operation and the ``medimg predict`` / ``medimg segment`` commands."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medimg.errors import MedimgError


def load_input(
    path: Path,
    channel: str | None = None,
    fill_nonfinite: float | None = None,
    allow_irregular: bool = False,
    input_spacing_mm: Sequence[float] | None = None,
) -> Any:
    """Read an image for a model: optional channel selection (index or 'grey'), NaN/Inf filling, and the voxel
    spacing (mm) of files that do not store one."""
    import medimg
    from medimg.transforms import fill_nonfinite as fill
    from medimg.transforms import select_channel

    kw: dict[str, Any] = {}
    if input_spacing_mm is not None:
        kw["spacing"] = tuple(input_spacing_mm)
    img = medimg.read(path, allow_irregular=allow_irregular, allow_nonfinite=fill_nonfinite is not None, **kw)
    if fill_nonfinite is not None:
        img = fill(img, fill_nonfinite)
    if channel is not None:
        img = select_channel(img, channel)
    return img


_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
#: Output extension for each input extension when predicting a folder (labels never go to a lossy format).
_SAME_FORMAT = {
    ".jpg": ".png",
    ".jpeg": ".png",
    ".tif": ".tif",
    ".tiff": ".tiff",
    ".bmp": ".png",
    ".h5": ".nii.gz",
    ".hdf5": ".nii.gz",
    ".npz": ".nii.gz",
    ".npy": ".nii.gz",
    ".dcm": ".nii.gz",
    "": ".nii.gz",
    ".nrrd": ".nrrd",
    ".seg.nrrd": ".seg.nrrd",
}


def group_cases(files: list[Path], n_channels: int) -> dict[str, list[Path]]:
    """Group a folder's image files into cases: nnU-Net's ``CASE_0000.ext, CASE_0001.ext ...`` are the channels of
    ``CASE``; other files are one case each (named by their stem; for a multi-channel model such a file must hold
    every channel, e.g. an RGB photograph for a model trained on R, G, B)."""
    from medimg.io._atomic import split_ext

    cases: dict[str, list[Path]] = {}
    plain: set[str] = set()  # cases given as one file without a channel suffix: it must hold every channel
    for f in files:
        stem = split_ext(f)[0]
        m = _CHANNEL_SUFFIX.match(stem)
        cases.setdefault(m.group("case") if m else stem, []).append(f)
        if not m:
            plain.add(stem)
    for case, fs in cases.items():
        if len(fs) != n_channels and not (len(fs) == 1 and case in plain):
            raise MedimgError(
                f"Case {case!r} has {len(fs)} file(s) ({', '.join(f.name for f in fs)}); the model takes "
                f"{n_channels} channel(s), given as {case}_0000, {case}_0001, ... in nnU-Net naming."
            )
    return {c: sorted(fs) for c, fs in cases.items()}


def output_ext(src: Path, ext: str | None) -> str:
    """The extension of a folder prediction: ``--ext`` if given, else the input's format (a label-safe one)."""
    from medimg.io._atomic import split_ext

    if ext:
        return ext if ext.startswith(".") else "." + ext
    in_ext = "" if src.is_dir() else split_ext(src)[1].lower()
    return _SAME_FORMAT.get(in_ext, in_ext or ".nii.gz")


def predict_case(
    pred: Any,
    srcs: list[Path],
    dst: Path,
    *,
    tta: bool,
    reference: Path | None,
    probabilities: bool,
    force: bool,
    read_kw: dict[str, Any],
) -> Any:
    """Segment one case (its channel files ``srcs``) and write ``dst`` with the provenance record (inputs with
    SHA-256, reading parameters, the domain check). Returns the label map."""
    import medimg
    from medimg.io._atomic import split_ext

    images = [load_input(s, **read_kw) for s in srcs]
    arg = images if len(images) > 1 else images[0]
    if probabilities:
        lab, prob = pred.predict_with_probabilities(arg, tta=tta, force=force)
        stem, ext = split_ext(dst)
        medimg.write(prob, dst.with_name(stem + "_probabilities" + (ext if ext != ".seg.nrrd" else ".nrrd")))
    else:
        lab = pred(arg, tta=tta, force=force)
    lab.meta["provenance"]["inputs"] = [input_record(s) for s in srcs]
    lab.meta["provenance"]["parameters"] = {k: v for k, v in read_kw.items() if v not in (None, False)}
    medimg.write(
        lab,
        dst,
        reference=reference if reference else (srcs[0] if dst.suffix == ".dcm" else None),
        algorithm="medimg " + pred.info.get("name", "model"),
    )
    return lab


def input_record(path: Path) -> dict[str, Any]:
    """An input's path and, for a file, its SHA-256 (provenance)."""
    from medimg.ops.base import sha256_of

    rec: dict[str, Any] = {"path": str(path)}
    digest = sha256_of(path)
    if digest is not None:
        rec["sha256"] = digest
    return rec
