"""The medimg error hierarchy.

Every error medimg raises on purpose is a :class:`MedimgError`. Messages say what went wrong *and* what to
do about it; the CLI prints them without a traceback (exit code 2) unless ``--debug`` is given.
"""

from __future__ import annotations


class MedimgError(Exception):
    """Base class of every error medimg raises deliberately."""


class UnsupportedFormatError(MedimgError):
    """The file is not in a format medimg can read or write."""


class CorruptFileError(MedimgError):
    """The file has a known format but cannot be decoded (truncated, damaged, inconsistent header)."""


class DicomSeriesError(MedimgError):
    """A DICOM folder or series is ambiguous or inconsistent (several series, missing slices, ...)."""


class GeometryError(MedimgError):
    """Invalid geometry (non-positive spacing, singular direction) or two images that should share a grid
    but do not."""


class DimensionError(MedimgError):
    """The image has the wrong number of dimensions or channels for the operation."""


class NonFiniteError(MedimgError):
    """The image contains NaN or infinite voxels."""


class OutputPathError(MedimgError):
    """The output path cannot be written (missing folder, read-only location, ...)."""


class LabelError(MedimgError):
    """A label map is invalid (non-integer values, negative labels, unknown names, ...)."""


class OutOfDomainError(MedimgError):
    """The input lies outside the domain the model was trained on (modality, dimensionality, size, spacing,
    intensities or learned features); the model refuses it unless forced."""
