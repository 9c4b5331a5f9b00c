"""Write generated images as datasets other medimg commands (and other tools) read.

* Class-conditional samples: a classification folder — one image per sample (8-bit PNG for 8-bit models, else
  float32 NIfTI) plus ``labels.csv`` (``image,label`` with class names), which ``medimg classify train DIR`` reads.
* Mask-conditioned samples: a segmentation dataset — ``imagesTr/<id>_0000.<ext>``, ``labelsTr/<id>.<ext>`` (the
  conditioning mask, unchanged) and ``dataset.json`` — which ``medimg train`` reads. Each generated image carries
  its mask's exact geometry (spacing, origin, direction) and grid.

Everything is written into a temporary sibling folder that is renamed to the output only when complete, so a failed
or interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.generate.model import GeneratorError, _resize, sample
from medimg.io._atomic import check_new_folder as _check_new_folder
from medimg.io._atomic import staged_folder


def check_new_folder(out: str | Path) -> Path:
    """``out`` must not exist, or be an empty folder (nothing is ever overwritten)."""
    return _check_new_folder(out, GeneratorError)


def _image(arr: np.ndarray, like: Any = None) -> Any:
    """A 2D ``(rows, cols)`` array in numpy image order -> a medimg Image ``(x, y)`` (with ``like``'s geometry)."""
    from medimg.image import Image

    if like is None:
        return Image(np.ascontiguousarray(arr.T), ndim=2)
    return Image(np.ascontiguousarray(arr.T), like.spacing, like.origin, like.direction)


def write_class_samples(images: np.ndarray, classes: Sequence[int], info: dict[str, Any], out: str | Path) -> list[str]:
    """``images`` ``(n, 1, h, w)`` of ``classes`` -> a classification folder at ``out``; returns the file names."""
    import medimg

    if images.shape[1] != 1:
        raise GeneratorError("Only one-channel generators are written for now.")
    o = check_new_folder(out)
    ext = ".png" if info["intensity"].get("dtype") == "uint8" else ".nii.gz"
    names = []
    with staged_folder(o) as tmp:
        for i, (a, c) in enumerate(zip(images, classes, strict=True)):
            name = f"{info['names'][int(c)]}_{i:05d}{ext}"
            medimg.write(_image(a[0]), tmp / name)
            names.append(name)
        with (tmp / "labels.csv").open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["image", "label"])
            for name, c in zip(names, classes, strict=True):
                w.writerow([name, info["names"][int(c)]])
    return names


def mask_files(path: str | Path) -> list[Path]:
    """A mask file, or the mask files of a folder (sorted by name)."""
    from medimg.seg.dataset import _is_image

    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if _is_image(f))
        if files:
            return files
        raise GeneratorError(f"{p} holds no image files to use as masks.")
    raise GeneratorError(f"No such mask file or folder: {p}.")


def generate_from_masks(
    net: Any,
    info: dict[str, Any],
    masks: Sequence[Path],
    n_per_mask: int,
    out: str | Path,
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
    on_mask: Callable[[int, int], None] | None = None,
) -> list[str]:
    """``n_per_mask`` images for each mask file -> a segmentation dataset at ``out`` (see the module docstring);
    returns the case ids. Masks are read and checked before anything is generated."""
    import medimg
    from medimg.io import split_ext

    o = check_new_folder(out)
    h, w = info["size"]
    n_cond = int(info["cond_channels"])
    loaded = []
    for m in masks:
        lab = medimg.read_labels(m)
        a = np.asarray(lab.array)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2 or lab.ndim != 2:
            raise GeneratorError(f"{m}: a {lab.ndim}D label map; this generator takes 2D masks.")
        if a.max() >= n_cond:
            raise GeneratorError(
                f"{m}: label {int(a.max())}, but the model knows labels 0..{n_cond - 1} ({', '.join(info['names'])})."
            )
        loaded.append((m, lab, a.T.astype(np.int64)))
    ids: list[str] = []
    with staged_folder(o) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for k, (m, lab, a) in enumerate(loaded):
            small = _resize(a[None, None].astype(np.float32), (h, w), nearest=True)[0, 0].round().astype(np.int64)
            imgs = sample(
                net,
                info,
                n_per_mask,
                masks=np.repeat(small[None], n_per_mask, 0),
                steps=steps,
                guidance=guidance,
                seed=seed + k,
            )
            big = _resize(imgs.astype(np.float32), tuple(a.shape), nearest=False)
            if info["intensity"].get("dtype") == "uint8":
                big = np.clip(np.round(big), 0, 255).astype(np.uint8)
            stem, ext = split_ext(m)
            ext = ext.lower()
            if ext not in (".png", ".nii.gz", ".nii", ".nrrd", ".mha") or (ext == ".png" and big.dtype != np.uint8):
                ext = ".nii.gz"  # a format that holds the generated intensities and the geometry
            for j in range(n_per_mask):
                cid = f"{Path(stem).name}_gen{j:03d}"
                medimg.write(_image(big[j, 0], lab), tmp / "imagesTr" / f"{cid}_0000{ext}")
                medimg.write(lab, tmp / "labelsTr" / f"{cid}{ext}")
                ids.append(cid)
            if on_mask is not None:
                on_mask(k + 1, len(loaded))
        desc = {
            "name": f"generated by {info.get('name', 'a medimg diffusion model')}",
            "channel_names": {"0": "image"},
            "labels": {str(n): i for i, n in enumerate(info["names"])},
            "numTraining": len(ids),
            "file_ending": ext,
            "description": "Images generated by medimg's mask-conditioned diffusion model from the masks in labelsTr.",
        }
        (tmp / "dataset.json").write_text(json.dumps(desc, indent=2) + "\n")
    return ids
