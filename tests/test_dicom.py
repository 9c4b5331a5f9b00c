"""DICOM series and SEG: agreement with SimpleITK, gap detection, series choice, SEG write/validate/read."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import medimg
from medimg import LabelMap
from medimg.errors import DicomSeriesError, GeometryError, LabelError
from medimg.io import scan_folder
from medimg.report_colors import label_color

from conftest import DATA, SHARED, needs_shared


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_agrees_with_sitk(img: medimg.Image, ref: sitk.Image) -> None:
    assert img.shape == ref.GetSize()
    assert np.array_equal(img.array, sitk.GetArrayFromImage(ref).T)
    assert np.allclose(img.spacing, ref.GetSpacing(), atol=1e-6)
    assert np.allclose(img.origin, ref.GetOrigin(), atol=1e-6)
    assert np.allclose(img.direction.ravel(), ref.GetDirection(), atol=1e-6)
    # world coordinates of a few voxels agree with SimpleITK's own index->point mapping
    for idx in [(0, 0, 0), (3, 11, 1), tuple(s - 1 for s in img.shape)]:
        ours = img.index_to_world(np.asarray(idx, float))
        assert np.allclose(ours, ref.TransformIndexToPhysicalPoint([int(i) for i in idx]), atol=1e-6)


def test_series_agrees_with_simpleitk(ct3: Path) -> None:
    img = medimg.read(ct3)
    assert img.meta["modality"] == "CT"
    assert img.spacing[2] == pytest.approx(1.25, abs=1e-3)
    assert_agrees_with_sitk(img, sitk_series(ct3))


def test_series_to_nifti_keeps_world_coordinates(ct3: Path, tmp_path: Path) -> None:
    out = medimg.write(medimg.read(ct3), tmp_path / "ct.nii.gz")
    nii = sitk.ReadImage(str(out))
    ref = sitk_series(ct3)
    assert np.array_equal(sitk.GetArrayFromImage(nii), sitk.GetArrayFromImage(ref))
    for idx in [(0, 0, 0), (15, 15, 2)]:
        assert np.allclose(nii.TransformIndexToPhysicalPoint(idx), ref.TransformIndexToPhysicalPoint(idx), atol=1e-4)


def test_rescale_slope_intercept_applied(ct3: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(ct3 / "7136")
    raw = ds.pixel_array.astype(np.int32)
    hu = raw * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    img = medimg.read(ct3)
    z = int(np.argmin([abs(img.index_to_world([0, 0, k])[2] - float(ds.ImagePositionPatient[2])) for k in range(3)]))
    assert np.array_equal(img.array[:, :, z], hu.T)


def test_missing_slice_detected() -> None:
    with pytest.raises(DicomSeriesError, match="missing slice"):
        medimg.read(DATA / "ct_dicom_gap")


def test_missing_slice_interpolated_on_request() -> None:
    img = medimg.read(DATA / "ct_dicom_gap", allow_irregular=True)
    assert img.meta["irregular_slices_interpolated"]
    assert img.spacing[2] == pytest.approx(1.25, abs=1e-3)
    # the grid spans the real extent from the first to the last slice position
    assert img.index_to_world([0, 0, 0])[2] == pytest.approx(-99.48, abs=1e-3)
    assert img.index_to_world([0, 0, img.shape[2] - 1])[2] == pytest.approx(105.52, abs=1.25)


def test_mixed_series_folder(ct3: Path, tmp_path: Path) -> None:
    shutil.copy(DATA / "highdicom" / "ct_image.dcm", ct3 / "other_series.dcm")
    found = scan_folder(ct3)
    assert len(found) == 2 and found[0].n_files == 3
    with pytest.raises(DicomSeriesError, match="2 DICOM series"):
        medimg.read(ct3)
    assert medimg.read(ct3, series="largest").shape == (16, 16, 3)
    other = medimg.read(ct3, series=found[1].uid[-12:])
    assert other.shape == (128, 128, 1)


def test_mixed_sizes_in_one_series_rejected(ct3: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(DATA / "highdicom" / "ct_image.dcm")
    ds.SeriesInstanceUID = pydicom.dcmread(ct3 / "7136").SeriesInstanceUID
    ds.save_as(ct3 / "intruder.dcm")
    with pytest.raises(DicomSeriesError, match="different rows"):
        medimg.read(ct3)


def test_non_dicom_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DicomSeriesError, match="No DICOM files"):
        medimg.read(tmp_path)


def _labels_on(ct: medimg.Image) -> LabelMap:
    arr = (ct.array > 0).astype(np.uint8) + (ct.array > 200).astype(np.uint8) * 4  # values 1 and 5
    return LabelMap(
        arr, ct.spacing, ct.origin, ct.direction, names={1: "soft tissue", 5: "dense"}, colors={1: (200, 40, 40)}
    )


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        if os.environ.get("MEDIMG_REQUIRE_DCIODVFY"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is required but not installed")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def test_dicom_seg_write_validates_and_reads_back(ct3: Path, tmp_path: Path) -> None:
    ct = medimg.read(ct3)
    labels = _labels_on(ct)
    out = medimg.write(labels, tmp_path / "seg.dcm", reference=ct3)
    assert _dciodvfy_errors(out) == []
    back = medimg.read(out)
    assert isinstance(back, LabelMap)
    assert np.array_equal(back.array, labels.array)  # original label values restored (1 and 5, not 1 and 2)
    assert back.same_geometry(ct)
    assert back.names == {1: "soft tissue", 5: "dense"}
    assert back.colors[1] == pytest.approx((200, 40, 40), abs=2)


def test_nifti_to_seg_to_nifti(ct3: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medimg.cli import app
    from medimg.transforms import reorient

    ct = medimg.read(ct3)
    labels = reorient(_labels_on(ct), "RAS")  # a NIfTI label is usually RAS; the SEG writer reorients exactly
    nii = medimg.write(labels, tmp_path / "labels.nii.gz")
    runner = CliRunner()
    r = runner.invoke(app, ["convert", str(nii), str(tmp_path / "labels.dcm"), "--reference", str(ct3)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "labels.dcm"), str(tmp_path / "back.nii.gz")])
    assert r.exit_code == 0, r.output
    back = reorient(medimg.read_labels(tmp_path / "back.nii.gz"), "RAS")
    original = medimg.read_labels(nii)
    assert np.array_equal(back.array, original.array)
    assert back.same_geometry(original, atol=1e-5)


def test_seg_geometry_mismatch_and_empty(ct3: Path, tmp_path: Path) -> None:
    ct = medimg.read(ct3)
    shifted = LabelMap(np.ones(ct.shape, np.uint8), ct.spacing, np.asarray(ct.origin) + 5, ct.direction)
    with pytest.raises(GeometryError, match="origin"):
        medimg.write(shifted, tmp_path / "bad.dcm", reference=ct3)
    empty = LabelMap(np.zeros(ct.shape, np.uint8), ct.spacing, ct.origin, ct.direction)
    with pytest.raises(LabelError, match="empty"):
        medimg.write(empty, tmp_path / "empty.dcm", reference=ct3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct3"]  # nothing half-written


def test_read_highdicom_seg_objects() -> None:
    seg = medimg.read(DATA / "highdicom" / "seg_image_ct_binary.dcm")
    assert isinstance(seg, LabelMap) and seg.names == {1: "first segment"} and seg.shape == (16, 16, 3)
    with pytest.warns(UserWarning, match="more than one segment"):
        overlap = medimg.read(DATA / "highdicom" / "seg_image_ct_binary_overlap.dcm")
    assert overlap.meta["overlap_voxels"] > 0 and set(overlap.labels) <= {1, 2}
    cr = medimg.read(DATA / "highdicom" / "seg_image_cr_binary.dcm")
    assert cr.ndim == 2 and cr.labels == [1]


def test_series_short_uid_from_info_works_as_is(ct3: Path) -> None:
    """`medimg info` shows each series' shortest unique UID prefix; --series accepts it as shown (with its
    ellipsis), a plain prefix, or a suffix; an ambiguous prefix is refused."""
    from medimg.info import path_summary

    shutil.copy(DATA / "highdicom" / "ct_image.dcm", ct3 / "other_series.dcm")
    info = path_summary(ct3)
    assert "unique prefix" in info["note"]
    for s in info["series"]:
        short = s["series_uid_short"]
        assert len(short) < len(s["series_uid"]) and short.endswith("\u2026")
        img = medimg.read(ct3, series=short)
        assert img.meta["series_uid"] == s["series_uid"]
        assert medimg.read(ct3, series=short.rstrip("\u2026")).meta["series_uid"] == s["series_uid"]
        assert medimg.read(ct3, series=short.rstrip("\u2026") + "...").meta["series_uid"] == s["series_uid"]
    a, b = (s["series_uid"] for s in info["series"])
    common = a[: next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)]
    with pytest.raises(DicomSeriesError, match="ambiguous"):
        medimg.read(ct3, series=common)


@needs_shared
def test_enhanced_mr_without_geometry_has_unknown_spacing() -> None:
    """emri_small.dcm (Enhanced MR) has no Pixel Measures / Plane Position: spacing is unknown, not 1 mm."""
    from medimg.info import path_summary

    p = SHARED / "dicom_misc" / "pydicom_data" / "emri_small.dcm"
    img = medimg.read(p)
    assert img.shape == (64, 64, 10) and not img.spacing_known
    assert path_summary(p)["spacing_known"] is False
    ect = medimg.read(SHARED / "dicom_misc" / "pydicom_data" / "eCT_Supplemental.dcm")  # gives its geometry
    assert ect.spacing_known and ect.spacing[0] == pytest.approx(0.388672)


def test_dicom_seg_codes_colours_algorithm_and_no_empty_frames(ct3: Path, tmp_path: Path) -> None:
    import pydicom

    ct = medimg.read(ct3)
    arr = np.zeros(ct.shape, np.uint8)
    arr[3:9, 4:10, 0] = 5  # liver on the first slice only
    arr[2:5, 2:5, 2] = 2  # kidney on the last slice only
    arr[10:12, 10:12, 2] = 7  # an unnamed class
    labels = LabelMap(arr, ct.spacing, ct.origin, ct.direction, names={5: "liver", 2: "kidney_left", 7: "blob"})
    out = medimg.write(labels, tmp_path / "auto.dcm", reference=ct3, algorithm="medimg hippocampus 1.2")
    assert _dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    assert int(ds.NumberOfFrames) == 3  # one frame per (segment, slice) with voxels; 9 with empty frames
    by_label = {str(d.SegmentLabel): d for d in ds.SegmentSequence}
    assert by_label["liver"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT Liver
    assert by_label["kidney_left"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"  # SCT Kidney
    assert by_label["blob"].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    for d in ds.SegmentSequence:
        assert d.SegmentAlgorithmType == "AUTOMATIC" and "RecommendedDisplayCIELabValue" in d
        algo = d.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("medimg hippocampus", "1.2")
    back = medimg.read(out)
    assert back.same_geometry(ct) and np.array_equal(back.array, arr)  # back on the full 3-slice grid
    assert back.colors[5] == pytest.approx(label_color(5), abs=2)
    manual = pydicom.dcmread(medimg.write(labels, tmp_path / "manual.dcm", reference=ct3))
    assert {d.SegmentAlgorithmType for d in manual.SegmentSequence} == {"MANUAL"}


def test_segment_codes() -> None:
    from medimg.io.dicom_seg import segment_codes

    meaning = {
        n: segment_codes(n)[1].meaning
        for n in (
            "kidney_right",
            "vertebrae_L1",
            "rib_left_12",
            "Hippocampus",
            "urinary_bladder",
            "liver tumour",
            "lung_upper_lobe_left",
            "anterior",
        )
    }
    assert meaning == {
        "kidney_right": "Kidney",
        "vertebrae_L1": "Vertebra",
        "rib_left_12": "Rib",
        "Hippocampus": "Hippocampus",
        "urinary_bladder": "Bladder",
        "liver tumour": "Neoplasm",
        "lung_upper_lobe_left": "Tissue",
        "anterior": "Tissue",
    }
