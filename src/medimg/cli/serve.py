"""``medimg serve``: the workbench, a local web app (FastAPI + uvicorn) over the served folders."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import _run, app, console
from medimg.errors import MedimgError

TOKEN_ENV = "MEDIMG_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_folder() -> Path:
    """A writable copy of the bundled hippocampus sample (image + label), so the workbench never writes into the
    installed package: ``~/.cache/medimg/demo`` (or a temporary folder when the home folder is not writable)."""
    from medimg.data import sample

    img, lab = sample("hippocampus")
    for base in (Path.home() / ".cache" / "medimg" / "demo", Path(tempfile.gettempdir()) / "medimg-demo"):
        try:
            base.mkdir(parents=True, exist_ok=True)
            for src in (img, lab):
                if not (base / src.name).exists():
                    shutil.copyfile(src, base / src.name)
            return base
        except OSError:
            continue
    raise MedimgError("Cannot create a folder for the demo case; give a folder to serve: medimg serve FOLDER.")


def roots_for(paths: list[Path]) -> tuple[list[Path], list[Path] | None]:
    """Served folders and, when files were given, the files the worklist shows (their folders are served)."""
    roots: list[Path] = []
    files: list[Path] = []
    for p in paths:
        p = p.expanduser().resolve()
        if not p.exists():
            raise MedimgError(f"{str(p)!r} does not exist; give folders or image files to serve.")
        if p.is_dir() and not any(f.suffix.lower() in (".dcm", ".dicom") for f in p.iterdir() if f.is_file()):
            roots.append(p)
        else:  # an image file, or a DICOM series folder: serve its folder, list it alone
            files.append(p)
            roots.append(p.parent)
    uniq = list(dict.fromkeys(roots))
    only_files = files if files and len(files) == len(paths) else None
    return uniq, only_files


@app.command("serve")
def serve_cmd(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders or image files to serve (default: the bundled demo case).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; not loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8765,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False,
    token: Annotated[
        str | None, typer.Option("--token", help=f"Require Authorization: Bearer TOKEN (or ${TOKEN_ENV}).")
    ] = None,
) -> None:
    """Serve the workbench: view, annotate (prompts, brush), segment and review the images of the folders."""

    def body() -> None:
        import uvicorn

        from medimg.web import create_app

        roots, files = roots_for(list(paths)) if paths else ([demo_folder()], None)
        tok = token or os.environ.get(TOKEN_ENV) or None
        if not is_loopback(host) and not tok:
            tok = secrets.token_urlsafe(24)
            console.print(f"Bound to {host} (not loopback): API token [bold]{tok}[/] (Authorization: Bearer ...)")
        web = create_app(roots, tok, files=files)
        import threading

        threading.Thread(target=web.state.store.warm_up, daemon=True).start()  # the first prompt answers fast
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        if tok:
            url += f"#token={tok}"
        console.print(f"medimg workbench serving {', '.join(str(r) for r in roots)} at {url}", highlight=False)
        if not no_browser:
            import webbrowser

            webbrowser.open(url)
        uvicorn.run(web, host=host, port=port, log_level="warning")

    _run(body)
