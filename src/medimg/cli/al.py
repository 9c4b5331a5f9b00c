"""``medimg al next DATASET --model M --strategy S -n K``: active learning, a thin layer over the ``al_next``
operation (engine: :mod:`medimg.active`). The ``al`` sub-app registers itself on the shared Typer app."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from medimg.cli._common import RootsOpt, _progress, _run, app, console

al_app = typer.Typer(help="Active learning: which unlabelled cases to annotate next.", no_args_is_help=True)


@al_app.command("next")
def next_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (imagesTr/ + labelsTr/; unlabelled = no label).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Segmentation model folder or bundled model name.")
    ] = "hippocampus",
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            "-s",
            help="random | entropy | tta | mc-dropout | coreset | hybrid (see docs/active.md).",
        ),
    ] = "entropy",
    n: Annotated[int, typer.Option("-n", "--n", help="How many cases to propose.")] = 10,
    unlabeled: Annotated[
        Path | None, typer.Option("--unlabeled", help="Rank the images of this folder instead of imagesTr's.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the whole ranking here (.csv or .json).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of random and of mc-dropout's masks.")] = 0,
    passes: Annotated[
        int | None,
        typer.Option("--passes", help="tta: mirror combinations (default all); mc-dropout: passes (default 8)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
    root: RootsOpt = None,
) -> None:
    """Rank the unlabelled cases by how informative they are for the model and propose the top N to label.
    Images outside the model's training domain are refused and listed, not ranked."""
    from medimg.ops import Context, run
    from medimg.ops.al_op import AlNextResult

    def body() -> None:
        params = {
            "dataset": str(dataset),
            "model": model,
            "strategy": strategy,
            "n": n,
            "unlabeled": str(unlabeled) if unlabeled else None,
            "output": str(output) if output else None,
            "seed": seed,
            "passes": passes,
        }
        ctx = Context(roots=root or None, progress=None if as_json else _progress)
        res = cast(AlNextResult, run("al_next", params, ctx))
        if as_json:
            sys.stdout.write(json.dumps(res.model_dump(mode="json"), indent=1) + "\n")
            return
        t = Table(
            title=f"{res.strategy}: top {len(res.proposed)} of {res.n_ranked} unlabelled case(s) for {res.model}",
            title_justify="left",
        )
        for col in ("rank", "case", "score", "image"):
            t.add_column(col, justify="right" if col in ("rank", "score") else "left")
        for c in res.proposed:
            t.add_row(str(c.rank), c.case_id, f"{c.score:.5f}", Path(c.images[0]).name)
        console.print(t)
        for r in res.refused:
            console.print(f"refused {r.case_id}: {'; '.join(r.reasons)}", markup=False, highlight=False)
        for note in res.notes:
            console.print(note, markup=False, highlight=False)
        for f in res.files:
            console.print(f"wrote {f}", markup=False, highlight=False)

    _run(body)


app.add_typer(al_app, name="al")
