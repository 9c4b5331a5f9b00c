"""Segmentation in context (`medimg segment IMAGE --support DATASET`) on real hippocampus cases: multi-atlas
registration of the support cases and label fusion, no training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.metrics import segmentation_metrics
from medimg.seg.incontext import load_support, segment_in_context

from conftest import DATA

HIPPO = DATA / "hippocampus"
CT = Path(medimg.__file__).parent / "data" / "samples" / "ct_small_image.nii.gz"
runner = CliRunner()
TARGET = "hippocampus_004"


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def support(tmp_path: Path) -> Path:
    """Four labelled hippocampus cases (the fifth, hippocampus_004, is the target)."""
    root = tmp_path / "support"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for c in ("001", "003", "006", "008"):
            shutil.copy(HIPPO / sub / f"hippocampus_{c}.nii.gz", root / sub)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, "anterior": 1, "posterior": 2},
                "numTraining": 4,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def test_segment_from_support_writes_the_structure_on_the_image_grid(support: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    image = HIPPO / "imagesTr" / f"{TARGET}.nii.gz"
    r = runner.invoke(app, ["segment", str(image), "--support", str(support), "-o", str(out)])
    assert r.exit_code == 0, r.output
    text = _flat(r.output)
    assert "4 support cases" in text and "weighted fusion" in text and "anterior" in text and "posterior" in text
    lab, src = medimg.read_labels(out), medimg.read(image)
    assert lab.shape == src.shape
    assert np.allclose(lab.spacing, src.spacing) and np.allclose(lab.origin, src.origin)
    assert np.allclose(lab.direction, src.direction)
    assert lab.meta["provenance"]["in_context"]["n_support"] == 4
    ref = medimg.read_labels(HIPPO / "labelsTr" / f"{TARGET}.nii.gz")
    m = segmentation_metrics(lab, ref, labels=[1, 2], metrics=("dice",))
    # four atlases registered with one coarse level: well above chance, short of a trained model
    assert m[1]["dice"] > 0.6 and m[2]["dice"] > 0.6, m


@pytest.mark.parametrize("fusion", ["majority", "staple"])
def test_every_fusion_and_the_report(support: Path, fusion: str) -> None:
    img = medimg.read(HIPPO / "imagesTr" / f"{TARGET}.nii.gz")
    lab, rep = segment_in_context(img, load_support(support), fusion=fusion)
    assert rep["fusion"] == fusion and rep["n_support"] == 4 and len(rep["per_case"]) == 4
    assert 0.5 < rep["agreement"] <= 1 and not rep["low_agreement"] and rep["domain"]["in_domain"]
    assert set(np.unique(lab.array)) == {0, 1, 2} and lab.names == {1: "anterior", 2: "posterior"}


def test_an_image_unlike_the_support_is_refused_unless_forced(support: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    r = runner.invoke(app, ["segment", str(CT), "--support", str(support), "-o", str(out)])
    assert r.exit_code == 2 and "outside the support set's domain" in _flat(r.output) and "--force" in r.output
    assert not out.exists()


def test_bad_support_sets_are_refused(support: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    image = str(HIPPO / "imagesTr" / f"{TARGET}.nii.gz")
    # a label on another grid than its image
    lab = medimg.read_labels(support / "labelsTr" / "hippocampus_003.nii.gz")
    from medimg.image import LabelMap

    medimg.write(
        LabelMap(lab.array[:-2], lab.spacing, lab.origin, lab.direction),
        support / "labelsTr" / "hippocampus_003.nii.gz",
    )
    with pytest.raises(MedimgError, match="labels do not match its images") as e:
        load_support(support)
    assert "hippocampus_003" in str(e.value) and "medimg resample" in str(e.value)
    for extra, msg in (
        (["--support", str(support)], "labels do not match its images"),
        (["--support", str(tmp_path / "nope")], "does not exist"),
        (["--support", str(support), "-m", "hippocampus"], "drop -m"),
        (["--support", str(support), "--fusion", "mean"], "majority, staple, weighted"),
        (["--support", str(support), "--registration-speed", "turbo"], "fast, default"),
    ):
        r = runner.invoke(app, ["segment", image, "-o", str(out), *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert msg in _flat(r.output), (extra, r.output)
        assert not out.exists()


def test_the_segment_operation_takes_a_support_set(support: Path, tmp_path: Path) -> None:
    from medimg.ops import Context, run

    out = tmp_path / "seg.nii.gz"
    res = run(
        "segment",
        {"image": str(HIPPO / "imagesTr" / f"{TARGET}.nii.gz"), "output": str(out), "support": str(support)},
        Context(),
    )
    assert out.exists() and res.in_context is not None and res.in_context["n_support"] == 4
    assert [s.name for s in res.structures] == ["anterior", "posterior"]
    assert all(s.volume_ml and s.volume_ml > 0 for s in res.structures)


def test_interact_refines_an_in_context_start_or_a_mask(support: Path, tmp_path: Path) -> None:
    image = HIPPO / "imagesTr" / f"{TARGET}.nii.gz"
    ref = medimg.read_labels(HIPPO / "labelsTr" / f"{TARGET}.nii.gz").array > 0
    out = tmp_path / "m.nii.gz"
    r = runner.invoke(app, ["interact", str(image), "--support", str(support), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "in-context segmentation (4 support cases" in _flat(r.output) and "0 prompt(s)" in _flat(r.output)
    start = medimg.read_labels(out).array > 0
    from medimg.interactive.simulate import dice, next_click

    d0 = dice(start, ref)
    assert d0 > 0.6
    c = next_click(start, ref)
    assert c is not None
    arg = ",".join(map(str, c.point)) + ("" if c.positive else ",neg")
    out2 = tmp_path / "m2.nii.gz"
    r = runner.invoke(app, ["interact", str(image), "--mask", str(out), "--click", arg, "-o", str(out2)])
    assert r.exit_code == 0, r.output
    assert "started from m.nii.gz" in _flat(r.output) and "1 prompt(s)" in _flat(r.output)
    refined = medimg.read_labels(out2).array > 0
    assert refined.shape == ref.shape and not np.array_equal(refined, start)
    # the click's voxel now agrees with the reference
    assert refined[c.point] == c.positive


def test_interact_lasso_and_bad_prompts(tmp_path: Path) -> None:
    image = HIPPO / "imagesTr" / f"{TARGET}.nii.gz"
    out = tmp_path / "m.nii.gz"
    z = medimg.read(image).shape[2] // 2
    ok = f"10,20,{z};25,20,{z};25,35,{z};10,35,{z}"
    r = runner.invoke(app, ["interact", str(image), "--lasso", ok, "-o", str(out)])
    assert r.exit_code == 0, r.output
    m = medimg.read_labels(out).array > 0
    assert m[:, :, z].any() and not m[:9, :, z].any() and not m[27:, :, z].any()  # nothing outside the outline
    out.unlink()
    bowtie = f"10,20,{z};25,35,{z};25,20,{z};10,35,{z}"
    for extra, msg in (
        (["--lasso", bowtie], "crosses itself"),
        (["--lasso", f"10,20,{z};25,20,{z}"], "at least 3 points"),
        (["--lasso", f"10,20,{z};25,20,{z + 1};25,35,{z}"], "one slice"),
        (["--mask", str(HIPPO / "labelsTr" / "hippocampus_001.nii.gz")], "do not share the same voxel grid"),
        (["--label", "1"], "--label picks a value"),
        ([], "Give at least one prompt"),
    ):
        r = runner.invoke(app, ["interact", str(image), "-o", str(out), *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert msg in _flat(r.output), (extra, r.output)
        assert not out.exists()
