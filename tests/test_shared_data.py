"""Every file in ../shared/data opens, and what medimg reports matches SimpleITK / the DICOM headers.

Skipped when the folder is absent (set MEDIMG_SHARED_DATA to point elsewhere)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import medimg
from medimg.errors import DicomSeriesError
from medimg.info import path_summary

from conftest import SHARED, needs_shared
from test_dicom import assert_agrees_with_sitk, sitk_series

pytestmark = needs_shared

SERIES_DIRS = {"totalsegmentator/example_ct_dicom", "dicom_seg_ct3slice/ct-3slice", "monai_testing/CT_DICOM"}


def all_inputs() -> list[str]:
    if not SHARED.is_dir():
        return []
    out = sorted(SERIES_DIRS)
    for p in sorted(SHARED.rglob("*")):
        rel = p.relative_to(SHARED).as_posix()
        if p.is_file() and p.name != "README.md" and not any(rel.startswith(d + "/") for d in SERIES_DIRS):
            out.append(rel)
    return out


def sitk_reference(p: Path) -> sitk.Image | None:
    if p.suffix in (".jpg", ".png", ".mha", ".nrrd") or p.name.endswith((".nii", ".nii.gz")):
        return sitk.ReadImage(str(p))
    return None


SIDE_FILES = (".csv", ".json", ".txt")  # tables, dataset descriptions and ITK transforms beside the images


def check_side_file(p: Path) -> None:
    """Side files are read by what uses them: CSV tables, nnU-Net dataset.json, ITK linear transforms."""
    if p.suffix == ".csv":
        import csv

        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and all(len(r) == len(rows[0]) for r in rows), p
    elif p.suffix == ".json":
        from medimg.seg import load_dataset

        ds = load_dataset(p.parent)
        assert ds.cases and all(c.label is not None for c in ds.cases)
        assert ds.labels and set(ds.labels) >= {0, 1}
    else:
        from medimg.register.transform import Transform

        t = Transform.load(p)
        ref = sitk.ReadTransform(str(p))
        pts = np.array([[0.0, 0.0, 0.0], [10.0, -20.0, 30.0]])
        assert np.allclose(t.transform_points(pts), [ref.TransformPoint(tuple(q)) for q in pts], atol=1e-6)


@pytest.mark.parametrize("rel", all_inputs())
def test_every_file_opens_with_correct_geometry(rel: str) -> None:
    p = SHARED / rel
    if p.suffix in SIDE_FILES:
        check_side_file(p)
        return
    if rel == "voxelmorph/labels.npz":  # a 1D list of label ids, not an image: info lists its array
        from medimg.io import list_arrays

        assert list_arrays(p) == {"labels": ((30,), "int64")}
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"allow_irregular": True} if rel == "monai_testing/CT_DICOM" else {}
        s = path_summary(p, **kw)
        img = medimg.read(p, **kw)
    assert s["shape"] == list(img.shape) and s["spacing_mm"] == list(img.spacing)
    ref = sitk_reference(p)
    if ref is not None and ref.GetDimension() == img.ndim:
        assert img.shape == ref.GetSize()
        assert np.allclose(img.spacing, ref.GetSpacing(), atol=1e-5)
        assert np.allclose(img.origin, ref.GetOrigin(), atol=1e-3)
        assert np.allclose(img.direction.ravel(), ref.GetDirection(), atol=1e-5)
    if p.suffix == ".dcm" and img.ndim == 3 and img.meta.get("format") == "dicom":
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        ps = ds.get("PixelSpacing")
        if ps is None and "SharedFunctionalGroupsSequence" in ds:
            ps = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        if ps is not None:
            assert img.spacing[0] == pytest.approx(float(ps[1])) and img.spacing[1] == pytest.approx(float(ps[0]))
    if "labelsTr" in rel or rel.endswith(("_seg.nrrd", "label.nrrd", "HO.png")) or "example_seg" in rel:
        assert s["kind"] == "label map" and s["labels"], rel


def test_hippocampus_labels_reported() -> None:
    s = path_summary(SHARED / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    assert [lab["value"] for lab in s["labels"]] == [1, 2]


@pytest.mark.parametrize("folder", ["totalsegmentator/example_ct_dicom", "dicom_seg_ct3slice/ct-3slice"])
def test_dicom_series_agree_with_simpleitk(folder: str) -> None:
    assert_agrees_with_sitk(medimg.read(SHARED / folder), sitk_series(SHARED / folder))


def test_monai_series_gap_detected() -> None:
    with pytest.raises(DicomSeriesError, match="161 missing"):
        medimg.read(SHARED / "monai_testing" / "CT_DICOM")


def test_totalsegmentator_dicom_matches_its_nifti() -> None:
    """TotalSegmentator's seg of its DICOM example lies exactly on the series grid (after exact reorientation)."""
    from medimg.transforms import reorient

    ct = medimg.read(SHARED / "totalsegmentator" / "example_ct_dicom")
    seg = medimg.read_labels(SHARED / "totalsegmentator" / "example_seg_dicom.nii.gz")
    assert reorient(seg, ct.orientation).same_geometry(ct, atol=1e-3)


def test_dcmqi_seg_matches_nrrd_label(tmp_path: Path) -> None:
    """The dcmqi liver SEG and its NRRD label map agree voxel for voxel; medimg's own SEG of it validates."""
    from test_dicom import _dciodvfy_errors

    seg = medimg.read(SHARED / "dicom_seg_ct3slice" / "liver.dcm")
    nrrd = medimg.read_labels(SHARED / "dicom_seg_ct3slice" / "liver_seg.nrrd")
    assert seg.same_geometry(nrrd, atol=1e-3)
    assert np.array_equal(seg.array > 0, nrrd.array > 0)
    out = medimg.write(nrrd, tmp_path / "liver.dcm", reference=SHARED / "dicom_seg_ct3slice" / "ct-3slice")
    assert _dciodvfy_errors(out) == []
    assert np.array_equal(medimg.read(out).array, nrrd.array)


def test_acdc_h5_spacing_unknown() -> None:
    img = medimg.read(SHARED / "acdc" / "patient001_frame01.h5")
    assert not img.spacing_known and img.shape[2] == 10
    lab = medimg.read_labels(SHARED / "acdc" / "patient001_frame01.h5", key="label")
    assert set(lab.labels) == {1, 2, 3}
