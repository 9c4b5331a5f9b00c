"""``medimg ask "..."``: a plain-language request, planned as typed operations and answered with the numbers.

Exit codes: 0 answered (or planned, with ``--dry-run``), 2 error (invalid parameters, a path outside the allowed
folders ...), 3 the request needs something from you (the question is printed), 4 not something medimg can do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import _run, app, console, err_console

EXIT_QUESTION = 3
EXIT_DECLINED = 4


@app.command()
def ask(
    request: Annotated[str, typer.Argument(help="The request in plain language (quote it).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {answer, plan, results, files, provenance} as JSON.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; run nothing.")] = False,
    root: Annotated[
        list[Path] | None,
        typer.Option("--root", help="Another folder whose files may be used (the current folder always is)."),
    ] = None,
    llm: Annotated[
        str | None,
        typer.Option("--llm", help="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) to plan with."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name for --llm.")] = None,
) -> None:
    """Ask in plain language: structure volumes, segment and measure, Dice/HD95, volume change between visits,
    which case has the largest structure, register and overlap, classify X-rays, convert, size and spacing, count
    lesions, a volumes spreadsheet. Plans operations (shown with --dry-run), never runs generated code; asks back
    (exit 3) when something is missing or ambiguous, says so when it cannot do a request (exit 4). Offline by
    default; --llm URL --model NAME plans with a language model that calls the same operations as tools."""
    from medimg.agent import ask as ask_fn
    from medimg.errors import MedimgError

    def body() -> int:
        if llm and not model:
            raise MedimgError("--llm needs --model NAME (the model to ask at that endpoint).")
        out = ask_fn(request, roots=root or [], dry_run=dry_run, llm_url=llm, llm_model=model)
        if as_json:
            payload = out.model_dump(mode="json", include={"answer", "plan", "results", "files", "provenance"})
            payload["status"] = out.status
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        elif out.status in ("question", "declined"):
            err_console.print(out.answer, highlight=False, markup=False)
        else:
            console.print(out.answer, highlight=False, markup=False, soft_wrap=True)
        return {"question": EXIT_QUESTION, "declined": EXIT_DECLINED}.get(out.status, 0)

    code = _run(body)
    if code:
        raise typer.Exit(code)
