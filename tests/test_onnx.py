"""ONNX export of segmentation networks and the ONNX Runtime backend: same label maps as PyTorch, exact geometry,
files exported from other weights refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import MedimgError
from medimg.seg import Predictor, resolve_model

from conftest import DATA

pytest.importorskip("onnxruntime")
runner = CliRunner()
HIPPO_IMG = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"


@pytest.fixture(scope="module")
def hippo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medimg.seg.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "hippocampus.onnx"
    r = export_onnx(resolve_model("hippocampus"), out)
    assert r["relative_diff"] < 1e-3 and out.is_file()
    return out


def test_onnx_runtime_segments_like_pytorch(hippo_onnx: Path) -> None:
    img = medimg.read(HIPPO_IMG)
    ref = Predictor(resolve_model("hippocampus"), precision="fp32")(img)
    got = Predictor(resolve_model("hippocampus"), onnx=hippo_onnx)(img)
    assert got.same_geometry(img) and got.shape == img.shape
    assert np.mean(got.array == ref.array) > 0.999
    assert set(np.unique(got.array)) == {0, 1, 2}
    assert got.meta["provenance"]["backend"] == "onnx" and ref.meta["provenance"]["backend"] == "torch"


def test_onnx_file_of_other_weights_is_refused(hippo_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(MedimgError, match="not exported from this model's weights"):
        Predictor(resolve_model("nodule"), onnx=hippo_onnx)
    with pytest.raises(MedimgError, match="medimg models export"):
        Predictor(resolve_model("hippocampus"), onnx=tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(MedimgError, match="not an ONNX model"):
        Predictor(resolve_model("hippocampus"), onnx=bad)


def test_cli_export_and_segment_with_onnx(tmp_path: Path) -> None:
    f = tmp_path / "h.onnx"
    r = runner.invoke(app, ["models", "export", "hippocampus", "-o", str(f)])
    assert r.exit_code == 0, r.output
    assert "ONNX Runtime matches PyTorch" in " ".join(r.output.split()) and f.is_file()
    seg = tmp_path / "seg.nii.gz"
    r = runner.invoke(app, ["segment", str(HIPPO_IMG), "-m", "hippocampus", "--onnx", str(f), "-o", str(seg)])
    assert r.exit_code == 0, r.output
    lab = medimg.read_labels(seg)
    assert lab.same_geometry(medimg.read(HIPPO_IMG)) and lab.array.max() == 2
    r = runner.invoke(app, ["models", "export", "hippocampus", "-o", str(tmp_path / "h.txt")])
    assert r.exit_code == 2 and ".onnx, .pt or .ts" in " ".join(r.output.split())
    assert not (tmp_path / "h.txt").exists()


def test_segment_operation_takes_onnx(hippo_onnx: Path, tmp_path: Path) -> None:
    from medimg.ops import Context, run

    res = run(
        "segment",
        {"image": str(HIPPO_IMG), "output": str(tmp_path / "s.nii.gz"), "onnx": str(hippo_onnx)},
        Context(),
    )
    assert {s.name for s in res.structures} == {"anterior", "posterior"}
    assert all(s.volume_ml > 0.1 for s in res.structures)
