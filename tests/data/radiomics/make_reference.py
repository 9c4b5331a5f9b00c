"""Make ``reference.json``: pyradiomics 3.0.1 feature values that tests/test_radiomics.py compares medimg with.

Run in the benchmark-only environment (see benchmarks/frd_compare.py for how it is made)::

    /work/envs/frd/bin/python tests/data/radiomics/make_reference.py

Cases (inputs are files already in tests/data):
- ``breast1_3d``: ``breast1_image.nrrd`` + ``breast1_label.nrrd`` (pyradiomics' own sample), original image,
  3D texture, all non-deprecated features of firstorder, glcm, glrlm, glszm, ngtdm, gldm, binWidth 25.
- ``breast1_slice_v1``: the label's largest axial slice of the same pair as a 1-slice volume, frd-score v1's 2D
  extraction (normalise x100, B-spline resampling to 2 mm, force2D, binWidth 5, wavelet) with the lesion mask.
- ``pneumoniamnist_v1``: image 0 of ``pneumoniamnist_subset.npz`` (``train_images``), frd-score v1 exactly as
  frd-score runs it on a PNG without mask (whole-image mask with the corner voxel off, spacing 1).
- ``pneumoniamnist_odd_v1``: image 1 cropped to 27 x 25 (rows x columns), same settings: the 2 mm grid's last
  row and column fall outside the image (ITK gives them 0).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import radiomics
import SimpleITK as sitk
from frd_score import frd
from radiomics import featureextractor

HERE = Path(__file__).resolve().parent
DATA = HERE.parent


def numeric(result: dict) -> dict[str, float]:
    out = {}
    for k, v in result.items():
        with contextlib.suppress(TypeError, ValueError):
            out[k] = float(v)
    return out


def main() -> None:
    radiomics.setVerbosity(60)
    cases = {}
    img = sitk.ReadImage(str(DATA / "breast1_image.nrrd"), sitk.sitkFloat32)
    lab = sitk.ReadImage(str(DATA / "breast1_label.nrrd"))
    ext = featureextractor.RadiomicsFeatureExtractor(binWidth=25)
    ext.disableAllFeatures()
    for c in ("firstorder", "glcm", "glrlm", "glszm", "ngtdm", "gldm"):
        ext.enableFeatureClassByName(c)
    r = numeric(ext.execute(img, lab))
    cases["breast1_3d"] = {k: v for k, v in r.items() if not k.startswith("diagnostics")}

    la = sitk.GetArrayFromImage(lab)
    z = int(np.argmax((la == 1).sum((1, 2))))
    ia = sitk.GetArrayFromImage(img)
    s_img = sitk.GetImageFromArray(ia[z : z + 1])
    s_img.SetSpacing(img.GetSpacing())
    s_lab = sitk.GetImageFromArray((la[z : z + 1] == 1).astype(np.uint8))
    s_lab.SetSpacing(img.GetSpacing())
    ext2 = frd.get_feature_extractor("v1", image_dim=2)
    cases["breast1_slice_v1"] = numeric(ext2.execute(s_img, s_lab))
    cases["breast1_slice_v1_meta"] = {"z": z, "spacing": list(img.GetSpacing())}

    px = np.load(DATA / "pneumoniamnist_subset.npz")["train_images"][0].astype(np.float32)
    p_img = sitk.GetImageFromArray(px[None])
    m = np.ones((1, *px.shape), np.uint8)
    m[0, 0, 0] = 0
    p_lab = sitk.GetImageFromArray(m)
    cases["pneumoniamnist_v1"] = numeric(ext2.execute(p_img, p_lab))

    odd = np.load(DATA / "pneumoniamnist_subset.npz")["train_images"][1].astype(np.float32)[:27, :25]
    o_img = sitk.GetImageFromArray(odd[None])
    mo = np.ones((1, *odd.shape), np.uint8)
    mo[0, 0, 0] = 0
    o_lab = sitk.GetImageFromArray(mo)
    cases["pneumoniamnist_odd_v1"] = numeric(ext2.execute(o_img, o_lab))

    meta = {
        "made_by": "tests/data/radiomics/make_reference.py",
        "python": sys.version.split()[0],
        "pyradiomics": radiomics.__version__,
        "frd_score": "1.0.1",
        "simpleitk": sitk.Version_VersionString(),
        "numpy": np.__version__,
    }
    (HERE / "reference.json").write_text(json.dumps({"meta": meta, "cases": cases}, indent=1, sort_keys=True))
    print({k: len(v) for k, v in cases.items()})


if __name__ == "__main__":
    main()
