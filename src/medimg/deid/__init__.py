"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile with its options.

* :mod:`medimg.deid.table` -- Table E.1-1 (attributes and actions), safe private tags, CID 7050 method codes;
* :mod:`medimg.deid.engine` -- :class:`Deidentifier` (one dataset), :class:`Mapping` (secret, UIDs, patients);
* :mod:`medimg.deid.tree` -- :func:`deidentify` (a file or folder tree, atomic output, JSON report).

See docs/deid.md.
"""

from __future__ import annotations

from medimg.deid.engine import PROFILE_OPTIONS, Deidentifier, DeidError, FileChanges, Mapping, parse_profile
from medimg.deid.tree import DeidReport, deidentify, read_dicom

__all__ = [
    "PROFILE_OPTIONS",
    "DeidError",
    "DeidReport",
    "Deidentifier",
    "FileChanges",
    "Mapping",
    "deidentify",
    "parse_profile",
    "read_dicom",
]
