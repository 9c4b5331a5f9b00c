"""``report`` operation and ``medimg report``: measurement-grounded reports on real files.

The central check (:func:`assert_traceable`): every number printed in the Markdown text (sentences, table rows,
the figure caption) is a field of a result (or figure) that the same line cites, at the printed precision.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.ops import PathNotAllowedError, run

from conftest import SHARED, needs_shared

DATA = Path(__file__).parent / "data"
HIP = DATA / "hippocampus"
IMG = HIP / "imagesTr" / "hippocampus_001.nii.gz"
LAB = HIP / "labelsTr" / "hippocampus_001.nii.gz"

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
REFS = re.compile(r"\b[RF]\d+\b")


def numeric_leaves(obj: Any) -> list[float]:
    """Every number (not bool) inside a JSON-like object."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in numeric_leaves(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in numeric_leaves(x)]
    return []


def traceable(token: str, leaves: list[float]) -> bool:
    """``token`` (as printed) equals one of ``leaves`` rounded to the printed number of decimals (sign aside:
    the text says "smaller"/"larger" instead)."""
    t = abs(float(token))
    d = len(token.split(".")[1]) if "." in token else 0
    return any(abs(round(abs(v), d) - t) < 10 ** (-d) * 0.51 for v in leaves)


def assert_traceable(md: str, doc: dict[str, Any]) -> int:
    """Every number in ``md``'s text (code spans, fenced blocks and image links aside) is a field of a result or
    figure cited on the same line; returns how many numbers were checked."""
    by_id: dict[str, Any] = {e["id"]: {"p": e["parameters"], "r": e["result"]} for e in doc["results"]}
    by_id.update({f["id"]: {k: v for k, v in f.items() if k != "refs"} for f in doc["figures"]})
    text = re.sub(r"```.*?```", "", md, flags=re.S)
    checked = 0
    for line in text.splitlines():
        if line.startswith("![") or line.startswith("#"):
            continue
        refs = REFS.findall(line)
        bare = REFS.sub("", re.sub(r"`[^`]*`", "", line))
        numbers = NUMBER.findall(bare)
        if not numbers:
            continue
        assert refs, f"numbers without a cited result: {line!r}"
        leaves = [v for r in refs for v in numeric_leaves(by_id[r])]
        for n in numbers:
            assert traceable(n, leaves), f"{n} in {line!r} is not a field of {refs}"
            checked += 1
    return checked


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_report_with_labels_md_json_html(tmp_path: Path) -> None:
    """A case with its own label map: volumes equal voxel counts x voxel volume, every number in the Markdown is
    traceable to the JSON results, the HTML embeds the overlay PNG, the inputs are untouched."""
    before = {p: sha(p) for p in (IMG, LAB)}
    params = {"study": str(IMG), "labels": str(LAB)}
    r_md = run("report", {**params, "output": str(tmp_path / "r.md")})
    run("report", {**params, "output": str(tmp_path / "r.json")})
    run("report", {**params, "output": str(tmp_path / "r.html")})
    doc = json.loads((tmp_path / "r.json").read_text())
    md = (tmp_path / "r.md").read_text()

    # the JSON holds every result with its operation, parameters and provenance (input hashes)
    ops = [e["operation"] for e in doc["results"]]
    assert ops == ["info", "volumes"]
    assert doc["results"][1]["provenance"]["inputs"][0]["sha256"] == sha(LAB)
    lab = medimg.read_labels(LAB)
    measured = {s["label"]: s["volume_ml"] for s in doc["results"][1]["result"]["cases"][0]["structures"]}
    assert measured == pytest.approx({k: n * lab.voxel_volume_mm3 / 1000 for k, n in lab.voxel_counts().items()})
    assert f"{measured[1]:.3f} mL" in md and f"{measured[2]:.3f} mL" in md
    assert [s["text"] for s in doc["sentences"]] == [s.text for s in r_md.sentences]  # type: ignore[attr-defined]
    assert all(s["refs"] for s in doc["sentences"] if s["section"] != "not_measured")
    assert assert_traceable(md, doc) >= 15
    with pytest.raises(AssertionError):  # the check itself catches a number that no cited result holds
        assert_traceable(md.replace(f"{measured[1]:.3f} mL", f"{measured[1] + 0.01:.3f} mL"), doc)
    with pytest.raises(AssertionError):  # ... and a number with no citation
        assert_traceable(md + "\n- The structures are 3 cm apart.\n", doc)

    # what was not measured is said, and no comparison is invented
    assert "No earlier visit was given" in md and "earlier visit," not in md
    assert "Lesions were not counted" in md
    assert not any(s["section"] == "comparison" for s in doc["sentences"])

    # overlay: a PNG beside the Markdown, embedded in the HTML
    png = (tmp_path / "r_overlay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "(r_overlay.png)" in md
    page = (tmp_path / "r.html").read_text()
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert m and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<h3 id="R2">' in page and 'href="#R2"' in page
    assert {p: sha(p) for p in (IMG, LAB)} == before


def test_report_segmented_by_bundled_model(tmp_path: Path) -> None:
    """A case segmented by the bundled hippocampus model and compared with its manual label as the earlier visit:
    the domain check and the model's record are reported, the label map written is the one measured, and every
    number is traceable."""
    out = tmp_path / "m.md"
    res = run("report", {"study": str(IMG), "model": "hippocampus", "previous_labels": str(LAB), "output": str(out)})
    doc = res.model_dump(mode="json")
    seg = next(e for e in doc["results"] if e["operation"] == "segment")
    assert seg["result"]["domain"]["in_domain"] is True and seg["result"]["domain"]["forced"] is False
    labels = tmp_path / "m_labels.nii.gz"
    assert labels.is_file() and str(labels) in res.files
    lab = medimg.read_labels(labels)
    assert {s["label"]: s["voxels"] for s in seg["result"]["structures"]} == lab.voxel_counts()
    card = next(e for e in doc["results"] if e["operation"] == "model_info")
    assert card["result"]["n_train"] == 160 and len(card["provenance"]["inputs"][1]["sha256"]) == 64
    md = out.read_text()
    assert "within the model's training domain" in md
    assert "not compared with a reference segmentation" in md
    # the earlier visit (the manual label) is compared structure by structure, named as the model names them,
    # with the caveat that the two label maps were made differently
    chg = next(e for e in doc["results"] if e["operation"] == "volume_change")["result"]["structures"]
    assert [s["after_ml"] for s in chg] == [s["volume_ml"] for s in seg["result"]["structures"]]
    assert "- anterior (label 1): " in md and "different way they were made" in md
    assert assert_traceable(md, doc) >= 10
    # the overlay legend uses the model's names (the file written beside the report)
    assert (tmp_path / "m_overlay.png").is_file()


def test_report_forced_out_of_domain_says_so(tmp_path: Path) -> None:
    """A breast MRI through the hippocampus model: refused without force; with force the report says the study
    is outside the domain and quotes the check's differences."""
    from medimg.errors import OutOfDomainError

    p = {"study": str(DATA / "breast1_image.nrrd"), "model": "hippocampus", "output": str(tmp_path / "f.json")}
    with pytest.raises(OutOfDomainError):
        run("report", p)
    assert not (tmp_path / "f.json").exists()
    res = run("report", {**p, "force": True})
    texts = [s.text for s in res.sentences]  # type: ignore[attr-defined]
    assert any("OUTSIDE the model's training domain" in t and "voxel spacing" in t for t in texts)
    assert any(t.startswith("Caution") for t in texts)
    assert json.loads((tmp_path / "f.json").read_text())["results"][1]["result"]["domain"]["forced"] is True


def _write_changed(src: Path, out: Path, grow: bool) -> dict[int, int]:
    """The label map with each structure dilated (grow) or eroded by one voxel: a second visit. Returns its
    voxel counts."""
    lab = medimg.read_labels(src)
    arr = lab.array.copy() if grow else np.zeros_like(lab.array)
    for k in lab.labels:
        m = lab.array == k
        if grow:  # grow into the background only, so that every structure is larger
            arr[ndimage.binary_dilation(m) & (arr == 0)] = k
        else:
            arr[ndimage.binary_erosion(m)] = k
    medimg.write(lab.with_array(arr), out)
    return medimg.read_labels(out).voxel_counts()


def test_report_comparison_with_earlier_visit(tmp_path: Path) -> None:
    """Earlier visit = the label dilated by one voxel, now = the label itself: every structure is reported
    smaller by exactly the measured difference, in mL and percent, citing the volume_change result."""
    prev = tmp_path / "visit1.nii.gz"
    before = _write_changed(LAB, prev, grow=True)
    now = medimg.read_labels(LAB).voxel_counts()
    out = tmp_path / "c.md"
    res = run("report", {"study": str(IMG), "labels": str(LAB), "previous_labels": str(prev), "output": str(out)})
    doc = res.model_dump(mode="json")
    chg = next(e for e in doc["results"] if e["operation"] == "volume_change")
    for s in chg["result"]["structures"]:
        k = s["label"]
        assert before[k] > now[k]
        assert s["change_ml"] == pytest.approx((now[k] - before[k]) / 1000)
        assert s["change_pct"] == pytest.approx(100 * (now[k] - before[k]) / before[k])
    md = out.read_text()
    comp = [s for s in doc["sentences"] if s["section"] == "comparison"]
    assert len(comp) == 1 + len(now) and all(s["refs"] == [chg["id"]] for s in comp)
    assert all("smaller" in s["text"] for s in comp[1:])
    s1 = chg["result"]["structures"][0]
    assert f"{abs(s1['change_pct']):.1f} %" in md
    assert "No earlier visit" not in md
    assert assert_traceable(md, doc) >= 20

    # the other way round (eroded earlier visit): larger
    prev2 = tmp_path / "visit0.nii.gz"
    _write_changed(LAB, prev2, grow=False)
    res2 = run("report", {"study": str(IMG), "labels": str(LAB), "previous_labels": str(prev2), "output": str(out)})
    comp2 = [s.text for s in res2.sentences if s.section == "comparison"]  # type: ignore[attr-defined]
    assert all("larger" in t for t in comp2[1:])


def test_report_breast_lesions(tmp_path: Path) -> None:
    """breast1: the lesion count, total volume and each lesion's size match count_lesions run directly; an
    earlier visit with a second (synthetic) lesion gives the count change."""
    img, lab_path = DATA / "breast1_image.nrrd", DATA / "breast1_label.nrrd"
    direct = run("count_lesions", {"label_map": str(lab_path), "label": 1})
    lab = medimg.read_labels(lab_path)
    arr = lab.array.copy()
    arr[2:5, 2:5, 2:4] = 1  # a second, separate lesion at the earlier visit
    prev = tmp_path / "breast_prev.nrrd"
    medimg.write(lab.with_array(arr), prev)
    out = tmp_path / "b.md"
    res = run(
        "report",
        {
            "study": str(img),
            "labels": str(lab_path),
            "lesion_label": 1,
            "previous_labels": str(prev),
            "output": str(out),
        },
    )
    doc = res.model_dump(mode="json")
    les = [e for e in doc["results"] if e["operation"] == "count_lesions"]
    assert les[0]["result"]["count"] == direct.count == 1  # type: ignore[attr-defined]
    assert les[0]["result"]["total_volume_ml"] == pytest.approx(143 * lab.voxel_volume_mm3 / 1000)
    assert les[1]["result"]["count"] == 2
    md = out.read_text()
    assert "Now: 1 lesion of label 1 (label_1), 0.132 mL in total." in md
    assert "The lesion count went from 2 at the earlier visit to 1 now." in md
    tables = {t["title"]: t for t in doc["tables"]}
    assert len(tables["Lesions now"]["rows"]) == 1 and len(tables["Lesions at the earlier visit"]["rows"]) == 2
    assert assert_traceable(md, doc) >= 20


def test_report_never_overwrites_inputs(tmp_path: Path) -> None:
    """The report, its label map and its figure may not replace an input; refused before anything is written."""
    copy_img = tmp_path / "img.nii.gz"
    copy_img.write_bytes(IMG.read_bytes())
    copy_lab = tmp_path / "lab.nii.gz"
    copy_lab.write_bytes(LAB.read_bytes())
    h = {p: sha(p) for p in (copy_img, copy_lab)}
    with pytest.raises(PathNotAllowedError):
        run("report", {"study": str(copy_img), "labels": str(copy_lab), "output": str(copy_lab)})
    with pytest.raises(PathNotAllowedError):  # the model's label map would replace the study
        run("report", {"study": str(copy_img), "model": "hippocampus", "output": str(tmp_path / "x.html"),
                       "labels_output": str(copy_img)})  # fmt: skip
    (tmp_path / "r_overlay.png").unlink(missing_ok=True)
    figure_input = tmp_path / "r_overlay.png"
    figure_input.write_bytes(IMG.read_bytes())
    with pytest.raises(PathNotAllowedError):  # the Markdown's figure would replace an input
        run("report", {"study": str(figure_input), "labels": str(copy_lab), "output": str(tmp_path / "r.md")})
    with pytest.raises(Exception, match=r"\.html, \.md or \.json"):
        run("report", {"study": str(copy_img), "labels": str(copy_lab), "output": str(tmp_path / "r.txt")})
    assert {p: sha(p) for p in (copy_img, copy_lab)} == h
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz", "lab.nii.gz", "r_overlay.png"]


def test_report_cli(tmp_path: Path) -> None:
    """``medimg report`` writes the report, prints the findings with their result ids; --labels with --model is
    a clear error (exit code 2)."""
    out = tmp_path / "cli.html"
    r = CliRunner().invoke(app, ["report", str(IMG), "--labels", str(LAB), "--lesion-label", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "[R2]" in r.output and f"wrote {out}" in r.output
    assert "data:image/png;base64," in out.read_text()
    r = CliRunner().invoke(app, ["report", str(IMG), "--labels", str(LAB), "--model", "hippocampus", "-o", str(out)])
    assert r.exit_code == 2 and "not both" in r.output


def test_report_is_an_operation_with_schema() -> None:
    """The report is in the operations registry (so `medimg ask`, MCP and `medimg op run` can make one)."""
    from medimg.ops import operations

    sch = operations()["report"].schema()
    assert {"study", "output", "labels", "model", "previous_labels", "lesion_label"} <= set(
        sch["input_schema"]["properties"]
    )
    assert "sentences" in sch["output_schema"]["properties"]


def test_report_2d_areas(tmp_path: Path) -> None:
    """A 2D image with a 2D label map: areas in mm² (pixel count x pixel area), lesion sizes in cm² (never mL),
    numbers traceable, a 2D overlay caption."""
    from medimg import Image, LabelMap

    rng = np.random.default_rng(0)
    lab = np.zeros((40, 30), np.uint8)
    lab[5:10, 5:12], lab[20:25, 3:6] = 1, 2
    medimg.write(Image(rng.random((40, 30)).astype(np.float32), [0.5, 0.5]), tmp_path / "i.nii.gz")
    medimg.write(LabelMap(lab, [0.5, 0.5]), tmp_path / "l.nii.gz")
    res = run(
        "report",
        {"study": str(tmp_path / "i.nii.gz"), "labels": str(tmp_path / "l.nii.gz"), "lesion_label": 2,
         "output": str(tmp_path / "r.md")},
    )  # fmt: skip
    md = (tmp_path / "r.md").read_text()
    assert "label_1 (label 1): area 8.75 mm² (35 voxels)." in md  # 35 pixels x 0.25 mm²
    assert "1 lesion of label 2 (label_2), 0.00375 cm² in total" in md and " mL" not in md
    assert "Structures on the 2D image" in md
    assert assert_traceable(md, res.model_dump(mode="json")) >= 10


def test_ask_produces_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`medimg ask` can make a report: a (scripted, local) language model calls the `report` tool; medimg validates
    and runs it under the allowed folder, and the page is the one the operation writes."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from medimg.agent import ask

    args = {"study": "img.nii.gz", "labels": "lab.nii.gz", "output": "report.html"}
    reply = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c0", "type": "function", "function": {"name": "report", "arguments": json.dumps(args)}}
                    ],
                }
            }
        ]
    }

    class Scripted(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "img.nii.gz").write_bytes(IMG.read_bytes())
        (tmp_path / "lab.nii.gz").write_bytes(LAB.read_bytes())
        monkeypatch.chdir(tmp_path)
        out = ask(
            "write a report of img.nii.gz with lab.nii.gz", llm_url=f"http://127.0.0.1:{server.server_address[1]}/v1"
        )
    finally:
        server.shutdown()
    assert out.status == "answered" and out.plan is not None and [s.op for s in out.plan.steps] == ["report"]
    page = (tmp_path / "report.html").read_text()
    got = next(iter(out.results.values()))
    assert got["output"] == str(tmp_path / "report.html") and "data:image/png;base64," in page
    plain = html.unescape(re.sub(r"</?code>", "", page))
    assert got["sentences"] and all(s["text"].replace("`", "") in plain for s in got["sentences"])


@needs_shared
def test_report_real_data_many_structures_and_lesions_off_grid(tmp_path: Path) -> None:
    """Real data: a TotalSegmentator CT with its multi-class segmentation (a table instead of a sentence per
    structure), and MS lesions on another grid than the FLAIR they are reported with (counted and sized, no overlay
    drawn, the grid difference said, citing both info results)."""
    ts = SHARED / "totalsegmentator"
    out = tmp_path / "ts.md"
    res = run("report", {"study": str(ts / "example_ct_sm.nii.gz"), "labels": str(ts / "example_seg.nii.gz"),
                         "output": str(out)})  # fmt: skip
    doc = res.model_dump(mode="json")
    structs = doc["results"][1]["result"]["cases"][0]["structures"]
    assert len(structs) > 12 and len(doc["tables"][0]["rows"]) == len(structs)
    assert "The size of every structure is in the table below." in out.read_text()
    assert assert_traceable(out.read_text(), doc) >= 3 * len(structs)

    ms = SHARED / "ms_longitudinal" / "patient01"
    out = tmp_path / "ms.md"
    res = run("report", {"study": str(ms / "study2_FLAIR.nii.gz"), "labels": str(ms / "gt.nii.gz"),
                         "lesion_label": 1, "output": str(out)})  # fmt: skip
    doc = res.model_dump(mode="json")
    direct = run("count_lesions", {"label_map": str(ms / "gt.nii.gz"), "label": 1})
    les = next(e for e in doc["results"] if e["operation"] == "count_lesions")["result"]
    assert les["count"] == direct.count > 1  # type: ignore[attr-defined]
    md = out.read_text()
    assert "not on the study's voxel grid" in md and "No overlay was drawn" in md and not doc["figures"]
    assert not (tmp_path / "ms_overlay.png").exists()
    assert [e["operation"] for e in doc["results"]] == ["info", "volumes", "count_lesions", "info"]
    assert assert_traceable(md, doc) >= 4 * les["count"]


def test_report_of_the_study_alone_measures_nothing_it_was_not_given(tmp_path: Path) -> None:
    """No label map, no model: the report describes the image, shows its middle slice and says that no structure,
    lesion or change was measured; a folder of label maps is refused (one study, one label map)."""
    out = tmp_path / "s.md"
    res = run("report", {"study": str(IMG), "output": str(out)})
    doc = res.model_dump(mode="json")
    assert [e["operation"] for e in doc["results"]] == ["info"] and doc["labels"] is None and not doc["tables"]
    md = out.read_text()
    assert "no structure was measured" in md and "Lesions were not counted" in md and "No earlier visit" in md
    assert "(the middle slice)" in md and doc["figures"][0]["slice_number"] == 18
    assert assert_traceable(md, doc) >= 10
    with pytest.raises(Exception, match="is a folder"):
        run("report", {"study": str(IMG), "labels": str(HIP / "labelsTr"), "output": str(tmp_path / "x.md")})
