"""A landmark keeps its world coordinate through reorienting, resampling, cropping and format conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medimg
from medimg import Image
from medimg.data import sample
from medimg.transforms import crop_to_foreground, pad_to, reorient, resample_to, resample_to_spacing

from conftest import asymmetric_image


def landmark_world(img: Image) -> np.ndarray:
    """World position of the brightest voxel (the landmark is unique by construction)."""
    idx = np.unravel_index(int(np.argmax(img.array)), img.shape)
    return img.index_to_world(np.asarray(idx, dtype=float))


@pytest.mark.parametrize("code", ["RAS", "LPS", "AIL", "SLP", "IRA"])
def test_reorient_keeps_world_and_is_reversible(code: str) -> None:
    img = asymmetric_image()
    out = reorient(img, code)
    assert out.orientation == code
    assert np.allclose(landmark_world(out), landmark_world(img), atol=1e-9)
    back = reorient(out, img.orientation)
    assert np.array_equal(back.array, img.array)
    assert np.allclose(back.origin, img.origin) and np.allclose(back.direction, img.direction)


def test_reorient_2d() -> None:
    arr = np.zeros((5, 3), np.uint8)
    arr[4, 1] = 9
    img = Image(arr, (0.5, 2.0))
    out = reorient(img, "RA")
    assert np.allclose(landmark_world(out), landmark_world(img))


def test_resample_keeps_landmark() -> None:
    img = asymmetric_image(oblique=False)
    spike = np.zeros(img.shape, np.float32)
    spike[2:5, 3:6, 1:4] = 100.0  # a block is resampled robustly; its centroid is the landmark
    block = img.with_array(spike)
    fine = resample_to_spacing(block, (0.5, 0.5, 1.0), "linear")

    def centroid(i: Image) -> np.ndarray:
        idx = np.argwhere(i.array > 50).mean(axis=0)
        return i.index_to_world(idx)

    assert np.allclose(centroid(fine), centroid(block), atol=0.5)


def test_resample_to_reference_with_other_orientation() -> None:
    img = asymmetric_image(oblique=False)
    ref = reorient(img, "RAS")
    out = resample_to(img, ref, "nearest")
    assert np.array_equal(out.array, ref.array)  # the same grid in another axis order: values match exactly


def test_crop_and_pad_back() -> None:
    img = medimg.read(sample("hippocampus")[1])
    cropped, (start, _) = crop_to_foreground(img, margin=2)
    assert cropped.shape < img.shape
    assert np.allclose(cropped.index_to_world([0, 0, 0]), img.index_to_world(np.asarray(start, float)))
    restored = pad_to(cropped, img.shape, start)
    assert np.array_equal(restored.array, img.array) and restored.same_geometry(img)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha", ".h5", ".npz", ".tif"])
def test_conversion_chain_keeps_landmark(tmp_path: Path, ext: str) -> None:
    img = asymmetric_image()
    before = landmark_world(img)
    x = reorient(img, "RAS")
    x = medimg.read(medimg.write(x, tmp_path / f"a{ext}"))
    x = reorient(x, "PIL")
    x = medimg.read(medimg.write(x, tmp_path / "b.nrrd"))
    assert np.allclose(landmark_world(x), before, atol=1e-5)


def test_real_label_volume_preserved_by_label_resampling() -> None:
    lab = medimg.read_labels(sample("hippocampus")[1])
    fine = resample_to_spacing(lab, 0.5)
    v0, v1 = lab.volumes_ml(), fine.volumes_ml()
    for k in v0:
        assert v1[k] == pytest.approx(v0[k], rel=0.05)
