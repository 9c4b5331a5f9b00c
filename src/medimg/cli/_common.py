"""Shared pieces of the ``medimg`` command line: the Typer app, consoles, error handling, common options.

Errors raised as :class:`~medimg.errors.MedimgError` are printed without a traceback and exit with code 2;
``--debug`` (anywhere on the line) shows the traceback instead. ``--threads N`` (or ``MEDIMG_NUM_THREADS``) caps the
threads of PyTorch, ITK and NumPy's BLAS; both are global options accepted before or after the command.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperGroup

from medimg.errors import MedimgError

#: Options accepted anywhere on the command line (lifted in front of the command before parsing), with whether
#: each takes a value.
GLOBAL_OPTIONS = {"--debug": False, "--threads": True}
THREADS_ENV = "MEDIMG_NUM_THREADS"
GLOBAL_EPILOG = "Global options, accepted anywhere on the line: --debug (traceback on errors), --threads N."
#: Environment variables read by OpenMP / BLAS runtimes (and ITK) when they start.
_THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


def lift_global_options(args: Sequence[str]) -> list[str]:
    """Move the global options (``--debug``, ``--threads N`` / ``--threads=N``) found anywhere before a ``--``
    to the front of ``args``, so that ``medimg info x --debug`` means ``medimg --debug info x``."""
    front: list[str] = []
    rest: list[str] = []
    i, args = 0, list(args)
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        name = a.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            takes_value = GLOBAL_OPTIONS[name]
            if takes_value and "=" not in a and i + 1 < len(args):
                front += [a, args[i + 1]]
                i += 2
                continue
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


def _readable_params(cmd: Any) -> None:
    """Give every argument of ``cmd`` and of its sub-commands (recursively) a readable metavar (its name in
    capitals, unless set); with typer 0.20 (pinned for Flower) options already show click's readable type names."""
    params = list(getattr(cmd, "params", []))
    if hasattr(cmd, "get_help_option"):  # --help is created lazily per command; create it now (it is cached)
        params.append(cmd.get_help_option(typer.Context(cmd)))
    for p in params:
        if isinstance(p, TyperArgument) and p.metavar is None and p.name:
            p.metavar = p.name.upper()
    subs = getattr(cmd, "commands", None)
    if subs is None and GLOBAL_EPILOG not in (cmd.epilog or ""):  # a command: say that the global options work here
        cmd.epilog = f"{cmd.epilog}\n\n{GLOBAL_EPILOG}" if cmd.epilog else GLOBAL_EPILOG
    for sub in (subs or {}).values():
        _readable_params(sub)


class MedimgGroup(TyperGroup):
    """The root command group: readable metavars in every help, global options accepted anywhere."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _readable_params(self)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, lift_global_options(args))


app = typer.Typer(
    name="medimg",
    help="medimg: read, inspect, convert and resample medical images with exact geometry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=MedimgGroup,
)
console = Console()
err_console = Console(stderr=True)
_STATE: dict[str, Any] = {"debug": False, "threads": None}
T = TypeVar("T")


def _run(fn: Callable[[], T]) -> T:
    """Run a command body; print MedimgErrors (and invalid paths) cleanly with exit code 2."""
    try:
        return fn()
    except MedimgError as e:
        if _STATE["debug"]:
            raise
        _stop_progress()
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {e}", highlight=False, markup=True)
        raise typer.Exit(2) from None
    finally:
        _stop_progress()


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise MedimgError(f"{what} must be comma-separated numbers, e.g. 1,1,3 (got {text!r}).") from None
    return vals


def default_threads() -> int:
    """The CPU cores this process may run on (all of them unless restricted by affinity / cgroups)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _blas_set_threads(n: int) -> list[str]:
    """Cap the BLAS / OpenMP runtimes already loaded into this process (NumPy's OpenBLAS, MKL, libgomp) at ``n``
    threads: through threadpoolctl when installed, else by calling their C setters found in /proc/self/maps.
    Returns the libraries set."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        threadpool_limits(limits=n)
        return ["threadpoolctl"]
    setters = (
        "openblas_set_num_threads",
        "openblas_set_num_threads64_",
        "scipy_openblas_set_num_threads64_",
        "scipy_openblas_set_num_threads",
        "MKL_Set_Num_Threads",
        "omp_set_num_threads",
    )
    done: list[str] = []
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if ".so" in line and line.split()[-1].startswith("/")}
    except OSError:  # pragma: no cover - not Linux
        return done
    for lib in sorted(libs):
        base = os.path.basename(lib).lower()
        if not any(k in base for k in ("openblas", "mkl_rt", "gomp", "libomp", "libiomp")):
            continue
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in setters:
            fn = getattr(handle, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done.append(f"{os.path.basename(lib)}:{sym}")
                break
    return done


def _set_torch_threads(torch: ModuleType, n: int) -> None:
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only possible before the first inter-op parallel work
        torch.set_num_interop_threads(n)


def _set_itk_threads(sitk: ModuleType, n: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)


_AFTER_IMPORT: dict[str, Callable[[ModuleType, int], None]] = {
    "torch": _set_torch_threads,
    "SimpleITK": _set_itk_threads,
}


class _ThreadsOnImport(importlib.abc.MetaPathFinder):
    """Applies the thread count to torch / SimpleITK right after they are first imported (they are imported lazily,
    inside the commands, after the options were parsed)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _AFTER_IMPORT:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, n, setter = spec.loader, self.n, _AFTER_IMPORT[fullname]
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            setter(module, n)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default: ``MEDIMG_NUM_THREADS``, else ``OMP_NUM_THREADS``, else every available core) in
    PyTorch (intra- and inter-op), ITK (SimpleITK's global default) and the BLAS / OpenMP runtimes behind NumPy.
    Libraries imported later get it when they load (environment variables and an import hook). Returns the number
    used."""
    if n is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            try:
                n = int(env)
            except ValueError:
                raise MedimgError(f"{THREADS_ENV} must be a whole number of threads (got {env!r}).") from None
    if n is not None and n < 1:
        raise MedimgError(f"--threads / {THREADS_ENV} must be at least 1 (got {n}).")
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    n = n or (int(omp) if omp.isdigit() and int(omp) > 0 else default_threads())  # a user's OMP setting is kept
    for var in _THREAD_ENV_VARS:
        os.environ[var] = str(n)
    _blas_set_threads(n)
    for mod, setter in _AFTER_IMPORT.items():
        if mod in sys.modules:
            setter(sys.modules[mod], n)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ThreadsOnImport)]
    if any(mod not in sys.modules for mod in _AFTER_IMPORT):
        sys.meta_path.insert(0, _ThreadsOnImport(n))
    _STATE["threads"] = n
    return n


def _version_callback(value: bool) -> None:
    if value:
        from medimg import __version__

        console.print(f"medimg {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks on errors (accepted anywhere on the line).")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            metavar="N",
            help=f"Threads for PyTorch, ITK and NumPy/BLAS (accepted anywhere on the line; env {THREADS_ENV}; "
            "default: every core).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the medimg version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    _STATE["debug"] = debug
    try:
        set_threads(threads)
    except MedimgError as e:
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {e}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def _read_kwargs(
    series: str | None, key: str | None, spacing: str | None, allow_irregular: bool, allow_nonfinite: bool
) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "series": series,
        "key": key,
        "allow_irregular": allow_irregular,
        "allow_nonfinite": allow_nonfinite,
    }
    sp = _floats(spacing, "--spacing")
    if sp is not None:
        kw["spacing"] = sp
    return kw


SeriesOpt = Annotated[
    str | None,
    typer.Option(
        "--series", help="DICOM series: its UID, a unique prefix (as `medimg info` shows it) or suffix, or 'largest'."
    ),
]
KeyOpt = Annotated[str | None, typer.Option("--key", help="HDF5/NPZ array name.")]
SpacingInOpt = Annotated[
    str | None, typer.Option("--input-spacing", help="Voxel spacing in mm for files without one (e.g. 1.5,1.5,8).")
]
IrregularOpt = Annotated[
    bool, typer.Option("--allow-irregular", help="DICOM: interpolate series with missing slices onto a regular grid.")
]
NonfiniteOpt = Annotated[bool, typer.Option("--allow-nonfinite", help="Accept NaN/Inf voxels.")]
#: ``--root`` of the commands that run an operation: the folders its paths must lie in.
RootsOpt = Annotated[
    list[Path] | None, typer.Option("--root", help="Only allow paths inside these folders (repeatable).")
]
#: ``--json`` of the commands that run an operation: print its whole result.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the whole result (with provenance) as JSON.")]


def _parse_names(text: str | None, option: str = "--names") -> dict[int, str] | None:
    """``1=liver,2=spleen``, or the name of a class list medimg ships (``totalsegmentator``, ...); errors name
    ``option``."""
    if not text:
        return None
    from medimg.io import class_map, class_map_names

    if "=" not in text and "," not in text:
        return class_map(text)  # raises naming the shipped lists when unknown
    out: dict[int, str] = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip().isdigit():
            raise MedimgError(
                f"{option} must look like '1=liver,2=spleen' or name a shipped list ({', '.join(class_map_names())}); "
                f"got {part!r}."
            )
        out[int(k)] = v.strip()
    return out


#: Progress displays of the running command that have not finished (stopped by :func:`_run` when it returns).
_OPEN_PROGRESS: set[Any] = set()


def _progress(items: Any, what: str) -> Any:
    """A transient progress bar on stderr over ``items`` (rich's ``track`` look). When the command fails inside the
    loop, :func:`_run` stops the display: a generator kept alive by the exception's traceback would otherwise keep
    refreshing the bar into whatever is printed next (another command's --json output in the same process)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    _OPEN_PROGRESS.add(progress)

    def run() -> Any:
        try:
            with progress:
                yield from progress.track(items, description=what)
        finally:
            _OPEN_PROGRESS.discard(progress)

    return run()


def _stop_progress() -> None:
    """Stop every progress display a command left open (it raised inside the loop)."""
    for p in list(_OPEN_PROGRESS):
        p.stop()
    _OPEN_PROGRESS.clear()


def default_command(name: str, options_too: bool = True) -> type[TyperGroup]:
    """A command group class whose subcommand ``name`` runs when the line names no subcommand: ``medimg federated
    SITE ...`` is ``medimg federated train SITE ...``; with ``options_too``, a line starting with an option (``medimg
    generate -m M ...``) goes to ``name`` too (``--help`` stays the group's)."""

    class _Default(TyperGroup):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            first = args[0] if args else None
            if (
                first
                and first not in self.commands
                and first not in ("--help", "-h")
                and (options_too or not first.startswith("-"))
            ):
                args = [name, *args]
            return super().parse_args(ctx, args)

    return _Default


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="auto|cpu|cuda[:N]",
        help="Where the network runs: auto (a GPU when PyTorch sees one, else the CPU), cpu, or cuda[:N].",
    ),
]
