"""read -> write -> read keeps array, spacing, origin and direction for every writable format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import medimg
from medimg import Image, LabelMap
from medimg.data import sample

from conftest import DATA, SHARED, asymmetric_image, asymmetric_labels, needs_shared


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


# ---------------------------------------------------------------- label maps: what is (not) a label map


def test_read_labels_refuses_pictures_unless_forced(tmp_path: Path) -> None:
    """A grayscale JPEG (lossy) and an MRI (many values, no regions) are refused as label maps; force=True
    accepts them; a plain read() is unaffected."""
    from medimg.errors import LabelError
    from medimg.transforms import to_uint8

    head = to_uint8(medimg.read(DATA / "CT_2D_head_fixed.mha"))
    jpg = medimg.write(head, tmp_path / "head.jpg")
    with pytest.raises(LabelError, match=r"lossy JPEG.*force=True"):
        medimg.read_labels(jpg)
    assert medimg.read_labels(jpg, force=True).meta["labels_forced"]
    assert medimg.read(jpg).shape == head.shape
    png = medimg.write(head, tmp_path / "head.png")  # lossless, but still a picture
    with pytest.raises(LabelError, match="looks like an image"):
        medimg.read_labels(png)
    mri = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    with pytest.raises(LabelError, match="looks like an image"):
        medimg.read_labels(mri)
    assert len(medimg.read_labels(mri, force=True).labels) > 16
    # the real label maps next to them are accepted
    assert medimg.read_labels(DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz").labels == [1, 2]
    assert medimg.read_labels(DATA / "Image_01L_1stHO.png").labels == [1]  # 1-bit PNG vessel mask
    # so is a label map with 117 block-shaped classes (like TotalSegmentator's)
    arr = np.zeros((60, 50, 40), np.uint8)
    for i in range(117):
        x, y, z = (i % 6) * 10, ((i // 6) % 5) * 10, (i // 30) * 10
        arr[x : x + 8, y : y + 8, z : z + 8] = i + 1
    many = medimg.write(LabelMap(arr, (1.5, 1.5, 3.0)), tmp_path / "many.nii.gz")
    assert len(medimg.read_labels(many).labels) == 117


def test_read_labels_float_probabilities_message(tmp_path: Path) -> None:
    from medimg.errors import LabelError

    prob = Image(np.linspace(0, 1, 7 * 9 * 5).reshape(7, 9, 5), (1.0, 1.0, 2.0))
    p = medimg.write(prob, tmp_path / "prob.nii.gz")
    with pytest.raises(LabelError, match=r"non-integer.*force=True"):
        medimg.read_labels(p)
    assert set(np.unique(medimg.read_labels(p, force=True).array)) == {0, 1}  # rounded


@needs_shared
def test_label_rule_on_real_data() -> None:
    """Every real label map in ../shared/data is accepted (float64 CHAOS labels, 1-bit CHASE_DB1 masks, atlases
    with 117/137 regions, TotalSegmentator outputs ...) and every picture of a sample is refused."""
    from medimg.errors import LabelError

    labels = (
        sorted((SHARED / "chaos_mr" / "labelsTr").glob("*.nii.gz"))
        + sorted(SHARED.glob("chasedb1/*HO.png"))
        + sorted(SHARED.glob("totalsegmentator/example_seg*.nii.gz"))
        + [SHARED / "ants" / "mnia.nii.gz", SHARED / "ants" / "oasis_mni.nii.gz"]
        + sorted(SHARED.glob("hippocampus/labelsTr/*.nii.gz"))[:20]
        + sorted(SHARED.glob("hc18/annotations/*.png"))[:20]
        + sorted(SHARED.glob("lesions/*label*.nrrd"))
        + sorted(SHARED.glob("ms_longitudinal/*/gt.nii.gz"))
        + sorted(SHARED.glob("dicom_seg_ct3slice/*.nrrd"))
    )
    assert len(labels) > 60
    for p in labels:
        assert medimg.read_labels(p).labels, p
    pictures = [
        *sorted(SHARED.glob("ants/*.jpg")),
        SHARED / "ants" / "ch2.nii.gz",
        SHARED / "ants" / "mni.nii.gz",
    ] + (
        sorted(SHARED.glob("hc18/images/*.png"))[:40]
        + sorted(SHARED.glob("hippocampus/imagesTr/*.nii.gz"))[:20]
        + sorted(SHARED.glob("chaos_mr/imagesTr/*.nii.gz"))[:3]
        + [SHARED / "totalsegmentator" / "example_ct_sm.nii.gz", SHARED / "lesions" / "brain1_image.nrrd"]
    )
    for p in pictures:
        with pytest.raises(LabelError):
            medimg.read_labels(p)


def test_binary_mask_png_is_visible_and_reads_back(tmp_path: Path) -> None:
    """A 0/1 mask is written as a palette PNG: exact values, white on black in any viewer; read back as 1."""
    from PIL import Image as PILImage

    mask = medimg.read_labels(DATA / "Image_01L_1stHO.png")
    out = medimg.write(mask, tmp_path / "mask.png")
    with PILImage.open(out) as pic:
        assert pic.mode == "P"
        rgb = np.asarray(pic.convert("RGB"))
    assert rgb[mask.array.T == 1].min() == 255 and rgb[mask.array.T == 0].max() == 0
    back = medimg.read_labels(out)
    assert back.labels == [1] and np.array_equal(back.array, mask.array)
    # a bool image (e.g. a thresholded picture) too
    b = medimg.read_labels(medimg.write(Image(mask.array > 0), tmp_path / "bool.png"))
    assert np.array_equal(b.array, mask.array)
    # multi-label maps keep their values and colours
    lab = LabelMap(mask.array * 3, names={3: "vessel"}, colors={3: (10, 200, 30)})
    back3 = medimg.read_labels(medimg.write(lab, tmp_path / "lab.png"))
    assert back3.labels == [3] and back3.colors == {3: (10, 200, 30)} and back3.names == {3: "vessel"}
    with PILImage.open(tmp_path / "lab.png") as pic:
        assert tuple(np.asarray(pic.convert("RGB"))[mask.array.T == 1][0]) == (10, 200, 30)


def test_label_map_to_jpeg_refused(tmp_path: Path) -> None:
    from medimg.errors import UnsupportedFormatError

    mask = medimg.read_labels(DATA / "Image_01L_1stHO.png")
    with pytest.raises(UnsupportedFormatError, match=r"lossy.*png"):
        medimg.write(mask, tmp_path / "mask.jpg")
    assert not (tmp_path / "mask.jpg").exists()


# ---------------------------------------------------------------- shipped class names


def test_totalsegmentator_class_names() -> None:
    from medimg.io import class_map

    names = class_map("totalsegmentator")
    assert len(names) == 117 and names[1] == "spleen" and names[5] == "liver" and names[117] == "costal_cartilages"
    assert len(class_map("totalsegmentator_mr")) == 50
    with pytest.raises(medimg.errors.LabelError, match="totalsegmentator"):
        class_map("totalsegmentatr")


@needs_shared
def test_totalsegmentator_names_match_its_example_output(tmp_path: Path) -> None:
    """The ids are right: on TotalSegmentator's own example output, the spleen and left kidney lie on the
    patient's left (+x in LPS), the liver and right kidney on the right, L1 above L2, T12 above L1."""
    from typer.testing import CliRunner

    from medimg.cli import app

    seg = medimg.read_labels(SHARED / "totalsegmentator" / "example_seg.nii.gz", names="totalsegmentator")
    centre = {seg.names[v]: seg.index_to_world(np.argwhere(seg.array == v).mean(0)) for v in seg.labels}
    assert centre["spleen"][0] > 0 and centre["kidney_left"][0] > 0
    assert centre["liver"][0] < 0 and centre["kidney_right"][0] < 0
    assert centre["vertebrae_L2"][2] < centre["vertebrae_L1"][2] < centre["vertebrae_T12"][2]
    assert centre["rib_left_10"][0] > 0 > centre["rib_right_10"][0]
    out = tmp_path / "ts.seg.nrrd"
    r = CliRunner().invoke(
        app,
        [
            "convert",
            str(SHARED / "totalsegmentator" / "example_seg.nii.gz"),
            str(out),
            "--labels",
            "--names",
            "totalsegmentator",
        ],
    )
    assert r.exit_code == 0, r.output
    assert medimg.read_labels(out).names[5] == "liver"
