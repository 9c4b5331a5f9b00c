"""How the MS longitudinal fixture here was made from ../shared/data/ms_longitudinal (rerun to recreate it).

* patient01_visits.nii.gz: patient01's two FLAIR visits resampled (linear) onto the common grid of its gt.nii.gz
  with their ITK affines (``study*_FLAIR_to_common_space.txt``, used as ITK's resampling transform), as one
  2-channel image (x, y, z, visit), cropped to 96 x 96 x 7 voxels around the patient's largest new lesion, rounded
  to int16 (the FLAIR intensities are integers in the source);
* patient01_gt.nii.gz: the new/enlarging-lesion mask on the same crop (uint8).

The crop keeps the common grid's spacing, direction and (shifted) origin. Used by tests/test_interactive_colour.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

import medimg
from medimg.image import Image, LabelMap

HERE = Path(__file__).parent
SRC = HERE.parents[3] / "shared" / "data" / "ms_longitudinal" / "patient01"


def main() -> None:
    gt = sitk.ReadImage(str(SRC / "gt.nii.gz"))
    chans = []
    for study in ("study1", "study2"):
        im = sitk.Cast(sitk.ReadImage(str(SRC / f"{study}_FLAIR.nii.gz")), sitk.sitkFloat32)
        tr = sitk.ReadTransform(str(SRC / f"{study}_FLAIR_to_common_space.txt"))
        chans.append(np.transpose(sitk.GetArrayFromImage(sitk.Resample(im, gt, tr, sitk.sitkLinear, 0.0)), (2, 1, 0)))
    lab_img = medimg.read(SRC / "gt.nii.gz")
    mask = np.asarray(lab_img.array) > 0
    lab, k = ndimage.label(mask, np.ones((3, 3, 3)))
    big = 1 + int(np.argmax(ndimage.sum(mask, lab, range(1, k + 1))))
    z = int(np.argmax((lab == big).sum((0, 1))))
    c = np.argwhere(lab[:, :, z] == big).mean(0).round().astype(int)
    lo = np.array([*np.clip(c - 48, 0, np.array(mask.shape[:2]) - 96), max(0, z - 3)])
    sl = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, (96, 96, 7), strict=True))
    origin = np.asarray(lab_img.origin) + np.asarray(lab_img.direction) @ (lo * np.asarray(lab_img.spacing))
    pair = np.round(np.stack(chans, -1)[sl]).astype(np.int16)
    medimg.write(Image(pair, lab_img.spacing, origin, lab_img.direction), HERE / "patient01_visits.nii.gz")
    medimg.write(
        LabelMap(mask[sl].astype(np.uint8), lab_img.spacing, origin, lab_img.direction, names={1: "new lesion"}),
        HERE / "patient01_gt.nii.gz",
    )


if __name__ == "__main__":
    main()
