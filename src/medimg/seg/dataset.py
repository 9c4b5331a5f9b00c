"""Segmentation datasets: Medical Segmentation Decathlon / nnU-Net folders as they are, plain image/label folders,
and an importer for HDF5 volumes (e.g. the ACDC copy) that keeps "spacing unknown" explicit.

Layouts understood by :func:`load_dataset`:

* ``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` -- MSD (``"training": [{"image": ..., "label": ...}]``,
  ``"labels": {"0": "background", ...}``) or nnU-Net v2 (``"channel_names"``, ``"labels": {"background": 0}``,
  images named ``<case>_0000.nii.gz`` per channel);
* ``imagesTr/`` + ``labelsTr/`` (or ``images/`` + ``labels/``) without JSON: pairs matched by case id;
  ``_0000``-style channel suffixes are understood.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.io._atomic import split_ext

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
_IMAGE_EXT = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".h5", ".npz", ".png", ".tif", ".tiff")


@dataclass
class Case:
    """One training case: its id, image file(s) (one per channel) and label file."""

    case_id: str
    images: list[Path]
    label: Path | None


@dataclass
class SegDataset:
    """A segmentation dataset: cases, class names (0 = background) and channel names."""

    root: Path
    cases: list[Case]
    labels: dict[int, str]
    channels: list[str] = field(default_factory=lambda: ["image"])
    name: str = ""
    spacing_known: bool = True  # False when dataset.json says so (e.g. imported from HDF5 without spacing)

    @property
    def n_classes(self) -> int:
        """Number of classes including background."""
        return max(self.labels) + 1 if self.labels else 2

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise MedimgError(f"Case {case_id!r} is not in the dataset {self.root}.")


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and split_ext(p)[1].lower() in _IMAGE_EXT


def _labels_from_json(d: dict[str, Any]) -> dict[int, str]:
    raw = d.get("labels", {})
    out: dict[int, str] = {}
    for k, v in raw.items():
        if str(k).lstrip("-").isdigit():  # MSD: {"0": "background"}
            out[int(k)] = str(v)
        elif isinstance(v, int) or (isinstance(v, str) and v.isdigit()):  # nnU-Net v2: {"background": 0}
            out[int(v)] = str(k)
        else:
            raise MedimgError(
                f"dataset.json: cannot read label entry {k!r}: {v!r} (region-based labels are not supported)."
            )
    return out


def load_dataset(root: str | Path) -> SegDataset:
    """Read a dataset folder (see module docstring). Raises :class:`MedimgError` with advice when the layout is
    not recognised or no case has a label."""
    r = Path(root)
    if not r.is_dir():
        raise MedimgError(f"Dataset folder {str(r)!r} does not exist.")
    meta: dict[str, Any] = {}
    if (r / "dataset.json").is_file():
        try:
            meta = json.loads((r / "dataset.json").read_text())
        except json.JSONDecodeError as e:
            raise MedimgError(f"{r / 'dataset.json'} is not valid JSON: {e}") from e
    img_dir = next((r / d for d in ("imagesTr", "images") if (r / d).is_dir()), None)
    lab_dir = next((r / d for d in ("labelsTr", "labels") if (r / d).is_dir()), None)
    if img_dir is None or lab_dir is None:
        raise MedimgError(
            f"{str(r)!r} is not a dataset folder: expected imagesTr/ and labelsTr/ (or images/ and labels/), "
            "optionally with a dataset.json (Medical Segmentation Decathlon / nnU-Net layout)."
        )
    labels = _labels_from_json(meta) if meta else {}
    channels = [
        str(v)
        for _, v in sorted(
            (meta.get("channel_names") or meta.get("modality") or {"0": "image"}).items(), key=lambda kv: int(kv[0])
        )
    ]
    images: dict[str, dict[int, Path]] = {}
    if meta.get("training") and isinstance(meta["training"][0], dict):  # MSD explicit list
        for entry in meta["training"]:
            ip, lp = r / entry["image"], r / entry["label"]
            cid = split_ext(lp)[0]
            images[cid] = {0: ip}
    else:
        for p in sorted(img_dir.iterdir()):
            if not _is_image(p):
                continue
            stem = split_ext(p)[0]
            m = _CHANNEL.match(stem)
            cid, ch = (m.group("case"), int(m.group("ch"))) if m else (stem, 0)
            images.setdefault(cid, {})[ch] = p
    label_files = {split_ext(p)[0]: p for p in sorted(lab_dir.iterdir()) if _is_image(p)}
    cases = []
    for cid in sorted(images):
        chans = images[cid]
        cases.append(Case(cid, [chans[k] for k in sorted(chans)], label_files.get(cid)))
    if not cases:
        raise MedimgError(f"No images found in {img_dir}.")
    if not any(c.label for c in cases):
        raise MedimgError(f"No image in {img_dir} has a label file of the same case id in {lab_dir}.")
    if len(channels) < max(len(c.images) for c in cases):
        channels = [f"channel_{i}" for i in range(max(len(c.images) for c in cases))]
    return SegDataset(
        r, cases, labels, channels, str(meta.get("name", r.name)), spacing_known=bool(meta.get("spacing_known", True))
    )


def check_dataset(ds: SegDataset, progress: Any = None) -> list[dict[str, Any]]:
    """Verify every case: label present, image/label geometry, channel count and geometry, label values declared in
    dataset.json, finite intensities. Returns one row per case with ``problems`` (empty = fine) and ``warnings``
    (e.g. spacing unknown)."""
    import medimg
    from medimg.image import geometry_differences

    rows = []
    declared = set(ds.labels) if ds.labels else None
    n_ch = len(ds.channels)
    items = progress(ds.cases, "checking") if progress else ds.cases
    for c in items:
        problems: list[str] = []
        warnings: list[str] = []
        info: dict[str, Any] = {"case": c.case_id}
        try:
            imgs = [medimg.read(p, allow_nonfinite=True) for p in c.images]
            first = imgs[0]
            info.update(shape=list(first.shape), spacing=[round(s, 4) for s in first.spacing])
            if len(imgs) != n_ch:
                problems.append(f"{len(imgs)} channel file(s), dataset has {n_ch} channel(s)")
            for i, im in enumerate(imgs):
                if im.is_multichannel:
                    problems.append(f"channel file {i} has {im.n_channels} channels itself")
                if np.issubdtype(im.array.dtype, np.floating) and not np.all(np.isfinite(im.array)):
                    problems.append(f"channel {i} has NaN/Inf voxels")
                if i and geometry_differences(im, first):
                    problems.append(f"channel {i} geometry differs: {'; '.join(geometry_differences(im, first))}")
            if not first.spacing_known or not ds.spacing_known:
                warnings.append("spacing unknown (1.0 assumed)")
            if c.label is None:
                problems.append("no label file")
            else:
                lab = medimg.read_labels(c.label)
                d = geometry_differences(lab, first)
                if d:
                    problems.append("label geometry differs from image: " + "; ".join(d))
                values = set(int(v) for v in np.unique(lab.array))
                info["labels"] = sorted(values)
                if declared is not None and not values <= declared:
                    problems.append(
                        f"label values {sorted(values - declared)} not declared in dataset.json "
                        f"(declared {sorted(declared)})"
                    )
        except MedimgError as e:
            problems.append(f"{type(e).__name__}: {e}")
        info["problems"] = problems
        info["warnings"] = warnings
        rows.append(info)
    return rows


def import_hdf5(
    src: str | Path,
    out: str | Path,
    *,
    image_key: str = "image",
    label_key: str = "label",
    spacing: tuple[float, ...] | None = None,
    labels: dict[int, str] | None = None,
    axes: str = "zyx",
) -> SegDataset:
    """Convert a folder of HDF5 volumes (image and label in one file, e.g. the ACDC copy) into an ``imagesTr`` /
    ``labelsTr`` dataset with a ``dataset.json``.

    Without ``spacing`` the files' spacing is *unknown*: the NIfTI files get 1 mm voxels and dataset.json records
    ``"spacing_known": false`` (and ``medimg dataset check`` / the plan report it) instead of pretending.
    """
    import medimg

    s, o = Path(src), Path(out)
    files = sorted(p for p in s.iterdir() if p.suffix.lower() in (".h5", ".hdf5"))
    if not files:
        raise MedimgError(f"No .h5 files in {str(s)!r}.")
    (o / "imagesTr").mkdir(parents=True, exist_ok=True)
    (o / "labelsTr").mkdir(parents=True, exist_ok=True)
    found: set[int] = set()
    for f in files:
        img = medimg.read(f, key=image_key, spacing=spacing, axes=axes)
        lab = medimg.read_labels(f, key=label_key, spacing=spacing, axes=axes)
        if img.shape != lab.shape:
            raise MedimgError(f"{f.name}: image {img.shape} and label {lab.shape} differ.")
        found |= set(lab.labels)
        medimg.write(img, o / "imagesTr" / f"{f.stem}_0000.nii.gz")
        medimg.write(lab, o / "labelsTr" / f"{f.stem}.nii.gz")
    names = labels or {v: f"label_{v}" for v in sorted(found)}
    meta = {
        "name": o.name,
        "channel_names": {"0": "image"},
        "labels": {"background": 0, **{v: k for k, v in names.items()}},
        "numTraining": len(files),
        "file_ending": ".nii.gz",
        "spacing_known": spacing is not None,
        "source": f"imported from HDF5 files in {s}",
    }
    (o / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return load_dataset(o)
