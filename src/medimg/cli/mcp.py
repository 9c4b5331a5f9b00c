"""``medimg mcp``: serve the operations as MCP tools (stdio for a desktop client, streamable HTTP for others)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import _run, app, err_console


@app.command("mcp")
def mcp_cmd(
    root: Annotated[
        list[Path] | None,
        typer.Option(
            "--root",
            help="A folder the tools may read and write (repeatable; default: the current folder). Relative paths "
            "start at the first; anything outside every root is refused.",
        ),
    ] = None,
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (default; a client starts the process) | http.")
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="HTTP: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP: port to listen on.")] = 8766,
) -> None:
    """Serve medimg's operations as Model Context Protocol tools (one per operation), with images, label maps and
    reports under the roots as resources. Stdout carries the protocol in stdio mode; messages go to stderr."""
    from medimg.errors import MedimgError
    from medimg.mcp_server import build_server, default_roots

    def body() -> None:
        if transport not in ("stdio", "http"):
            raise MedimgError(f"--transport must be stdio or http (got {transport!r}).")
        roots = default_roots(root)
        server = build_server(roots)
        where = ", ".join(str(r) for r in roots)
        if transport == "http" and host not in ("127.0.0.1", "localhost", "::1"):
            err_console.print(
                f"[yellow]warning:[/] listening on {host}: the server has no authentication, so anyone who can "
                "reach this port can run the tools on the root folders.",
                highlight=False,
            )
        if transport == "http":
            err_console.print(f"medimg MCP server on http://{host}:{port}/mcp (roots: {where})", highlight=False)
            server.run("streamable-http", host=host, port=port)
        else:
            err_console.print(f"medimg MCP server on stdio (roots: {where})", highlight=False)
            server.run("stdio")

    _run(body)
