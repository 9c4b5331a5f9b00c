"""Reports and quick-look pictures."""

from medimg.report.overlay import overlay_slice

__all__ = ["overlay_slice"]
