"""Running many per-case operation calls: here, one after another (:class:`LocalRunner`), or as Ray tasks on a
local or existing Ray cluster (:class:`RayRunner`). Both have the same interface, so an adapter (the CLI) has one
code path and only chooses the runner.

A *call* (:class:`CaseCall`) is one typed operation call, ``medimg.ops.run(operation, params, Context(roots))`` --
the same code path as a plain run, so each case's outputs are bit for bit those of the plain run. A runner returns
one :class:`CaseOutcome` per call, **in input order**: the operation's result, or the error of a case that failed
(the other cases still run). Progress goes through the ``progress(items, description) -> iterable`` convention of
:class:`medimg.ops.Context`; with Ray, items are yielded as cases complete, in any order.

Retries (Ray): a case is attempted at most ``1 + max_retries`` times. A case is re-submitted when its worker
process died (crash, ``os._exit``, out-of-memory kill, lost node) or when it raised an unexpected exception (possibly
transient: I/O on a shared file system); a :class:`~medimg.errors.MedimgError` (corrupt file, input outside the
model's domain, ...) is deterministic and reported at once. Ray's own task retries are off (``max_retries=0`` on
the task) so every attempt is counted here and reported per case.

Determinism: each task sets PyTorch, OpenMP/BLAS and ITK to ``threads_per_task`` threads (default 1) before the
operation runs; the bundled models' outputs do not depend on the thread count (tests/test_scale.py checks the
labels are byte-identical to the plain run).

Ray is an optional dependency (``pip install "medimg[scale]"``) imported only when a :class:`RayRunner` starts;
``import medimg`` never imports it.

Folder-level operations are split into per-case calls and merged back here: :func:`volumes_calls` /
:func:`merge_volumes`, :func:`convert_calls`, and :func:`evaluate_with_runner` (per-case metric rows in parallel,
then the same summary, CSVs and report as ``medimg evaluate``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medimg.errors import MedimgError

Progress = Callable[[Sequence[Any], str], Any]

#: internal (non-operation) per-case call: the metric rows of one case of ``medimg evaluate``
EVALUATE_CASE = "evaluate_case"


class RayNotInstalledError(MedimgError):
    """``--ray`` was asked for but Ray is not installed."""


class ClusterError(MedimgError):
    """A Ray cluster could not be started or reached."""


class CaseFailuresError(MedimgError):
    """Some cases of a batch failed (the others completed and were written)."""


@dataclass(frozen=True)
class CaseCall:
    """One per-case call: a case id (for messages), the operation name and its parameters (JSON-able)."""

    case: str
    operation: str
    params: dict[str, Any]


@dataclass
class CaseOutcome:
    """What became of one call: its result (an operation's result model, or the internal call's value) or its
    error (type name and message), how many attempts it took, seconds of its last attempt and where it ran
    (``host:pid``)."""

    case: str
    operation: str
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    worker: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class Runner(Protocol):
    """Runs per-case calls and returns one outcome per call, in input order."""

    name: str

    def run(
        self, calls: Sequence[CaseCall], progress: Progress | None = None, what: str = "running"
    ) -> list[CaseOutcome]:
        """Run every call; failures are reported in the outcomes, never raised."""
        ...

    def close(self) -> None:
        """Release what the runner started (a local Ray cluster)."""
        ...


# ------------------------------------------------------------------------------------------------- one case


def _set_threads(n: int) -> None:
    """PyTorch, OpenMP/BLAS and ITK to ``n`` threads in this process (libraries imported later read the env)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(n)
    if "SimpleITK" in sys.modules:
        sys.modules["SimpleITK"].ProcessObject.SetGlobalDefaultNumberOfThreads(n)


def load_plugins(paths: Sequence[str]) -> None:
    """Import Python files that register extra operations (``@medimg.ops.operation``), once per process. Each is
    imported as module ``medimg_plugin_<stem>`` so results defined there unpickle on the driver as well."""
    for p in paths:
        name = "medimg_plugin_" + Path(p).stem
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, p)
        if spec is None or spec.loader is None:
            raise MedimgError(f"Cannot import the operation plugin {p!r}; give a Python file.")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)


def execute(
    operation: str,
    params: dict[str, Any],
    roots: list[str] | None = None,
    threads: int | None = None,
    plugins: Sequence[str] = (),
) -> dict[str, Any]:
    """Run one call in this process: ``{"ok", "result" | "error", "error_type", "seconds", "worker"}``. A
    :class:`MedimgError` is returned as an error; any other exception propagates (the runner may retry it).
    Operation results are returned as JSON-able dicts (``model_dump``), validated again by the caller."""
    if threads:
        _set_threads(threads)
    if plugins:
        load_plugins(plugins)
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        if operation == EVALUATE_CASE:
            value: Any = _evaluate_case(**params)
        else:
            from medimg import ops

            res = ops.run(operation, params, ops.Context(roots=[Path(r) for r in roots] if roots else None))
            value = res.model_dump(mode="json")
    except MedimgError as e:
        return {
            "ok": False,
            "error": str(e),
            "error_type": type(e).__name__,
            "seconds": time.perf_counter() - t0,
            "worker": worker,
        }
    return {"ok": True, "result": value, "seconds": time.perf_counter() - t0, "worker": worker}


def _outcome(call: CaseCall, raw: dict[str, Any], attempts: int) -> CaseOutcome:
    out = CaseOutcome(call.case, call.operation, attempts=attempts, seconds=raw["seconds"], worker=raw["worker"])
    if not raw["ok"]:
        out.error, out.error_type = raw["error"], raw["error_type"]
    elif call.operation == EVALUATE_CASE:
        out.result = raw["result"]
    else:
        from medimg import ops

        out.result = ops.get(call.operation).result.model_validate(raw["result"])
    return out


class _Stream:
    """A sized iterable whose items arrive as cases complete (so ``rich.progress.track`` shows a total)."""

    def __init__(self, n: int, gen: Iterator[CaseOutcome]) -> None:
        self._n, self._gen = n, gen

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[CaseOutcome]:
        return self._gen


def _drain(stream: _Stream, progress: Progress | None, what: str) -> None:
    for _ in progress(stream, what) if progress else stream:  # type: ignore[arg-type]  # sized, lazy
        pass


# ---------------------------------------------------------------------------------------------------- runners


@dataclass
class LocalRunner:
    """Runs the calls here, one after another, in this process (same outcomes and retries as :class:`RayRunner`;
    a crash of this process is not survivable, of course)."""

    roots: Sequence[Path] | None = None
    max_retries: int = 2
    plugins: Sequence[str] = ()
    name: str = "local (no Ray)"

    def run(
        self, calls: Sequence[CaseCall], progress: Progress | None = None, what: str = "running"
    ) -> list[CaseOutcome]:
        roots = [str(r) for r in self.roots] if self.roots else None
        outcomes: list[CaseOutcome] = []

        def gen() -> Iterator[CaseOutcome]:
            for call in calls:
                attempts = 0
                while True:
                    attempts += 1
                    try:
                        raw = execute(call.operation, call.params, roots, None, tuple(self.plugins))
                    except Exception as e:  # unexpected: retried, then reported
                        if attempts <= self.max_retries:
                            continue
                        outcomes.append(
                            CaseOutcome(call.case, call.operation, None, str(e), type(e).__name__, attempts)
                        )
                        break
                    outcomes.append(_outcome(call, raw, attempts))
                    break
                yield outcomes[-1]

        _drain(_Stream(len(calls), gen()), progress, what)
        return outcomes

    def close(self) -> None:
        return None


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`RayNotInstalledError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(
            'Ray is not installed, so --ray cannot be used: pip install "medimg[scale]" (or drop --ray to run the '
            "cases here, one after another)."
        ) from None
    return ray


@dataclass
class RayRunner:
    """Runs the calls as Ray tasks. ``address``: ``"local"`` starts a Ray instance on this machine with
    ``num_cpus`` CPUs (default: all), anything else (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``) connects
    to an existing cluster, whose nodes must have medimg (same version) installed and see the files at the same
    paths. Each task reserves ``cpus_per_task`` CPUs and runs with ``threads_per_task`` threads. A Ray instance
    that is already initialised in this process is reused (and left running by :meth:`close`)."""

    address: str = "local"
    num_cpus: int | None = None
    max_retries: int = 2
    cpus_per_task: float = 1.0
    threads_per_task: int = 1
    roots: Sequence[Path] | None = None
    plugins: Sequence[str] = ()
    name: str = "ray"
    startup_seconds: float = 0.0
    _started: bool = field(default=False, repr=False)
    _remote: Any = field(default=None, repr=False)

    def start(self) -> float:
        """Start or connect to Ray (idempotent); returns the seconds it took (Ray's start-up cost)."""
        if self._remote is not None:
            return self.startup_seconds
        ray = import_ray()
        t0 = time.perf_counter()
        if self.address not in ("local", "auto"):
            _check_reachable(self.address)
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            try:
                if self.address == "local":
                    ray.init(num_cpus=self.num_cpus, **kw)
                else:
                    ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ClusterError(
                    f"Could not start or reach Ray at {self.address!r} ({e}). Start a cluster (Ray's `ray start` "
                    "in head mode, docs/scale.md) and pass its address (e.g. --ray HOST:6379, or --ray auto on a "
                    "node of it), or use --ray local."
                ) from None
            self._started = True
        self._remote = ray.remote(execute).options(num_cpus=self.cpus_per_task, max_retries=0)
        self.startup_seconds = time.perf_counter() - t0
        self.name = f"ray ({self.address}, {int(ray.cluster_resources().get('CPU', 0))} CPUs)"
        if self.plugins:
            load_plugins(self.plugins)
        return self.startup_seconds

    def run(
        self, calls: Sequence[CaseCall], progress: Progress | None = None, what: str = "running"
    ) -> list[CaseOutcome]:
        self.start()
        ray = import_ray()
        roots = [str(r) for r in self.roots] if self.roots else None
        plugins = tuple(str(Path(p).resolve()) for p in self.plugins)
        results: dict[int, CaseOutcome] = {}

        def submit(i: int) -> Any:
            c = calls[i]
            return self._remote.remote(c.operation, c.params, roots, self.threads_per_task, plugins)

        def gen() -> Iterator[CaseOutcome]:
            pending = {submit(i): (i, 1) for i in range(len(calls))}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                i, attempt = pending.pop(ref)
                call = calls[i]
                try:
                    raw = ray.get(ref)
                except Exception as e:  # worker died, node lost, or an unexpected exception in the operation
                    if attempt <= self.max_retries:
                        pending[submit(i)] = (i, attempt + 1)
                        continue
                    cause = getattr(e, "cause", None) or e
                    results[i] = CaseOutcome(
                        call.case, call.operation, None, _first_line(cause), type(cause).__name__, attempt
                    )
                    yield results[i]
                    continue
                results[i] = _outcome(call, raw, attempt)
                yield results[i]

        _drain(_Stream(len(calls), gen()), progress, what)
        return [results[i] for i in range(len(calls))]

    def close(self) -> None:
        if self._started:
            import_ray().shutdown()
        self._started, self._remote = False, None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A :class:`ClusterError` at once when ``HOST:PORT`` (or ``ray://HOST:PORT``) does not accept connections
    (``ray.init`` would wait for minutes)."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(
            f"--ray {address!r} is not an address: give local, auto, HOST:PORT (e.g. HEAD_HOST:6379) or "
            "ray://HOST:10001."
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(
            f"No Ray cluster answers at {address!r} ({e.strerror or e}). Start one (Ray's `ray start` in "
            "head mode on port 6379, docs/scale.md) and pass HEAD_HOST:6379, or use --ray local."
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def make_runner(
    ray: str | None,
    cpus: int | None = None,
    *,
    roots: Sequence[Path] | None = None,
    max_retries: int = 2,
    plugins: Sequence[str] = (),
) -> LocalRunner | RayRunner:
    """The runner for ``--ray`` (None: :class:`LocalRunner`). ``cpus`` is only for ``--ray local``."""
    if ray is None:
        if cpus is not None:
            raise MedimgError("--ray-cpus sets the CPUs of a local Ray instance; use it with --ray local.")
        return LocalRunner(roots=roots, max_retries=max_retries, plugins=plugins)
    if cpus is not None and ray != "local":
        raise MedimgError(
            "--ray-cpus applies to --ray local only; an existing cluster has the CPUs its nodes were started with "
            "(by `ray start`, docs/scale.md)."
        )
    if cpus is not None and cpus < 1:
        raise MedimgError(f"--ray-cpus must be at least 1 (got {cpus}).")
    import_ray()
    return RayRunner(address=ray, num_cpus=cpus, roots=roots, max_retries=max_retries, plugins=plugins)


def raise_for_failures(outcomes: Sequence[CaseOutcome], done: str) -> None:
    """A :class:`CaseFailuresError` naming each failed case and why (``done`` says what happened to the others)."""
    bad = [o for o in outcomes if not o.ok]
    if not bad:
        return
    listed = "; ".join(f"{o.case} ({o.error_type}: {o.error}, {o.attempts} attempt(s))" for o in bad[:10])
    raise CaseFailuresError(
        f"{len(bad)} of {len(outcomes)} case(s) failed: {listed}{' ...' if len(bad) > 10 else ''}. {done} Fix or "
        "remove the failed inputs and rerun for them."
    )


# ------------------------------------------------------------------------------------- folder operations split


def volumes_calls(path: Path, params: Mapping[str, Any]) -> list[CaseCall]:
    """One ``volumes`` call per label map of ``path`` (a file or folder); ``params`` as the operation's, without
    ``path`` and ``output_csv`` (the CSV is written once, by :func:`merge_volumes`)."""
    from medimg.io._atomic import split_ext
    from medimg.ops.catalog import label_files

    return [
        CaseCall(split_ext(f)[0], "volumes", {**params, "path": str(f), "output_csv": None}) for f in label_files(path)
    ]


def merge_volumes(outcomes: Sequence[CaseOutcome], output_csv: Path | None) -> list[Any]:
    """The measured cases in input order (the successful ones); writes the CSV (atomically) when asked."""
    from medimg.ops.catalog import write_volumes_csv

    cases = [c for o in outcomes if o.ok for c in o.result.cases]
    if output_csv is not None:
        write_volumes_csv(cases, output_csv)
    return cases


def convert_calls(params: Mapping[str, Any]) -> list[CaseCall]:
    """One file-level ``convert`` call per file of a folder-mode convert (``source`` a folder of images, ``output``
    a folder, ``ext`` the output format); creates the output folder."""
    from medimg.io._atomic import split_ext
    from medimg.ops.catalog import convert_pairs

    pairs = convert_pairs(Path(params["source"]), Path(params["output"]), params.get("ext"))
    Path(params["output"]).mkdir(parents=True, exist_ok=True)
    return [
        CaseCall(split_ext(s)[0], "convert", {**params, "source": str(s), "output": str(d), "ext": None})
        for s, d in pairs
    ]


# --------------------------------------------------------------------------------------------------- evaluate


def _evaluate_case(pred: str | None, ref: str, options: dict[str, Any]) -> dict[str, Any]:
    """The metric rows of one case, computed by :func:`medimg.evaluate.evaluate_rows` on a one-case folder pair
    (symbolic links). A missing prediction is given as an empty file, read as unreadable and marked missing again
    by the caller. Returns ``{"rows", "diagonal_mm", "error"}``."""
    import medimg
    from medimg.evaluate import evaluate_rows, image_diagonal_mm

    ref_p = Path(ref)
    with tempfile.TemporaryDirectory(prefix="medimg_eval_") as tmp:
        pd, rd = Path(tmp) / "pred", Path(tmp) / "ref"
        pd.mkdir()
        rd.mkdir()
        (rd / ref_p.name).symlink_to(ref_p.resolve())
        if pred is not None:
            (pd / Path(pred).name).symlink_to(Path(pred).resolve())
        else:
            (pd / ref_p.name).write_bytes(b"")
        rows, summary, _ = evaluate_rows(pd, rd, **options)
    err = next((f["error"] for f in summary["failures"] if "error" in f), None)
    if pred is None:
        err = None
        for r in rows:
            if r["status"] == "unreadable_prediction":
                r["status"] = "missing_prediction"
    elif summary["unreadable_predictions"] and err is None:
        err = "unreadable prediction"
    return {"rows": rows, "diagonal_mm": image_diagonal_mm(medimg.read_labels(ref_p)), "error": err}


def evaluate_with_runner(
    runner: LocalRunner | RayRunner,
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path,
    *,
    names: Mapping[int, str] | None = None,
    labels: Sequence[int] | None = None,
    metrics: Sequence[str] | None = None,
    convention: str = "deepmind",
    nsd_tolerance_mm: float | Mapping[int, float] = 2.0,
    failures: str = "worst",
    lesion_metrics: bool = False,
    resample: bool = False,
    spacing_from: str | None = None,
    metadata_csv: str | Path | None = None,
    group_by: str | None = None,
    images_dir: str | Path | None = None,
    progress: Progress | None = None,
    ignore_label: int | None = None,
    declared: Sequence[int] | set[int] | None = None,
) -> dict[str, Any]:
    """:func:`medimg.evaluate.evaluate_folders` with the per-case metric rows computed by ``runner`` (one call per
    reference case), then the same assembly: absent classes, worst-case values, class names, summary, subgroups,
    ``per_case.csv``, ``summary.csv``, ``summary.json`` and ``report.html``. Any failed case is an error (as in the
    plain run), naming the case."""

    from medimg import evaluate as ev
    from medimg.metrics.segmentation import DEFAULT_METRICS
    from medimg.pairing import index_cases, match_cases

    metrics = tuple(metrics or DEFAULT_METRICS)
    if failures not in ev.FAILURE_POLICIES:
        raise MedimgError(f"Unknown failure policy {failures!r}; use --failures worst or --failures exclude.")
    pred_p, ref_p = Path(pred_dir), Path(ref_dir)
    pairs, missing, extra = match_cases(pred_p, ref_p)
    ref_index = index_cases(ref_p)
    cases = sorted([(c, p, r) for c, p, r in pairs] + [(c, None, ref_index[c]) for c in missing], key=lambda t: t[0])
    options: dict[str, Any] = {
        "names": dict(names) if names else None,
        "labels": list(labels) if labels is not None else None,
        "metrics": metrics,
        "convention": convention,
        "nsd_tolerance_mm": dict(nsd_tolerance_mm) if isinstance(nsd_tolerance_mm, Mapping) else nsd_tolerance_mm,
        "failures": failures,
        "lesion_metrics": lesion_metrics,
        "resample": resample,
        "spacing_from": spacing_from,
        "ignore_label": ignore_label,
        "declared": sorted(declared) if declared else None,
    }
    calls = [
        CaseCall(c, EVALUATE_CASE, {"pred": str(p) if p else None, "ref": str(r), "options": options})
        for c, p, r in cases
    ]
    outcomes = runner.run(calls, progress, "evaluating")
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise MedimgError(f"Case {bad[0].case!r}: {bad[0].error_type}: {bad[0].error}")
    class_names: dict[int, str] = dict(names or {})
    per_case: dict[str, dict[int, dict[str, Any]]] = {}
    diagonals: dict[str, float] = {}
    errors: dict[str, str] = {}
    ignored: dict[str, int] = {}
    for o in outcomes:
        v = o.result
        per_case[o.case] = {int(r["label"]): r for r in v["rows"]}
        diagonals[o.case] = v["diagonal_mm"]
        if v["error"] is not None:
            errors[o.case] = v["error"]
        for r in v["rows"]:
            if r["name"] != f"label_{r['label']}":
                class_names.setdefault(int(r["label"]), r["name"])
            if "ignored_voxels" in r:
                ignored[o.case] = r["ignored_voxels"]
    seg_metrics = tuple(m for m in metrics if m not in ev.LESION_METRICS)
    all_labels = sorted({c for rows_ in per_case.values() for c in rows_})
    absent_vals = ev._absent_values(all_labels, seg_metrics, convention, nsd_tolerance_mm, lesion_metrics)
    rows: list[dict[str, Any]] = []
    for case in sorted(per_case):
        for c in all_labels:
            row = per_case[case].get(c) or {"case": case, "label": c, "name": "", "status": "absent", **absent_vals[c]}
            if ignore_label is not None:
                row.setdefault("ignored_voxels", ignored.get(case, 0))
            if failures == "worst" and row["status"] in ev.FAILURE_REASONS:
                ev._apply_worst(row, diagonals[case])
            row["name"] = class_names.get(c, f"label_{c}")
            rows.append(row)
    all_metrics = metrics + (ev.LESION_METRICS if lesion_metrics else ())
    summary = ev._summary(
        rows, all_metrics, convention, nsd_tolerance_mm, failures, missing, extra, class_names, diagonals, errors
    )
    summary["lesion_metrics"] = lesion_metrics
    if ignore_label is not None:
        summary["ignore_label"] = int(ignore_label)
    drawn = [t for t in pairs if t[0] not in errors]
    ev.finish_evaluation(
        rows,
        summary,
        drawn,
        out_dir,
        metadata_csv=metadata_csv,
        group_by=group_by,
        images_dir=images_dir,
        resample=resample,
        spacing_from=spacing_from,
    )
    return summary
