"""Memorisation check (medimg.memorization, operation ``memorization``) on real PneumoniaMNIST / hippocampus data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from medimg.errors import MedimgError
from medimg.memorization import find_memorized
from medimg.ops import Context, run

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pneu() -> tuple[list[np.ndarray], list[np.ndarray]]:
    d = np.load(DATA / "pneumoniamnist_subset.npz")
    return [a.astype(np.float32) for a in d["train_images"][:100]], [a.astype(np.float32) for a in d["val_images"]]


def _planted(train: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [
        ndimage.shift(train[5], (1.6, -2.3), order=1, mode="nearest"),
        train[17] + rng.normal(0, 0.03 * 255, train[17].shape),
        255 * (train[29] / 255) ** 1.3 * 0.9 + 10,
        train[41][:, ::-1],
        ndimage.zoom(train[53], 1.08, order=1)[1:29, 1:29],
    ]


def test_finds_planted_copies_and_not_new_real_images(pneu: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    train, val = pneu
    new = val[:30]
    res = find_memorized(
        _planted(train) + new, train, train_names=[f"t{i}" for i in range(len(train))], calibration_size=100
    )
    copies, fresh = res.matches[:5], res.matches[5:]
    assert [m.match for m in copies] == ["t5", "t17", "t29", "t41", "t53"]
    assert all(m.memorized for m in copies), [m.similarity for m in copies]
    assert copies[3].flipped and not copies[0].flipped
    # the shift found undoes the planted one (grid = 32 px for 28 px images: x 32/28), within half a grid pixel
    assert np.allclose(copies[0].shift, (1.6 * 32 / 28, -2.3 * 32 / 28), atol=0.6)
    assert sum(m.memorized for m in fresh) <= 3  # calibrated for 5 % false alarms on new images
    assert res.calibration.source == "calibrated" and 0.5 < res.calibration.threshold < 1


def test_given_threshold_and_exact_copy_is_one(pneu: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    train, val = pneu
    res = find_memorized([train[3], val[0]], train[:40], threshold=0.999)
    assert res.calibration.source == "given" and res.calibration.n == 0
    assert res.matches[0].similarity == pytest.approx(1.0, abs=1e-5) and res.matches[0].memorized
    assert not res.matches[1].memorized


def test_3d_volumes() -> None:
    import medimg

    vols = [
        np.asarray(medimg.read(f).array, np.float32).transpose(2, 1, 0)
        for f in sorted((DATA / "hippocampus" / "imagesTr").glob("*.nii.gz"))
    ]
    train = vols[:-1]
    copy = ndimage.shift(train[1], (1, -1, 1), order=1, mode="nearest")
    res = find_memorized([copy, vols[-1]], train, threshold=None, calibration_size=50)
    assert res.dims == 3 and res.matches[0].match == "train_1"
    assert res.matches[0].similarity > res.matches[1].similarity


def _write_pngs(folder: Path, arrays: list[np.ndarray], prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"{prefix}{i:03d}.png")


def test_operation_report_and_bad_inputs(tmp_path: Path, pneu: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    train, val = pneu
    _write_pngs(tmp_path / "train", train[:60], "t")
    _write_pngs(tmp_path / "samples", [train[7], val[0]], "s")
    rep = tmp_path / "rep.csv"
    res = run(
        "memorization",
        {
            "samples": str(tmp_path / "samples"),
            "train": str(tmp_path / "train"),
            "report": str(rep),
            "calibration_size": 60,
        },
        Context(),
    )
    rows = list(csv.DictReader(rep.open()))
    assert [r["sample"] for r in rows] == ["s000.png", "s001.png"] and rows[0]["match"] == "t007.png"
    assert res.model_dump()["matches"][0]["memorized"] and res.provenance is not None
    # bad inputs: clear errors, nothing written
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedimgError, match="no images"):
        run("memorization", {"samples": str(tmp_path / "empty"), "train": str(tmp_path / "train")}, Context())
    with pytest.raises(MedimgError, match=r"\.csv or \.json"):
        run(
            "memorization",
            {"samples": str(tmp_path / "samples"), "train": str(tmp_path / "train"), "report": str(tmp_path / "r.txt")},
            Context(),
        )
    assert not (tmp_path / "r.txt").exists()
    vol = DATA / "hippocampus" / "imagesTr"
    with pytest.raises(MedimgError, match="like with like"):
        run("memorization", {"samples": str(tmp_path / "samples"), "train": str(vol)}, Context())
    with pytest.raises(MedimgError, match="at least 2"):
        find_memorized([train[0]], [train[1]])
