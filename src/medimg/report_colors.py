"""A fixed, distinguishable colour per label value (used for seg.nrrd, overlays and reports)."""

from __future__ import annotations

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
]


def label_color(label: int) -> tuple[int, int, int]:
    """RGB (0-255) colour for a label value; label 0 (background) is black."""
    if label == 0:
        return (0, 0, 0)
    return _PALETTE[(label - 1) % len(_PALETTE)]
