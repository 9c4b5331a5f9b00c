"""De-identify a DICOM file or a folder tree into a new file or folder that mirrors it.

:func:`deidentify` checks everything before writing (input exists, output not inside the input nor the input
inside the output, output empty or ``overwrite``, mapping and report outside both), reads every file (DICOM
files with or without the 128-byte preamble; other files are skipped and listed; a DICOM file that cannot be
parsed stops the run), de-identifies each with one :class:`~medimg.deid.engine.Deidentifier` (so UIDs, pseudonyms
and date shifts are consistent across the tree), writes into a hidden temporary folder beside the output and
renames it into place only when every file succeeded. Then the mapping (mode 0600) and the report are written,
each atomically. Nothing is written inside the input.

The output keeps each file's transfer syntax and its pixel data bytes; the preamble is zeroed. File and folder
names are copied as they are (the report warns when a name contains the patient's ID or name).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError

from medimg.deid.engine import Deidentifier, DeidError, FileChanges, Mapping, parse_profile, write_private

#: Native (uncompressed) transfer syntaxes, whose pixel data length can be checked against the header.
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
MEDIA_DIRECTORY_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class FileReport:
    """One de-identified file: input and output paths (relative to IN / OUT) and what changed."""

    input: str
    output: str
    modality: str
    sop_class: str
    changes: FileChanges


@dataclass
class DeidReport:
    """What a de-identification run did (attribute names and counts; never identifying values)."""

    input: str
    output: str
    profile: list[str]
    mapping: str | None
    date_shift: str
    files: list[FileReport] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    review: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    patients: int = 0
    studies: int = 0
    series: int = 0
    frames_of_reference: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (with ``n_files`` / ``n_skipped`` / ``n_review`` counts)."""
        import medimg

        d = asdict(self)
        d = {
            "tool": "medimg deid",
            "medimg_version": medimg.__version__,
            "standard": "DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile (Table E.1-1)",
            "n_files": len(self.files),
            "n_skipped": len(self.skipped),
            "n_review": len(self.review),
            **d,
        }
        return d


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _is_empty_dir(p: Path) -> bool:
    return p.is_dir() and not any(p.iterdir())


def _check_paths(src: Path, out: Path, overwrite: bool, side_files: Sequence[tuple[str, Path | None]]) -> None:
    if not src.exists():
        raise DeidError(f"The input {str(src)!r} does not exist; give an existing DICOM file or folder.")
    if _inside(out, src):
        raise DeidError(
            f"The output {str(out)!r} is the input or lies inside it; choose an output folder outside {str(src)!r}."
        )
    if _inside(src, out):
        raise DeidError(f"The input {str(src)!r} lies inside the output {str(out)!r}; choose another output folder.")
    if not out.parent.is_dir():
        raise DeidError(f"The output's folder {str(out.parent)!r} does not exist; create it first (mkdir -p).")
    if src.is_file() and out.is_dir():
        raise DeidError(f"The input is one file, so the output must be a file path, but {str(out)!r} is a folder.")
    if out.exists() and not _is_empty_dir(out) and not overwrite:
        raise DeidError(
            f"The output {str(out)!r} already exists and is not empty; pass --overwrite to replace it, or choose "
            "another output."
        )
    for what, p in side_files:
        if p is None:
            continue
        if _inside(p, out) or _inside(p, src):
            raise DeidError(
                f"The {what} file {str(p)!r} must lie outside the input and the output (it would "
                f"{'reveal the original identifiers' if what == 'mapping' else 'name the input files'}); give a path "
                "elsewhere."
            )
        if not p.parent.is_dir():
            raise DeidError(f"The {what} file's folder {str(p.parent)!r} does not exist; create it first (mkdir -p).")
        if p.is_dir():
            raise DeidError(f"The {what} path {str(p)!r} is a folder; give a file name.")


def _has_dicm(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_pixels(ds: Dataset, path: Path) -> None:
    """Truncated image files: an image (Rows) without pixel data, or native-transfer-syntax PixelData shorter than
    Rows x Columns x Samples x Bits x Frames. (pydicom stops silently at the end of a truncated file.)"""
    if "Rows" not in ds:
        return
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DeidError(
            f"{str(path)!r} is a damaged DICOM file: it describes an image (Rows, Columns) but its pixel data is "
            "missing (truncated?); remove or replace the file and run again (nothing was written)."
        )
    if "PixelData" not in ds:
        return
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    if ts not in _NATIVE:
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    need = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames * bits // 8
    if len(ds.PixelData) < need:
        raise DeidError(
            f"{str(path)!r} is a damaged DICOM file: its pixel data has {len(ds.PixelData)} bytes where the header "
            f"needs {need}; remove or replace the file and run again (nothing was written)."
        )


def _check_complete(ds: Dataset, path: Path) -> None:
    """pydicom stops silently at the end of a truncated file; compare where the elements end with the file size:
    a value running past the end, or a few stray bytes after the last element (a cut tag header), is damage."""
    size = path.stat().st_size
    last_end = None
    for tag in sorted(ds.keys()):  # tags, without converting the raw elements
        raw = ds.get_item(tag)
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if tell is None or length is None:
            last_end = None
            continue
        if length == 0xFFFFFFFF:
            last_end = None
            continue
        last_end = int(tell) + int(length)
        if last_end > size:
            break
    if last_end is not None and (last_end > size or 0 < size - last_end < 8):
        raise DeidError(
            f"{str(path)!r} is a damaged DICOM file (truncated: it ends inside an element); remove or replace the "
            "file and run again (nothing was written)."
        )


def read_dicom(path: Path) -> FileDataset | None:
    """Read a DICOM file completely; None when ``path`` is not DICOM (no ``DICM`` magic and no SOP Class UID when
    read without one). A DICOM file that cannot be parsed or is truncated raises :class:`DeidError`."""
    try:
        dicm = _has_dicm(path)
    except OSError as e:
        raise DeidError(f"Cannot read {str(path)!r}: {e.strerror or e}; fix its permissions or remove it.") from e
    try:
        with warnings.catch_warnings():
            if not dicm:  # forced reading of a file that may not be DICOM: its complaints are not the user's
                warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=not dicm)
            if dicm:
                _check_complete(ds, path)
            for _ in ds.iterall():  # parse every element now: damage shows here, not half-way through writing
                pass
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OverflowError, OSError, AttributeError) as e:
        if not dicm:
            return None
        raise DeidError(
            f"{str(path)!r} looks like DICOM but cannot be read ({type(e).__name__}: {e}); remove or replace the "
            "file and run again (nothing was written)."
        ) from e
    if not dicm and "SOPClassUID" not in ds:
        return None
    _check_pixels(ds, path)
    return ds


def _write(ds: FileDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if ds.preamble is not None:
        ds.preamble = b"\x00" * 128
    ds.save_as(path, enforce_file_format=False)


def _list_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    return sorted(p for p in src.rglob("*") if p.is_file())


def deidentify(
    input: str | Path,
    output: str | Path,
    *,
    profile: Iterable[str] = ("basic",),
    mapping: str | Path | None = None,
    date_shift_days: int | None = None,
    report: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
) -> DeidReport:
    """De-identify the DICOM file or folder tree ``input`` into ``output`` (see the module docstring).

    Parameters
    ----------
    profile:
        ``basic`` plus options (:data:`medimg.deid.engine.PROFILE_OPTIONS`), comma-separated or repeated.
    mapping:
        JSON file holding the secret, the UID map and the patients (read if it exists, then updated). Re-running
        with the same mapping gives the same UIDs, pseudonyms and date shifts. Without it a fresh secret is used
        and nothing is kept.
    date_shift_days:
        With ``retain-dates``: one shift in days for every patient (else derived per patient from the secret).
    report:
        JSON report file to write (outside ``input`` and ``output``).
    overwrite:
        Replace an existing non-empty ``output`` (the old one is removed only after the new one is complete).
    """
    t0 = time.perf_counter()
    src = Path(input).expanduser().resolve()
    out = Path(output).expanduser().resolve()
    map_path = Path(mapping).expanduser().resolve() if mapping is not None else None
    rep_path = Path(report).expanduser().resolve() if report is not None else None
    options = parse_profile(profile)
    _check_paths(src, out, overwrite, [("mapping", map_path), ("report", rep_path)])
    if map_path is not None and rep_path is not None and map_path == rep_path:
        raise DeidError("The mapping and the report must be different files.")
    the_map = Mapping.load(map_path) if map_path is not None and map_path.exists() else Mapping()
    engine = Deidentifier(options, the_map, date_shift_days)
    if "retain-dates" in options:
        shift = f"fixed {date_shift_days} days" if date_shift_days is not None else "per patient, from the secret"
    else:
        shift = "none (dates kept)" if "retain-full-dates" in options else "none (dates removed)"
    rep = DeidReport(
        input=str(src), output=str(out), profile=list(options), mapping=str(map_path) if map_path else None,
        date_shift=shift,
    )  # fmt: skip
    files = _list_files(src)
    base = src if src.is_dir() else src.parent
    tmp = out.with_name(f".{out.name}.deid-tmp-{secrets.token_hex(4)}")
    studies: set[str] = set()
    series: set[str] = set()
    frames: set[str] = set()
    patients: set[str] = set()
    try:
        if src.is_dir():
            tmp.mkdir()
        items = progress(files, "de-identifying") if progress else files
        for f in items:
            rel = f.relative_to(base).as_posix()
            ds = read_dicom(f)
            if ds is None:
                rep.skipped.append({"path": rel, "reason": "not DICOM"})
                continue
            if str(ds.get("SOPClassUID", "")) == MEDIA_DIRECTORY_CLASS or f.name.upper() == "DICOMDIR":
                rep.skipped.append({"path": rel, "reason": "DICOMDIR index: not copied (rebuild it from the output)"})
                continue
            pid, pname = str(ds.get("PatientID", "") or ""), str(ds.get("PatientName", "") or "")
            changes = engine.apply(ds)
            patients.add(str(ds.get("PatientID", "")))
            for key, acc in (
                ("StudyInstanceUID", studies),
                ("SeriesInstanceUID", series),
                ("FrameOfReferenceUID", frames),
            ):
                if key in ds:
                    acc.add(str(ds[key].value))
            dest = tmp / rel if src.is_dir() else tmp
            _write(ds, dest)
            rep.files.append(FileReport(rel, rel, str(ds.get("Modality", "")), str(ds.get("SOPClassUID", "")), changes))
            if changes.burned_in_review:
                rep.review.append({"path": rel, "reasons": changes.burned_in_review})
            low = rel.lower()
            for what, val in (("patient ID", pid), ("patient name", pname)):
                parts = [p for p in val.replace("^", " ").split() if len(p) >= 3]
                if any(p.lower() in low for p in parts):
                    rep.warnings.append(f"The file name {rel!r} contains the {what}; rename it before sharing.")
        if not rep.files:
            raise DeidError(
                f"No DICOM file was found in {str(src)!r} ({len(rep.skipped)} other files); nothing written."
            )
        old: Path | None = None
        if out.exists():
            old = out.with_name(f".{out.name}.deid-old-{secrets.token_hex(4)}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
    rep.patients, rep.studies, rep.series, rep.frames_of_reference = (
        len(patients),
        len(studies),
        len(series),
        len(frames),
    )
    if map_path is not None:
        write_private(map_path, the_map.to_json() + "\n")
    rep.seconds = round(time.perf_counter() - t0, 3)
    if rep_path is not None:
        write_private(rep_path, json.dumps(rep.to_dict(), indent=1) + "\n")
    return rep
