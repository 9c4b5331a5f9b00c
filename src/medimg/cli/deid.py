"""``medimg deid IN OUT``: de-identify DICOM files (the ``deid`` operation; engine in :mod:`medimg.deid`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import RootsOpt, _progress, _run, app, console


@app.command("deid")
def deid_cmd(
    input: Annotated[Path, typer.Argument(help="A DICOM file or a folder tree of DICOM files.")],
    output: Annotated[
        Path, typer.Argument(help="Output file (one input file) or folder mirroring the input (not inside it).")
    ],
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            "-p",
            help="basic (always) plus options, repeatable or comma-separated: retain-dates, retain-full-dates, "
            "retain-device, retain-institution, retain-patient-characteristics, clean-descriptors, "
            "retain-safe-private.",
        ),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="Mapping JSON kept outside IN and OUT (secret, UID map, pseudonyms, date shifts): reused and "
            "updated, so a re-run gives the same UIDs. Keep it private.",
        ),
    ] = None,
    date_shift_days: Annotated[
        int | None,
        typer.Option("--date-shift-days", help="With --profile retain-dates: one shift in days for every patient."),
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the JSON report of what changed here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty OUT.")] = False,
    root: RootsOpt = None,
) -> None:
    """De-identify DICOM files with the DICOM PS3.15 Basic Application Level Confidentiality Profile: identifiers
    removed or replaced (a pseudonym per patient), UIDs remapped consistently, private tags removed, dates
    removed or shifted per patient (retain-dates), burned-in text flagged for review. Pixel data and geometry are
    untouched; non-DICOM files are skipped and listed."""
    from medimg.ops import Context, run

    def body() -> None:
        params = {
            "input": str(input),
            "output": str(output),
            "profile": list(profile or ["basic"]),
            "mapping": str(mapping) if mapping else None,
            "date_shift_days": date_shift_days,
            "report": str(report) if report else None,
            "overwrite": overwrite,
        }
        res = run("deid", params, Context(roots=root or None, progress=None if as_json else _progress))
        if as_json:
            typer.echo(json.dumps(res.report, indent=1))  # type: ignore[attr-defined]
            return
        r = res.report  # type: ignore[attr-defined]
        console.print(
            f"de-identified {r['n_files']} files ({r['patients']} patients, {r['studies']} studies, {r['series']} "
            f"series) with {'+'.join(r['profile'])} into {r['output']}; skipped {r['n_skipped']}; dates: "
            f"{r['date_shift']}",
            markup=False,
            highlight=False,
        )
        for s in r["skipped"]:
            console.print(f"skipped {s['path']}: {s['reason']}", markup=False, highlight=False)
        for v in r["review"]:
            console.print(
                f"REVIEW {v['path']}: possible burned-in text ({'; '.join(v['reasons'])})",
                markup=False,
                highlight=False,
            )
        for w in r["warnings"]:
            console.print(f"warning: {w}", markup=False, highlight=False)
        for f in res.files:
            console.print(f"wrote {f}", markup=False, highlight=False)

    _run(body)
