"""``medimg dataset import``: turn an image collection into a segmentation dataset medimg (and nnU-Net) trains on.

Sources:

* **paired files** — a folder with an image folder (``images/``, ``imgs/``, ``image/``) and a mask folder
  (``labels/``, ``masks/``, ``annotations/``, ``mask/``, ``label/``), or one flat folder where the masks are told
  apart by a suffix (``--label-suffix _1stHO``: ``Image_01L.jpg`` + ``Image_01L_1stHO.png``). A mask belongs to the
  image with the same name (without extension), or, without ``--label-suffix``, to the image whose name it extends
  (``002_HC.png`` + ``002_HC_Annotation.png``). Any format medimg reads (PNG, JPEG, TIFF, NIfTI, NRRD, MHA ...).
* **NPZ** — one file with an image array ``(n, *spatial[, c])`` and a label array ``(n, *spatial)`` (keys found
  among ``images/image/imgs/x`` and ``labels/label/masks/mask/segs/y``, or given with ``--image-key/--label-key``).
* **HDF5** — a folder of ``.h5`` files, each with an image and a label dataset (``--image-key``, ``--label-key``,
  ``--axes``), like the ACDC copy (needs ``h5py``).

Spacing: ``--spacing`` (mm, one value per axis, e.g. ``0.1,0.1``) for every image, or ``--spacing-csv FILE`` with
one row per image (a column with the file name or id, and a column whose header says "spacing" or "pixel size"
(``--spacing-column``), one value for all axes or ``x;y[;z]``). Files that carry their own spacing (NIfTI, NRRD,
DICOM) keep it unless one of these is given. Without any, the images' spacing is *unknown*: they are written with
1 mm and dataset.json says ``"spacing_known": false`` (training then works in voxels and says so) rather than
pretending.

Masks: 8-bit masks stored as 0/255 become 0/1; RGB(A) masks are reduced to their maximum over channels; float masks
must hold whole numbers; ``--fill-holes`` fills drawn outlines (e.g. HC18's head ellipses) into regions. Images: RGB
images become three channels (``_0000`` R, ``_0001`` G, ``_0002`` B, nnU-Net's convention); ``--grey`` converts them
to one luminance channel instead.

Several annotators: ``--label-suffix _1stHO,_2ndHO --fuse staple|majority|multi-staple`` reads every rater's mask
of each image and trains on their fusion (:func:`medimg.fusion.fuse`, the same code as ``medimg fuse``); each
rater's sensitivity/specificity per case and on average go to ``raters.json`` in the dataset, and dataset.json
records the fusion (``"label_fusion"``). Every image must have a mask from every rater.

Output: ``imagesTr/<id>_0000.nii.gz``, ``labelsTr/<id>.nii.gz`` (each label on its image's exact grid) and
``dataset.json``, written into a hidden folder renamed to OUT when complete (nothing half-written is left; OUT must
not exist or be empty).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap
from medimg.io._atomic import split_ext

IMAGE_DIRS = ("images", "imgs", "image", "imagesTr")
LABEL_DIRS = ("labels", "masks", "annotations", "mask", "label", "labelsTr", "segmentations")
IMAGE_KEYS = ("images", "image", "imgs", "x", "X")
LABEL_KEYS = ("labels", "label", "masks", "mask", "segs", "seg", "y", "Y")


class DatasetImportError(MedimgError):
    """A collection that cannot be imported (no pairs, ambiguous masks, bad spacing table ...)."""


def _files(d: Path) -> list[Path]:
    return [p for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".") and not _side_file(p)]


def _side_file(p: Path) -> bool:
    return p.suffix.lower() in (".csv", ".json", ".txt", ".md", ".xlsx", ".pdf")


def pair_files(src: Path, label_suffix: str | None = None) -> list[tuple[str, Path, Path]]:
    """``(id, image, mask)`` for every image with a mask in a paired-files source (see the module docstring)."""
    img_dir = next((src / d for d in IMAGE_DIRS if (src / d).is_dir()), None)
    lab_dir = next((src / d for d in LABEL_DIRS if (src / d).is_dir()), None)
    if img_dir is None or lab_dir is None:
        if label_suffix is None:
            raise DatasetImportError(
                f"{src} has no image folder ({', '.join(IMAGE_DIRS)}) with a mask folder ({', '.join(LABEL_DIRS)}). "
                "For one folder holding both, say how masks are named with --label-suffix (e.g. --label-suffix "
                "_mask for case1.png + case1_mask.png)."
            )
        img_dir = lab_dir = src
    images = {split_ext(p)[0]: p for p in _files(img_dir)}
    labels = {split_ext(p)[0]: p for p in _files(lab_dir)}
    pairs: list[tuple[str, Path, Path]] = []
    if label_suffix is not None:
        if img_dir == lab_dir:
            images = {k: v for k, v in images.items() if not k.endswith(label_suffix)}
        for cid, ip in images.items():
            lp = labels.get(cid + label_suffix)
            if lp is not None:
                pairs.append((cid, ip, lp))
    else:
        for cid, ip in images.items():
            if cid in labels:
                pairs.append((cid, ip, labels[cid]))
                continue
            ext = [k for k in labels if k.startswith(cid) and k[len(cid) : len(cid) + 1] in ("_", "-", ".")]
            ext = [k for k in ext if not any(k.startswith(o) and len(o) > len(cid) for o in images if o != cid)]
            if len(ext) > 1:
                raise DatasetImportError(
                    f"Image {ip.name} has several masks ({', '.join(sorted(ext)[:4])}); choose one set with "
                    f"--label-suffix (e.g. --label-suffix {sorted(ext)[0][len(cid) :]})."
                )
            if ext:
                pairs.append((cid, ip, labels[ext[0]]))
    if not pairs:
        raise DatasetImportError(
            f"No image in {img_dir} has a mask in {lab_dir} (a mask is matched by the image's name"
            + (f" + {label_suffix!r}" if label_suffix else ", or that name extended by _suffix")
            + f"; e.g. images {sorted(images)[:3]}, masks {sorted(labels)[:3]})."
        )
    return pairs


def read_spacing_csv(path: Path, column: str | None = None) -> dict[str, tuple[float, ...]]:
    """Per-image spacing from a CSV: ``{id: spacing}`` (ids are file names without extension)."""
    if not path.is_file():
        raise DatasetImportError(
            f"Spacing CSV {str(path)!r} does not exist; give the CSV with one row per image (a file-name column and "
            "a pixel-size column, e.g. HC18's pixel_size_and_HC.csv), or --spacing X,Y for one spacing for all."
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DatasetImportError(f"{path} has no data rows.")
    header = list(rows[0])
    if column is None:
        cands = [h for h in header if "spacing" in h.lower() or "pixel size" in h.lower() or "pixel_size" in h.lower()]
        if len(cands) != 1:
            raise DatasetImportError(
                f"{path}: cannot tell which column holds the spacing (columns {header}); name it with --spacing-column."
            )
        column = cands[0]
    if column not in header:
        raise DatasetImportError(f"{path}: no column {column!r} (columns {header}).")
    key = next((h for h in header if h != column), None)
    if key is None:
        raise DatasetImportError(f"{path}: needs a column with the file name besides {column!r}.")
    out: dict[str, tuple[float, ...]] = {}
    for i, r in enumerate(rows, start=2):
        try:
            vals = tuple(float(v) for v in str(r[column]).replace(",", ";").split(";") if v.strip())
        except ValueError:
            raise DatasetImportError(f"{path} row {i}: spacing {r[column]!r} is not a number.") from None
        if not vals or any(not np.isfinite(v) or v <= 0 for v in vals):
            raise DatasetImportError(f"{path} row {i}: spacing {r[column]!r} must be positive (mm).")
        out[split_ext(Path(str(r[key]).strip()))[0]] = vals
    return out


def _mask_array(a: np.ndarray, ndim: int, name: str, fill_holes: bool) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == ndim + 1:  # RGB(A) mask: any channel set
        a = a.max(axis=-1)
    if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
        if not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise DatasetImportError(
                f"Mask {name} holds non-integer values (e.g. {float(a[a != np.round(a)].flat[0]):g}); labels must "
                "be whole numbers (threshold probability maps first)."
            )
        a = a.astype(np.int64)
    vals = np.unique(a)
    if vals.min(initial=0) < 0:
        raise DatasetImportError(f"Mask {name} has negative values; labels are 0 (background), 1, 2 ...")
    if set(vals.tolist()) <= {0, 255} and 255 in vals:
        a = (a == 255).astype(np.uint8)
    if fill_holes:
        from scipy import ndimage

        filled = np.zeros(a.shape, np.uint8)
        for v in sorted(int(x) for x in np.unique(a) if x != 0):
            filled[ndimage.binary_fill_holes(a == v) & (filled == 0)] = v
        a = filled
    return a.astype(np.uint8 if a.max(initial=0) < 256 else np.uint16)


def import_collection(
    src: str | Path,
    out: str | Path,
    *,
    spacing: Sequence[float] | None = None,
    spacing_csv: str | Path | None = None,
    spacing_column: str | None = None,
    label_suffix: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    axes: str = "zyx",
    labels: dict[int, str] | None = None,
    fill_holes: bool = False,
    grey: bool = False,
    fuse: str | None = None,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
) -> dict[str, Any]:
    """Import a collection (see the module docstring) into ``out``; returns its dataset.json. ``label_suffix`` may
    list several raters' suffixes (comma-separated) together with ``fuse`` (``majority``, ``staple`` or
    ``multi-staple``)."""
    import medimg
    from medimg.io._atomic import check_new_folder, staged_folder

    s, o = Path(src), check_new_folder(out)
    if not s.exists():
        raise DatasetImportError(f"No such file or folder: {s}.")
    if spacing is not None and spacing_csv is not None:
        raise DatasetImportError("Give --spacing or --spacing-csv, not both.")
    per_image = read_spacing_csv(Path(spacing_csv), spacing_column) if spacing_csv is not None else None
    suffixes = [x.strip() for x in label_suffix.split(",") if x.strip()] if label_suffix else []
    rater_quality: dict[str, list[dict[str, Any]]] = {}
    if len(suffixes) > 1 or fuse is not None:
        from medimg.fusion import METHODS as FUSE_METHODS

        if fuse is None:
            raise DatasetImportError(
                f"{len(suffixes)} mask suffixes ({', '.join(suffixes)}): say how to combine the raters with --fuse "
                f"({', '.join(FUSE_METHODS)})."
            )
        if fuse not in FUSE_METHODS:
            raise DatasetImportError(f"Unknown --fuse {fuse!r}; choose {', '.join(FUSE_METHODS)}.")
        if len(suffixes) < 2:
            raise DatasetImportError(
                "--fuse needs several raters' masks: list their suffixes, e.g. --label-suffix _1stHO,_2ndHO."
            )
        if not s.is_dir():
            raise DatasetImportError("Several raters' masks (--fuse) are read from a folder of paired files.")
    if len(suffixes) > 1:
        assert fuse is not None
        kind, cases = "files", _rater_cases(s, suffixes, fuse, rater_quality)
    elif s.is_file() and s.suffix.lower() == ".npz":
        kind, cases = "npz", _npz_cases(s, image_key, label_key, axes)
    elif s.is_dir() and any(p.suffix.lower() in (".h5", ".hdf5") for p in s.iterdir()):
        kind, cases = "hdf5", _hdf5_cases(s, image_key or "image", label_key or "label", axes)
    elif s.is_dir():
        kind, cases = "files", _file_cases(s, suffixes[0] if suffixes else None)
    else:
        raise DatasetImportError(f"{s}: give a folder of images and masks, a folder of .h5 files, or an .npz file.")
    found: set[int] = set()
    n_ch = None
    known_any = False
    with staged_folder(o) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for cid, load in progress(cases, "importing") if progress else cases:
            img, lab_arr = load()
            sp: Sequence[float] | None = spacing
            if per_image is not None:
                if cid not in per_image:
                    raise DatasetImportError(f"{spacing_csv} has no row for {cid!r} (rows are matched by file name).")
                sp = per_image[cid]
            if sp is not None:
                sp = tuple(float(v) for v in sp) * (img.ndim if len(sp) == 1 else 1)
                if len(sp) != img.ndim:
                    raise DatasetImportError(f"{cid}: {len(sp)} spacing values for a {img.ndim}D image.")
                img = Image(img.array, sp, img.origin, img.direction, {**img.meta, "spacing_known": True})
            known_any |= img.spacing_known
            lab = _mask_array(lab_arr, img.ndim, cid, fill_holes)
            if lab.shape != img.shape[: img.ndim]:
                raise DatasetImportError(f"{cid}: mask {lab.shape} and image {img.shape[: img.ndim]} differ in size.")
            chans = _channels(img, grey)
            if n_ch is None:
                n_ch = len(chans)
            elif len(chans) != n_ch:
                raise DatasetImportError(f"{cid} has {len(chans)} channel(s); the first image had {n_ch}.")
            for k, ch in enumerate(chans):
                medimg.write(ch, tmp / "imagesTr" / f"{cid}_{k:04d}.nii.gz")
            found |= {int(v) for v in np.unique(lab) if v != 0}
            medimg.write(LabelMap(lab, img.spacing, img.origin, img.direction), tmp / "labelsTr" / f"{cid}.nii.gz")
        names = labels or ({1: "foreground"} if found == {1} else {v: f"label_{v}" for v in sorted(found)})
        missing = sorted(found - set(names))
        if missing:
            raise DatasetImportError(f"The masks hold label(s) {missing} that --labels does not name ({names}).")
        meta: dict[str, Any] = {
            "name": o.name,
            "channel_names": {"0": "R", "1": "G", "2": "B"}
            if n_ch == 3
            else {str(k): "image" for k in range(n_ch or 1)},
            "labels": {"background": 0, **{v: k for k, v in sorted(names.items())}},
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
            "spacing_known": bool(known_any),
            "source": f"imported by medimg {medimg.__version__} from {kind} collection {s}",
        }
        if rater_quality:
            meta["label_fusion"] = {"method": fuse, "raters": suffixes, "quality": "raters.json"}
            (tmp / "raters.json").write_text(json.dumps(_rater_summary(rater_quality, fuse or ""), indent=2) + "\n")
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _channels(img: Image, grey: bool) -> list[Image]:
    """One single-channel image per channel (or one luminance image with ``grey``)."""
    a = np.asarray(img.array)
    if a.ndim == img.ndim:
        return [img]
    if grey:
        from medimg.transforms.intensity import select_channel_array

        g = select_channel_array(np.moveaxis(a, -1, 0)[None], "grey", axis=1)[0, 0]
        return [Image(g, img.spacing, img.origin, img.direction, img.meta)]
    return [Image(a[..., k], img.spacing, img.origin, img.direction, img.meta) for k in range(a.shape[-1])]


Loader = Callable[[], tuple[Image, np.ndarray]]


def _file_cases(src: Path, label_suffix: str | None) -> list[tuple[str, Loader]]:
    import medimg

    def loader(ip: Path, lp: Path) -> Loader:
        def load() -> tuple[Image, np.ndarray]:
            img = medimg.read(ip)
            lab = medimg.read(lp)
            if not lab.same_geometry(img) and lab.spacing_known and img.spacing_known:
                raise DatasetImportError(f"Mask {lp.name} is not on the grid of image {ip.name}; resample it first.")
            return img, np.asarray(lab.array)

        return load

    return [(cid, loader(ip, lp)) for cid, ip, lp in pair_files(src, label_suffix)]


def _rater_cases(
    src: Path, suffixes: list[str], method: str, quality: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, Loader]]:
    """Cases whose label is the fusion of every rater's mask; each case's rater quality lands in ``quality``."""
    import medimg
    from medimg.fusion import fuse

    per_rater = [{cid: (ip, lp) for cid, ip, lp in pair_files(src, suf)} for suf in suffixes]
    every = sorted(set().union(*per_rater))
    lacking = [
        f"{cid} (no {', '.join(suf for suf, pr in zip(suffixes, per_rater, strict=True) if cid not in pr)} mask)"
        for cid in every
        if any(cid not in pr for pr in per_rater)
    ]
    if lacking:
        raise DatasetImportError(
            f"Not every image has a mask from every rater: {', '.join(lacking[:5])}"
            + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
            + ". Import the images all raters outlined (move the others out), or one rater with a single "
            "--label-suffix."
        )

    def loader(cid: str) -> Loader:
        def load() -> tuple[Image, np.ndarray]:
            ip = per_rater[0][cid][0]
            img = medimg.read(ip)
            maps = []
            for suf, pr in zip(suffixes, per_rater, strict=True):
                lab = medimg.read(pr[cid][1])
                if not lab.same_geometry(img) and lab.spacing_known and img.spacing_known:
                    raise DatasetImportError(
                        f"Mask {pr[cid][1].name} is not on the grid of image {ip.name}; resample it first "
                        f"(medimg resample {pr[cid][1].name} OUT --reference {ip.name} --labels)."
                    )
                arr = _mask_array(np.asarray(lab.array), img.ndim, f"{cid}{suf}", False)
                if arr.shape != img.shape[: img.ndim]:
                    raise DatasetImportError(f"{cid}{suf}: mask {arr.shape} and image {img.shape[: img.ndim]} differ.")
                maps.append(LabelMap(arr, img.spacing, img.origin, img.direction))
            res = fuse(maps, method, names=suffixes)
            quality[cid] = res.to_json()["raters"]
            return img, np.asarray(res.fused.array)

        return load

    return [(cid, loader(cid)) for cid in every]


def _rater_summary(quality: dict[str, list[dict[str, Any]]], method: str) -> dict[str, Any]:
    """raters.json: every rater's sensitivity/specificity per label, per case and averaged over the cases."""
    names = [r["name"] for r in next(iter(quality.values()))]
    mean: dict[str, dict[str, dict[str, float]]] = {}
    for i, name in enumerate(names):
        labels = sorted({c for q in quality.values() for c in q[i]["labels"]})
        mean[name] = {
            c: {
                k: float(np.mean([q[i]["labels"][c][k] for q in quality.values() if c in q[i]["labels"]]))
                for k in ("sensitivity", "specificity")
            }
            for c in labels
        }
    return {
        "method": method,
        "quality_against": "fused majority vote" if method == "majority" else "STAPLE's estimate",
        "mean": mean,
        "cases": quality,
    }


def _npz_cases(path: Path, image_key: str | None, label_key: str | None, axes: str) -> list[tuple[str, Loader]]:
    """Cases of an NPZ; with ``axes`` "zyx" (default) the arrays are in numpy image order (rows, cols) /
    (slices, rows, cols) and are flipped to medimg's (x, y[, z]), as ``medimg.read`` does for NPZ files."""
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        ik = image_key or next((k for k in IMAGE_KEYS if k in keys), None)
        lk = label_key or next((k for k in LABEL_KEYS if k in keys), None)
        if ik not in keys or lk not in keys:
            raise DatasetImportError(
                f"{path}: no image/label arrays found (arrays: {', '.join(keys)}); name them with --image-key and "
                "--label-key."
            )
        imgs, labs = z[ik], z[lk]
    if len(imgs) != len(labs):
        raise DatasetImportError(f"{path}: {len(imgs)} images but {len(labs)} label maps.")
    nd = labs.ndim - 1
    if nd not in (2, 3) or imgs.ndim not in (nd + 1, nd + 2):
        raise DatasetImportError(
            f"{path}: arrays {imgs.shape} / {labs.shape} are not (n, *spatial[, c]) / (n, *spatial)."
        )
    width = len(str(len(imgs) - 1))

    flip = axes.lower().startswith("z") or axes.lower() == "yx"

    def spatial_t(a: np.ndarray) -> np.ndarray:
        if not flip:
            return a
        order = tuple(range(nd))[::-1] + tuple(range(nd, a.ndim))
        return np.ascontiguousarray(np.transpose(a, order))

    def loader(i: int) -> Loader:
        return lambda: (Image(spatial_t(imgs[i]), ndim=nd), spatial_t(labs[i]))

    return [(f"case_{i:0{width}d}", loader(i)) for i in range(len(imgs))]


def _hdf5_cases(src: Path, image_key: str, label_key: str, axes: str) -> list[tuple[str, Loader]]:
    import medimg

    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".h5", ".hdf5"))

    def loader(f: Path) -> Loader:
        return lambda: (
            medimg.read(f, key=image_key, axes=axes),
            np.asarray(medimg.read(f, key=label_key, axes=axes).array),
        )

    return [(f.stem, loader(f)) for f in files]
