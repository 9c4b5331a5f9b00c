"""``medimg mcp``: the operations as MCP tools, talked to with the MCP SDK's own client.

In process (``mcp.Client(server)``): every operation is listed with its schemas; ``segment`` on a real hippocampus
MRI writes a label map into the root and ``volumes`` on it gives the same numbers as :func:`medimg.ops.run`; paths
outside the roots are refused as tool errors; resources summarise label maps and serve reports, confined alike.
Over real transports: ``medimg mcp`` spawned as a subprocess, over stdio and over streamable HTTP.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

import medimg.ops
from medimg.mcp_server import build_server, lenient_arguments

DATA = Path(__file__).parent / "data"
HIPPO_IMAGE = DATA / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
HIPPO_LABELS = DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
MEDIMG = Path(sys.executable).with_name("medimg")


def _text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def _sizes(structures: list[dict[str, Any]]) -> dict[int, tuple[int, float]]:
    return {s["label"]: (s["voxels"], s["volume_ml"]) for s in structures}


def test_every_operation_is_a_tool_with_its_schemas(tmp_path: Path) -> None:
    async def main() -> Any:
        async with Client(build_server([tmp_path])) as client:
            return (await client.list_tools()).tools

    tools = {t.name: t for t in anyio.run(main)}
    ops = medimg.ops.operations()
    assert len(tools) >= 10
    assert set(tools) == set(ops)
    for name, op in ops.items():
        t = tools[name]
        assert t.description == op.summary
        assert t.input_schema == op.params.model_json_schema()
        assert t.input_schema["type"] == "object" and t.input_schema["properties"]
        assert t.output_schema is not None and "provenance" in t.output_schema["properties"]
        assert t.annotations is not None and t.annotations.read_only_hint == (not op.writes)
    assert tools["segment"].input_schema["required"] == ["image", "output"]
    assert "description" in tools["segment"].input_schema["properties"]["image"]


def test_segment_then_volumes_match_the_operations_layer(tmp_path: Path) -> None:
    """Segment a real MRI through the MCP client, then measure the result: the numbers are medimg.ops.run's."""
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def main() -> tuple[Any, Any]:
        async with Client(build_server([tmp_path, HIPPO_IMAGE.parent])) as client:
            seg = await client.call_tool("segment", {"image": str(HIPPO_IMAGE), "output": "seg.nii.gz"})
            vol = await client.call_tool("volumes", {"path": "seg.nii.gz"}, progress_callback=on_progress)
            return seg, vol

    seg, vol = anyio.run(main)
    assert not seg.is_error, _text(seg)
    out = tmp_path / "seg.nii.gz"
    assert out.is_file()
    s = seg.structured_content
    assert s["output"] == str(out) and s["files"] == [str(out)]
    assert s["provenance"]["operation"] == "segment"
    assert s["provenance"]["inputs"][0]["path"] == str(HIPPO_IMAGE)
    assert json.loads(seg.content[0].text)["output"] == str(out)  # the same JSON as text for text-only clients

    assert not vol.is_error, _text(vol)
    direct = medimg.ops.run("volumes", {"path": str(out)}).model_dump(mode="json")
    got = vol.structured_content["cases"][0]["structures"]
    assert got == direct["cases"][0]["structures"]
    assert len(got) == 2 and all(v > 0 for _, v in _sizes(got).values())
    assert _sizes(got) == _sizes(s["structures"])  # segment's own report agrees with the measurement
    assert progress and progress[-1][0] == progress[-1][1] == 1


def test_paths_outside_the_roots_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(HIPPO_LABELS, root / "labels.nii.gz")
    (root / "escape.nii.gz").symlink_to(HIPPO_LABELS)  # a link out of the root

    async def main() -> dict[str, Any]:
        async with Client(build_server([root])) as client:
            return {
                "ok": await client.call_tool("volumes", {"path": "labels.nii.gz"}),
                "absolute": await client.call_tool("volumes", {"path": str(HIPPO_LABELS)}),
                "dotdot": await client.call_tool("info", {"path": "../root/../../" + HIPPO_LABELS.name}),
                "link": await client.call_tool("count_lesions", {"label_map": "escape.nii.gz"}),
                "write_out": await client.call_tool(
                    "convert", {"source": "labels.nii.gz", "output": str(tmp_path / "out.nii.gz"), "labels": True}
                ),
                "overwrite": await client.call_tool(
                    "convert", {"source": "labels.nii.gz", "output": "labels.nii.gz", "labels": True}
                ),
                "bad_params": await client.call_tool("volumes", {"paht": "labels.nii.gz"}),
            }

    r = anyio.run(main)
    assert not r["ok"].is_error
    for key in ("absolute", "dotdot", "link", "write_out"):
        assert r[key].is_error, key
        assert "PathNotAllowedError" in _text(r[key]) and "outside the allowed folders" in _text(r[key]), key
        assert r[key].structured_content is None
    assert not (tmp_path / "out.nii.gz").exists()
    assert r["overwrite"].is_error and "is also an input" in _text(r["overwrite"])
    bad = _text(r["bad_params"])
    assert r["bad_params"].is_error and "InvalidParametersError" in bad and "paht" in bad and "path" in bad


def test_resources_summarise_label_maps_and_serve_reports_confined(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "case").mkdir(parents=True)
    shutil.copy(HIPPO_LABELS, root / "case" / "labels.nii.gz")
    (root / "case" / "report.md").write_text("# Hippocampus\nanterior 1.324 mL\n")
    (tmp_path / "secret.md").write_text("not yours")
    (root / "link.md").symlink_to(tmp_path / "secret.md")

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Client(build_server([root])) as client:
            out["templates"] = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            out["files"] = json.loads((await client.read_resource("medimg://files")).contents[0].text)
            out["image"] = json.loads(
                (await client.read_resource("medimg://image/case/labels.nii.gz")).contents[0].text
            )
            out["report"] = (await client.read_resource("medimg://report/case/report.md")).contents[0].text
            for key, uri in (
                ("dotdot", "medimg://report/case/../../secret.md"),
                ("link", "medimg://report/link.md"),
                ("not_report", "medimg://report/case/labels.nii.gz"),
                ("bad_root", "medimg://image/case/labels.nii.gz?root=3"),
            ):
                try:
                    await client.read_resource(uri)
                    out[key] = None
                except MCPError as e:
                    out[key] = str(e)
        return out

    r = anyio.run(main)
    assert "medimg://image/{+path}{?root}" in r["templates"] and "medimg://report/{+path}{?root}" in r["templates"]
    listed = {f["path"]: f["uri"] for f in r["files"]["files"]}
    assert listed["case/labels.nii.gz"] == "medimg://image/case/labels.nii.gz"
    assert listed["case/report.md"] == "medimg://report/case/report.md"
    direct = medimg.ops.run("volumes", {"path": str(HIPPO_LABELS)}).model_dump(mode="json")
    assert r["image"]["info"]["kind"] == "label map" and r["image"]["info"]["shape"] == [35, 51, 35]
    assert r["image"]["structures"] == direct["cases"][0]["structures"]
    assert r["report"].startswith("# Hippocampus")
    assert r["dotdot"] is not None and "not yours" not in r["dotdot"]  # the SDK refuses '..' before medimg sees it
    assert r["link"] is not None and "outside the allowed folders" in r["link"]
    assert r["not_report"] is not None and "not a report" in r["not_report"]
    assert r["bad_root"] is not None and "root index" in r["bad_root"]


def test_json_text_arguments_are_decoded_where_objects_are_expected() -> None:
    op = medimg.ops.get("volumes")
    args = lenient_arguments(op, {"path": "[odd].nii.gz", "names": '{"1": "anterior"}'})
    assert args == {"path": "[odd].nii.gz", "names": {"1": "anterior"}}


def _stdio_volumes(root: Path) -> tuple[list[str], Any]:
    params = StdioServerParameters(command=str(MEDIMG), args=["mcp", "--root", str(root)])

    async def main() -> tuple[list[str], Any]:
        with anyio.fail_after(20):
            async with Client(params) as client:
                names = [t.name for t in (await client.list_tools()).tools]
                return names, await client.call_tool("volumes", {"path": "labels.nii.gz"})

    return anyio.run(main)


def test_stdio_subprocess_end_to_end(tmp_path: Path) -> None:
    """``medimg mcp --root DIR`` spawned by the SDK's stdio client answers a real call (bounded at 20 s)."""
    shutil.copy(HIPPO_LABELS, tmp_path / "labels.nii.gz")
    t0 = time.perf_counter()
    names, vol = _stdio_volumes(tmp_path)
    assert time.perf_counter() - t0 < 20
    assert set(names) == set(medimg.ops.operations())
    assert not vol.is_error, _text(vol)
    direct = medimg.ops.run("volumes", {"path": str(tmp_path / "labels.nii.gz")}).model_dump(mode="json")
    assert vol.structured_content["cases"][0]["structures"] == direct["cases"][0]["structures"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_streamable_http_end_to_end(tmp_path: Path) -> None:
    """``medimg mcp --transport http`` answers the SDK's HTTP client; a path outside its root is refused."""
    shutil.copy(HIPPO_LABELS, tmp_path / "labels.nii.gz")
    port = _free_port()
    proc = subprocess.Popen(
        [str(MEDIMG), "mcp", "--root", str(tmp_path), "--transport", "http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"the HTTP server did not start: {err}")
                time.sleep(0.2)

        async def main() -> tuple[Any, Any]:
            with anyio.fail_after(20):
                async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                    ok = await client.call_tool("volumes", {"path": "labels.nii.gz"})
                    refused = await client.call_tool("info", {"path": str(HIPPO_LABELS)})
                    return ok, refused

        ok, refused = anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(10)
    assert not ok.is_error, _text(ok)
    assert ok.structured_content["cases"][0]["structures"][0]["voxels"] > 0
    assert refused.is_error and "outside the allowed folders" in _text(refused)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", "/nonexistent/medimg-root"], "does not exist"),
        (["--transport", "websocket"], "stdio or http"),
    ],
)
def test_cli_refuses_bad_options_cleanly(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from medimg.cli import app

    r = CliRunner().invoke(app, ["mcp", *args])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output
