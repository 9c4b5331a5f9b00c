"""Bad inputs give a clear MedimgError and leave no partial output."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import medimg
from medimg import Image, LabelMap
from medimg.data import sample
from medimg.errors import (
    CorruptFileError,
    DimensionError,
    GeometryError,
    MedimgError,
    NonFiniteError,
    OutputPathError,
    UnsupportedFormatError,
)
from medimg.image import check_same_geometry

from conftest import DATA, asymmetric_image, asymmetric_labels


def test_truncated_nii_gz(tmp_path: Path) -> None:
    data = sample("ct")[0].read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        medimg.read(bad)


def test_truncated_uncompressed_nifti(tmp_path: Path) -> None:
    raw = gzip.decompress(sample("hippocampus")[0].read_bytes())
    bad = tmp_path / "cut.nii"
    bad.write_bytes(raw[:2000])
    with pytest.raises(CorruptFileError, match="truncated"):
        medimg.read(bad)


def test_non_image_files(tmp_path: Path) -> None:
    txt = tmp_path / "notes.nii.gz"
    txt.write_text("this is not an image")
    with pytest.raises(CorruptFileError):
        medimg.read(txt)
    unknown = tmp_path / "report.xyz"
    unknown.write_text("plain text")
    with pytest.raises(UnsupportedFormatError, match="not a recognised medical image"):
        medimg.read(unknown)
    empty = tmp_path / "empty.nrrd"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError):
        medimg.read(empty)
    with pytest.raises(UnsupportedFormatError, match="does not exist"):
        medimg.read(tmp_path / "missing.nii.gz")


def test_garbage_with_medical_extensions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for ext in (".nrrd", ".mha", ".png", ".h5", ".npz", ".dcm"):
        p = tmp_path / f"junk{ext}"
        p.write_bytes(rng.integers(0, 255, 500).astype(np.uint8).tobytes())
        with pytest.raises(MedimgError):
            medimg.read(p)


def test_nan_and_inf_voxels(tmp_path: Path) -> None:
    arr = np.ones((4, 4, 4), np.float32)
    arr[0, 0, 0] = np.nan
    arr[1, 1, 1] = np.inf
    p = medimg.write(Image(arr, (1.0, 1.0, 1.0)), tmp_path / "nan.nii.gz")
    with pytest.raises(NonFiniteError, match="1 NaN, 1"):
        medimg.read(p)
    assert np.isnan(medimg.read(p, allow_nonfinite=True).array[0, 0, 0])


def test_4d_where_3d_expected(tmp_path: Path) -> None:
    p = medimg.write(Image(np.zeros((3, 4, 5, 2), np.uint8), (1.0, 1.0, 1.0)), tmp_path / "t.nii.gz")
    with pytest.raises(DimensionError, match="2 channels"):
        medimg.read_labels(p)
    with pytest.raises(DimensionError, match="Expected a 3D"):
        medimg.read(DATA / "CT_2D_head_fixed.mha").require(ndim=3)


def test_image_label_geometry_mismatch() -> None:
    img = medimg.read(DATA / "breast1_image.nrrd")
    lab = medimg.read_labels(sample("hippocampus")[1])
    with pytest.raises(GeometryError, match=r"shape .* spacing"):
        check_same_geometry(img, lab)


def test_output_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="does not exist"):
        medimg.write(asymmetric_image(), tmp_path / "no" / "such" / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_output_folder_read_only(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only system folder instead
        target = Path("/sys/medimg_test.nii.gz")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target = ro / "x.nii.gz"
    try:
        with pytest.raises(OutputPathError):
            medimg.write(asymmetric_image(), target)
        assert not target.exists()
    finally:
        if target.parent != Path("/sys"):
            target.parent.chmod(0o755)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    # a 3D image cannot be a PNG: the writer fails after the temporary file is opened
    with pytest.raises(DimensionError):
        medimg.write(asymmetric_image(), tmp_path / "x.png")
    rgb16 = Image(np.zeros((4, 4, 3), np.uint16), (1.0, 1.0))
    with pytest.raises(UnsupportedFormatError):
        medimg.write(rgb16, tmp_path / "y.png")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_not_clobbered_by_failed_write(tmp_path: Path) -> None:
    target = medimg.write(asymmetric_labels(), tmp_path / "keep.nrrd")
    before = target.read_bytes()
    with pytest.raises(MedimgError):
        medimg.write(LabelMap(np.zeros((2, 2, 2), np.uint8)), tmp_path / "keep.dcm", reference=tmp_path)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nrrd"]


def test_unknown_output_extension(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="Writable"):
        medimg.write(asymmetric_image(), tmp_path / "x.xyz")


def test_labels_must_be_integers(tmp_path: Path) -> None:
    p = medimg.write(Image(np.full((3, 3, 3), 0.5, np.float32), (1.0, 1.0, 1.0)), tmp_path / "p.nii.gz")
    with pytest.raises(MedimgError, match="integer"):
        medimg.read_labels(p)
