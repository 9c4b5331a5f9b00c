"""read -> write -> read keeps array, spacing, origin and direction for every writable format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import medimg
from medimg import Image, LabelMap
from medimg.data import sample

from conftest import DATA, asymmetric_image, asymmetric_labels


def _same(a: Image, b: Image, exact: bool = True, tol: float = 2e-6) -> None:
    assert a.shape == b.shape and a.ndim == b.ndim
    assert np.array_equal(a.array, b.array)
    tol = 0.0 if exact else tol
    assert np.allclose(a.spacing, b.spacing, rtol=tol, atol=0)
    assert np.allclose(a.origin, b.origin, rtol=tol, atol=tol)
    assert np.allclose(a.direction, b.direction, rtol=0, atol=tol)


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".h5", ".npz", ".tif"])
def test_exact_roundtrip_3d(tmp_path: Path, ext: str) -> None:
    img = asymmetric_image(oblique=False)
    back = medimg.read(medimg.write(img, tmp_path / f"x{ext}"))
    _same(img, back)
    assert back.array.dtype == img.array.dtype
    assert back.orientation == img.orientation == "AIL"


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".h5", ".npz", ".tif"])
def test_oblique_roundtrip_3d(tmp_path: Path, ext: str) -> None:
    """Oblique directions are stored as direction x spacing (NRRD/MHA); splitting them again costs ~1 ulp."""
    img = asymmetric_image(oblique=True)
    _same(img, medimg.read(medimg.write(img, tmp_path / f"x{ext}")), exact=False, tol=1e-12)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_roundtrip(tmp_path: Path, ext: str) -> None:
    """NIfTI stores the affine in float32: arbitrary float64 geometry survives to ~1e-7, and once read from a
    NIfTI file, further round trips are bit-exact."""
    img = asymmetric_image()
    once = medimg.read(medimg.write(img, tmp_path / f"a{ext}"))
    _same(img, once, exact=False, tol=2e-7)
    twice = medimg.read(medimg.write(once, tmp_path / f"b{ext}"))
    _same(once, twice, exact=True)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".h5", ".npz"])
def test_real_files_roundtrip_exact(tmp_path: Path, ext: str) -> None:
    for src in (*sample("hippocampus"), DATA / "breast1_image.nrrd", DATA / "breast1_label.nrrd"):
        img = medimg.read(src)
        if ext == ".seg.nrrd":
            img = LabelMap.from_image(img)
        back = medimg.read(medimg.write(img, tmp_path / f"r{ext}"))
        # NIfTI keeps geometry in float32: exact for NIfTI sources, within float32 precision for NRRD ones
        float32_limited = ext == ".nii.gz" and src.suffix == ".nrrd"
        _same(img, back, exact=not float32_limited, tol=2e-7)


def test_seg_nrrd_keeps_names_and_colors(tmp_path: Path) -> None:
    lab = asymmetric_labels()
    lab.colors[1] = (10, 200, 30)
    p = medimg.write(lab, tmp_path / "l.seg.nrrd")
    back = medimg.read(p)
    assert isinstance(back, LabelMap)
    assert back.names == {1: "liver", 3: "spleen"}
    assert back.colors[1] == (10, 200, 30)
    _same(lab, back)
    text = p.read_bytes()[:4000].decode("latin-1")
    assert "Segment0_Name:=liver" in text and "Segment1_LabelValue:=3" in text


def test_labels_names_survive_h5_npz(tmp_path: Path) -> None:
    for ext in (".h5", ".npz"):
        back = medimg.read(medimg.write(asymmetric_labels(), tmp_path / f"l{ext}"))
        assert isinstance(back, LabelMap) and back.names == {1: "liver", 3: "spleen"}


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_2d_roundtrip(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(1)
    grey = Image(rng.integers(0, 255, (13, 7)).astype(np.uint8), (0.3, 0.4), (5.0, -2.0))
    back = medimg.read(medimg.write(grey, tmp_path / f"g{ext}"))
    assert np.array_equal(back.array, grey.array)
    if ext != ".bmp":  # BMP has nowhere to store geometry
        _same(grey, back)
    rgb = Image(rng.integers(0, 255, (13, 7, 3)).astype(np.uint8), (0.3, 0.4))
    back = medimg.read(medimg.write(rgb, tmp_path / f"c{ext}"))
    assert np.array_equal(back.array, rgb.array) and back.n_channels == 3


def test_png_16bit_and_array_orientation(tmp_path: Path) -> None:
    arr = np.zeros((20, 10), np.uint16)  # x = 20 columns, y = 10 rows
    arr[15, 2] = 60000
    p = medimg.write(Image(arr, (1.0, 1.0)), tmp_path / "o.png")
    from PIL import Image as PILImage

    pic = np.asarray(PILImage.open(p))
    assert pic.shape == (10, 20) and pic[2, 15] == 60000  # row 2, column 15
    assert np.array_equal(medimg.read(p).array, arr)


def test_jpeg_is_lossy_but_close(tmp_path: Path) -> None:
    img = medimg.read(DATA / "Image_01L_1stHO.png")
    back = medimg.read(medimg.write(img.with_array((img.array > 0).astype(np.uint8) * 255), tmp_path / "m.jpg"))
    assert back.shape == img.shape
    assert np.mean(np.abs(back.array.astype(int) - (img.array > 0) * 255)) < 10


def test_mha_agrees_with_simpleitk(tmp_path: Path) -> None:
    img = medimg.read(DATA / "CT_2D_head_fixed.mha")
    ref = sitk.ReadImage(str(DATA / "CT_2D_head_fixed.mha"))
    assert img.ndim == 2 and img.shape == ref.GetSize()
    assert np.array_equal(img.array, sitk.GetArrayFromImage(ref).T)


def test_four_d_nifti_is_3d_plus_channels(tmp_path: Path) -> None:
    arr = np.arange(3 * 4 * 5 * 2, dtype=np.int16).reshape(3, 4, 5, 2)
    img = Image(arr, (1.0, 2.0, 3.0))
    back = medimg.read(medimg.write(img, tmp_path / "t.nii.gz"))
    assert back.shape == (3, 4, 5) and back.n_channels == 2
    assert np.array_equal(back.array, arr)


def test_hdf5_foreign_layout_and_spacing(tmp_path: Path) -> None:
    import h5py

    vol = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (slices, H, W) like ACDC
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["image"] = vol
        f["label"] = (vol > 10).astype(np.uint8)
    img = medimg.read(tmp_path / "a.h5")
    assert img.shape == (4, 3, 2) and not img.spacing_known
    assert img.array[3, 2, 1] == vol[1, 2, 3]
    img2 = medimg.read(tmp_path / "a.h5", spacing=(1.5, 1.5, 8.0), key="label")
    assert img2.spacing == (1.5, 1.5, 8.0) and img2.spacing_known
