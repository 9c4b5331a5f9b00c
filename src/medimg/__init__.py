"""medimg: one toolkit for medical image analysis.

The :class:`Image` (array + spacing + origin + direction, LPS world coordinates) is the currency between
all packages; :func:`read` / :func:`write` move it in and out of every common medical format.
See ``docs/architecture.md`` for the conventions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap
from medimg.io import read, read_labels, write

__all__ = ["Image", "LabelMap", "MedimgError", "__version__", "read", "read_labels", "write"]
