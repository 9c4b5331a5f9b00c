"""``medimg mcp``: the operations layer as a Model Context Protocol server (stdio or streamable HTTP).

Every operation registered in :mod:`medimg.ops` becomes one MCP tool, generated from the registry (so a new
operation appears without touching this module): the tool's name is the operation's, its description the
operation's summary, its input schema the JSON Schema of the operation's parameter model and its output schema
that of the result model. A call goes through :func:`medimg.ops.run` with the server's root folders, so paths are
confined exactly as for ``medimg ask``: relative paths start at the first root, and a path outside every root (by
``..``, an absolute path or a symbolic link) is refused. Errors come back as tool errors carrying medimg's message;
they never stop the server.

Resources (read-only, confined to the same roots):

* ``medimg://files`` -- an index (JSON) of the images, label maps and reports under the roots, with their URIs;
* ``medimg://image/{+path}{?root}`` -- a JSON summary of an image or label map (the ``info`` operation, plus the
  ``volumes`` operation's structure sizes for a label map);
* ``medimg://report/{+path}{?root}`` -- the text of a report (HTML, Markdown, JSON, CSV, text).

``root`` is the index of the root folder ``path`` is relative to (default 0, the first).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, get_args

import anyio.from_thread
from mcp.server.mcpserver import Context as MCPContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, ContentBlock, TextContent, ToolAnnotations
from pydantic import ConfigDict

from medimg.errors import MedimgError
from medimg.ops import Context, Operation, OpResult, confine, operations, run

SERVER_NAME = "medimg"
#: Extensions served as reports by ``medimg://report/...`` (text only).
REPORT_EXTENSIONS = (".html", ".htm", ".md", ".json", ".csv", ".tsv", ".txt")
#: Largest report served, in bytes (a larger file is refused rather than flooding the client).
MAX_REPORT_BYTES = 5_000_000
#: Limits of the ``medimg://files`` index: folder depth below each root and number of entries.
INDEX_DEPTH = 4
INDEX_MAX_ENTRIES = 500


def default_roots(roots: Sequence[str | Path] | None) -> list[Path]:
    """The roots as absolute, resolved folders; the current folder when none are given. Each must exist."""
    out = [Path(r).expanduser().resolve() for r in (roots or [Path.cwd()])]
    for r in out:
        if not r.is_dir():
            raise MedimgError(f"The root folder {str(r)!r} does not exist or is not a folder.")
    return out


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class _Arguments(ArgModelBase):
    """Tool arguments passed through as given: :func:`medimg.ops.run` validates them against the operation's
    parameter model (so a mistake reads the same as in the CLI or ``medimg ask``)."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    def model_dump_one_level(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _accepts_str(annotation: Any) -> bool:
    return annotation is str or str in get_args(annotation)


def lenient_arguments(op: Operation, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with JSON text decoded where a list or object is expected (some clients send ``names`` or
    ``labels`` as a JSON string); fields that accept text are left alone."""
    out = dict(args)
    fields = op.params.model_fields
    for k, v in args.items():
        if (
            k in fields
            and isinstance(v, str)
            and v.lstrip()[:1] in ("[", "{")
            and not _accepts_str(fields[k].annotation)
        ):
            with contextlib.suppress(ValueError):
                out[k] = json.loads(v)
    return out


def _progress_reporter(mcp_ctx: MCPContext | None) -> Any:
    """A :class:`medimg.ops.Context` progress callback sending MCP progress notifications (when the client asked
    for them) from the worker thread the operation runs in."""

    def progress(items: Sequence[Any], what: str) -> Iterator[Any]:
        n = len(items)
        for i, item in enumerate(items):
            _notify(mcp_ctx, i, n, what)
            yield item
        _notify(mcp_ctx, n, n, what)

    return progress


def _notify(mcp_ctx: MCPContext | None, done: int, total: int, what: str) -> None:
    if mcp_ctx is None:
        return
    with contextlib.suppress(Exception):  # progress is a courtesy: it never fails an operation
        anyio.from_thread.run(mcp_ctx.report_progress, done, total, what)


def _tool_for(op: Operation, roots: list[Path]) -> Tool:
    """The MCP tool running ``op`` through :func:`medimg.ops.run` with ``roots``."""

    def handler(mcp_ctx: MCPContext | None = None, **kwargs: Any) -> CallToolResult:
        ctx = Context(roots=roots, progress=_progress_reporter(mcp_ctx))
        try:
            result: OpResult = run(op.name, lenient_arguments(op, kwargs), ctx)
        except MedimgError as e:
            raise ToolError(_error_text(e)) from e
        except OSError as e:  # a file that vanished, a full disk ...: the caller can act on the message
            raise ToolError(_error_text(e)) from e
        dump = result.model_dump(mode="json")
        # The answer first, then the files written and the provenance (what a reader needs least).
        data = {k: v for k, v in dump.items() if k not in ("files", "provenance")}
        data |= {"files": dump["files"], "provenance": dump["provenance"]}
        content: list[ContentBlock] = [TextContent(type="text", text=json.dumps(data, indent=1))]
        content += [TextContent(type="text", text=f"Note: {n}") for n in ctx.notes]
        return CallToolResult(content=content, structured_content=data)

    handler.__name__ = op.name
    handler.__doc__ = op.summary
    return Tool(
        fn=handler,
        name=op.name,
        title=op.name.replace("_", " ").capitalize(),
        description=op.summary,
        parameters=op.params.model_json_schema(),
        fn_metadata=FuncMetadata(arg_model=_Arguments, output_model=op.result),
        is_async=False,
        context_kwarg="mcp_ctx",
        annotations=ToolAnnotations(
            read_only_hint=not op.writes,
            destructive_hint=bool(op.writes),  # an output path may replace an existing file
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )


def _root(roots: list[Path], index: int) -> Path:
    if not 0 <= index < len(roots):
        raise ResourceError(f"root={index} is not a root index; the roots are 0..{len(roots) - 1}.")
    return roots[index]


def _confined(path: str, roots: list[Path], index: int) -> Path:
    """``path`` (relative to root ``index``) resolved and confined to the roots, as a resource error if not."""
    try:
        return confine(path, [_root(roots, index), *roots])
    except MedimgError as e:
        raise ResourceError(_error_text(e)) from e


def image_summary(path: Path, roots: list[Path]) -> dict[str, Any]:
    """``info`` of an image or label map, plus its structures (``volumes``) when it is a label map."""
    ctx = Context(roots=roots)
    try:
        info = run("info", {"path": str(path)}, ctx).model_dump(mode="json", exclude={"provenance"})
        out: dict[str, Any] = {"info": info}
        if info.get("kind") == "label map":
            vol = run("volumes", {"path": str(path)}, ctx).model_dump(mode="json", exclude={"provenance"})
            out["structures"] = vol["cases"][0]["structures"] if vol["cases"] else []
    except (MedimgError, OSError) as e:
        raise ResourceError(_error_text(e)) from e
    return out


def report_text(path: Path) -> str:
    """The text of a report file (one of :data:`REPORT_EXTENSIONS`, at most :data:`MAX_REPORT_BYTES`)."""
    if path.suffix.lower() not in REPORT_EXTENSIONS:
        raise ResourceError(
            f"{path.name!r} is not a report; reports are {', '.join(REPORT_EXTENSIONS)} files "
            "(read images and label maps as medimg://image/...)."
        )
    if not path.is_file():
        raise ResourceError(f"{str(path)!r} does not exist or is not a file.")
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise ResourceError(f"{path.name!r} is larger than {MAX_REPORT_BYTES} bytes; not served.")
    return path.read_text(encoding="utf-8", errors="replace")


def _kind_of(name: str) -> str | None:
    from medimg.io import EXTENSIONS
    from medimg.io._atomic import split_ext

    ext = split_ext(Path(name))[1].lower()
    if ext in EXTENSIONS:
        return "image"
    if Path(name).suffix.lower() in REPORT_EXTENSIONS:
        return "report"
    return None


def file_index(roots: list[Path]) -> dict[str, Any]:
    """The images / label maps and reports under each root (hidden entries skipped), with their resource URIs."""
    files: list[dict[str, Any]] = []
    truncated = False
    for i, root in enumerate(roots):
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            depth = len(here.relative_to(root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < INDEX_DEPTH)
            for name in sorted(filenames):
                kind = None if name.startswith(".") else _kind_of(name)
                if kind is None:
                    continue
                if len(files) >= INDEX_MAX_ENTRIES:
                    truncated = True
                    break
                rel = (here / name).relative_to(root).as_posix()
                query = f"?root={i}" if i else ""
                files.append({"root": i, "path": rel, "kind": kind, "uri": f"medimg://{kind}/{rel}{query}"})
    return {"roots": [str(r) for r in roots], "files": files, "truncated": truncated}


def build_server(roots: Sequence[str | Path] | None = None) -> MCPServer:
    """The medimg MCP server: one tool per operation, resources for images, label maps and reports, all
    confined to ``roots`` (default: the current folder)."""
    import medimg

    rts = default_roots(roots)
    tools = [_tool_for(op, rts) for op in operations().values()]
    where = "; ".join(f"root {i}: {r}" for i, r in enumerate(rts))
    server: MCPServer = MCPServer(
        SERVER_NAME,
        log_level="WARNING",
        title="medimg",
        version=medimg.__version__,
        instructions=(
            "Medical image analysis tools (medimg): image information, structure volumes in mL, format conversion, "
            "resampling, segmentation with bundled models, overlap metrics, volume change between visits, lesion "
            "counts, registration, classification and evaluation. Every path must lie inside the allowed folders "
            f"({where}); relative paths start at root 0. Results are measured numbers with their provenance: "
            "quote them, do not estimate. Resource medimg://files lists the files."
        ),
        tools=tools,
    )

    @server.resource(
        "medimg://files",
        name="files",
        title="Files under the allowed folders",
        description="Images, label maps and reports under the allowed folders, with their resource URIs (JSON).",
        mime_type="application/json",
    )
    def files() -> str:
        return json.dumps(file_index(rts), indent=1)

    @server.resource(
        "medimg://image/{+path}{?root}",
        name="image",
        title="Image or label map summary",
        description="Size, spacing, orientation and labels of an image; for a label map also every structure's "
        "voxels and volume in mL (JSON). path is relative to root (an index, default 0).",
        mime_type="application/json",
    )
    def image(path: str, root: int = 0) -> str:
        return json.dumps(image_summary(_confined(path, rts, root), rts), indent=1)

    @server.resource(
        "medimg://report/{+path}{?root}",
        name="report",
        title="Report",
        description="The text of a report under the allowed folders (HTML, Markdown, JSON, CSV or text).",
        mime_type="text/plain",
    )
    def report(path: str, root: int = 0) -> str:
        return report_text(_confined(path, rts, root))

    return server
