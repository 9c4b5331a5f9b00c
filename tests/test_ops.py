"""The operations layer: typed parameters/results, one registry with JSON Schemas, path confinement, provenance,
and results equal to the library's own on real data."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import medimg
from medimg import ops
from medimg.ops import Context, InvalidParametersError, PathNotAllowedError

from conftest import DATA

LAB = DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
IMG = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"


def test_registry_lists_typed_operations_with_schemas() -> None:
    reg = ops.operations()
    assert len(reg) >= 10
    for name, op in reg.items():
        sch = op.schema()
        assert sch["name"] == name and sch["description"]
        assert sch["input_schema"]["type"] == "object" and sch["input_schema"]["properties"]
        assert "provenance" in sch["output_schema"]["properties"]
    assert "path" in reg["volumes"].schema()["input_schema"]["required"]


def test_volumes_equal_the_label_map_and_carry_provenance() -> None:
    r = ops.run("volumes", {"path": str(LAB)})
    lab = medimg.read_labels(LAB)
    got = {s.label: s.volume_ml for s in r.cases[0].structures}  # type: ignore[attr-defined]
    assert got == pytest.approx(lab.volumes_ml())
    prov = r.provenance
    assert prov is not None and prov.operation == "volumes" and prov.medimg_version == medimg.__version__
    assert prov.inputs[0].sha256 == hashlib.sha256(LAB.read_bytes()).hexdigest()


def test_invalid_parameters_are_refused_clearly() -> None:
    with pytest.raises(InvalidParametersError, match="path: Field required"):
        ops.run("volumes", {})
    with pytest.raises(InvalidParametersError, match="Extra inputs"):
        ops.run("volumes", {"path": str(LAB), "colour": "red"})
    with pytest.raises(medimg.errors.MedimgError, match="Unknown operation 'segmnt'"):
        ops.run("segmnt", {})


def test_paths_are_confined_to_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(LAB, root / "lab.nii.gz")
    ctx = Context(roots=[root])
    assert ops.run("volumes", {"path": "lab.nii.gz"}, ctx).cases[0].path == str(root / "lab.nii.gz")  # type: ignore[attr-defined]
    for bad in (str(LAB), "../lab.nii.gz", str(root / ".." / "x.nii.gz")):
        with pytest.raises(PathNotAllowedError, match="outside the allowed folders"):
            ops.run("volumes", {"path": bad}, ctx)
    (root / "link").symlink_to(DATA)
    with pytest.raises(PathNotAllowedError):
        ops.run("info", {"path": "link/breast1_image.nrrd"}, ctx)


def test_outputs_never_overwrite_inputs(tmp_path: Path) -> None:
    src = shutil.copy(LAB, tmp_path / "lab.nii.gz")
    with pytest.raises(PathNotAllowedError, match="also an input"):
        ops.run("convert", {"source": str(src), "output": str(src), "labels": True})
    assert medimg.read_labels(src).voxel_counts() == medimg.read_labels(LAB).voxel_counts()


def test_segment_overlap_change_and_lesions_on_real_data(tmp_path: Path) -> None:
    seg = ops.run("segment", {"image": str(IMG), "output": str(tmp_path / "seg.nii.gz")})
    assert seg.domain["in_domain"] and {s.name for s in seg.structures} == {"anterior", "posterior"}  # type: ignore[attr-defined]
    assert seg.files == [str(tmp_path / "seg.nii.gz")]
    ov = ops.run("overlap", {"prediction": str(tmp_path / "seg.nii.gz"), "reference": str(LAB)})
    assert all(0.8 < row.dice <= 1 and row.hd95_mm >= 0 for row in ov.labels)  # type: ignore[attr-defined]
    ch = ops.run("volume_change", {"before": str(LAB), "after": str(tmp_path / "seg.nii.gz")})
    ref, new = medimg.read_labels(LAB).volumes_ml(), medimg.read_labels(tmp_path / "seg.nii.gz").volumes_ml()
    for row in ch.structures:  # type: ignore[attr-defined]
        assert row.change_ml == pytest.approx(new[row.label] - ref[row.label])
        assert row.change_pct == pytest.approx(100 * (new[row.label] - ref[row.label]) / ref[row.label])
    les = ops.run("count_lesions", {"label_map": str(DATA / "breast1_label.nrrd")})
    lab = medimg.read_labels(DATA / "breast1_label.nrrd")
    assert les.count >= 1 and les.total_volume_ml == pytest.approx(sum(lab.volumes_ml().values()))  # type: ignore[attr-defined]


def test_segment_refuses_out_of_domain_through_ops(tmp_path: Path) -> None:
    with pytest.raises(medimg.errors.OutOfDomainError):
        ops.run("segment", {"image": str(DATA / "breast1_image.nrrd"), "output": str(tmp_path / "s.nii.gz")})
    assert not (tmp_path / "s.nii.gz").exists()


def test_classify_through_ops() -> None:
    r = ops.run("classify", {"images": str(DATA / "pneumoniamnist_subset.npz"), "split": "val"})
    assert len(r.images) == 200 and all(im.in_domain for im in r.images)  # type: ignore[attr-defined]
    assert all(abs(sum(im.probabilities.values()) - 1) < 1e-6 for im in r.images)  # type: ignore[attr-defined]
    acc = np.mean(
        [
            im.predicted == ["normal", "pneumonia"][int(y)]
            for im, y in zip(r.images, np.load(DATA / "pneumoniamnist_subset.npz")["val_labels"][:, 0], strict=True)  # type: ignore[attr-defined]
        ]
    )
    assert acc > 0.85


def test_volume_change_refuses_2d_label_maps(tmp_path: Path) -> None:
    """2D label maps have areas, not volumes: a change of 0 mL would be silently wrong."""
    lab = medimg.read_labels(DATA / "Image_01L_1stHO.png")
    a = medimg.write(lab, tmp_path / "a.png")
    with pytest.raises(medimg.errors.MedimgError, match="compares 3D volumes"):
        ops.run("volume_change", {"before": str(a), "after": str(a)})


def test_evaluate_operation_skips_the_ignore_label(tmp_path: Path) -> None:
    """``evaluate`` through the operations layer (so also the MCP tool) takes ``ignore_label``: prediction errors
    that lie only where the reference is unannotated do not count."""
    ref = medimg.read_labels(DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    sparse = ref.array.copy()
    sparse[:, :, ::2] = 9  # every other slice unannotated
    pred = ref.array.copy()  # the structure on every slice: false positives only where the reference is unannotated
    for d, arr in (("refs", sparse), ("preds", pred)):
        (tmp_path / d).mkdir()
        medimg.write(medimg.LabelMap(arr, ref.spacing, ref.origin, ref.direction), tmp_path / d / "case.nii.gz")
    body = {"predictions": str(tmp_path / "preds"), "references": str(tmp_path / "refs")}
    ignored = ops.run("evaluate", {**body, "output_dir": str(tmp_path / "e1"), "ignore_label": 9})
    plain = ops.run("evaluate", {**body, "output_dir": str(tmp_path / "e2")})
    assert ignored.classes["1"]["dice"]["mean"] == pytest.approx(1.0)
    assert plain.classes["1"]["dice"]["mean"] < 0.9
