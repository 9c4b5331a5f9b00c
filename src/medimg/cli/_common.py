"""Shared pieces of the ``medimg`` command line: the Typer app, consoles, error handling, common options.

Errors raised as :class:`~medimg.errors.MedimgError` are printed without a traceback and exit with code 2;
``medimg --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from medimg.errors import MedimgError

app = typer.Typer(
    name="medimg",
    help="medimg: read, inspect, convert and resample medical images with exact geometry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_STATE = {"debug": False}
T = TypeVar("T")


def _run(fn: Callable[[], T]) -> T:
    """Run a command body; print MedimgErrors (and invalid paths) cleanly with exit code 2."""
    try:
        return fn()
    except MedimgError as e:
        if _STATE["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {e}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise MedimgError(f"{what} must be comma-separated numbers, e.g. 1,1,3 (got {text!r}).") from None
    return vals


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _STATE["debug"] = debug


def _read_kwargs(
    series: str | None, key: str | None, spacing: str | None, allow_irregular: bool, allow_nonfinite: bool
) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "series": series,
        "key": key,
        "allow_irregular": allow_irregular,
        "allow_nonfinite": allow_nonfinite,
    }
    sp = _floats(spacing, "--spacing")
    if sp is not None:
        kw["spacing"] = sp
    return kw


SeriesOpt = Annotated[str | None, typer.Option("--series", help="DICOM series UID (or unique suffix) or 'largest'.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="HDF5/NPZ array name.")]
SpacingInOpt = Annotated[
    str | None, typer.Option("--input-spacing", help="Voxel spacing in mm for files without one (e.g. 1.5,1.5,8).")
]
IrregularOpt = Annotated[
    bool, typer.Option("--allow-irregular", help="DICOM: interpolate series with missing slices onto a regular grid.")
]
NonfiniteOpt = Annotated[bool, typer.Option("--allow-nonfinite", help="Accept NaN/Inf voxels.")]


def _parse_names(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    out: dict[int, str] = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip().isdigit():
            raise MedimgError(f"--names must look like '1=liver,2=spleen' (got {part!r}).")
        out[int(k)] = v.strip()
    return out


def _progress(items: Any, what: str) -> Any:
    from rich.progress import track

    return track(items, description=what, console=err_console, transient=True)
