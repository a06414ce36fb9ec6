"""The processes executor: worker processes of this machine, each scoring whole rows.

``--executor processes --jobs N`` starts N worker processes that each read, align, normalise
and score whole rows, so decompression, which holds one core per file, runs N files at a time.
Workers are forked from a ``forkserver`` that has imported volqa and torch but run nothing
(``spawn`` where there is none): forking a process whose torch has started threads or CUDA is
unsafe, and a fork server starts a worker, or replaces a dead one, in milliseconds. The main
process alone owns the journal, the progress bar, signals, ordering and the tables; results
arrive in any order and are journaled as they arrive.

Scheduling. Each worker holds one row at a time, so the executor always knows which row each
worker is computing. Consecutive rows that share a reference (a study lists each reference
once per method) go to the same worker, whose :class:`~.cache.ReadCache` then reads the
reference once; a worker that runs out of rows takes the second half of another worker's
queue rather than wait.

Failures. A worker that dies (killed, out of memory, a crash in a library) fails only the
row it was computing, with a message saying how it died; a new worker takes its place and the
batch goes on. Workers ignore SIGINT and SIGTERM (a terminal's Ctrl-C and a scheduler's
SIGTERM reach the whole process group): the main process decides. After a first signal it
starts no new row and waits for the running ones; after a second, or any error, it kills the
workers. A worker whose main process disappears exits by itself.

GPUs. With ``device`` resolving to CUDA, the default is one worker per GPU, and worker k uses
GPU ``k mod G`` (:func:`gpu_assignment`); each worker's torch threads default to the cores
divided among the workers (:meth:`volqa.Execution.torch_threads`).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import SettingsError
from ..execution import Execution, usable_cores
from ..settings import Settings
from .cache import ReadCache
from .row import RowJob, RowResult, RowScorer

__all__ = ["ProcessExecutor", "default_jobs", "gpu_assignment", "death_reason"]

_JOIN_SECONDS = 10.0


def gpu_assignment(workers: int, gpus: int) -> list[int | None]:
    """The CUDA device index of each worker: ``k mod gpus`` (None for all when ``gpus`` is 0).

    One worker per GPU is the default; more workers than GPUs share them round robin.
    """
    return [k % gpus if gpus > 0 else None for k in range(workers)]


def default_jobs(device: str, *, cores: int | None = None, gpus: int | None = None) -> int:
    """Default worker count: one per GPU on CUDA, else one per usable core."""
    if device == "cuda":
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        return max(1, gpus)
    return cores or usable_cores()


def death_reason(exitcode: int | None, pid: int | None) -> str:
    """How a worker process ended, with the likely cause, for the row's error message."""
    who = f"the worker process scoring this row (pid {pid})"
    if exitcode is None:
        return f"{who} stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {
            "SIGKILL": " (the kernel's out-of-memory killer or a job's memory limit sends it; "
                       "check `dmesg` or the job's memory use, or use fewer --jobs)",
            "SIGSEGV": " (a crash in a reader or native library: try reading the files alone)",
            "SIGBUS": " (a crash while reading a file: is it on a flaky or full file system?)",
        }.get(name, "")
        return f"{who} was killed by {name}{hint}; the batch went on with a new worker"
    return f"{who} exited with status {exitcode}; the batch went on with a new worker"


def _context() -> Any:
    """``forkserver`` where there is one (a server process imports volqa and torch once, then
    forks each worker from that clean state: no threads, no CUDA), else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _exit_with_parent(parent: int) -> None:
    """Exit this worker when the main process ``parent`` is gone (it would otherwise finish
    its row; a fork server's worker is not the main process's child, so ask for the pid)."""
    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # the pid went to another user's process
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="volqa-parent-watch").start()


def _worker_main(conn: Connection, scorer: RowScorer, settings: Settings,
                 execution: Execution, gpu: int | None, threads: int, parent: int) -> None:
    """A worker's loop: receive a job, score it, send the result; None or EOF ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    if gpu is not None:
        torch.cuda.set_device(gpu)
    cache = ReadCache()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        result = scorer.score(job, settings, execution, cache)
        try:
            conn.send(result)
        except (BrokenPipeError, EOFError, OSError):
            return


class _Dispatch:
    """Hands out jobs: runs of consecutive jobs sharing a reference stay on one worker; an idle
    worker with nothing left takes the second half of the longest queue."""

    def __init__(self, jobs: Sequence[RowJob]) -> None:
        self.groups: deque[deque[RowJob]] = deque()
        last: Any = object()
        for job in jobs:
            key = (os.fspath(job.reference) if isinstance(job.reference, str | os.PathLike)
                   else id(job.reference))
            if key != last or not self.groups:
                self.groups.append(deque())
            self.groups[-1].append(job)
            last = key
        self.queues: dict[int, deque[RowJob]] = {}

    def take(self, slot: int) -> RowJob | None:
        own = self.queues.get(slot)
        if not own:
            if self.groups:
                own = self.queues[slot] = self.groups.popleft()
            else:
                donor = max(self.queues.values(), key=len, default=None)
                if not donor:
                    return None
                half = [donor.pop() for _ in range((len(donor) + 1) // 2)]
                own = self.queues[slot] = deque(reversed(half))
        return own.popleft()

    def put_back(self, slot: int, job: RowJob | None = None) -> None:
        """Return a worker's queue (and a job it never started) for others to take."""
        own = self.queues.pop(slot, deque())
        if job is not None:
            own.appendleft(job)
        if own:
            self.groups.appendleft(own)

    def __bool__(self) -> bool:
        return bool(self.groups) or any(self.queues.values())


@dataclass
class _Worker:
    slot: int
    process: Any
    conn: Connection
    job: RowJob | None = None

    def send(self, job: RowJob | None) -> bool:
        try:
            self.conn.send(job)
        except (BrokenPipeError, EOFError, OSError):
            return False
        self.job = job
        return True

    def receive(self) -> RowResult | None:
        """The result, or None when the worker died instead."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        return None

    def reason(self) -> str:
        self.process.join(_JOIN_SECONDS)
        return death_reason(self.process.exitcode, self.process.pid)


class ProcessExecutor:
    """Score rows in worker processes (see the module docstring).

    Parameters
    ----------
    jobs : int or None
        Worker processes (None: :func:`default_jobs`); never more than there are rows.
    """

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = jobs

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None,
            stopping: Callable[[], bool] | None = None) -> Iterator[RowResult]:
        if not jobs:
            return
        device = execution.resolved_device()
        n = min(self.jobs or default_jobs(device), len(jobs))
        gpus = gpu_assignment(n, default_jobs(device) if device == "cuda" else 0)
        threads = execution.torch_threads(n)
        ctx = _context()

        def spawn(slot: int) -> _Worker:
            mine, theirs = ctx.Pipe()
            process = ctx.Process(target=_worker_main, name=f"volqa-worker-{slot}", daemon=True,
                                  args=(theirs, scorer, settings, execution, gpus[slot],
                                        threads, os.getpid()))
            process.start()
            theirs.close()
            return _Worker(slot, process, mine)

        dispatch = _Dispatch(jobs)
        workers: dict[int, _Worker] = {}
        finished = False
        try:
            try:
                workers[0] = spawn(0)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise SettingsError(
                    f"the row scorer cannot be sent to worker processes ({type(exc).__name__}: "
                    f"{exc}); define it in an importable module, or use --executor threads."
                ) from None
            workers.update((k, spawn(k)) for k in range(1, n))
            while True:
                if not (stopping is not None and stopping()):
                    for slot, w in list(workers.items()):
                        while w.job is None and dispatch:
                            job = dispatch.take(slot)
                            if job is None:
                                break
                            if not w.send(job):  # the worker died between rows
                                dispatch.put_back(slot, job)
                                _shutdown([w], graceful=False)
                                w = workers[slot] = spawn(slot)
                                continue
                            if on_start is not None:
                                on_start(job)
                busy = [w for w in workers.values() if w.job is not None]
                if not busy:
                    finished = True
                    return
                # a result, or EOF when the worker died (not the sentinel: a fork server's
                # sentinel also fires when the server dies, e.g. of a SIGTERM to the group)
                ready = set(wait([w.conn for w in busy]))
                for w in busy:
                    if w.conn not in ready:
                        continue
                    job = w.job
                    assert job is not None
                    result = w.receive()
                    w.job = None
                    if result is None:  # the worker died with the row
                        why = w.reason()
                        _shutdown([w], graceful=False)
                        dispatch.put_back(w.slot)
                        if dispatch:
                            workers[w.slot] = spawn(w.slot)
                        else:
                            del workers[w.slot]
                        result = scorer.lost(job, why, socket.gethostname())
                    yield result
        finally:
            _shutdown(list(workers.values()), graceful=finished)


def _shutdown(workers: list[_Worker], graceful: bool) -> None:
    """Stop the workers: ask them to exit (graceful) or kill them; reap them; close their
    pipes (a worker that outlived its fork server, which multiprocessing then takes for dead,
    exits at the EOF, or when the main process is gone)."""
    for w in workers:
        if not (graceful and w.send(None)):
            w.process.kill()
    deadline = time.monotonic() + _JOIN_SECONDS
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.conn.close()
