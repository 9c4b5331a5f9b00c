"""How the CHAOS fixtures here were made from ../shared/data/chaos_mr (rerun to recreate them).

* imagesTr/ + labelsTr/ + dataset.json: three training volumes of the bundled `abdomen` model's split
  (chaos_05, chaos_15, chaos_19), their central 16 slices, resampled to 2.5 x 2.5 mm in plane (half the pixels;
  images linear, labels nearest), stored as int16 / uint8 -- a small thick-slice dataset for training tests.
* heldout/chaos_08.nii.gz (+ _label): a test volume of that split (never trained on), its central 16 slices at full
  resolution, int16 / uint8 -- for the bundled-model test.

The intensities are integers in the source (an intensity-normalised copy), so int16 loses nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

import medimg
from medimg.image import Image, LabelMap
from medimg.transforms.spatial import resample_to_spacing

HERE = Path(__file__).parent
SRC = HERE.parents[3] / "shared" / "data" / "chaos_mr"


def central(img: Image, n: int = 16) -> tuple[int, int]:
    z0 = (img.shape[2] - n) // 2
    return z0, z0 + n


def crop(img: Image, z0: int, z1: int, label: bool) -> Image:
    arr = img.array[:, :, z0:z1]
    origin = img.index_to_world([[0, 0, z0]])[0]
    arr = arr.astype(np.uint8) if label else np.round(arr).astype(np.int16)
    cls = LabelMap if label else Image
    return cls(arr, img.spacing, origin, img.direction)


def main() -> None:
    for sub in ("imagesTr", "labelsTr", "heldout"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
        (HERE / sub).mkdir()
    for c in ("chaos_05", "chaos_15", "chaos_19"):
        img = medimg.read(SRC / "imagesTr" / f"{c}.nii.gz")
        lab = medimg.read_labels(SRC / "labelsTr" / f"{c}.nii.gz")
        z0, z1 = central(img)
        sp = (2.5, 2.5, img.spacing[2])
        small = resample_to_spacing(crop(img, z0, z1, False), sp, "linear")
        medimg.write(
            Image(np.round(small.array).astype(np.int16), small.spacing, small.origin, small.direction),
            HERE / "imagesTr" / f"{c}.nii.gz",
        )
        lab_small = resample_to_spacing(crop(lab, z0, z1, True), sp, "nearest")
        medimg.write(
            LabelMap(lab_small.array.astype(np.uint8), lab_small.spacing, lab_small.origin, lab_small.direction),
            HERE / "labelsTr" / f"{c}.nii.gz",
        )
    ds = json.loads((SRC / "dataset.json").read_text())
    ds["numTraining"] = 3
    ds["name"] = "CHAOS T2-SPIR (3-volume test fixture)"
    (HERE / "dataset.json").write_text(json.dumps(ds, indent=1) + "\n")
    img = medimg.read(SRC / "imagesTr" / "chaos_08.nii.gz")
    lab = medimg.read_labels(SRC / "labelsTr" / "chaos_08.nii.gz")
    z0, z1 = central(img)
    medimg.write(crop(img, z0, z1, False), HERE / "heldout" / "chaos_08.nii.gz")
    medimg.write(crop(lab, z0, z1, True), HERE / "heldout" / "chaos_08_label.nii.gz")


if __name__ == "__main__":
    main()
