"""Shared fixtures: paths to the small committed test data and to ../shared/data (optional)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medimg import Image, LabelMap

TESTS = Path(__file__).parent
DATA = TESTS / "data"
SHARED = Path(os.environ.get("MEDIMG_SHARED_DATA", TESTS.parent.parent / "shared" / "data"))

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} not present")


@pytest.fixture
def ct3(tmp_path: Path) -> Path:
    """A regular 3-slice real CT series (the last three slices of tests/data/ct_dicom_gap)."""
    d = tmp_path / "ct3"
    d.mkdir()
    for name in ("7136", "7166", "7196"):
        shutil.copy(DATA / "ct_dicom_gap" / name, d / name)
    return d


def asymmetric_image(dtype: type = np.float32, oblique: bool = True) -> Image:
    """A 3D image with no symmetry (distinct sizes, spacing, an oblique direction, off-centre origin) so that a
    flip or transposition anywhere cannot go unnoticed. Values are exactly representable in float32."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 1000, size=(7, 9, 5)).astype(dtype)
    arr[1, 2, 3] = 5000  # landmark
    if oblique:
        c, s = np.cos(0.3), np.sin(0.3)
        direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]])
    else:  # axis-aligned but permuted and flipped: every entry exactly representable
        direction = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    return Image(arr, (0.75, 1.25, 3.0), (10.5, -20.25, 33.0), direction)


def asymmetric_labels() -> LabelMap:
    img = asymmetric_image(oblique=False)
    arr = np.zeros(img.shape, np.uint8)
    arr[1:3, 2:6, 1:4] = 1
    arr[4:6, 1:3, 0:2] = 3
    return LabelMap(arr, img.spacing, img.origin, img.direction, names={1: "liver", 3: "spleen"})
