"""The ``medimg`` command line: a thin layer over the library (parse, call, print).

One module per command group registers its commands on the shared Typer ``app`` (``_common``). Errors raised as
:class:`~medimg.errors.MedimgError` are printed without a traceback and exit with code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

# each command module registers its commands on the shared app when imported
from medimg.cli import (  # noqa: F401
    al,
    ask,
    deid,
    evaluate,
    federated,
    files,
    frd,
    fuse,
    gen_metrics,
    generate,
    mcp,
    measure,
    memorization,
    models,
    op,
    predict,
    report,
    seg,
    serve,
    volumes,
)
from medimg.cli._common import app
from medimg.cli.classify import classify_app, pretrain_cmd, probe_cmd
from medimg.cli.interactive import interact_cmd
from medimg.cli.register import register_cmd, warp_cmd

app.add_typer(classify_app, name="classify")
app.command("pretrain")(pretrain_cmd)
app.command("probe")(probe_cmd)
app.command("register")(register_cmd)
app.command("warp")(warp_cmd)
app.command("interact")(interact_cmd)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
