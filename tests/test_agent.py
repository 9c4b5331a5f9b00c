"""``medimg ask``: the offline planner (real MiniLM embeddings) on real files, asking back, declining, path
confinement, the CLI (exit codes, --json, --dry-run) and the LLM mode against a local scripted endpoint."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.agent import ask
from medimg.agent.planner import embedding_model, intent_scores
from medimg.cli import app
from medimg.ops import PathNotAllowedError, operations, run

DATA = Path(__file__).parent / "data"
HIPPO = DATA / "hippocampus"
#: The Medical Segmentation Decathlon Task04 dataset.json label names.
MSD_LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}
LOAD_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _model() -> None:
    """Load the sentence-embedding model once for the whole file (and record how long it takes)."""
    t0 = time.perf_counter()
    embedding_model()
    intent_scores("warm up the example embeddings")
    LOAD_SECONDS["model"] = time.perf_counter() - t0
    print(f"\nembedding model + example embeddings loaded in {LOAD_SECONDS['model']:.2f} s")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder (the current folder) with real hippocampus labels + images, MSD dataset.json, and the
    lesion and X-ray files."""
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    for f in sorted((HIPPO / "labelsTr").glob("*.nii.gz")):
        shutil.copy(f, tmp_path / "labels" / f.name)
    for f in sorted((HIPPO / "imagesTr").glob("*.nii.gz"))[:2]:
        shutil.copy(f, tmp_path / "images" / f.name)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Hippocampus", "labels": MSD_LABELS}))
    for name in ("breast1_label.nrrd", "breast1_image.nrrd", "pneumoniamnist_subset.npz"):
        shutil.copy(DATA / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def vol(path: Path, label: int) -> float:
    return medimg.read_labels(path).volumes_ml()[label]


def test_volume_of_a_named_structure_many_phrasings(ws: Path) -> None:
    truth = vol(ws / "labels/hippocampus_001.nii.gz", 2)
    for q in (
        "how big is the posterior hippocampus in labels/hippocampus_001.nii.gz?",
        "What's the volume of the posterior part in labels/hippocampus_001.nii.gz",
        "tell me the size of posterior in labels/hippocampus_001.nii.gz",
    ):
        out = ask(q)
        assert out.status == "answered", (q, out.answer)
        assert out.plan is not None and [s.op for s in out.plan.steps] == ["volumes"]
        assert [s.label for s in out.plan.structures] == [2]
        sizes = {s["label"]: s["volume_ml"] for s in out.results["s1"]["cases"][0]["structures"]}
        assert sizes[2] == pytest.approx(truth)
        assert f"{truth:.2f} mL" in out.answer and "Posterior" in out.answer
        assert out.provenance and out.provenance[0]["operation"] == "volumes"


def test_which_has_the_largest_is_volumes_steps_plus_a_python_comparison(ws: Path) -> None:
    files = sorted((ws / "labels").glob("*.nii.gz"))[:3]
    q = "which of " + ", ".join(f"labels/{f.name}" for f in files) + " has the largest anterior hippocampus?"
    out = ask(q)
    assert out.plan is not None
    assert [s.op for s in out.plan.steps] == ["volumes", "volumes", "volumes", "compare"]
    best = max(files, key=lambda f: vol(f, 1))
    assert out.results["s4"]["winner"]["case"] == best.name[: -len(".nii.gz")]
    assert out.results["s4"]["winner"]["value"] == pytest.approx(vol(best, 1))
    assert f"largest Anterior is in {best.name[:-7]}" in out.answer
    # a folder: every case in it; "smallest" flips the comparison; "the hippocampus" = every label together
    out = ask("which case in labels/ has the smallest hippocampus")
    allf = sorted((ws / "labels").glob("*.nii.gz"))
    small = min(allf, key=lambda f: vol(f, 1) + vol(f, 2))
    assert out.results["s2"]["winner"]["case"] == small.name[:-7]
    assert out.results["s2"]["winner"]["value"] == pytest.approx(vol(small, 1) + vol(small, 2))


def test_overlap_change_lesions_info_match_the_library(ws: Path) -> None:
    run("segment", {"image": str(ws / "images/hippocampus_001.nii.gz"), "output": str(ws / "pred.nii.gz")})
    out = ask("Dice and HD95 between pred.nii.gz and labels/hippocampus_001.nii.gz, per label")
    direct = run(
        "overlap", {"prediction": str(ws / "pred.nii.gz"), "reference": str(ws / "labels/hippocampus_001.nii.gz")}
    )
    assert [s.op for s in out.plan.steps] == ["overlap"]  # type: ignore[union-attr]
    for got, want in zip(out.results["s1"]["labels"], direct.labels, strict=True):  # type: ignore[attr-defined]
        assert got["dice"] == pytest.approx(want.dice) and got["hd95_mm"] == pytest.approx(want.hd95_mm)
    assert f"Dice {direct.labels[0].dice:.3f}" in out.answer  # type: ignore[attr-defined]

    a, b = "labels/hippocampus_001.nii.gz", "labels/hippocampus_003.nii.gz"
    out = ask(f"how much did the posterior hippocampus change between visit 1 ({a}) and visit 2 ({b})?")
    x, y = vol(ws / a, 2), vol(ws / b, 2)
    (row,) = out.results["s1"]["structures"]
    assert row["label"] == 2 and row["change_ml"] == pytest.approx(y - x)
    assert row["change_pct"] == pytest.approx(100 * (y - x) / x)
    assert f"{100 * (y - x) / x:+.1f} %" in out.answer

    out = ask("count the lesions in breast1_label.nrrd and give their volumes")
    lab = medimg.read_labels(ws / "breast1_label.nrrd")
    from scipy import ndimage

    n = ndimage.label(lab.array > 0, np.ones((3, 3, 3)))[1]
    assert out.results["s1"]["count"] == n
    assert out.results["s1"]["total_volume_ml"] == pytest.approx(lab.volumes_ml()[1])

    out = ask("what's the matrix size and voxel spacing of breast1_image.nrrd")
    img = medimg.read(ws / "breast1_image.nrrd")
    assert out.results["s1"]["shape"] == list(img.shape)
    assert out.results["s1"]["spacing_mm"] == pytest.approx(list(img.spacing))
    assert "x".join(str(v) for v in img.shape) in out.answer


def test_spreadsheet_segment_classify_convert_register(ws: Path) -> None:
    out = ask("make a spreadsheet of the volumes of every label map in labels/", dry_run=True)
    assert out.status == "planned" and not (ws / "labels_volumes.csv").exists()  # a dry run runs nothing
    out = ask("make a spreadsheet of the volumes of every label map in ./labels")
    csv = (ws / "labels_volumes.csv").read_text().splitlines()
    assert out.files == [str(ws / "labels_volumes.csv")] and len(csv) == 1 + 5
    assert csv[0].split(",")[4:] == ["Anterior_mL", "Posterior_mL"]

    out = ask("segment images/hippocampus_001.nii.gz and report the volumes")
    seg = ws / "hippocampus_001_seg.nii.gz"
    assert out.files == [str(seg)] and seg.is_file()
    assert out.results["s1"]["structures"][1]["volume_ml"] == pytest.approx(vol(seg, 2))
    again = ask("segment images/hippocampus_001.nii.gz and report the volumes")  # never overwrites
    assert again.files == [str(ws / "hippocampus_001_seg-2.nii.gz")]

    out = ask("classify the chest X-rays in pneumoniamnist_subset.npz")
    assert len(out.results["s1"]["images"]) == 200 and "pneumoniamnist" in out.answer

    out = ask("convert breast1_image.nrrd to NIfTI")
    assert medimg.read(ws / "breast1_image.nii.gz").shape == medimg.read(ws / "breast1_image.nrrd").shape

    out = ask(
        "register images/hippocampus_001.nii.gz (labels labels/hippocampus_001.nii.gz) to "
        "images/hippocampus_003.nii.gz (labels labels/hippocampus_003.nii.gz) and report the label overlap"
    )
    (step,) = out.plan.steps  # type: ignore[union-attr]
    assert step.op == "register" and step.params["moving"].endswith("images/hippocampus_001.nii.gz")
    assert step.params["fixed_labels"].endswith("labels/hippocampus_003.nii.gz")
    assert "Dice" in out.answer and (ws / "hippocampus_001_to_hippocampus_003" / "metrics.json").is_file()


def test_asks_back_declines_and_confines(ws: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert ask("what is the volume of the hippocampus in my scan").status == "question"  # no file
    q = ask("how big is the liver in labels/hippocampus_001.nii.gz")  # no such label
    assert q.status == "question" and "Anterior" in q.answer
    assert ask("which scan in labels/ has the largest volume").status == "question"  # which structure?
    d = ask("please train a new segmentation model on my data")
    assert d.status == "declined" and "I can:" in d.answer
    outside = tmp_path_factory.mktemp("outside") / "x.nii.gz"
    shutil.copy(HIPPO / "labelsTr/hippocampus_001.nii.gz", outside)
    with pytest.raises(PathNotAllowedError):
        ask(f"what are the volumes in {outside}")
    assert ask(f"what are the volumes in {outside}", roots=[outside.parent]).status == "answered"
    res = CliRunner().invoke(app, ["ask", f"what are the volumes in {outside}"])
    assert res.exit_code == 2 and "outside the allowed folders" in res.output


def test_cli_exit_codes_json_and_dry_run(ws: Path) -> None:
    r = CliRunner()
    res = r.invoke(app, ["ask", "what are the volumes in labels/hippocampus_004.nii.gz", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert {"answer", "plan", "results", "files", "provenance"} <= set(payload)
    assert payload["results"]["s1"]["cases"][0]["structures"][0]["volume_ml"] == pytest.approx(
        vol(ws / "labels/hippocampus_004.nii.gz", 1)
    )
    res = r.invoke(app, ["ask", "convert breast1_image.nrrd to nrrd format as out.nrrd", "--dry-run"])
    assert res.exit_code == 0 and "convert(" in res.stdout and not (ws / "out.nrrd").exists()
    assert r.invoke(app, ["ask", "how big is it?"]).exit_code == 3
    assert r.invoke(app, ["ask", "what's the weather like today"]).exit_code == 4
    assert r.invoke(app, ["ask", "volumes of /etc/hostname.nii.gz"]).exit_code in (2, 3)


# ------------------------------------------------------------------------------------------------- LLM mode


class _Scripted(BaseHTTPRequestHandler):
    replies: ClassVar[list[dict[str, Any]]] = []
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, **body})
        data = json.dumps(type(self).replies.pop(0)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def llm() -> Iterator[tuple[str, type[_Scripted]]]:
    class H(_Scripted):
        replies: ClassVar[list[dict[str, Any]]] = []
        seen: ClassVar[list[dict[str, Any]]] = []

    server = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", H
    server.shutdown()


def _calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                        for i, (n, a) in enumerate(calls)
                    ],
                }
            }
        ]
    }


def test_llm_plans_with_tools_and_medimg_validates(ws: Path, llm: tuple[str, type[_Scripted]]) -> None:
    url, h = llm
    a, b = "labels/hippocampus_001.nii.gz", "labels/hippocampus_006.nii.gz"
    h.replies = [
        _calls(
            ("volumes", {"path": "/etc"}),  # outside the allowed folders: refused, sent back
            ("volumes", {"path": b}),
        ),
        _calls(
            ("volumes", {"path": a}),
            ("volumes", {"path": b}),
            ("compare", {"steps": ["call_0", "call_1"], "labels": [2], "structure": "posterior"}),
        ),
    ]
    out = ask("which has the bigger posterior hippocampus, 001 or 006?", llm_url=url, llm_model="scripted")
    first = h.seen[0]
    assert first["path"] == "/v1/chat/completions" and first["model"] == "scripted"
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in first["tools"]}
    for name, op in operations().items():
        assert offered[name] == op.params.model_json_schema()
    assert {"compare", "ask_user", "cannot_do"} <= set(offered)
    assert "outside the allowed folders" in h.seen[1]["messages"][-1]["content"]  # the error went back
    assert out.plan is not None and out.plan.planner == "llm"
    assert [s.op for s in out.plan.steps] == ["volumes", "volumes", "compare"]
    best = max((a, b), key=lambda f: vol(ws / f, 2))
    assert out.results["s3"]["winner"]["value"] == pytest.approx(vol(ws / best, 2))

    h.replies = [_calls(("ask_user", {"question": "Which two visits?"}))]
    res = CliRunner().invoke(app, ["ask", "did it grow?", "--llm", url, "--model", "m"])
    assert res.exit_code == 3 and "Which two visits?" in res.output
    bad = _calls(("count_lesions", {"label_map": "breast1_label.nrrd", "connectivity": 7}))
    h.replies = [bad, bad]
    res = CliRunner().invoke(app, ["ask", "count lesions in breast1_label.nrrd", "--llm", url, "--model", "m"])
    assert res.exit_code == 2 and "connectivity" in res.output
    h.replies = [_calls(("convert", {"source": "breast1_image.nrrd", "output": "breast1_image.nrrd"}))] * 2
    res = CliRunner().invoke(app, ["ask", "convert", "--llm", url, "--model", "m"])
    assert res.exit_code == 2 and "also an input" in res.output


def test_two_folders_are_evaluated_case_by_case(ws: Path) -> None:
    shutil.copytree(ws / "labels", ws / "refs")
    out = ask("how well do the predictions in labels/ agree with the references in refs/? Dice per label")
    assert [s.op for s in out.plan.steps] == ["evaluate"]  # type: ignore[union-attr]
    assert out.results["s1"]["n_cases"] == 5 and "mean Dice 1.000" in out.answer
    assert (ws / "evaluation_labels" / "summary.json").is_file()


def test_a_qualified_structure_without_label_names_is_a_question(ws: Path) -> None:
    """'the posterior hippocampus' over files named hippocampus_* whose labels carry no names must not be read as
    'every label together' (a silently different structure): it asks which label is meant."""
    (ws / "dataset.json").unlink()
    q = ask("which case in labels/ has the largest posterior hippocampus?")
    assert q.status == "question" and "posterior" in q.answer
    whole = ask("which case in labels/ has the largest hippocampus?")
    assert whole.status == "answered" and "all labels together" in whole.answer
