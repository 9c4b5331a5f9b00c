"""--ray on predict / segment / volumes / convert / evaluate (medimg.scale): same outputs as the plain run, failed
cases reported without losing the others, a killed worker's case completed on retry, and a clear error without Ray.

One local Ray instance (2 CPUs) is started for the module and reused by every --ray command (a Ray instance already
running in the process is reused and left running), so the module pays Ray's start-up once."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app

ray = pytest.importorskip("ray")

DATA = Path(__file__).parent / "data" / "hippocampus"
IMAGES, LABELS = DATA / "imagesTr", DATA / "labelsTr"
RAY = ["--ray", "local", "--ray-cpus", "2"]


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    if started:
        ray.shutdown()


def _cli(*args: str | Path) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return r.exit_code, r.output


def _same_label_files(a: Path, b: Path) -> None:
    """Identical label arrays (bytes and dtype) and geometry."""
    x, y = medimg.read_labels(a), medimg.read_labels(b)
    assert x.array.dtype == y.array.dtype and x.array.tobytes() == y.array.tobytes(), (a, b)
    assert x.spacing == y.spacing and np.array_equal(x.origin, y.origin) and np.array_equal(x.direction, y.direction)


@pytest.fixture(scope="module")
def plain_predictions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "pred"
    code, text = _cli("predict", "-m", "hippocampus", "-i", IMAGES, "-o", out)
    assert code == 0, text
    return out


def test_predict_and_segment_folder_with_ray_equal_plain(plain_predictions: Path, tmp_path: Path) -> None:
    code, text = _cli("predict", "-m", "hippocampus", "-i", IMAGES, "-o", tmp_path / "ray", *RAY)
    assert code == 0, text
    assert "wrote 5 segmentation(s)" in text
    code, text = _cli("segment", IMAGES, "-o", tmp_path / "seg_ray", *RAY)
    assert code == 0, text
    code, text = _cli("segment", *sorted(IMAGES.iterdir())[:2], "-o", tmp_path / "seg_two")  # several files, no Ray
    assert code == 0, text
    files = sorted(plain_predictions.iterdir())
    assert len(files) == 5
    for f in files:
        _same_label_files(f, tmp_path / "ray" / f.name)
        _same_label_files(f, tmp_path / "seg_ray" / f.name)
        assert medimg.read_labels(f).volumes_ml() == medimg.read_labels(tmp_path / "seg_ray" / f.name).volumes_ml()
        # the output lies on its input's grid (geometry preserved through the Ray path)
        img = medimg.read(IMAGES / f.name)
        lab = medimg.read_labels(tmp_path / "ray" / f.name)
        assert lab.shape == img.shape and np.allclose(lab.origin, img.origin) and lab.spacing == img.spacing
    assert sorted(p.name for p in (tmp_path / "seg_two").iterdir()) == [f.name for f in files[:2]]


def test_volumes_evaluate_convert_with_ray_equal_plain(plain_predictions: Path, tmp_path: Path) -> None:
    assert _cli("volumes", plain_predictions, "-o", tmp_path / "plain.csv")[0] == 0
    code, text = _cli("volumes", plain_predictions, "-o", tmp_path / "ray.csv", *RAY)
    assert code == 0, text
    assert (tmp_path / "plain.csv").read_bytes() == (tmp_path / "ray.csv").read_bytes()
    # evaluate, with one prediction missing and one made wrong (a worst-case failure), names from --labels
    preds = tmp_path / "preds"
    shutil.copytree(plain_predictions, preds)
    (preds / "hippocampus_003.nii.gz").unlink()
    lab = medimg.read_labels(preds / "hippocampus_004.nii.gz")
    medimg.write(
        lab.with_array(np.where(lab.array == 2, 0, lab.array).astype(lab.array.dtype)), preds / "hippocampus_004.nii.gz"
    )
    common: list[str | Path] = ["--pred", preds, "--ref", LABELS, "--labels", "1=anterior,2=posterior"]
    assert _cli("evaluate", *common, "-o", tmp_path / "ev_plain")[0] == 0
    code, text = _cli("evaluate", *common, "-o", tmp_path / "ev_ray", *RAY)
    assert code == 0, text
    for name in ("per_case.csv", "summary.csv", "summary.json"):
        assert (tmp_path / "ev_plain" / name).read_bytes() == (tmp_path / "ev_ray" / name).read_bytes(), name
    assert "missing_prediction" in (tmp_path / "ev_ray" / "per_case.csv").read_text()
    assert (tmp_path / "ev_ray" / "report.html").stat().st_size > 0
    # convert: folder mode, here and on Ray: same arrays and geometry as the sources
    code, text = _cli("convert", LABELS, tmp_path / "cv_ray", "--labels", "--ext", ".nrrd", *RAY)
    assert code == 0, text
    code, text = _cli("convert", LABELS, tmp_path / "cv_plain", "--labels", "--ext", "nrrd")
    assert code == 0, text
    for f in sorted(LABELS.iterdir()):
        out = f.name.replace(".nii.gz", ".nrrd")
        _same_label_files(f, tmp_path / "cv_ray" / out)
        _same_label_files(tmp_path / "cv_plain" / out, tmp_path / "cv_ray" / out)
    code, text = _cli("convert", LABELS, tmp_path / "cv_noext", "--labels")
    assert code == 2 and "--ext" in text


def test_failed_case_is_reported_and_the_others_complete(tmp_path: Path) -> None:
    src = tmp_path / "images"
    shutil.copytree(IMAGES, src)
    data = (src / "hippocampus_004.nii.gz").read_bytes()
    (src / "hippocampus_004.nii.gz").write_bytes(gzip.compress(gzip.decompress(data)[:200]))  # truncated volume
    for extra in ([*RAY], []):  # on Ray and with the local runner: the same behaviour
        out = tmp_path / ("ray" if extra else "local")
        code, text = _cli("segment", src, "-o", out, *extra)
        assert code == 2, text
        assert "1 of 5 case(s) failed: hippocampus_004" in text.replace("\n", " ")
        assert sorted(p.name for p in out.iterdir()) == sorted(
            p.name for p in IMAGES.iterdir() if p.name != "hippocampus_004.nii.gz"
        )
    code, text = _cli("volumes", src, *RAY)  # an image with a corrupt file among label maps: reported too
    assert code == 2 and "hippocampus_004" in text


PLUGIN = '''
"""Test-only operation: segment, but the worker process dies (os._exit) on the first attempt of each case."""
from __future__ import annotations

import os
from pathlib import Path

from medimg.ops import run
from medimg.ops.base import Context, operation
from medimg.ops.catalog import SegmentParams, SegmentResult


class CrashOnceParams(SegmentParams):
    marker: str


@operation("test_crash_once_segment", "test only", reads=("image",), writes=("output",))
def crash_once(p: CrashOnceParams, ctx: Context) -> SegmentResult:
    marker = Path(p.marker)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return run("segment", p.model_dump(exclude={"marker"}), ctx)
'''


def test_killed_worker_case_completes_on_retry(plain_predictions: Path, tmp_path: Path) -> None:
    from medimg.ops.base import REGISTRY
    from medimg.scale import CaseCall, RayRunner

    plugin = tmp_path / "crash_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    images = sorted(IMAGES.iterdir())[:2]
    calls = [CaseCall("ok", "segment", {"image": str(images[0]), "output": str(tmp_path / "ok.nii.gz")})] + [
        CaseCall(
            "crashes",
            "test_crash_once_segment",
            {"image": str(images[1]), "output": str(tmp_path / "crashes.nii.gz"), "marker": str(tmp_path / m)},
        )
        for m in ("marker",)
    ]
    try:
        outcomes = RayRunner(plugins=[str(plugin)], max_retries=1).run(calls)
        assert [o.case for o in outcomes] == ["ok", "crashes"]  # input order
        assert all(o.ok for o in outcomes), outcomes
        assert outcomes[0].attempts == 1 and outcomes[1].attempts == 2
        died = int((tmp_path / "marker").read_text())
        assert died != os.getpid() and str(died) not in outcomes[1].worker  # a new worker did the retry
        _same_label_files(plain_predictions / images[1].name, tmp_path / "crashes.nii.gz")
        # without retries the death is reported for that case and the other case still completes
        calls[1] = CaseCall("crashes", calls[1].operation, {**calls[1].params, "marker": str(tmp_path / "m2")})
        outcomes = RayRunner(plugins=[str(plugin)], max_retries=0).run(calls)
        assert outcomes[0].ok and not outcomes[1].ok and outcomes[1].attempts == 1
        assert "died" in (outcomes[1].error or "").lower() or "crash" in (outcomes[1].error_type or "").lower()
    finally:
        REGISTRY.pop("test_crash_once_segment", None)


def test_ray_not_installed_gives_the_install_command(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        class HideRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ImportError("hidden")
        sys.meta_path.insert(0, HideRay())
        import medimg, medimg.cli, medimg.ops, medimg.scale
        assert "ray" not in sys.modules
        sys.argv = ["medimg", "volumes", {str(LABELS)!r}, "--ray", "local"]
        from medimg.cli import main
        main()
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )
    assert r.returncode == 2, r.stderr
    assert 'pip install "medimg[scale]"' in r.stderr.replace("\n", " ")


def test_unreachable_cluster_and_misused_options_are_clear_errors(tmp_path: Path) -> None:
    code, text = _cli("volumes", LABELS, "--ray", "127.0.0.1:1")
    assert code == 2 and "No Ray cluster answers at '127.0.0.1:1'" in text.replace("\n", " ")
    code, text = _cli("volumes", LABELS, "--ray", "127.0.0.1:1", "--ray-cpus", "2")
    assert code == 2 and "--ray-cpus applies to --ray local only" in text.replace("\n", " ")
    code, text = _cli("segment", IMAGES / "hippocampus_001.nii.gz", "-o", tmp_path / "x.nii.gz", *RAY)
    assert code == 2 and "give a folder of images or several images" in text.replace("\n", " ")
    assert not (tmp_path / "x.nii.gz").exists()
