"""Atomic file writing: write to a temporary file in the destination folder, then rename over the target.

A crash, an exception in a writer or a full disk therefore never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medimg.errors import MedimgError, OutputPathError


def split_ext(path: str | Path) -> tuple[str, str]:
    """Split a file name into stem and (possibly double) extension: ``a.nii.gz`` -> ``("a", ".nii.gz")``."""
    name = Path(path).name
    lower = name.lower()
    for double in (".nii.gz", ".seg.nrrd", ".tar.gz"):
        if lower.endswith(double):
            return name[: -len(double)], name[-len(double) :]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def check_output_path(path: str | Path, overwrite: bool = True) -> Path:
    """Validate that ``path`` can be written: its folder exists and is writable.

    Raises :class:`OutputPathError` with advice otherwise.
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.exists():
        raise OutputPathError(
            f"Output folder {str(folder)!r} does not exist. Create it first (mkdir -p {folder}) or choose another path."
        )
    if not folder.is_dir():
        raise OutputPathError(f"{str(folder)!r} is not a folder, so {p.name!r} cannot be written inside it.")
    if p.is_dir():
        raise OutputPathError(f"Output path {str(p)!r} is an existing folder; give a file name.")
    if p.exists() and not overwrite:
        raise OutputPathError(f"{str(p)!r} already exists; pass overwrite=True to replace it, or choose another path.")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"Output folder {str(folder)!r} is not writable (read-only or no permission).")
    return p


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same extension); on success it is renamed to ``path``.

    On any exception the temporary file (or folder) is removed and the target is left untouched.
    """
    target = check_output_path(path, overwrite)
    stem, ext = split_ext(target)
    tmp = target.with_name(f".{stem}.tmp-{secrets.token_hex(4)}{ext}")
    try:
        yield tmp
        if not tmp.exists():
            raise OutputPathError(f"Writer produced no output for {str(target)!r}.")
        os.replace(tmp, target)
    except PermissionError as e:
        raise OutputPathError(f"Cannot write {str(target)!r}: permission denied ({e.strerror}).") from e
    except OSError as e:
        raise OutputPathError(f"Cannot write {str(target)!r}: {e.strerror or e}.") from e
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def check_new_folder(out: str | Path, error: type[MedimgError] = OutputPathError) -> Path:
    """``out`` must not exist, or be an empty folder (a folder output never overwrites anything)."""
    p = Path(out)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise error(f"{p} already exists and is not an empty folder; choose a new output folder.")
    if not p.parent.exists():
        raise error(f"The parent folder {p.parent} does not exist; create it first.")
    return p


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder next to ``out``, renamed to ``out`` on success and removed on failure, so an interrupted
    or failed writer leaves nothing half-written."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
