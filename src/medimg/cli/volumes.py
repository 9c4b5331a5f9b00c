"""``medimg volumes``: a table (and CSV) of structure volumes per case -- mL in 3D, area in mm^2 in 2D."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medimg.cli._common import (
    KeyOpt,
    SpacingInOpt,
    _floats,
    _parse_names,
    _progress,
    _run,
    app,
    console,
    err_console,
)
from medimg.cli.predict import RayCpusOpt, RayOpt, _run_calls


@app.command("volumes")
def volumes_cmd(
    path: Annotated[Path, typer.Argument(help="A folder of label maps (one case per file) or one label map.")],
    out: Annotated[Path | None, typer.Option("--output", "-o", help="CSV to write (a row per case).")] = None,
    names: Annotated[
        str | None, typer.Option("--names", help="Class names, e.g. '1=liver,2=spleen' (override the files' own).")
    ] = None,
    key: KeyOpt = None,
    spacing: SpacingInOpt = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = None,
) -> None:
    """Volume of every structure per case (mL; for 2D label maps the area in mm^2), columns named by the label
    names when the files carry them (Slicer seg.nrrd, DICOM SEG) or --names gives them."""

    def body() -> None:
        from medimg.ops import Context, run

        sp = _floats(spacing, "--input-spacing")
        params = {
            "path": str(path),
            "names": _parse_names(names),
            "output_csv": str(out) if out is not None else None,
            "key": key,
            "input_spacing_mm": list(sp) if sp is not None else None,
        }
        if ray is None and ray_cpus is None:
            res = run("volumes", params, Context(progress=_progress))
            cases = res.cases  # type: ignore[attr-defined]
        else:  # one `volumes` call per file as Ray tasks, merged in input order (medimg.scale)
            from medimg.io._atomic import check_output_path
            from medimg.scale import merge_volumes, raise_for_failures, volumes_calls

            if out is not None:
                check_output_path(out)
            calls = volumes_calls(path, {k: v for k, v in params.items() if k not in ("path", "output_csv")})
            outcomes = _run_calls(calls, ray, ray_cpus, "measuring")
            for o in outcomes:
                if not o.ok:
                    err_console.print(f"[red]{o.case}: failed[/] {o.error_type}: {o.error}", highlight=False)
            cases = merge_volumes(outcomes, out)
        cols: list[str] = []
        for c in cases:
            for st in c.structures:
                col = f"{st.name} ({'mL' if c.dims == 3 else 'mm²'})"
                if col not in cols:
                    cols.append(col)
        t = Table(title="volumes (mL; 2D: area in mm²)", title_justify="left")
        for c in ("case", "spacing_mm", *cols):
            t.add_column(c, justify="left" if c in ("case", "spacing_mm") else "right")
        for c in cases:
            sizes = {
                f"{st.name} ({'mL' if c.dims == 3 else 'mm²'})": st.volume_ml if c.dims == 3 else st.area_mm2
                for st in c.structures
            }
            sp_txt = "x".join(f"{v:g}" for v in c.spacing_mm) + ("" if c.spacing_known else " (unknown)")
            t.add_row(c.case, sp_txt, *(f"{sizes[k]:.3f}" if k in sizes else "0.000" for k in cols))
        console.print(t)
        unknown = [c.case for c in cases if not c.spacing_known]
        if unknown:
            err_console.print(
                f"[yellow]note:[/] {len(unknown)} case(s) without a stored voxel spacing ({', '.join(unknown[:3])}"
                f"{' ...' if len(unknown) > 3 else ''}): 1 mm assumed; pass --input-spacing to set it."
            )
        if out is not None:
            console.print(f"wrote {out} ({len(cases)} case(s))")
        if ray is not None or ray_cpus is not None:
            raise_for_failures(outcomes, "The other cases were measured" + (f" and written to {out}." if out else "."))

    _run(body)
