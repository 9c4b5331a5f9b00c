"""The workbench (``medimg serve``): a local web app over medimg's library — an HTTP API (:func:`create_app`) and
the browser app in ``static/``. See docs/web.md."""

from medimg.web.server import create_app

__all__ = ["create_app"]
