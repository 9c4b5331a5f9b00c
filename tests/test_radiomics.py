"""medimg's radiomics against pyradiomics 3.0.1 (values stored in tests/data/radiomics/reference.json, made by
tests/data/radiomics/make_reference.py in the benchmark environment), feature by feature.

Tolerance: relative 1e-6 (absolute 1e-9 for values that are 0 up to rounding, e.g. the mean of a wavelet
detail band). Measured agreement is ~1e-12 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import medimg
from medimg.errors import DimensionError, LabelError, NonFiniteError
from medimg.radiomics import RadiomicsSettings, extract, frd_v1_settings
from medimg.radiomics.discretize import bin_image
from medimg.radiomics.filters import wavelet

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "radiomics" / "reference.json").read_text())["cases"]


def _breast() -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    im = medimg.read(DATA / "breast1_image.nrrd")
    lb = medimg.read_labels(DATA / "breast1_label.nrrd")
    return im.array.astype(np.float32).transpose(2, 1, 0), lb.array.transpose(2, 1, 0) == 1, tuple(im.spacing)


def _assert_same(mine: dict[str, float], ref: dict[str, float]) -> None:
    assert set(mine) == set(ref), set(mine) ^ set(ref)
    off = {k: (mine[k], v) for k, v in ref.items() if not np.isclose(mine[k], v, rtol=1e-6, atol=1e-9)}
    assert not off, off


def test_3d_features_match_pyradiomics() -> None:
    """93 features of six classes (first order, GLCM incl. MCC, GLRLM, GLSZM, NGTDM, GLDM; 13 directions,
    26-connectivity) on a real breast MRI lesion, binWidth 25."""
    img, mask, sp = _breast()
    s = RadiomicsSettings(classes={c: None for c in ("firstorder", "glcm", "glrlm", "glszm", "ngtdm", "gldm")})
    _assert_same(extract(img, mask, sp, s), REF["breast1_3d"])


def test_frd_v1_2d_pipeline_with_mask_matches_pyradiomics() -> None:
    """frd-score's v1 2D extraction (normalise x100, B-spline resampling to 2 mm over the padded mask box,
    force2D, binWidth 5, Coiflet-1 wavelet bands, numeric diagnostics): 398 values on one lesion slice."""
    img, mask, sp = _breast()
    z = REF["breast1_slice_v1_meta"]["z"]
    _assert_same(extract(img[z : z + 1], mask[z : z + 1], sp, frd_v1_settings(2)), REF["breast1_slice_v1"])


def test_frd_v1_whole_image_matches_pyradiomics() -> None:
    """The whole-image case frd-score runs on a PNG folder without masks (corner voxel off, spacing 1)."""
    px = np.load(DATA / "pneumoniamnist_subset.npz")["train_images"][0].astype(np.float32)[None]
    m = np.ones(px.shape, bool)
    m[0, 0, 0] = False
    _assert_same(extract(px, m, (1.0, 1.0, 1.0), frd_v1_settings(2)), REF["pneumoniamnist_v1"])


def test_frd_v1_odd_sized_image_matches_pyradiomics() -> None:
    """An odd-sized image: the resampled grid's last row/column lie outside the input and are 0 (ITK)."""
    px = np.load(DATA / "pneumoniamnist_subset.npz")["train_images"][1].astype(np.float32)[:27, :25][None]
    m = np.ones(px.shape, bool)
    m[0, 0, 0] = False
    mine = extract(px, m, (1.0, 1.0, 1.0), frd_v1_settings(2))
    assert mine["diagnostics_Mask-interpolated_VoxelNum"] == 13 * 12
    _assert_same(mine, REF["pneumoniamnist_odd_v1"])


def test_discretisation_is_anchored_at_zero() -> None:
    """Bins are multiples of the width from 0 (pyradiomics), not from the ROI minimum (IBSI)."""
    x = np.array([[[54.0, 74.9, 75.0, 166.0]]])
    assert bin_image(x, np.ones(x.shape, bool), 25).tolist() == [[[1, 1, 2, 5]]]


def test_wavelet_bands_split_the_energy() -> None:
    """The undecimated Coiflet-1 bands hold 2^axes times the image's energy (orthonormal filters, periodic
    extension: |H|^2 + |G|^2 = 2 per axis)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 16, 12))
    bands = dict(wavelet(x, force2d=True))
    assert sorted(bands) == ["wavelet-HH", "wavelet-HL", "wavelet-LH", "wavelet-LL"]
    assert np.isclose(sum(float(np.sum(b**2)) for b in bands.values()), 4 * float(np.sum(x**2)), rtol=1e-10)


def test_bad_inputs_are_refused() -> None:
    img, mask, sp = _breast()
    with pytest.raises(LabelError, match="empty"):
        extract(img, np.zeros_like(mask), sp, RadiomicsSettings())
    with pytest.raises(DimensionError, match="same shape"):
        extract(img, mask[:-1], sp, RadiomicsSettings())
    bad = img.copy()
    bad[mask] = np.nan
    with pytest.raises(NonFiniteError):
        extract(bad, mask, sp, RadiomicsSettings())
