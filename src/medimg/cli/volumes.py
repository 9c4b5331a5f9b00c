"""``medimg volumes``: a table (and CSV) of structure volumes per case -- mL in 3D, area in mm^2 in 2D."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
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
from medimg.errors import MedimgError


@dataclass
class CaseVolumes:
    """The measured structures of one label map: ``sizes`` maps a class name to mL (3D) or mm^2 (2D)."""

    case: str
    path: Path
    dims: int
    spacing: tuple[float, ...]
    spacing_known: bool
    sizes: dict[str, float] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        """``mL`` for volumes, ``mm2`` for 2D areas."""
        return "mL" if self.dims == 3 else "mm2"


def label_files(path: Path) -> list[Path]:
    """``path`` itself when it is a file, else the files inside the folder that medimg can read by their extension
    (hidden files and others such as CSV or JSON are skipped), sorted by name."""
    from medimg.io import EXTENSIONS
    from medimg.io._atomic import split_ext

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MedimgError(f"{str(path)!r} does not exist: give a label map file or a folder of them.")
    files = [
        p
        for p in sorted(path.iterdir())
        if p.is_file() and not p.name.startswith(".") and split_ext(p)[1].lower() in EXTENSIONS
    ]
    if not files:
        raise MedimgError(
            f"No label map files in {str(path)!r} (looked for {', '.join(sorted(set(EXTENSIONS)))}); "
            "give a folder of label maps or one file."
        )
    return files


def measure(path: Path, names: dict[int, str] | None = None, **read_kwargs: object) -> CaseVolumes:
    """Read a label map and measure every non-zero label: mL in 3D (voxels x voxel volume / 1000), mm^2 in 2D.
    Labels are named by the file's own names (Slicer segments, DICOM SEG), overridden by ``names``, else
    ``label_<n>``."""
    import medimg
    from medimg.io._atomic import split_ext

    lab = medimg.read_labels(path, names=names, **read_kwargs)  # type: ignore[arg-type]
    scale = lab.voxel_volume_mm3 / (1000.0 if lab.ndim == 3 else 1.0)
    sizes: dict[str, float] = {}
    for value, count in lab.voxel_counts().items():
        key = lab.name_of(value)
        sizes[key] = sizes.get(key, 0.0) + count * scale
    case = split_ext(path)[0] if path.is_file() else path.name
    return CaseVolumes(case, path, lab.ndim, tuple(lab.spacing), lab.spacing_known, sizes)


def volume_rows(cases: list[CaseVolumes]) -> tuple[list[str], list[dict[str, object]]]:
    """CSV columns and rows: ``case``, ``file``, ``dims``, ``spacing_mm``, then ``<name>_mL`` (3D) /
    ``<name>_mm2`` (2D) per structure in order of first appearance; a structure absent from a case is 0."""
    cols: list[str] = []
    for c in cases:
        for name in c.sizes:
            col = f"{name}_{c.unit}"
            if col not in cols:
                cols.append(col)
    rows: list[dict[str, object]] = []
    for c in cases:
        row: dict[str, object] = {
            "case": c.case,
            "file": c.path.name,
            "dims": c.dims,
            "spacing_mm": "x".join(f"{s:g}" for s in c.spacing) + ("" if c.spacing_known else " (unknown)"),
        }
        for col in cols:
            name, _, unit = col.rpartition("_")
            row[col] = round(c.sizes.get(name, 0.0), 6) if unit == c.unit else ""
        rows.append(row)
    return ["case", "file", "dims", "spacing_mm", *cols], rows


def write_csv(header: list[str], rows: list[dict[str, object]], out: Path) -> None:
    """Write the table atomically (a temporary file renamed over ``out``)."""
    from medimg.io._atomic import atomic_path

    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


@app.command("volumes")
def volumes_cmd(
    path: Annotated[Path, typer.Argument(help="A folder of label maps (one case per file) or one label map.")],
    out: Annotated[Path | None, typer.Option("--output", "-o", help="CSV to write (a row per case).")] = None,
    names: Annotated[
        str | None, typer.Option("--names", help="Class names, e.g. '1=liver,2=spleen' (override the files' own).")
    ] = None,
    key: KeyOpt = None,
    spacing: SpacingInOpt = None,
) -> None:
    """Volume of every structure per case (mL; for 2D label maps the area in mm^2), columns named by the label
    names when the files carry them (Slicer seg.nrrd, DICOM SEG) or --names gives them."""

    def body() -> None:
        label_names = _parse_names(names)
        sp = _floats(spacing, "--input-spacing")
        kw: dict[str, object] = {"key": key}
        if sp is not None:
            kw["spacing"] = sp
        if out is not None:
            from medimg.io._atomic import check_output_path

            check_output_path(out)  # fail before measuring anything
        files = label_files(path)
        cases = [measure(p, label_names, **kw) for p in _progress(files, "measuring")]
        header, rows = volume_rows(cases)
        t = Table(title="volumes (mL; 2D: area in mm²)", title_justify="left")
        shown = [c for c in header if c not in ("file", "dims")]  # the CSV keeps them
        for c in shown:
            t.add_column(c.replace("_mL", " (mL)").replace("_mm2", " (mm²)"), justify="right" if "_m" in c else "left")
        for r in rows:
            t.add_row(*(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in shown))
        console.print(t)
        unknown = [c.case for c in cases if not c.spacing_known]
        if unknown:
            err_console.print(
                f"[yellow]note:[/] {len(unknown)} case(s) without a stored voxel spacing ({', '.join(unknown[:3])}"
                f"{' ...' if len(unknown) > 3 else ''}): 1 mm assumed; pass --input-spacing to set it."
            )
        if out is not None:
            write_csv(header, rows, out)
            console.print(f"wrote {out} ({len(rows)} case(s))")

    _run(body)
