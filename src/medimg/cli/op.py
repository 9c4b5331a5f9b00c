"""``medimg op list | schema | run``: every operation of :mod:`medimg.ops` from the command line, with JSON in and out
(the same typed calls the MCP server and ``medimg ask`` make)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from medimg.cli._common import RootsOpt, _progress, _run, app, console
from medimg.errors import MedimgError

op_app = typer.Typer(help="The operations layer: list, show schemas, run with JSON parameters.", no_args_is_help=True)
app.add_typer(op_app, name="op")


@op_app.command("list")
def op_list() -> None:
    """Every operation with its one-line description."""
    from medimg.ops import operations

    t = Table()
    t.add_column("operation", no_wrap=True)
    t.add_column("what it does")
    for name, op in sorted(operations().items()):
        t.add_row(name, op.summary)
    console.print(t)


@op_app.command("schema")
def op_schema(name: Annotated[str, typer.Argument(help="Operation name (see `medimg op list`).")]) -> None:
    """The operation's JSON Schemas (parameters and result)."""
    from medimg.ops import get

    def body() -> None:
        sys.stdout.write(json.dumps(get(name).schema(), indent=2) + "\n")

    _run(body)


@op_app.command("run")
def op_run(
    name: Annotated[str, typer.Argument(help="Operation name (see `medimg op list`).")],
    params: Annotated[str, typer.Argument(help='Parameters as JSON, e.g. \'{"path": "seg.nii.gz"}\'.')],
    root: RootsOpt = None,
) -> None:
    """Run one operation with JSON parameters; prints its typed result (with provenance) as JSON."""
    from medimg.ops import Context, run

    def body() -> None:
        try:
            p = json.loads(params)
        except json.JSONDecodeError as e:
            raise MedimgError(f'The parameters are not valid JSON ({e}); e.g. \'{{"path": "seg.nii.gz"}}\'.') from None
        if not isinstance(p, dict):
            raise MedimgError('The parameters must be a JSON object, e.g. \'{"path": "seg.nii.gz"}\'.')
        res = run(name, p, Context(roots=root or None, progress=_progress))
        sys.stdout.write(res.model_dump_json(indent=2) + "\n")

    _run(body)
