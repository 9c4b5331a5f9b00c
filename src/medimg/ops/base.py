"""The operations layer's core: typed operations, one registry, path confinement, provenance.

Every user-facing operation is defined once as a function ``fn(params, ctx) -> result`` whose parameters and
result are pydantic models (so JSON Schema comes free) and registered with :func:`operation`. Adapters — the CLI,
``medimg ask``, the MCP server, the workbench — call :func:`run` with a dict or model of parameters; nothing below
this layer knows how it was called.

:func:`run` validates the parameters, confines every path to the context's root folders (when it has any),
refuses outputs that would overwrite an input, hashes the inputs, runs the operation and attaches a
:class:`Provenance` record (operation, parameters, inputs with SHA-256, models, medimg version, time, seconds).
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medimg.errors import MedimgError

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class PathNotAllowedError(MedimgError):
    """A path lies outside the folders an adapter allowed (``--root``), or an output would overwrite an input."""


class InvalidParametersError(MedimgError):
    """The parameters of an operation do not validate against its schema."""


class InputRecord(BaseModel):
    """One input file or folder: its path and, for files, the SHA-256 of its bytes."""

    path: str
    sha256: str | None = None


class Provenance(BaseModel):
    """What produced a result: enough to reproduce it and to check its inputs are the same files."""

    operation: str
    parameters: dict[str, Any]
    inputs: list[InputRecord] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    medimg_version: str
    time: str
    seconds: float


class OpResult(BaseModel):
    """Base of every operation result: the files it wrote and its provenance (filled in by :func:`run`)."""

    model_config = ConfigDict(extra="forbid")

    files: list[str] = Field(default_factory=list, description="Files written by the operation.")
    provenance: Provenance | None = None


class OpParams(BaseModel):
    """Base of every operation's parameters (unknown keys are an error, not silently ignored)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Context:
    """How an operation is called: allowed root folders (None: anywhere), a progress callback
    ``progress(items, description) -> iterable``, an ``on_event`` listener for the progress of long operations, and
    free-form notes the operation adds for the caller."""

    roots: Sequence[Path] | None = None
    progress: Callable[[Sequence[Any], str], Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: Called with progress events of long operations (e.g. ``{"step": 500, "loss": 0.1}``) when set.
    on_event: Callable[[dict[str, Any]], None] | None = None

    def log(self, event: dict[str, Any]) -> None:
        """Report a progress event of a long operation to the caller (if it listens)."""
        if self.on_event is not None:
            self.on_event(event)

    def iterate(self, items: Sequence[Any], what: str) -> Any:
        return self.progress(items, what) if self.progress else items


@dataclass
class Operation:
    """A registered operation: name, one-line summary, parameter and result models, the function, and which
    parameters are input paths (``reads``) or output paths (``writes``)."""

    name: str
    summary: str
    params: type[OpParams]
    result: type[OpResult]
    fn: Callable[[Any, Context], OpResult]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        """Name, description and JSON Schemas of the parameters and the result."""
        return {
            "name": self.name,
            "description": self.summary,
            "input_schema": self.params.model_json_schema(),
            "output_schema": self.result.model_json_schema(),
        }


REGISTRY: dict[str, Operation] = {}


def operation(
    name: str, summary: str, reads: Sequence[str] = (), writes: Sequence[str] = ()
) -> Callable[[Callable[[P, Context], R]], Callable[[P, Context], R]]:
    """Register ``fn(params, ctx) -> result`` as operation ``name``; the models come from its type hints."""

    def deco(fn: Callable[[P, Context], R]) -> Callable[[P, Context], R]:
        hints = get_type_hints(fn)
        first = next(iter(inspect.signature(fn).parameters))
        call: Callable[[Any, Context], OpResult] = fn  # type: ignore[assignment]
        REGISTRY[name] = Operation(name, summary, hints[first], hints["return"], call, tuple(reads), tuple(writes))
        return fn

    return deco


def get(name: str) -> Operation:
    """The registered operation ``name`` (a clear error listing the others when unknown)."""
    if name not in REGISTRY:
        raise MedimgError(f"Unknown operation {name!r}; the operations are: {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name]


def operations() -> dict[str, Operation]:
    """Every registered operation by name (the package ``medimg.ops`` registers the catalogue on import)."""
    return dict(REGISTRY)


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def sha256_of(path: Path) -> str | None:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks; None for a folder or a missing path."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def confine(path: str | Path, roots: Sequence[Path] | None) -> Path:
    """``path`` resolved; with ``roots``, relative paths are taken from the first root and the result must lie
    inside one of them (symbolic links resolved, so ``..`` or a link cannot escape)."""
    p = Path(path).expanduser()
    if roots:
        p = (Path(roots[0]) / p) if not p.is_absolute() else p
        rp = p.resolve()
        if not any(rp == Path(r).resolve() or Path(r).resolve() in rp.parents for r in roots):
            raise PathNotAllowedError(
                f"{str(path)!r} is outside the allowed folders ({', '.join(str(r) for r in roots)}); "
                "use a path inside them (or allow another folder with --root)."
            )
        return rp
    return p


def run(name: str, params: BaseModel | dict[str, Any], ctx: Context | None = None) -> OpResult:
    """Validate ``params``, confine paths, run operation ``name`` and attach its provenance."""
    import medimg

    op = get(name)
    ctx = ctx or Context()
    try:
        raw = params.model_dump() if isinstance(params, BaseModel) else dict(params)
        p = op.params.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'parameters'}: {err['msg']}" for err in e.errors()
        )
        raise InvalidParametersError(f"Operation {name!r}: {problems}.") from None
    inputs: list[Path] = []
    for key in op.reads:
        vals = [confine(v, ctx.roots) for v in _paths(getattr(p, key))]
        inputs += vals
        cur = getattr(p, key)
        setattr(p, key, [str(v) for v in vals] if isinstance(cur, (list, tuple)) else (str(vals[0]) if vals else cur))
    resolved_in = {q.resolve() for q in inputs}
    for key in op.writes:
        vals = [confine(v, ctx.roots) for v in _paths(getattr(p, key))]
        for v in vals:
            if v.resolve() in resolved_in:
                raise PathNotAllowedError(f"The output {str(v)!r} is also an input; choose another output path.")
        if vals:
            setattr(p, key, str(vals[0]))
    t0 = time.perf_counter()
    result = op.fn(p, ctx)
    result.provenance = Provenance(
        operation=name,
        parameters=p.model_dump(mode="json"),
        inputs=[InputRecord(path=str(q), sha256=sha256_of(q)) for q in inputs],
        outputs=list(result.files),
        models=_models_of(result),
        medimg_version=medimg.__version__,
        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.perf_counter() - t0, 3),
    )
    return result


def _models_of(result: OpResult) -> list[str]:
    m = getattr(result, "model", None)
    return [str(m)] if m else []
