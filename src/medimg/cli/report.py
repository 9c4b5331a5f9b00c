"""``medimg report STUDY -o report.html|.md|.json``: a measurement-grounded report (the ``report`` operation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medimg.cli._common import RootsOpt, _progress, _run, app, console
from medimg.errors import MedimgError


@app.command("report")
def report_cmd(
    study: Annotated[Path, typer.Argument(help="The image the report is about (image file or DICOM folder).")],
    out: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Report file: .html (overlay embedded), .md (overlay PNG beside it) or .json."
        ),
    ],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="An existing label map of the study (instead of --model).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Segment the study with this bundled model or model folder."),
    ] = None,
    previous: Annotated[
        Path | None, typer.Option("--previous", help="Label map of an earlier visit: compare the volumes with it.")
    ] = None,
    lesion_label: Annotated[
        int | None, typer.Option("--lesion-label", help="Label value of lesions: count them, with each one's size.")
    ] = None,
    labels_output: Annotated[
        Path | None,
        typer.Option("--labels-output", help="Where --model writes its label map (default: <report>_labels.nii.gz)."),
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation with --model.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Segment even outside the model's training domain (recorded).")
    ] = False,
    root: RootsOpt = None,
) -> None:
    """Report what was measured in a study: structure volumes (from --labels or --model, with the model's domain
    check), lesion counts and sizes (--lesion-label), volume change against an earlier visit (--previous), and
    how (operations, parameters, models, provenance). Every sentence cites the result its numbers come from;
    what was not measured is said."""
    from medimg.ops import Context, run

    def body() -> None:
        if labels is not None and model is not None:
            raise MedimgError("Give --labels (an existing label map) or --model (to segment the study), not both.")
        params = {
            "study": str(study),
            "output": str(out),
            "labels": str(labels) if labels else None,
            "model": model,
            "previous_labels": str(previous) if previous else None,
            "lesion_label": lesion_label,
            "labels_output": str(labels_output) if labels_output else None,
            "tta": tta,
            "force": force,
        }
        res = run("report", params, Context(roots=root or None, progress=_progress))
        for s in getattr(res, "sentences", []):
            if s.section in ("labels", "findings", "lesions", "comparison"):
                console.print(f"{s.text} [{', '.join(s.refs)}]", markup=False, highlight=False)
        for f in res.files:
            console.print(f"wrote {f}", markup=False, highlight=False)

    _run(body)
