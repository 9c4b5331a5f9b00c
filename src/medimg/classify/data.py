"""Classification datasets: MedMNIST-style NPZ arrays, folders of images with a labels CSV, and image-level labels
derived from a segmentation dataset.

Array convention: images are ``(n, c, *spatial)`` float32 in *numpy image order* — 2D ``(rows, cols)``, 3D
``(slices, rows, cols)`` — the order of MedMNIST arrays and of PNG pixels. Files read through :func:`medimg.read`
(whose arrays are ``(x, y[, z])``) are transposed into this order, so a model trained on NPZ arrays predicts the
same on the PNGs of those arrays. Labels are ``(n,)`` integer classes (multi-class, including binary) or
``(n, k)`` 0/1 (multi-label).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError


class DatasetError(MedimgError):
    """A classification dataset is malformed (bad CSV row, missing image, inconsistent shapes, ...)."""


@dataclass
class ClassificationData:
    """Images ``(n, c, *spatial)`` float32 + labels, with class names and per-image ids."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    ids: list[str] = field(default_factory=list)
    multilabel: bool = False

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.images))]
        if len(self.images) != len(self.labels) or len(self.ids) != len(self.images):
            raise DatasetError(
                f"{len(self.images)} images, {len(self.labels)} labels and {len(self.ids)} ids: they must match."
            )
        if self.images.ndim not in (4, 5):
            raise DatasetError(f"images must be (n, c, h, w) or (n, c, d, h, w); got shape {self.images.shape}.")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def dims(self) -> int:
        """2 or 3 spatial dimensions."""
        return self.images.ndim - 2

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, idx: Sequence[int] | np.ndarray) -> ClassificationData:
        """The images at ``idx`` (same classes)."""
        ix = np.asarray(idx, dtype=np.int64)
        return ClassificationData(
            self.images[ix], self.labels[ix], list(self.classes), [self.ids[i] for i in ix], self.multilabel
        )

    def class_counts(self) -> list[int]:
        """Images per class (multi-label: positives per class)."""
        if self.multilabel:
            return [int(v) for v in self.labels.sum(axis=0)]
        return [int(v) for v in np.bincount(self.labels.astype(np.int64), minlength=len(self.classes))]


def _as_nchw(images: np.ndarray, dims: int | None = None) -> np.ndarray:
    """MedMNIST arrays ``(n, h, w)``, ``(n, h, w, 3)`` or ``(n, d, h, w)`` -> ``(n, c, *spatial)`` float32."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and (dims == 2 or (dims is None and a.shape[-1] in (1, 3, 4) and a.shape[1] > 4)):
        a = np.moveaxis(a, -1, 1)
    elif a.ndim == 4:
        a = a[:, None]
    elif a.ndim != 5:
        raise DatasetError(f"Cannot interpret an image array of shape {a.shape} as (n, [c,] *spatial).")
    return np.ascontiguousarray(a, dtype=np.float32)


def _labels(raw: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
    lab = np.asarray(raw)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    f = lab.astype(np.float64)
    ok = np.isfinite(f) & (f == np.round(f)) & (f >= 0)
    if not np.all(ok):
        bad = int(np.argmax(~ok.reshape(len(ok), -1).all(axis=1)))
        raise DatasetError(f"{where}: label of row {bad} is not a non-negative integer ({lab[bad]!r}).")
    if lab.ndim == 2:
        if lab.max(initial=0) > 1:
            raise DatasetError(f"{where}: multi-label targets must be 0/1.")
        return lab.astype(np.float32), True
    return lab.astype(np.int64), False


def load_npz(
    path: str | Path, split: str = "train", classes: Sequence[str] | None = None, dims: int | None = None
) -> ClassificationData:
    """A MedMNIST-layout NPZ split: ``{split}_images`` and ``{split}_labels`` (e.g. ``train``, ``val``, ``test``).

    ``classes`` names the classes (default ``"0"``, ``"1"``, ...); ``dims`` forces 2 or 3 spatial dimensions when
    the array shape is ambiguous (a 4D array is read as 2D RGB when its last axis has 1, 3 or 4 entries)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"No such file: {p}.")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:
        raise DatasetError(f"{p} is not a readable NPZ file ({e}).") from None
    keys = list(z.files)
    ik, lk = f"{split}_images", f"{split}_labels"
    if ik not in keys:
        splits = sorted({k.rsplit("_", 1)[0] for k in keys if k.endswith("_images")})
        raise DatasetError(f"{p} has no split {split!r} (arrays: {', '.join(keys)}; splits: {', '.join(splits)}).")
    images = _as_nchw(z[ik], dims)
    if lk not in keys:
        raise DatasetError(f"{p} has {ik} but no {lk}.")
    labels, multilabel = _labels(z[lk], f"{p}:{lk}")
    n_cls = labels.shape[1] if multilabel else int(labels.max(initial=0)) + 1
    names = list(classes) if classes else [str(i) for i in range(max(n_cls, 2))]
    if not multilabel and n_cls > len(names):
        raise DatasetError(f"{p}: label {n_cls - 1} but only {len(names)} class names given.")
    if not np.all(np.isfinite(images)):
        raise DatasetError(f"{p}:{ik} contains NaN or infinite values.")
    return ClassificationData(images, labels, names, [f"{split}_{i}" for i in range(len(images))], multilabel)


def _read_image_file(path: Path, grid: dict[str, Any] | None = None) -> np.ndarray:
    """One image file -> ``(c, *spatial)`` in numpy image order (resampled onto ``grid`` when given, see
    :mod:`medimg.classify.grid`)."""
    import medimg

    img = medimg.read(path, allow_nonfinite=True)  # the classifier's own check names NaN images
    if grid is not None:
        from medimg.classify.grid import on_grid

        return on_grid(img, grid)
    a = np.asarray(img.array, dtype=np.float32)
    sd = img.ndim
    a = np.moveaxis(a, -1, 0) if a.ndim == sd + 1 else a[None]  # channels first
    if sd == 3 and a.shape[-1] == 1:  # a 2D image stored as a 1-slice volume
        a = a[..., 0]
    return np.ascontiguousarray(np.transpose(a, (0, *range(a.ndim - 1, 0, -1))))


def load_folder(
    folder: str | Path, labels_csv: str | Path, image_column: str = "image", grid: dict[str, Any] | None = None
) -> ClassificationData:
    """Images in ``folder`` listed by a CSV: either ``image,label`` (multi-class; labels are class names or
    integers) or ``image,<class 1>,<class 2>,...`` with 0/1 values (multi-label). Every image must have the same
    shape, unless ``grid`` resamples each onto one physical grid (:mod:`medimg.classify.grid`). Errors name the CSV
    row (1-based, header is row 1)."""
    folder, csv_path = Path(folder), Path(labels_csv)
    if not csv_path.exists():
        raise DatasetError(f"No such labels CSV: {csv_path}.")
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DatasetError(f"{csv_path} has no data rows (a header like 'image,label' and one row per image).")
    header = [h.strip() for h in rows[0]]
    if image_column not in header:
        raise DatasetError(f"{csv_path}: no {image_column!r} column in the header {header}.")
    ic = header.index(image_column)
    other = [i for i in range(len(header)) if i != ic]
    multilabel = not (len(other) == 1 and header[other[0]] == "label")
    entries: list[tuple[int, str, list[str]]] = []
    seen: dict[str, int] = {}
    for r, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DatasetError(f"{csv_path} row {r}: {len(row)} fields, the header has {len(header)}.")
        name = row[ic].strip()
        if not name:
            raise DatasetError(f"{csv_path} row {r}: empty image name.")
        if name in seen:
            raise DatasetError(f"{csv_path} row {r}: image {name!r} is listed again (first on row {seen[name]}).")
        seen[name] = r
        vals = [row[i].strip() for i in other]
        if any(v == "" for v in vals):
            raise DatasetError(f"{csv_path} row {r}: missing label for {name!r}.")
        entries.append((r, name, vals))
    if multilabel:
        classes = [header[i] for i in other]
        labels = np.zeros((len(entries), len(classes)), np.float32)
        for j, (r, name, vals) in enumerate(entries):
            for k, v in enumerate(vals):
                if v not in ("0", "1"):
                    raise DatasetError(
                        f"{csv_path} row {r}: multi-label column {classes[k]!r} must be 0 or 1, got {v!r} ({name})."
                    )
                labels[j, k] = float(v)
    else:
        raw = [e[2][0] for e in entries]
        if all(v.lstrip("-").isdigit() for v in raw):
            ints = [int(v) for v in raw]
            for (r, name, _), iv in zip(entries, ints, strict=True):
                if iv < 0:
                    raise DatasetError(f"{csv_path} row {r}: negative label {iv} for {name!r}.")
            classes = [str(i) for i in range(max(max(ints) + 1, 2))]
            labels = np.asarray(ints, np.int64)
        else:
            classes = sorted(set(raw))
            labels = np.asarray([classes.index(v) for v in raw], np.int64)
    arrays: list[np.ndarray] = []
    for r, name, _ in entries:
        p = folder / name
        if not p.exists():
            raise DatasetError(f"{csv_path} row {r}: image {name!r} not found in {folder}.")
        try:
            a = _read_image_file(p, grid)
        except MedimgError as e:
            raise DatasetError(f"{csv_path} row {r}: cannot read {name!r}: {e}") from None
        if arrays and a.shape != arrays[0].shape:
            raise DatasetError(
                f"{csv_path} row {r}: {name!r} has shape {a.shape}, the first image {arrays[0].shape}; resample "
                "the images to one size first (medimg resample)."
            )
        if not np.all(np.isfinite(a)):
            raise DatasetError(f"{csv_path} row {r}: {name!r} contains NaN or infinite values.")
        arrays.append(a)
    return ClassificationData(np.stack(arrays), labels, classes, [e[1] for e in entries], multilabel)


def from_segmentation(
    dataset: Any, size: Sequence[int], labels: Sequence[int] | None = None, progress: Any = None
) -> ClassificationData:
    """Image-level multi-label targets "structure present" from a segmentation dataset (:mod:`medimg.seg`).

    Each case's first channel is resized (linear) to ``size`` (numpy order: ``(rows, cols)`` or
    ``(slices, rows, cols)``); the target of class ``k`` is 1 when label ``k`` has at least one voxel."""
    import torch

    import medimg

    cases = [c for c in dataset.cases if c.label is not None]
    if not cases:
        raise DatasetError("The segmentation dataset has no labelled cases.")
    wanted = list(labels) if labels else sorted(int(k) for k in dataset.labels if int(k) != 0)
    imgs, targets, ids = [], [], []
    for c in progress(cases, "reading cases") if progress else cases:
        img = medimg.read(c.images[0])
        lab = medimg.read_labels(c.label)
        a = np.asarray(img.array, np.float32)
        a = np.transpose(a, tuple(range(a.ndim))[::-1])
        if a.ndim != len(size):
            raise DatasetError(f"Case {c.case_id} has {a.ndim} dimensions; size {tuple(size)} has {len(size)}.")
        t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
        mode = "bilinear" if a.ndim == 2 else "trilinear"
        imgs.append(torch.nn.functional.interpolate(t, size=tuple(size), mode=mode, align_corners=False)[0].numpy())
        present = np.isin(wanted, np.unique(lab.array))
        targets.append(present.astype(np.float32))
        ids.append(c.case_id)
    names = [str(dataset.labels.get(k, dataset.labels.get(str(k), k))) for k in wanted]
    return ClassificationData(np.stack(imgs), np.stack(targets), names, ids, multilabel=True)


def load(
    path: str | Path, split: str = "train", labels_csv: str | Path | None = None, grid: dict[str, Any] | None = None
) -> ClassificationData:
    """An NPZ file (``split`` selects the arrays) or an image folder with ``labels_csv`` (its files resampled onto
    ``grid`` when given; NPZ arrays must then already have the grid's shape)."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        d = load_npz(p, split)
        if grid is not None:
            from medimg.classify.grid import numpy_shape

            if tuple(d.images.shape[2:]) != numpy_shape(grid):
                raise DatasetError(
                    f"{p}: arrays of shape {tuple(d.images.shape[2:])} cannot be on a grid of {numpy_shape(grid)} "
                    "voxels (numpy order); give a folder of image files (NIfTI, NRRD ...) to resample them."
                )
        return d
    if p.is_dir():
        csv_path = Path(labels_csv) if labels_csv else p / "labels.csv"
        return load_folder(p, csv_path, grid=grid)
    raise DatasetError(f"{p}: give an NPZ file (MedMNIST layout) or a folder of images with a labels CSV.")


def image_hashes(images: np.ndarray) -> list[str]:
    """A content hash per image (exact duplicates share it)."""
    return [hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in images]


def find_duplicates(train: ClassificationData, other: ClassificationData | None = None) -> dict[str, Any]:
    """Exact duplicate images inside ``train`` (and with conflicting labels), and images of ``other`` (a
    validation/test split) that also appear in ``train`` — leakage that inflates validation scores."""
    h = image_hashes(train.images)
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(h):
        groups.setdefault(v, []).append(i)
    dup = [g for g in groups.values() if len(g) > 1]
    conflicts = [g for g in dup if len({train.labels[i].tobytes() for i in g}) > 1]
    out: dict[str, Any] = {
        "duplicate_groups": len(dup),
        "duplicate_images": sum(len(g) - 1 for g in dup),
        "conflicting_label_groups": [[train.ids[i] for i in g] for g in conflicts],
        "redundant_train_indices": sorted(i for g in dup for i in g[1:]),
    }
    if other is not None:
        ho = set(image_hashes(other.images))
        out["train_indices_in_other"] = [i for i, v in enumerate(h) if v in ho]
    return out


def drop_duplicates(
    train: ClassificationData, held_out: Sequence[ClassificationData] = ()
) -> tuple[ClassificationData, dict[str, Any]]:
    """``train`` without repeated images (the first copy is kept) and without images that also appear in any
    ``held_out`` split (which would leak into validation/test scores), plus a report of what was dropped.
    Duplicates whose labels disagree are all dropped (their label is unknowable)."""
    rep = find_duplicates(train)
    drop = set(rep["redundant_train_indices"])
    for g in rep["conflicting_label_groups"]:
        drop |= {train.ids.index(i) for i in g}
    h = image_hashes(train.images)
    leaked: set[int] = set()
    for other in held_out:
        ho = set(image_hashes(other.images))
        leaked |= {i for i, v in enumerate(h) if v in ho}
    drop |= leaked
    keep = [i for i in range(len(train)) if i not in drop]
    report = {
        "n_before": len(train),
        "n_after": len(keep),
        "duplicates_dropped": len(rep["redundant_train_indices"]),
        "conflicting_label_groups": len(rep["conflicting_label_groups"]),
        "leaked_into_held_out_dropped": len(leaked),
    }
    return train.subset(keep), report


def npz_splits(path: str | Path) -> list[str]:
    """The split names of a MedMNIST-layout NPZ (``train``, ``val``, ``test`` ...)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return sorted({k.rsplit("_", 1)[0] for k in z.files if k.endswith("_images")})


def load_images(
    path: str | Path, split: str = "val", labels_csv: str | Path | None = None, grid: dict[str, Any] | None = None
) -> ClassificationData:
    """Images to predict: an NPZ split (labels optional), a folder (with a labels CSV if there is one, else every
    image file in it), or one image file. Unknown labels are -1. Image files are resampled onto ``grid`` when the
    model has one (NPZ arrays are taken as already on it)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"No such file or folder: {p}.")
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            if f"{split}_labels" in keys:
                return load_npz(p, split)
            key = f"{split}_images" if f"{split}_images" in keys else ("images" if "images" in keys else None)
            if key is None:
                raise DatasetError(f"{p} has no {split}_images or images array (arrays: {', '.join(keys)}).")
            imgs = _as_nchw(z[key])
        return ClassificationData(
            imgs, -np.ones(len(imgs), np.int64), ["0", "1"], [f"{split}_{i}" for i in range(len(imgs))]
        )
    if p.is_dir():
        csv_path = Path(labels_csv) if labels_csv else p / "labels.csv"
        if csv_path.exists():
            return load_folder(p, csv_path, grid=grid)
        files = [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".") and f.suffix != ".csv"]
        if not files:
            raise DatasetError(f"{p} contains no image files.")
        arrays = [_read_image_file(f, grid) for f in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DatasetError(
                f"Images in {p} have different shapes {sorted(shapes)}; the model resizes a batch of "
                "one size - predict them one by one or resample them first."
            )
        return ClassificationData(
            np.stack(arrays), -np.ones(len(arrays), np.int64), ["0", "1"], [f.name for f in files]
        )
    a = _read_image_file(p, grid)
    return ClassificationData(a[None], -np.ones(1, np.int64), ["0", "1"], [p.name])
