"""In-domain and out-of-domain inputs built from ../shared/data for the domain-guard benchmark.

Each builder returns a list of ``(name, image)``: 3D volumes for the segmentation model, and 2D numpy arrays
(rows, cols) for the X-ray classifier (slices taken through the middle of each volume, RGB converted to grey).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import medimg
from medimg.image import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def volumes(shared: Path = SHARED) -> dict[str, list[Path]]:
    """Real volumes per out-of-domain family (for the hippocampus model), a few files each."""
    g = lambda pat, n=3: sorted(glob.glob(str(shared / pat)))[:n]  # noqa: E731
    return {
        "CT (TotalSegmentator abdomen/thorax)": [Path(p) for p in g("totalsegmentator/example_ct*.nii.gz")],
        "CT (LIDC lung-nodule crops)": [Path(p) for p in g("lidc_nodules/*/*.nii.gz") or g("lidc_nodules/**/*.nii.gz")],
        "brain MR (MNI, ch2, OASIS, VoxelMorph)": [Path(p) for p in g("ants/*.nii.gz", 4)],
        "abdominal MR (CHAOS T2, TotalSegmentator MR)": [
            *[Path(p) for p in g("chaos_mr/imagesTr/*.nii.gz", 2)],
            *[Path(p) for p in g("totalsegmentator/example_mr_sm.nii.gz", 1)],
        ],
        "brain FLAIR (MS longitudinal)": [Path(p) for p in g("ms_longitudinal/*/study1_FLAIR.nii.gz", 2)],
        "prostate / head MR (MONAI testing)": [Path(p) for p in g("monai_testing/anatomical.nii", 1)],
        "cardiac cine MR (ACDC, spacing unknown)": [Path(p) for p in g("acdc/*.h5", 2)],
        "fundus photo (CHASE_DB1, 2D RGB)": [Path(p) for p in g("chasedb1/*.jpg", 2)],
        "fetal ultrasound (HC18, 2D)": [Path(p) for p in g("hc18/images/*.png", 2)],
        "lesion MR (brain1, breast1)": [Path(p) for p in g("lesions/*image*.nrrd", 2)],
    }


def in_domain_volumes(shared: Path = SHARED) -> list[Path]:
    """Every hippocampus image in ../shared/data (the bundled model's own domain)."""
    return sorted(Path(p) for p in glob.glob(str(shared / "hippocampus/imagesTr/*.nii.gz")))


def _grey2d(img: Image) -> np.ndarray:
    a = np.asarray(img.array, dtype=np.float32)
    if img.is_multichannel:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    if img.ndim == 3:
        a = a[:, :, a.shape[2] // 2]
    return np.ascontiguousarray(a.T)  # numpy (rows, cols)


def slices(shared: Path = SHARED) -> Iterator[tuple[str, str, np.ndarray]]:
    """(family, name, 2D array) for the X-ray classifier: middle slices of volumes and 2D photos / ultrasound."""
    for family, files in volumes(shared).items():
        for f in files:
            kw = {"key": "image"} if f.suffix == ".h5" else {}
            yield family, f.name, _grey2d(medimg.read(f, **kw))
    for f in sorted(glob.glob(str(shared / "hippocampus/imagesTr/*.nii.gz")))[:3]:
        yield "brain MR (hippocampus crops)", Path(f).name, _grey2d(medimg.read(f))
