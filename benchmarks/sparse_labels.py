"""Make a sparsely annotated copy of a segmentation dataset, for experiments with nnU-Net's ``ignore`` label.

Each selected case keeps K annotated slices (every voxel of those slices keeps its label, background included);
every other voxel gets the ignore label V = highest class + 1, and the copy's dataset.json declares it
(nnU-Net v2 layout: ``"labels": {"background": 0, ..., "ignore": V}``). The K slices are spread evenly over the
slices that hold the structure along ``--axis`` (array axis of medimg's ``(x, y, z)`` index order; slice i of K
at the centre of the i-th of K equal parts of that range). Cases not selected (``--keep-full``, e.g. the
validation cases of a split) keep their full labels. Images are copied byte for byte; labels keep their grid.

    python benchmarks/sparse_labels.py SRC OUT --slices 3 [--axis 2] [--names 1=anterior,2=posterior]
        [--keep-full-split benchmarks/splits/hippocampus_80_20.json]

SRC is any dataset medimg reads (imagesTr/labelsTr with or without dataset.json). Reports -- and writes to
OUT/sparse_report.json -- the fraction of the structure (label) voxels kept, per case and over all sparsified
cases, and the fraction of all voxels annotated. The copy is written under a temporary name and renamed at the
end, so a failure leaves no half-made dataset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.errors import MedimgError
from medimg.image import LabelMap
from medimg.io._atomic import split_ext
from medimg.seg.dataset import load_dataset


def annotated_slices(label: np.ndarray, k: int, axis: int) -> list[int]:
    """Indices of the ``k`` slices along ``axis`` spread evenly over the slices that hold the structure
    (non-zero voxels); the middle slice of the volume when it holds none."""
    if k < 1:
        raise MedimgError(f"Keep at least one slice per volume (got {k}).")
    other = tuple(a for a in range(label.ndim) if a != axis)
    has = np.flatnonzero(np.any(label > 0, axis=other))
    if has.size == 0:
        return [label.shape[axis] // 2]
    lo, hi = int(has[0]), int(has[-1])
    n = hi - lo + 1
    picks = sorted({lo + min(n - 1, int((i + 0.5) * n / k)) for i in range(k)})
    return picks


def sparsify(lab: LabelMap, k: int, axis: int, ignore: int) -> tuple[LabelMap, dict[str, Any]]:
    """``lab`` with only ``k`` annotated slices along ``axis`` (see :func:`annotated_slices`); all other voxels
    set to ``ignore``. Returns the sparse map (same grid) and counts: structure voxels before and kept."""
    if not -1 <= axis < lab.ndim:
        raise MedimgError(
            f"--axis must be in 0..{lab.ndim - 1}, or -1 for orthogonal slices, for this {lab.ndim}D label map "
            f"(got {axis})."
        )
    arr = lab.array
    if arr.size and int(arr.max()) >= ignore:
        raise MedimgError(f"The ignore label {ignore} must be above every class (found {int(arr.max())}).")
    # -1: orthogonal slices — slice i cuts axis i % ndim (k = 3 in 3D: one per axis), each axis's slices spread
    # evenly over the structure's extent along it, as for a single axis
    axes = [axis] * k if axis >= 0 else [i % arr.ndim for i in range(k)]
    mask = np.zeros(arr.shape, dtype=bool)
    picks: list[int] = []
    for ax in sorted(set(axes)):
        chosen = annotated_slices(arr, axes.count(ax), ax)
        picks += chosen
        keep = np.zeros(arr.shape[ax], dtype=bool)
        keep[chosen] = True
        shape = [1] * arr.ndim
        shape[ax] = -1
        mask |= np.broadcast_to(keep.reshape(shape), arr.shape)
    dtype = arr.dtype if np.iinfo(arr.dtype).max >= ignore else np.uint16
    out = np.where(mask, arr, ignore).astype(dtype)
    fg = arr > 0
    stats = {
        "slices": picks,
        "n_slices": int(arr.shape[axis]) if axis >= 0 else int(sum(arr.shape)),
        "label_voxels": int(fg.sum()),
        "label_voxels_kept": int((fg & mask).sum()),
        "voxels_annotated": int(mask.sum()),
        "voxels": int(arr.size),
    }
    return lab.with_array(out), stats


def make_sparse_dataset(
    src: str | Path,
    out: str | Path,
    k: int,
    axis: int = 2,
    names: dict[int, str] | None = None,
    keep_full: Collection[str] = (),
) -> dict[str, Any]:
    """Write the sparse copy of dataset ``src`` to ``out`` (see the module docstring); returns the report."""
    ds = load_dataset(src)
    o = Path(out)
    if o.exists():
        raise MedimgError(f"{str(o)!r} already exists; choose a new folder for the sparse dataset.")
    if not o.parent.is_dir():
        raise MedimgError(f"Folder {str(o.parent)!r} does not exist; create it first.")
    unknown = sorted(set(keep_full) - {c.case_id for c in ds.cases})
    if unknown:
        raise MedimgError(f"--keep-full names case(s) not in the dataset: {', '.join(unknown[:5])}.")
    labelled = [c for c in ds.cases if c.label is not None]
    if ds.ignore_label is not None:
        raise MedimgError(f"{ds.root} already has an ignore label ({ds.ignore_label}); start from full labels.")
    classes = dict(ds.labels)
    if not classes:
        found: set[int] = set()
        for c in labelled:
            found |= set(medimg.read_labels(c.label).labels)  # type: ignore[arg-type]
        classes = {0: "background", **{v: f"label_{v}" for v in sorted(found)}}
    classes.update(names or {})
    ignore = max(classes) + 1
    tmp = o.with_name(f".{o.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    rows = []
    t0 = time.perf_counter()
    try:
        (tmp / "imagesTr").mkdir(parents=True)
        (tmp / "labelsTr").mkdir()
        for c in labelled:
            for i, p in enumerate(c.images):
                ext = split_ext(p)[1]
                shutil.copyfile(p, tmp / "imagesTr" / f"{c.case_id}_{i:04d}{ext}")
            lab = medimg.read_labels(c.label)  # type: ignore[arg-type]
            undeclared = set(lab.labels) - set(classes)
            if undeclared:
                raise MedimgError(f"{c.case_id}: label values {sorted(undeclared)} are not classes {sorted(classes)}.")
            dst = tmp / "labelsTr" / f"{c.case_id}.nii.gz"
            if c.case_id in keep_full:
                medimg.write(lab, dst)
                continue
            sparse, st = sparsify(lab, k, axis, ignore)
            medimg.write(sparse, dst)
            rows.append({"case": c.case_id, **st})
        meta = {
            "name": f"{ds.name}_sparse{k}",
            "channel_names": {str(i): ch for i, ch in enumerate(ds.channels)},
            "labels": {("background" if v == 0 else n): v for v, n in sorted(classes.items())} | {"ignore": ignore},
            "numTraining": len(labelled),
            "file_ending": ".nii.gz",
            "medimg_sparse": {
                "source": str(ds.root),
                "slices_per_volume": k,
                "axis": axis,
                "keep_full": sorted(keep_full),
            },
        }
        if not ds.spacing_known:
            meta["spacing_known"] = False
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        tot = sum(r["label_voxels"] for r in rows)
        kept = sum(r["label_voxels_kept"] for r in rows)
        report = {
            "source": str(ds.root),
            "output": str(o),
            "slices_per_volume": k,
            "axis": axis,
            "ignore_label": ignore,
            "sparse_cases": len(rows),
            "full_cases": len(labelled) - len(rows),
            "label_voxels": tot,
            "label_voxels_kept": kept,
            "fraction_label_voxels_kept": kept / tot if tot else float("nan"),
            "fraction_voxels_annotated": sum(r["voxels_annotated"] for r in rows)
            / max(1, sum(r["voxels"] for r in rows)),
            "seconds": round(time.perf_counter() - t0, 2),
            "cases": rows,
        }
        (tmp / "sparse_report.json").write_text(json.dumps(report, indent=1) + "\n")
        tmp.rename(o)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _names(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        out[int(k)] = v.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--slices", type=int, default=3, help="annotated slices kept per volume")
    ap.add_argument(
        "--axis", type=int, default=2, help="array axis the slices cut (0 x, 1 y, 2 z; -1: orthogonal, axes in turn)"
    )
    ap.add_argument("--names", help="class names, e.g. 1=anterior,2=posterior (default: dataset.json's)")
    ap.add_argument("--keep-full", nargs="*", default=[], help="case ids that keep their full labels")
    ap.add_argument(
        "--keep-full-split", type=Path, help="split JSON ({train, val}): its validation cases keep full labels"
    )
    args = ap.parse_args(argv)
    keep = set(args.keep_full)
    if args.keep_full_split:
        keep |= set(json.loads(args.keep_full_split.read_text())["val"])
    try:
        rep = make_sparse_dataset(args.src, args.out, args.slices, args.axis, _names(args.names), keep)
    except MedimgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{rep['sparse_cases']} cases sparsified ({rep['full_cases']} kept full): {args.slices} slices along axis "
        f"{args.axis} keep {rep['fraction_label_voxels_kept']:.1%} of the label voxels "
        f"({rep['label_voxels_kept']} of {rep['label_voxels']}); {rep['fraction_voxels_annotated']:.1%} of all "
        f"voxels annotated; ignore label {rep['ignore_label']}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
