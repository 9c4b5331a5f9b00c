"""Segmentation metrics agree with DeepMind surface-distance and MONAI on real pairs and edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

import medimg
from medimg.data import sample
from medimg.errors import GeometryError, MedimgError
from medimg.metrics import instance_metrics, segmentation_metrics

from conftest import DATA, SHARED, needs_shared

sd = pytest.importorskip("surface_distance")
torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")
np.Inf = np.inf  # type: ignore[attr-defined]  # surface-distance 0.1 still uses the NumPy 1 aliases
np.NaN = np.nan  # type: ignore[attr-defined]

RTOL = 1e-6


def deepmind_reference(p: np.ndarray, g: np.ndarray, sp: tuple[float, ...], tol: float = 2.0) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sd.compute_surface_distances(g, p, sp)
        a_gp, a_pg = sd.compute_average_surface_distance(r)
        return {
            "dice": sd.compute_dice_coefficient(g, p),
            "hd": sd.compute_robust_hausdorff(r, 100),
            "hd95": sd.compute_robust_hausdorff(r, 95),
            "masd": 0.5 * (a_gp + a_pg),
            "nsd": sd.compute_surface_dice_at_tolerance(r, tol),
        }


def monai_reference(p: np.ndarray, g: np.ndarray, sp: tuple[float, ...], tol: float = 2.0) -> dict[str, float]:
    yp = torch.from_numpy(np.stack([~p, p])[None].astype(np.float32))
    yg = torch.from_numpy(np.stack([~g, g])[None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd": monai_metrics.compute_hausdorff_distance(yp, yg, spacing=sp).item(),
            "hd95": monai_metrics.compute_hausdorff_distance(yp, yg, percentile=95, spacing=sp).item(),
            "assd": monai_metrics.compute_average_surface_distance(yp, yg, symmetric=True, spacing=sp).item(),
            "nsd": monai_metrics.compute_surface_dice(yp, yg, class_thresholds=[tol], spacing=sp).item(),
        }


def assert_close(ours: dict[str, float], ref: dict[str, float], what: str) -> None:
    for k, v in ref.items():
        o = ours[k]
        if math.isnan(v) or math.isinf(v):
            assert (math.isnan(o) and math.isnan(v)) or o == v, f"{what} {k}: ours {o} vs reference {v}"
        else:
            assert o == pytest.approx(v, rel=RTOL, abs=1e-9), f"{what} {k}: ours {o} vs reference {v}"


def compare_all(pred: np.ndarray, ref: np.ndarray, sp: tuple[float, ...], what: str) -> None:
    dm = segmentation_metrics(
        pred, ref, spacing=sp, convention="deepmind", metrics=("dice", "hd", "hd95", "masd", "nsd")
    )
    mo = segmentation_metrics(pred, ref, spacing=sp, convention="monai", metrics=("hd", "hd95", "assd", "nsd"))
    for c in dm:
        p, g = pred == c, ref == c
        assert_close(dm[c], deepmind_reference(p, g, sp), f"{what} class {c} deepmind")
        assert_close(mo[c], monai_reference(p, g, sp), f"{what} class {c} monai")


def shifted(a: np.ndarray, shift: tuple[int, ...]) -> np.ndarray:
    return ndimage.shift(a, shift, order=0, mode="constant", cval=0)


def test_hippocampus_eroded_and_shifted() -> None:
    lab = medimg.read_labels(sample("hippocampus")[1])
    a = lab.array
    eroded = np.where(ndimage.binary_erosion(a > 0), a, 0).astype(a.dtype)
    compare_all(eroded, a, lab.spacing, "hippocampus eroded")
    compare_all(shifted(a, (1, -2, 1)), a, (1.0, 1.0, 1.0), "hippocampus shifted")
    compare_all(shifted(a, (2, 0, 0)), a, (0.7, 1.1, 2.5), "hippocampus shifted anisotropic")


def test_chase_db1_inter_rater_2d() -> None:
    first = medimg.read(DATA / "Image_01L_1stHO.png").array > 0
    if (SHARED / "chasedb1" / "Image_01L_2ndHO.png").exists():
        second = medimg.read(SHARED / "chasedb1" / "Image_01L_2ndHO.png").array > 0
    else:
        second = ndimage.binary_dilation(first)
    compare_all(second.astype(np.uint8), first.astype(np.uint8), (1.0, 1.0), "CHASE_DB1 2nd vs 1st annotator")


@needs_shared
def test_totalsegmentator_seg_vs_fast() -> None:
    ref = medimg.read_labels(SHARED / "totalsegmentator" / "example_seg.nii.gz")
    pred = medimg.read_labels(SHARED / "totalsegmentator" / "example_seg_fast.nii.gz")
    compare_all(pred.array, ref.array, ref.spacing, "TotalSegmentator")


def cube(shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[tuple(slice(lo, hi) for _ in shape)] = 1
    return a


@pytest.mark.parametrize(
    "case",
    ["empty_pred", "empty_ref", "single_voxel", "border", "only_in_pred", "2d", "anisotropic"],
)
def test_edge_cases_match_references(case: str) -> None:
    sp: tuple[float, ...] = (1.0, 1.0, 1.0)
    ref = cube((12, 12, 12), 3, 8)
    pred = cube((12, 12, 12), 4, 9)
    if case == "empty_pred":
        pred = np.zeros_like(ref)
    elif case == "empty_ref":
        ref = np.zeros_like(pred)
    elif case == "single_voxel":
        ref = np.zeros_like(ref)
        ref[5, 5, 5] = 1
        pred = np.zeros_like(ref)
        pred[5, 6, 5] = 1
    elif case == "border":
        ref = cube((12, 12, 12), 0, 6)
        pred = cube((12, 12, 12), 0, 7)
    elif case == "only_in_pred":
        ref = ref.copy()
        pred = pred * 2  # label 2 only in the prediction, label 1 only in the reference
    elif case == "2d":
        ref, pred, sp = cube((15, 11), 2, 7), cube((15, 11), 3, 9), (0.5, 1.5)
    elif case == "anisotropic":
        sp = (0.8, 0.8, 5.0)
    compare_all(pred, ref, sp, case)


def test_both_empty_conventions() -> None:
    z = np.zeros((6, 6, 6), np.uint8)
    dm = segmentation_metrics(z, z, labels=[1])[1]
    assert math.isnan(dm["dice"]) and math.isnan(dm["nsd"])
    ref = deepmind_reference(z > 0, z > 0, (1.0, 1.0, 1.0))
    assert math.isnan(ref["dice"])
    mo = segmentation_metrics(z, z, labels=[1], convention="monai", metrics=("hd", "hd95", "assd", "nsd"))[1]
    assert_close(mo, monai_reference(z > 0, z > 0, (1.0, 1.0, 1.0)), "both empty monai")
    mr = segmentation_metrics(z, z, labels=[1], convention="metricsreloaded")[1]
    assert mr["dice"] == 1.0 and mr["hd95"] == 0.0


def test_metricsreloaded_formulas() -> None:
    ref = cube((12, 12, 12), 3, 8)
    pred = cube((12, 12, 12), 4, 9)
    m = segmentation_metrics(pred, ref, convention="metricsreloaded")[1]
    edges = [a.astype(bool) & ~ndimage.binary_erosion(a) for a in (ref, pred)]
    dt_ref = ndimage.distance_transform_edt(~edges[0])
    dt_pred = ndimage.distance_transform_edt(~edges[1])
    d_rp, d_pr = dt_pred[edges[0]], dt_ref[edges[1]]
    assert m["hd95"] == pytest.approx(max(np.percentile(d_rp, 95), np.percentile(d_pr, 95)))
    assert m["assd"] == pytest.approx((d_rp.sum() + d_pr.sum()) / (d_rp.size + d_pr.size))
    assert m["masd"] == pytest.approx(0.5 * (d_rp.mean() + d_pr.mean()))


def test_overlap_and_volume_metrics() -> None:
    ref = cube((10, 10, 10), 2, 6)  # 64 voxels
    pred = cube((10, 10, 10), 3, 7)  # 64 voxels, 27 shared
    m = segmentation_metrics(pred, ref, spacing=(2.0, 1.0, 1.0))[1]
    assert m["dice"] == pytest.approx(2 * 27 / 128) and m["iou"] == pytest.approx(27 / 101)
    assert m["precision"] == pytest.approx(27 / 64) and m["recall"] == pytest.approx(27 / 64)
    assert m["volume_ref_ml"] == pytest.approx(64 * 2 / 1000) and m["volume_similarity"] == 1.0


def test_images_with_geometry() -> None:
    lab = medimg.read_labels(sample("hippocampus")[1])
    same = segmentation_metrics(lab, lab)
    assert all(v["dice"] == 1.0 and v["hd95"] == 0.0 for v in same.values())
    other = medimg.Image(lab.array, (2.0, 1.0, 1.0))
    with pytest.raises(GeometryError):
        segmentation_metrics(other, lab)
    with pytest.raises(MedimgError, match="Unknown metric"):
        segmentation_metrics(lab, lab, metrics=("dice", "nope"))


def test_boundary_iou_and_cldice() -> None:
    vessel = medimg.read(DATA / "Image_01L_1stHO.png").array > 0
    m = segmentation_metrics(vessel, vessel, metrics=("dice", "boundary_iou", "cldice"))[1]
    assert m["boundary_iou"] == 1.0 and m["cldice"] == 1.0
    thinner = ndimage.binary_erosion(vessel)
    m2 = segmentation_metrics(thinner, vessel, metrics=("dice", "boundary_iou", "cldice"))[1]
    assert 0 < m2["boundary_iou"] < 1 and m2["cldice"] < 1 and m2["cldice"] > m2["dice"] - 0.5


def test_instance_metrics() -> None:
    ref = np.zeros((20, 20), np.uint8)
    ref[1:4, 1:4] = 1  # lesion A (detected)
    ref[10:14, 10:14] = 1  # lesion B (missed)
    pred = np.zeros_like(ref)
    pred[1:5, 1:4] = 1  # covers A (IoU 9/12)
    pred[16:18, 1:3] = 1  # false positive
    m = instance_metrics(pred, ref)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    assert m["f1"] == pytest.approx(0.5)
    assert m["lesion_dice"] == [pytest.approx(2 * 9 / 21)]
    assert m["mean_lesion_dice"] == pytest.approx(2 * 9 / 21 / 2)
    assert m["panoptic_quality"] == pytest.approx(0.75 * (1 / 2))  # SQ = IoU 0.75, RQ = 1 / (1 + 0.5 + 0.5)
    half = np.zeros_like(ref)
    half[2:4, 1:4] = 1  # IoU 6/9 with A: a detection, and a PQ match since > 0.5
    assert instance_metrics(half, ref, iou_threshold=0.7)["tp"] == 0
