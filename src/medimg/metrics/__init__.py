"""Evaluation metrics: segmentation (overlap, surface, instance), with switchable reference conventions.

See :mod:`medimg.metrics.segmentation` for the definitions and conventions.
"""

from medimg.metrics.segmentation import (
    ALL_METRICS,
    CONVENTIONS,
    DEFAULT_METRICS,
    instance_metrics,
    segmentation_metrics,
)

__all__ = ["ALL_METRICS", "CONVENTIONS", "DEFAULT_METRICS", "instance_metrics", "segmentation_metrics"]
