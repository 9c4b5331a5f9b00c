"""``--device auto|cpu|cuda``: auto falls back to the CPU, an unavailable GPU is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medimg.cli import app
from medimg.device import resolve_device
from medimg.errors import MedimgError

from conftest import DATA

torch = pytest.importorskip("torch")
runner = CliRunner()
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
HIPPO_IMG = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"


def text(r: object) -> str:
    return " ".join(r.output.split())  # type: ignore[attr-defined]


def test_names() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(MedimgError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")


@no_gpu
def test_cuda_without_a_gpu_is_refused_cleanly(tmp_path: Path) -> None:
    with pytest.raises(MedimgError, match="--device cpu"):
        resolve_device("cuda:0")
    out = tmp_path / "seg.nii.gz"
    r = runner.invoke(app, ["segment", str(HIPPO_IMG), "-o", str(out), "--device", "cuda"])
    assert r.exit_code == 2 and "sees no CUDA GPU" in text(r) and not out.exists()
    model = tmp_path / "model"
    r = runner.invoke(app, ["train", str(DATA / "chaos"), "-o", str(model), "--device", "cuda"])
    assert r.exit_code == 2 and "sees no CUDA GPU" in text(r) and not model.exists()


def test_auto_segments_here(tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    r = runner.invoke(app, ["segment", str(HIPPO_IMG), "-o", str(out), "--device", "auto"])
    assert r.exit_code == 0, r.output
    assert out.is_file()


@no_gpu
def test_register_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    f, m = DATA / "CT_2D_head_fixed.mha", DATA / "CT_2D_head_moving.mha"
    r = runner.invoke(app, ["register", str(f), str(m), "-o", str(tmp_path / "r"), "--device", "cuda"])
    assert r.exit_code == 2 and "sees no CUDA GPU" in text(r) and not (tmp_path / "r").exists()


def test_deformable_registration_reports_its_device() -> None:
    import medimg
    from medimg.register.deformable import register_deformable

    f, m = medimg.read(DATA / "CT_2D_head_fixed.mha"), medimg.read(DATA / "CT_2D_head_moving.mha")
    _, rep = register_deformable(f, m, levels=(2,), iterations=(3,), device="auto")
    assert rep["device"] == str(resolve_device("auto"))
