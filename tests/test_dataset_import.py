"""`medimg dataset import`: image collections (paired files, NPZ) -> a segmentation dataset medimg trains on, with
spacing from an option or a CSV, 0/255 masks, RGB channels, outline filling, and clean refusals. Real files: two
HC18 ultrasound images with their drawn head outlines (tests/data/hc18)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.seg import load_dataset
from medimg.seg.dataset import check_dataset
from medimg.seg.importer import import_collection, pair_files

from conftest import DATA

runner = CliRunner()
HC = DATA / "hc18"
PIXEL = {"002_HC": 0.062032562715, "007_HC": 0.109361850697}


def no_problems(ds_dir: Path) -> bool:
    rows = check_dataset(load_dataset(ds_dir))
    return bool(rows) and all(not r["problems"] for r in rows)


def out_text(r: object) -> str:
    return " ".join(r.output.split())  # type: ignore[attr-defined]


@pytest.fixture
def hc_src(tmp_path: Path) -> Path:
    """HC18's own layout: images/, annotations/ (<id>_Annotation.png) and a pixel-size CSV."""
    src = tmp_path / "hc18"
    (src / "images").mkdir(parents=True)
    (src / "annotations").mkdir()
    for s in PIXEL:
        shutil.copy(HC / f"{s}.png", src / "images")
        shutil.copy(HC / f"{s}_Annotation.png", src / "annotations")
    (src / "pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n002_HC.png,0.062032562715,68.75\n"
        "007_HC.png,0.109361850697,62.8\n"
    )
    return src


def test_hc18_layout_with_spacing_csv_and_filled_outlines(hc_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    csv_file = str(hc_src / "pixel_size_and_HC.csv")
    args = ["dataset", "import", str(hc_src), "-o", str(out), "--spacing-csv", csv_file, "--fill-holes"]
    r = runner.invoke(app, [*args, "--labels", "1=head"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "head": 1} and meta["spacing_known"] is True
    ds = load_dataset(out)
    assert sorted(c.case_id for c in ds.cases) == sorted(PIXEL)
    assert no_problems(out)
    for s, px in PIXEL.items():
        img = medimg.read(out / "imagesTr" / f"{s}_0000.nii.gz")
        lab = medimg.read_labels(out / "labelsTr" / f"{s}.nii.gz")
        src_img = medimg.read(HC / f"{s}.png")
        assert np.array_equal(img.array, src_img.array)  # pixels unchanged, same orientation
        assert img.spacing == pytest.approx((px, px), rel=1e-6) and lab.spacing == img.spacing
        assert lab.same_geometry(img)
        ann = np.asarray(medimg.read(HC / f"{s}_Annotation.png").array) > 0
        # the outline (0/255) became 1, and its inside was filled: the head is a region many times the line
        assert set(np.unique(lab.array)) == {0, 1}
        assert (lab.array == 1).sum() > 5 * ann.sum() and np.all(lab.array[ann] == 1)
    # with the measure command on the imported label: the circumference is the filled outer edge, near HC18's value
    from medimg.measure import fit_ellipse

    hc = fit_ellipse(medimg.read_labels(out / "labelsTr" / "007_HC.nii.gz"), 1).circumference_mm
    assert hc == pytest.approx(62.8, abs=2.0)


def test_unknown_spacing_is_recorded_not_invented(hc_src: Path, tmp_path: Path) -> None:
    meta = import_collection(hc_src, tmp_path / "ds")
    assert meta["spacing_known"] is False
    assert meta["labels"] == {"background": 0, "foreground": 1}
    meta = import_collection(hc_src, tmp_path / "ds2", spacing=[0.2])
    assert meta["spacing_known"] is True
    assert medimg.read(tmp_path / "ds2" / "imagesTr" / "002_HC_0000.nii.gz").spacing == pytest.approx((0.2, 0.2))


def test_flat_folder_with_suffix_rgb_channels_and_255_masks(tmp_path: Path) -> None:
    src = tmp_path / "flat"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
        PILImage.fromarray(rgb).save(src / f"Image_0{i}.png")
        m = np.zeros((20, 30), np.uint8)
        m[5:9, 10:25] = 255
        PILImage.fromarray(m).save(src / f"Image_0{i}_1stHO.png")
        PILImage.fromarray(m // 255).save(src / f"Image_0{i}_2ndHO.png")
    # two mask sets per image: without a suffix the import asks which
    with pytest.raises(MedimgError, match="--label-suffix"):
        pair_files(src)
    out = tmp_path / "ds"
    r = runner.invoke(app, ["dataset", "import", str(src), "-o", str(out), "--label-suffix", "_1stHO"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["numTraining"] == 2
    src_rgb = medimg.read(src / "Image_00.png").array
    for k in range(3):
        assert np.array_equal(medimg.read(out / "imagesTr" / f"Image_00_{k:04d}.nii.gz").array, src_rgb[..., k])
    lab = medimg.read_labels(out / "labelsTr" / "Image_00.nii.gz").array
    assert lab.max() == 1 and lab.sum() == 4 * 15
    assert no_problems(out)
    grey = import_collection(src, tmp_path / "grey", label_suffix="_2ndHO", grey=True)
    assert grey["channel_names"] == {"0": "image"}


def test_npz_in_numpy_order(tmp_path: Path) -> None:
    imgs = np.zeros((3, 10, 16), np.float32)  # (n, rows, cols)
    labs = np.zeros((3, 10, 16), np.uint8)
    labs[:, 2:4, 11:15] = 2
    imgs[labs > 0] = 5.0
    np.savez(tmp_path / "d.npz", images=imgs, masks=labs)
    meta = import_collection(tmp_path / "d.npz", tmp_path / "ds", labels={2: "lesion"})
    assert meta["numTraining"] == 3 and meta["labels"] == {"background": 0, "lesion": 2}
    lab = medimg.read_labels(tmp_path / "ds" / "labelsTr" / "case_0.nii.gz")
    assert lab.shape == (16, 10)  # medimg's (x, y): columns first, like a PNG of the same array
    assert np.array_equal(lab.array.T, labs[0])
    with pytest.raises(MedimgError, match="--image-key"):
        np.savez(tmp_path / "e.npz", a=imgs, b=labs)
        import_collection(tmp_path / "e.npz", tmp_path / "ds_e")
    assert not (tmp_path / "ds_e").exists()


def test_bad_inputs_are_refused_and_leave_nothing(hc_src: Path, tmp_path: Path) -> None:
    # a float mask with fractions (a probability map) is not a label map
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 8, 8), np.float32), labels=np.full((2, 8, 8), 0.5, np.float32))
    with pytest.raises(MedimgError, match="whole numbers"):
        import_collection(bad, tmp_path / "o1")
    assert not (tmp_path / "o1").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o1")]
    # an existing output, both spacing options, a CSV without the image, no pairs
    r = runner.invoke(app, ["dataset", "import", str(hc_src), "-o", str(hc_src)])
    assert r.exit_code != 0 and "is also an input" in out_text(r)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    r = runner.invoke(app, ["dataset", "import", str(hc_src), "-o", str(tmp_path / "full")])
    assert r.exit_code != 0 and "choose a new output folder" in out_text(r)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    r = runner.invoke(
        app,
        ["dataset", "import", str(hc_src), "-o", str(tmp_path / "o2"), "--spacing", "1,1", "--spacing-csv", "x.csv"],
    )
    assert r.exit_code != 0 and "not both" in out_text(r)
    (tmp_path / "short.csv").write_text("filename,pixel size(mm)\n002_HC.png,0.06\n")
    with pytest.raises(MedimgError, match="no row for '007_HC'"):
        import_collection(hc_src, tmp_path / "o3", spacing_csv=tmp_path / "short.csv")
    assert not (tmp_path / "o3").exists()
    (hc_src / "annotations" / "002_HC_Annotation.png").rename(hc_src / "annotations" / "x.png")
    (hc_src / "annotations" / "007_HC_Annotation.png").rename(hc_src / "annotations" / "y.png")
    r = runner.invoke(app, ["dataset", "import", str(hc_src), "-o", str(tmp_path / "o4")])
    assert r.exit_code != 0 and "No image in" in out_text(r)
    r = runner.invoke(app, ["dataset", "import", str(tmp_path / "missing"), "-o", str(tmp_path / "o5")])
    assert r.exit_code != 0 and "No such file or folder" in out_text(r)


def test_two_annotators_are_fused_with_staple_and_rated(tmp_path: Path) -> None:
    """CHASE_DB1's two annotators (tests/data/chasedb1): --label-suffix _1stHO,_2ndHO --fuse staple trains on the
    STAPLE fusion — the same map `medimg fuse` makes — and raters.json holds each annotator's quality; missing
    --fuse, one suffix with --fuse, a bad method and a rater missing an image are refused, nothing left behind."""
    from medimg.fusion import fuse

    src = tmp_path / "chase"
    shutil.copytree(DATA / "chasedb1", src)
    out = tmp_path / "ds"
    r = runner.invoke(
        app, ["dataset", "import", str(src), "-o", str(out), "--label-suffix", "_1stHO,_2ndHO", "--fuse", "staple"]
    )
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["label_fusion"] == {"method": "staple", "raters": ["_1stHO", "_2ndHO"], "quality": "raters.json"}
    raters = json.loads((out / "raters.json").read_text())
    assert set(raters["mean"]) == {"_1stHO", "_2ndHO"} and set(raters["cases"]) == {"Image_06L"}
    lab = medimg.read_labels(out / "labelsTr" / "Image_06L.nii.gz")
    img = medimg.read(out / "imagesTr" / "Image_06L_0000.nii.gz")
    assert lab.same_geometry(img)
    a = (np.asarray(medimg.read(src / "Image_06L_1stHO.png").array) > 0).astype(np.uint8)
    b = (np.asarray(medimg.read(src / "Image_06L_2ndHO.png").array) > 0).astype(np.uint8)
    a, b = (x[..., 0] if x.ndim == 3 else x for x in (a, b))
    ref = fuse([medimg.LabelMap(a, img.spacing), medimg.LabelMap(b, img.spacing)], "staple")
    assert np.array_equal(lab.array, ref.fused.array)
    union, inter = np.logical_or(a, b).sum(), np.logical_and(a, b).sum()
    assert inter <= lab.array.sum() < union  # with two raters STAPLE keeps (about) what both drew
    for q in raters["mean"].values():
        assert 0.5 < q["1"]["sensitivity"] <= 1 and 0.9 < q["1"]["specificity"] <= 1
    (src / "Image_07L.jpg").write_bytes((src / "Image_06L.jpg").read_bytes())
    shutil.copy(src / "Image_06L_1stHO.png", src / "Image_07L_1stHO.png")  # no _2ndHO for Image_07L
    for extra, msg in (
        (["--label-suffix", "_1stHO,_2ndHO"], "say how to combine the raters with --fuse"),
        (["--label-suffix", "_1stHO", "--fuse", "staple"], "--fuse needs several raters' masks"),
        (["--label-suffix", "_1stHO,_2ndHO", "--fuse", "staple"], "Not every image has a mask from every rater"),
    ):
        bad = tmp_path / "bad"
        r = runner.invoke(app, ["dataset", "import", str(src), "-o", str(bad), *extra])
        assert r.exit_code == 2 and msg in out_text(r), r.output
        assert not bad.exists()
    with pytest.raises(MedimgError, match="Unknown --fuse"):
        import_collection(src, tmp_path / "bad2", label_suffix="_1stHO,_2ndHO", fuse="mean")
    assert not (tmp_path / "bad2").exists()


def test_a_missing_spacing_csv_is_a_clear_error(hc_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    r = runner.invoke(
        app, ["dataset", "import", str(hc_src), "-o", str(out), "--spacing-csv", str(tmp_path / "nope.csv")]
    )
    assert r.exit_code == 2, r.output
    assert "nope.csv' does not exist" in out_text(r) and "--spacing X,Y" in out_text(r)
    assert not out.exists()
