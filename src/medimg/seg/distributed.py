"""Data-parallel training on several processes (``medimg train --devices N``) with torch DistributedDataParallel.

* :func:`train_distributed` (the parent process) preprocesses the cases once, then starts ``N`` worker processes
  (``multiprocessing`` *forkserver* with torch and MONAI preloaded where the OS has it, else *spawn*; both need a
  script calling it to do so under ``if __name__ == "__main__":``). They meet through a rendezvous file in a
  temporary folder and form a ``gloo`` process group (CPU); every wait -- joining the group and each collective --
  is bounded by ``timeout_s``. A worker leaves with ``os._exit`` once it has reported (see :func:`_worker`).
* Every worker runs the same :class:`~medimg.seg.train.Trainer` (or a subclass) mixed with
  :class:`DistributedMixin`: ``_step`` trains through ``DistributedDataParallel``, so the gradients are averaged over
  the processes after each backward pass and the weights stay identical on every rank. Each process samples its own
  patches and augmentations: rank 0 with the plan's seed (the stream of a one-process run), rank ``r`` with the seed
  sequence ``(seed, r)``, independent of it and of the validation patches (seed + 1).
* Per-process batch = the plan's ``batch_size``; the **effective batch is N x batch_size** (the learning rate is
  not rescaled). torch threads per process = ``max(1, cpu_count // N)``.
* Decisions that stop or shape the loop are rank 0's, broadcast to all (``Trainer._agree``): the precision chosen
  by ``precision: auto``, the time budget -> iteration count, and "the budget is spent" -- so all ranks stop at the
  same iteration and none waits for a partner that has left.
* Only rank 0 writes (``plan.json``, ``checkpoint.pt``, ``model.pt``); the checkpoint also holds every rank's
  sampling RNG state (``rank_rng``), so an interrupted N-process run resumes exactly. Resuming with another N is
  allowed: new ranks start fresh streams ``(seed, r, iteration)``.
* The parent relays rank 0's epoch log and notes to the callbacks, watches every worker, and on the first failure
  (an exception, a process that died, a collective that timed out) stops the others and raises
  :class:`~medimg.errors.MedimgError`. At the end every rank reports a SHA-256 of its weights; they must agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.seg.dataset import SegDataset
from medimg.seg.train import Trainer, prepare_cache

#: Seconds a process waits for the others (joining the group, each collective) before giving up;
#: the environment variable ``MEDIMG_DDP_TIMEOUT_S`` overrides it.
DEFAULT_TIMEOUT_S = 600.0


def cpu_count() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_timeout_s() -> float:
    """:data:`DEFAULT_TIMEOUT_S`, or ``MEDIMG_DDP_TIMEOUT_S`` when set."""
    text = os.environ.get("MEDIMG_DDP_TIMEOUT_S")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise MedimgError(f"MEDIMG_DDP_TIMEOUT_S={text!r} is not a positive number of seconds; e.g. 600.")
    return value


def check_devices(devices: int, oversubscribe: bool = False) -> int:
    """Validate a number of training processes: at least 1, and no more than the CPU cores unless
    ``oversubscribe``. Returns ``devices``; raises :class:`MedimgError` saying what to pass instead."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise MedimgError(
            f"--devices must be a whole number of training processes, 1 or more (1 trains in this process), "
            f"not {devices!r}."
        )
    if devices == 1:
        return 1
    cores = cpu_count()
    if devices > cores and not oversubscribe:
        raise MedimgError(
            f"--devices {devices} is more than the {cores} CPU core(s) this process may use: each training process "
            f"would get less than one core, which is slower, not faster. Use --devices {cores} or fewer, or add "
            f"--oversubscribe to start {devices} processes anyway (one thread each)."
        )
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        raise MedimgError("This torch build has no torch.distributed gloo backend; train with --devices 1.")
    return devices


def weights_digest(state: dict[str, Any]) -> str:
    """SHA-256 over a state dict's tensors as float32 (floating) or as stored, in key order: the same weights give
    the same digest on every rank and for the saved ``model.pt``."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu()
        a = (v.float() if v.is_floating_point() else v).contiguous().numpy()
        h.update(k.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class DistributedMixin:
    """Mixed in front of a :class:`~medimg.seg.train.Trainer` (sub)class in each worker process; the class
    attributes ``rank`` and ``world_size`` are set on the mixed class (:func:`distributed_trainer_class`) and the
    process group must exist before construction."""

    rank: int
    world_size: int
    # provided by Trainer
    net: Any
    seed: int
    rng: np.random.Generator
    ddp: Any
    out: Path
    torch: Any
    iteration: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import torch
        from torch.nn.parallel import DistributedDataParallel

        if self.rank > 0:  # rank 0 keeps the one-process streams
            self.rng = np.random.default_rng((self.seed, self.rank))
            torch.manual_seed(self.seed + self.rank)
        self.ddp = DistributedDataParallel(self.net)  # broadcasts rank 0's weights (equal anyway: same seed)
        self._rank_rng: list[Any] | None = None

    def _agree(self, value: Any) -> Any:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _state(self) -> dict[str, Any]:
        st: dict[str, Any] = super()._state()  # type: ignore[misc]
        st["rank_rng"] = self._rank_rng
        st["world_size"] = self.world_size
        return st

    def save_checkpoint(self) -> None:
        """Collect every rank's sampling RNG state; rank 0 writes the checkpoint."""
        import torch.distributed as dist

        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, self.rng.bit_generator.state)
        self._rank_rng = states
        if self.rank == 0:
            super().save_checkpoint()  # type: ignore[misc]

    def load_checkpoint(self) -> bool:
        """Every rank loads the same checkpoint, then takes its own sampling RNG state from it."""
        if not super().load_checkpoint():  # type: ignore[misc]
            return False
        st = self.torch.load(self.out / "checkpoint.pt", weights_only=False)
        states = st.get("rank_rng") or []
        if self.rank < len(states) and states[self.rank] is not None:
            self.rng.bit_generator.state = states[self.rank]
        elif self.rank > 0:  # a rank the checkpointed run did not have (resumed with more processes)
            self.rng = np.random.default_rng((self.seed, self.rank, self.iteration))
        return True


def distributed_trainer_class(base: type[Trainer], rank: int, world_size: int) -> type[Trainer]:
    """``base`` with :class:`DistributedMixin` in front, for process ``rank`` of ``world_size``."""
    name = f"Distributed{base.__name__}"
    return type(name, (DistributedMixin, base), {"rank": rank, "world_size": world_size})


def _worker(
    rank: int, world_size: int, rendezvous: str, timeout_s: float, threads: int, job: dict[str, Any], conn: Connection
) -> None:
    """One training process: join the group, train, report ("note"/"epoch" from rank 0, then "done" or "error")."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    code = 1
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{rendezvous}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        cls = distributed_trainer_class(job["trainer_cls"], rank, world_size)
        trainer = cls(
            job["dataset"], job["plan"], Path(job["out_dir"]), job["split"], job["time_budget_s"], job["max_iterations"]
        )
        if rank == 0:
            trainer.on_note = lambda note: conn.send(("note", note))

            def on_epoch(entry: dict[str, Any]) -> None:
                conn.send(("epoch", entry))
                conn.recv()  # the parent has run its callback: as in one process, it runs before training goes on

            trainer.on_epoch = on_epoch
        res = trainer.run(resume=job["resume"])
        digest = weights_digest(trainer.net.state_dict())
        conn.send(("done", res if rank == 0 else None, digest))
        code = 0
    except BaseException as e:  # reported to the parent, which stops the others
        with contextlib.suppress(OSError):  # the parent may be gone already
            conn.send(("error", type(e).__name__, str(e), isinstance(e, MedimgError), traceback.format_exc()))
    finally:
        # Leave without tearing down: destroying the DDP reducer and the gloo process group at exit can deadlock
        # in torch (the gloo thread frees a work object that needs the GIL the destructor holds). Everything this
        # process had to say is sent and every file it wrote is closed, so the OS cleans up the rest.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


#: Modules the fork server imports once, so that each worker starts in a fraction of a second (without it every
#: worker imports torch and MONAI itself: seconds each).
PRELOAD = ["torch", "torch.distributed", "medimg.seg.train", "monai.networks.nets"]


def _context() -> Any:
    """``forkserver`` where the OS has it (workers forked from a clean server process that preloaded
    :data:`PRELOAD` -- never from this possibly multi-threaded process), else ``spawn``."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when this process starts its fork server (once)
    return ctx


def train_distributed(
    dataset: SegDataset,
    plan: dict[str, Any],
    out_dir: Path,
    split: dict[str, list[str]],
    time_budget_s: float,
    *,
    devices: int,
    max_iterations: int | None = None,
    resume: bool = True,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    trainer_cls: type[Trainer] = Trainer,
    timeout_s: float | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train with ``devices`` processes (DistributedDataParallel, gloo); returns rank 0's :meth:`Trainer.run`
    result plus ``devices``, ``threads_per_process`` and ``weight_digests`` (one per rank, all equal).

    ``trainer_cls`` must be importable by name (defined at module level): the workers are spawned. ``timeout_s``
    (default :func:`default_timeout_s`) bounds every wait between processes; ``threads`` (default
    ``max(1, cpu_count // devices)``) sets torch threads per process. Raises :class:`MedimgError` when a process
    fails (the others are stopped first)."""
    if devices < 2:
        raise MedimgError(f"train_distributed needs --devices 2 or more (got {devices}); 1 trains in this process.")
    timeout = default_timeout_s() if timeout_s is None else float(timeout_s)
    n_threads = threads or max(1, cpu_count() // devices)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # preprocess once here (with the progress bar), so the workers only open the cache
    prepare_cache(
        dataset,
        plan,
        out_dir / "preprocessed",
        split["train"] + split["val"],
        progress,
        int(plan["training"].get("seed", 0)),
    )
    job = {
        "dataset": dataset,
        "plan": plan,
        "out_dir": str(out_dir),
        "split": split,
        "time_budget_s": time_budget_s,
        "max_iterations": max_iterations,
        "resume": resume,
        "trainer_cls": trainer_cls,
    }
    ctx = _context()
    with tempfile.TemporaryDirectory(prefix="medimg-ddp-") as tmp:
        rendezvous = str(Path(tmp) / "rendezvous")
        conns: dict[int, Connection] = {}
        procs: list[Any] = []
        results: dict[int, tuple[Any, str]] = {}
        failures: list[tuple[int, str, bool, str]] = []
        try:
            for rank in range(devices):
                parent_end, child_end = ctx.Pipe()
                p = ctx.Process(
                    target=_worker,
                    args=(rank, devices, rendezvous, timeout, n_threads, job, child_end),
                    name=f"medimg-train-rank{rank}",
                    daemon=True,
                )
                p.start()
                child_end.close()  # the parent's copy: a worker that dies then reads as end-of-file
                conns[rank], procs = parent_end, [*procs, p]
            results, failures = _watch(conns, procs, on_epoch, on_note)
        finally:
            for p in procs:  # after success the workers are exiting: give them a moment, then stop any that remain
                p.join(5 if not failures and len(results) == devices else 0)
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join()
            for c in conns.values():
                c.close()
    if failures:
        raise _failure_error(failures, devices, timeout)
    digests = [results[r][1] for r in range(devices)]
    if len(set(digests)) != 1:
        raise MedimgError(
            f"The {devices} training processes ended with different weights (digests {digests}); this is a bug in "
            "medimg's distributed training: please report it, and train with --devices 1 meanwhile."
        )
    res: dict[str, Any] = dict(results[0][0])
    res.update(devices=devices, threads_per_process=n_threads, weight_digests=digests)
    return res


_SILENT_EXIT = (
    "the process ended without reporting (exit code {code}; its error output, if any, is above -- a script that "
    'calls train_model with devices > 1 must do so under `if __name__ == "__main__":`, as Python\'s '
    "multiprocessing requires)"
)


def _watch(
    conns: dict[int, Connection],
    procs: list[Any],
    on_epoch: Callable[[dict[str, Any]], None] | None,
    on_note: Callable[[str], None] | None,
) -> tuple[dict[int, tuple[Any, str]], list[tuple[int, str, bool, str]]]:
    """Relay messages until every rank is done or one fails; returns (results by rank, failures)."""
    results: dict[int, tuple[Any, str]] = {}
    failures: list[tuple[int, str, bool, str]] = []
    rank_of = {id(c): r for r, c in conns.items()}
    open_conns = list(conns.values())
    while (
        open_conns and len(results) < len(conns) and not failures
    ):  # not waiting for exits: a finished worker may linger
        for c in wait(open_conns):
            assert isinstance(c, Connection)
            r = rank_of[id(c)]
            try:
                msg = c.recv()
            except (EOFError, OSError):
                open_conns.remove(c)
                if r not in results:
                    procs[r].join(5)
                    code = procs[r].exitcode
                    failures.append((r, _SILENT_EXIT.format(code=code), False, ""))
                continue
            kind = msg[0]
            if kind == "note":
                if on_note:
                    on_note(msg[1])
            elif kind == "epoch":
                if on_epoch:
                    on_epoch(msg[1])
                c.send("ok")
            elif kind == "done":
                results[r] = (msg[1], msg[2])
            elif kind == "error":
                failures.append((r, f"{msg[1]}: {msg[2]}", msg[3], msg[4]))  # rank, text, is MedimgError, tb
    return results, failures


def _failure_error(failures: list[tuple[int, str, bool, str]], devices: int, timeout_s: float) -> MedimgError:
    """One clear error for the first failure (a worker's MedimgError keeps its own message)."""
    rank, text, is_medimg, tb = failures[0]
    if is_medimg:
        return MedimgError(text.split(": ", 1)[1])
    if tb:
        import sys

        sys.stderr.write(f"[training process rank {rank}]\n{tb}")
    hint = ""
    low = text.lower()
    if "timed out" in low or "timeout" in low:
        hint = (
            f" A process waited more than {timeout_s:g} s for another (hung, or far slower than the rest); set "
            "MEDIMG_DDP_TIMEOUT_S to allow longer waits."
        )
    return MedimgError(
        f"Training process {rank} of {devices} failed: {text}.{hint} The other processes were stopped; the last "
        "checkpoint (if any) is kept, so rerunning the same command resumes. Train with --devices 1 to rule out the "
        "multi-process setup."
    )
