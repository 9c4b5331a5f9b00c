"""Segmentation datasets: Medical Segmentation Decathlon / nnU-Net folders as they are, plain image/label folders,
and an importer for HDF5 volumes (e.g. the ACDC copy) that keeps "spacing unknown" explicit.

Layouts understood by :func:`load_dataset`:

* ``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` -- MSD (``"training": [{"image": ..., "label": ...}]``,
  ``"labels": {"0": "background", ...}``) or nnU-Net v2 (``"channel_names"``, ``"labels": {"background": 0}``,
  images named ``<case>_0000.nii.gz`` per channel);
* ``imagesTr/`` + ``labelsTr/`` (or ``images/`` + ``labels/``) without JSON: pairs matched by case id;
  ``_0000``-style channel suffixes are understood.

An nnU-Net v2 ``"ignore"`` label (``"labels": {..., "ignore": 3}``, the highest value) marks unannotated voxels:
it is not a class (:attr:`SegDataset.ignore_label`), training gives those voxels no loss and validation no metric.
:func:`export_nnunet` writes any dataset medimg reads as an nnU-Net v2 raw dataset folder.
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
    #: Label value of unannotated voxels (nnU-Net v2 ``"ignore"``): not a class, no loss and no metric there.
    ignore_label: int | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes including background (the ignore label is not a class)."""
        return max(self.labels) + 1 if self.labels else 2

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise MedimgError(f"Case {case_id!r} is not in the dataset {self.root}.")


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and split_ext(p)[1].lower() in _IMAGE_EXT


def _labels_from_json(d: dict[str, Any], where: Path) -> tuple[dict[int, str], int | None]:
    """Class names by value and the ignore label (an entry named ``"ignore"``, nnU-Net v2) of a dataset.json."""
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
    ignore = [k for k, v in out.items() if v.strip().lower() == "ignore"]
    if not ignore:
        return out, None
    if len(ignore) > 1:
        raise MedimgError(f"{where}: several labels are named 'ignore' ({sorted(ignore)}); keep one.")
    value = ignore[0]
    del out[value]
    if value <= 0 or any(value <= k for k in out):
        raise MedimgError(
            f"{where}: the 'ignore' label ({value}) must have the highest label value (nnU-Net v2 convention), "
            f"above every class ({sorted(out)}); renumber it, e.g. to {max(out, default=0) + 1}."
        )
    return out, value


def read_dataset_labels(path: str | Path) -> tuple[dict[int, str], int | None]:
    """Class names by value (0 = background) and the ignore label (None if there is none) declared by a
    dataset.json file (MSD or nnU-Net v2 ``labels``), with the same checks as :func:`load_dataset`."""
    p = Path(path)
    if not p.is_file():
        raise MedimgError(f"dataset.json {str(p)!r} does not exist.")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise MedimgError(f"{p} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or not meta.get("labels"):
        raise MedimgError(f"{p} has no 'labels' entry, e.g. background 0, tumour 1, ignore 2.")
    return _labels_from_json(meta, p)


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
    labels, ignore = _labels_from_json(meta, r / "dataset.json") if meta else ({}, None)
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
        r,
        cases,
        labels,
        channels,
        str(meta.get("name", r.name)),
        spacing_known=bool(meta.get("spacing_known", True)),
        ignore_label=ignore,
    )


def check_dataset(ds: SegDataset, progress: Any = None) -> list[dict[str, Any]]:
    """Verify every case: label present, image/label geometry, channel count and geometry, label values declared in
    dataset.json, finite intensities. Returns one row per case with ``problems`` (empty = fine) and ``warnings``
    (e.g. spacing unknown)."""
    import medimg
    from medimg.image import geometry_differences

    rows = []
    declared: set[int] | None = None
    if ds.labels:
        declared = set(ds.labels) | ({ds.ignore_label} if ds.ignore_label is not None else set())
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
                        f"(declared {sorted(declared)}; a value marking unannotated voxels is declared as "
                        f"'ignore', the highest label value)"
                    )
        except MedimgError as e:
            problems.append(f"{type(e).__name__}: {e}")
        info["problems"] = problems
        info["warnings"] = warnings
        rows.append(info)
    return rows


def size_mismatch_error(ds: SegDataset, mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> MedimgError:
    """The error for cases whose image and label sizes differ: names them (up to 5) and points to the checker."""
    shown = ", ".join(
        f"{cid} (image {'x'.join(map(str, i))}, label {'x'.join(map(str, lab))})" for cid, i, lab in mismatches[:5]
    )
    more = f" and {len(mismatches) - 5} more" if len(mismatches) > 5 else ""
    return MedimgError(
        f"Image and label sizes differ in {len(mismatches)} case(s): {shown}{more}. Fix or remove these cases; "
        f"`medimg dataset check {ds.root}` lists every problem of the dataset."
    )


def _nnunet_labels(ds: SegDataset, found: set[int]) -> tuple[dict[str, int], dict[int, int]]:
    """nnU-Net v2 ``labels`` (name -> consecutive value, ``ignore`` last) and the old -> new value mapping."""
    classes = sorted(set(ds.labels) | {0}) if ds.labels else sorted(found | {0})
    mapping = {old: new for new, old in enumerate(classes)}
    names: dict[str, int] = {}
    for old, new in mapping.items():
        name = "background" if old == 0 else (ds.labels.get(old) or f"label_{old}")
        while name in names or (name in ("background", "ignore") and old != 0):
            name = f"{name}_{old}"
        names[name] = new
    if ds.ignore_label is not None:
        mapping[ds.ignore_label] = len(classes)
        names["ignore"] = len(classes)
    return names, mapping


def export_nnunet(
    ds: SegDataset,
    out: str | Path,
    *,
    progress: Any = None,
) -> dict[str, Any]:
    """Write ``ds`` as an nnU-Net v2 raw dataset folder ``out`` (e.g. ``nnUNet_raw/Dataset501_Hippocampus``).

    Layout: ``imagesTr/<case>_0000.nii.gz`` (one file per channel; multi-channel files such as MSD's 4D images are
    split), ``labelsTr/<case>.nii.gz`` (integer, on its image's exact grid), unlabelled cases in ``imagesTs/``, and a
    ``dataset.json`` with ``channel_names``, ``labels`` (``{"background": 0, ...}``, consecutive values; an ignore
    label becomes ``"ignore"``, the highest value), ``numTraining`` and ``file_ending`` -- what nnU-Net's
    ``verify_dataset_integrity`` checks. Label values that are not consecutive are renumbered (the mapping is kept
    in dataset.json under ``medimg_label_mapping``).

    Every case is checked first (:func:`check_dataset`); a dataset with problems is refused with the cases named.
    The folder is written under a temporary name and renamed at the end: a failure leaves nothing behind.
    Returns the written dataset.json.
    """
    import shutil

    import medimg
    from medimg.image import Image, LabelMap

    o = Path(out)
    if o.exists() and (not o.is_dir() or any(o.iterdir())):
        raise MedimgError(f"{str(o)!r} already exists and is not empty; choose a new folder for the nnU-Net dataset.")
    if not o.parent.is_dir():
        raise MedimgError(f"Folder {str(o.parent)!r} does not exist; create it first (mkdir -p {o.parent}).")
    rows = check_dataset(ds, progress)
    n_ch = len(ds.channels)
    # one multi-channel file per case (MSD's 4D images) is split into channel files below, so it is no problem here
    split_ok = {f"1 channel file(s), dataset has {n_ch} channel(s)", f"channel file 0 has {n_ch} channels itself"}
    bad = [r for r in rows if set(r["problems"]) - split_ok - {"no label file"}]
    if bad:
        shown = "; ".join(f"{r['case']}: {', '.join(r['problems'])}" for r in bad[:3])
        raise MedimgError(
            f"{len(bad)} case(s) of {ds.root} have problems nnU-Net would reject ({shown}"
            f"{'; ...' if len(bad) > 3 else ''}). Fix them first: `medimg dataset check {ds.root}` lists them all."
        )
    found = {v for r in rows for v in r.get("labels", [])} - (
        {ds.ignore_label} if ds.ignore_label is not None else set()
    )
    names, mapping = _nnunet_labels(ds, found)
    tmp = o.with_name(f".{o.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir(parents=True)
        n_train = 0
        items = progress(ds.cases, "exporting") if progress else ds.cases
        for c in items:
            imgs = [medimg.read(p) for p in c.images]
            if len(imgs) == 1 and imgs[0].is_multichannel:
                first = imgs[0]
                imgs = [first.with_array(first.array[..., i]) for i in range(first.n_channels)]
            if len(imgs) != n_ch:
                raise MedimgError(f"Case {c.case_id}: {len(imgs)} channel(s), the dataset has {n_ch}.")
            folder = tmp / ("imagesTr" if c.label is not None else "imagesTs")
            folder.mkdir(exist_ok=True)
            for i, (img, src) in enumerate(zip(imgs, c.images * n_ch if len(c.images) == 1 else c.images, strict=True)):
                dst = folder / f"{c.case_id}_{i:04d}.nii.gz"
                if len(c.images) == n_ch and str(src).lower().endswith(".nii.gz"):
                    shutil.copyfile(src, dst)  # bit-exact
                else:
                    medimg.write(Image(img.array, img.spacing, img.origin, img.direction), dst)
            if c.label is None:
                continue
            lab = medimg.read_labels(c.label).array
            lut_max = max(int(lab.max(initial=0)), max(mapping)) + 1
            lut = np.arange(lut_max, dtype=np.int64)
            for old, new in mapping.items():
                lut[old] = new
            arr = lut[lab.astype(np.int64)]
            arr = arr.astype(np.uint8 if arr.max(initial=0) < 256 else np.uint16)
            ref = imgs[0]  # the label on its image's exact grid (the check allowed only tiny differences)
            medimg.write(
                LabelMap(arr, ref.spacing, ref.origin, ref.direction), tmp / "labelsTr" / f"{c.case_id}.nii.gz"
            )
            n_train += 1
        meta: dict[str, Any] = {
            "name": ds.name,
            "channel_names": {str(i): ch for i, ch in enumerate(ds.channels)},
            "labels": names,
            "numTraining": n_train,
            "file_ending": ".nii.gz",
            "description": f"exported by medimg {medimg.__version__} from {ds.root}",
        }
        if any(k != v for k, v in mapping.items()):
            meta["medimg_label_mapping"] = {str(k): v for k, v in sorted(mapping.items())}
        if not ds.spacing_known:
            meta["spacing_known"] = False
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        if o.exists():
            o.rmdir()
        tmp.rename(o)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


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
