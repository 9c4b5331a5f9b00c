"""KID, precision/recall/density/coverage, MS-SSIM diversity (medimg.distribution) and the gen_metrics operation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medimg.distribution import kid, ms_ssim, ms_ssim_diversity, ms_ssim_settings, pixel_features, prdc, to_common
from medimg.errors import MedimgError
from medimg.ops import Context, run

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pneu() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(DATA / "pneumoniamnist_subset.npz")
    return d["train_images"].astype(np.float32), d["val_images"].astype(np.float32)


def test_identical_sets(pneu: tuple[np.ndarray, np.ndarray]) -> None:
    x = pixel_features(list(pneu[0][:120]))
    # identical sets: ~0 (subsets of half the set: the unbiased estimate is slightly negative when subsets share
    # images), far below the same set shifted
    m, s = kid(x, x, subsets=20, subset_size=1000)
    assert abs(m) < kid(x, x + 0.3, subsets=20, subset_size=1000)[0] / 5 and s > 0
    # two halves of one set (one distribution): ~0, well below a planted shift of the second half
    h1, h2 = x[:60], x[60:]
    m, s = kid(h1, h2, subsets=20, subset_size=50)
    assert abs(m) < 3 * s + 0.02
    assert abs(m) < kid(h1, h2 + 0.5, subsets=20, subset_size=50)[0] / 5
    r = prdc(x, x, k=5)
    assert (r.precision, r.recall, r.coverage) == (1.0, 1.0, 1.0)
    assert r.density == pytest.approx(1.0, abs=0.05)


def test_disjoint_sets_and_kid_grows_with_shift(pneu: tuple[np.ndarray, np.ndarray]) -> None:
    a = pixel_features(list(pneu[0][:100]))
    b = pixel_features(list(pneu[1][:100]))
    far = prdc(a, b + 50.0, k=5)
    assert far.precision == 0 and far.recall == 0 and far.coverage == 0 and far.density == 0
    near = prdc(a, b, k=5)
    assert near.precision > 0.5 and near.recall > 0.5
    kids = [kid(a, b + d, subsets=20, subset_size=80)[0] for d in (0.0, 0.3, 1.0)]
    assert kids[0] < kids[1] < kids[2]
    assert abs(kids[0]) < kids[1] / 5


def test_ms_ssim_identity_and_monai_agreement(pneu: tuple[np.ndarray, np.ndarray]) -> None:
    from monai.metrics.regression import compute_ms_ssim

    imgs = to_common(list(pneu[0][:8]))
    ks, sg, w = ms_ssim_settings(imgs.shape[1:])
    assert np.allclose(ms_ssim(imgs, imgs, ks, sg, w), 1.0, atol=1e-9)
    # larger real images: 2x upsampled X-rays (56 x 56 -> kernel 11 does not fit 5 levels; the rule picks)
    big = to_common(list(pneu[1][:8]), (96, 96))
    for x in (imgs, big):
        ks, sg, w = ms_ssim_settings(x.shape[1:])
        ours = ms_ssim(x[:4], x[4:], ks, sg, w)
        ref = compute_ms_ssim(
            torch.from_numpy(x[:4, None]),
            torch.from_numpy(x[4:, None]),
            2,
            1.0,
            kernel_size=ks,
            kernel_sigma=sg,
            weights=w,
        ).numpy()[:, 0]
        assert np.allclose(ours, ref, atol=1e-5), (ours, ref)
        assert np.all(ours < 0.999)
    m, _s, n = ms_ssim_diversity(list(pneu[0][:20]), pairs=30)
    assert 0 < m < 1 and n == 30
    assert ms_ssim_diversity([pneu[0][0]] * 5)[0] == pytest.approx(1.0)


def _pngs(folder: Path, arrays: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, a in enumerate(arrays):
        PILImage.fromarray(a.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_gen_metrics_operation_and_bad_input(tmp_path: Path, pneu: tuple[np.ndarray, np.ndarray]) -> None:
    a = _pngs(tmp_path / "a", pneu[0][:25])
    b = _pngs(tmp_path / "b", pneu[1][:25])
    res = run("gen_metrics", {"set_a": str(a), "set_b": str(b), "pairs": 20, "kid_subsets": 10}, Context())
    r = res.model_dump()
    assert r["frd"] is not None and r["frd"] > 0
    assert [s["space"] for s in r["spaces"]] == ["radiomics", "pixels"]
    assert r["spaces"][0]["n_features"] > 300 and r["spaces"][1]["n_features"] == 1024
    assert all(0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1 for s in r["spaces"])
    same = run("gen_metrics", {"set_a": str(a), "set_b": str(a), "pairs": 20, "kid_subsets": 5}, Context())
    sm = same.model_dump()
    assert sm["frd"] is None and sm["spaces"][1]["precision"] == 1.0 and sm["spaces"][0]["recall"] == 1.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedimgError, match="no images"):
        run("gen_metrics", {"set_a": str(a), "set_b": str(tmp_path / "empty")}, Context())
    with pytest.raises(MedimgError, match="like with like"):
        run("gen_metrics", {"set_a": str(a), "set_b": str(DATA / "hippocampus" / "imagesTr")}, Context())
    with pytest.raises(MedimgError, match="same features"):
        kid(np.zeros((5, 3)), np.zeros((5, 4)))
