"""The operations layer: every user-facing operation defined once, with typed parameters and results.

``medimg.ops.run("volumes", {"path": "seg.nii.gz"})`` validates, confines paths, runs and attaches provenance;
``operations()`` lists them with JSON Schemas. The CLI, ``medimg ask``, the MCP server and the workbench are
adapters over this layer (docs/architecture.md).
"""

from medimg.ops import catalog  # noqa: F401  (registers the operations)
from medimg.ops.base import (
    Context,
    InvalidParametersError,
    Operation,
    OpParams,
    OpResult,
    PathNotAllowedError,
    Provenance,
    confine,
    get,
    operations,
    run,
)

__all__ = [
    "Context",
    "InvalidParametersError",
    "OpParams",
    "OpResult",
    "Operation",
    "PathNotAllowedError",
    "Provenance",
    "confine",
    "get",
    "operations",
    "run",
]
