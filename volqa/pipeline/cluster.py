"""The Dask executor: rows scored by the workers of a ``dask.distributed`` cluster.

``--executor dask --scheduler ADDRESS`` sends rows to a running cluster (``dask scheduler`` /
``dask worker``, dask-jobqueue, Kubernetes); ``--scheduler local:N`` starts a
``LocalCluster`` of N single-threaded worker processes on this machine, on 127.0.0.1, and
stops it at the end. The driver (this process) keeps volqa's guarantees: it journals each row
as its result arrives (in any order), handles signals, writes the tables in manifest order.

Before the batch, every worker is asked to import volqa (the same version as the driver),
resolve the device and find every input file that exists here (and the maps folder): the
paths in the manifest must name the same files on the workers (a shared file system mounted
at the same place). Anything else fails the run with a message naming the worker and a file.

Rows are submitted in manifest order, a few more than the cluster has threads, so that a
stop (SIGINT/SIGTERM, ``--fail-fast``) waits only for the rows already handed out. A
reference (or mask, or label map) listed by several rows is read once, in a task of its own
whose result those rows take (:mod:`.shared`: Dask runs them where the volume is, within
:data:`SHARED_BYTES_PER_WORKER` per worker of volumes kept for rows to come). A worker
that dies has its rows retried elsewhere by Dask; a row whose workers die again and again
(``distributed.scheduler.allowed-failures``, 3 by default, set on the scheduler) ends in
Dask's ``KilledWorker``. Dask counts a death against every row queued on the dying worker, so
such a row may be a neighbour of the one that kills: it is run once more with nothing else in
flight, and fails only if its worker dies then too. A failed row never hangs the batch.
Torch threads on a worker: ``--threads`` when given; on ``local:N``, the cores divided among
the N workers; else the worker's own default (Dask's nanny sets ``OMP_NUM_THREADS=1``, so one
per Dask thread). The nanny's ``MALLOC_TRIM_THRESHOLD_`` is undone in each worker (it triples SSIM's
time, see :func:`_undo_malloc_trim`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from ..errors import SettingsError
from ..execution import Execution
from ..io.paths import split_series
from ..io.volume import Volume
from ..settings import Settings
from .cache import DEFAULT_CACHE_BYTES, ReadCache
from .row import RowJob, RowResult, RowScorer
from .shared import SharedReads

__all__ = ["DaskExecutor", "SHARED_BYTES_PER_WORKER", "WORKER_WAIT_SECONDS"]

#: How long the driver waits for the first worker to join the scheduler.
WORKER_WAIT_SECONDS = 60.0
#: Bytes of shared volumes kept for rows still to come, per worker (as a worker's ReadCache).
SHARED_BYTES_PER_WORKER = DEFAULT_CACHE_BYTES

_worker_cache: ReadCache | None = None


def _undo_malloc_trim() -> None:
    """Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes
    glibc's mmap threshold at 128 KiB: every temporary of the SSIM engine is then a fresh
    mapping of zeroed pages, and SSIM takes three times as long. Serve allocations under
    32 MiB from the heap again and keep up to 256 MiB of freed memory (glibc only)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _worker_cache_ready() -> ReadCache:
    """This worker's read cache (made, and glibc's malloc settings restored, on first use)."""
    global _worker_cache
    if _worker_cache is None:
        _worker_cache = ReadCache()
        if os.environ.get("MALLOC_TRIM_THRESHOLD_"):
            _undo_malloc_trim()
    return _worker_cache


def _read_task(path: str, max_bytes: int | None) -> Volume | None:
    """A file listed by several rows, read once for all of them (see :mod:`.shared`); None
    when it cannot be read: each row then reads it and reports why, as it would alone."""
    from ..io.readers import read_volume

    _worker_cache_ready()  # the worker's malloc settings, as for a row
    try:
        volume = read_volume(path, max_bytes=max_bytes)
    except Exception:  # noqa: BLE001 - the rows read it again and give the error
        return None
    volume.array.flags.writeable = False  # rows on this worker share the array
    return volume


def _score_task(scorer: RowScorer, job: RowJob, settings: Settings, execution: Execution,
                shared: dict[str, Volume | None] | None = None) -> RowResult:
    """One row on a Dask worker: the ``shared`` volumes already read (role -> volume), the
    other references and masks through the worker's cache."""
    cache = _worker_cache_ready()
    if execution.threads is not None:
        import torch

        if torch.get_num_threads() != execution.threads:
            torch.set_num_threads(execution.threads)
    volumes = {role: v for role, v in (shared or {}).items() if v is not None}
    for volume in volumes.values():  # a copy moved from another worker is shared here too
        volume.array.flags.writeable = False
    return scorer.score(replace(job, **volumes), settings, execution, cache)


def _worker_check(paths: Sequence[str], execution: Execution) -> dict[str, Any]:
    """Run on every worker: what it misses of ``paths``, its volqa version, its device."""
    import socket

    from .. import __version__

    try:
        device = execution.resolved_device()
    except SettingsError as exc:
        device = f"error: {exc}"
    return {"missing": [p for p in paths if not os.path.exists(p)], "version": __version__,
            "device": device, "host": socket.gethostname()}


class DaskExecutor:
    """Score rows on a Dask cluster (see the module docstring).

    Parameters
    ----------
    scheduler : str
        A scheduler address (``tcp://host:8786``) or ``local:N``.
    """

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None,
            stopping: Callable[[], bool] | None = None) -> Iterator[RowResult]:
        if not jobs:
            return
        from distributed import as_completed

        local = Execution(executor="dask", scheduler=self.scheduler).local_workers()
        if local is not None and execution.threads is None:
            execution = replace(execution, threads=execution.torch_threads(local))
        shipped = replace(execution)  # the device is resolved again on each worker
        with _connect(self.scheduler, local) as client:
            _check_workers(client, jobs, shipped)
            todo = enumerate(jobs)
            shared = SharedReads(jobs, SHARED_BYTES_PER_WORKER * len(client.nthreads()),
                                 lambda path: client.submit(
                                     _read_task, path, jobs[0].max_volume_bytes, pure=False,
                                     key=f"volqa-read-{os.urandom(6).hex()}"))
            running: dict[str, tuple[Any, RowJob]] = {}
            suspects: list[RowJob] = []  # rows whose worker died: retried alone, once
            retried: set[int] = set()
            done = as_completed()

            def submit(job: RowJob | None = None) -> bool:
                reads: dict[str, Any] = {}  # a suspect reads its files itself
                if job is None:
                    pos, job = next(todo, (0, None))
                    if job is None:
                        return False
                    reads = shared.for_job(pos, job)
                future = client.submit(_score_task, scorer, job, settings, shipped, reads,
                                       pure=False,
                                       key=f"volqa-row-{job.index}-{os.urandom(4).hex()}")
                running[future.key] = (future, job)
                done.add(future)
                if on_start is not None and job.index not in retried:
                    on_start(job)
                return True

            def refill() -> None:
                if suspects:  # a suspect runs with nothing else in flight
                    if not running:
                        retried.add(suspects[0].index)
                        submit(suspects.pop(0))
                    return
                while len(running) < _window(client) and submit():
                    pass

            try:
                refill()
                for future in done:
                    _, job = running.pop(future.key)
                    stop = stopping is not None and stopping()
                    if _killed(future) and job.index not in retried and not stop:
                        suspects.append(job)  # maybe a neighbour of the row that kills
                    else:
                        yield _result(future, job, scorer)
                    future.release()
                    if not (stopping is not None and stopping()):
                        refill()
                    elif not running:
                        for job in suspects:  # stopping: the suspects are not retried
                            yield scorer.lost(job, "the Dask worker running this row died "
                                              "and the batch was stopped before it was "
                                              "retried", None)
                        suspects.clear()
            finally:
                shared.close()
                if running:
                    client.cancel([f for f, _ in running.values()])


def _window(client: Any) -> int:
    """Rows handed out at once: one per worker thread, plus one."""
    return sum(client.nthreads().values()) + 1


def _killed(future: Any) -> bool:
    """True when a task ended in Dask's KilledWorker (its workers died)."""
    if future.status == "finished":
        return False
    try:
        exc = future.exception()
    except BaseException:  # noqa: BLE001 - cancelled futures raise here
        return False
    return type(exc).__name__ == "KilledWorker"


def _result(future: Any, job: RowJob, scorer: RowScorer) -> RowResult:
    """The row of a finished future; a killed or lost task becomes a failed row."""
    if future.status == "finished":
        return future.result()
    try:
        exc = future.exception()
    except BaseException as e:  # noqa: BLE001 - cancelled futures raise here
        exc = e
    name = type(exc).__name__
    if name == "KilledWorker":
        tries = getattr(exc, "allowed_failures", None)
        last = getattr(getattr(exc, "last_worker", None), "address", None)
        why = ("the Dask workers running this row died every time it was tried"
               + (f" ({tries + 1} times" if isinstance(tries, int) else " (")
               + (f", the last on {last}" if last else "") + "; Dask's KilledWorker): the row "
               "probably runs out of memory or crashes a reader; check the workers' logs and "
               "memory limit. The batch went on")
    else:
        why = f"the Dask task of this row failed without a result ({name}: {exc})"
    return scorer.lost(job, why, None)


@contextmanager
def _connect(scheduler: str, local: int | None) -> Iterator[Any]:
    """A client of the scheduler, or of a LocalCluster of ``local`` workers (closed after)."""
    from distributed import Client, LocalCluster

    if local is not None:
        with LocalCluster(n_workers=local, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=WORKER_WAIT_SECONDS)
    except OSError as exc:
        raise SettingsError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start "
                            "it (`dask scheduler`) or check --scheduler ADDRESS.") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            raise SettingsError(f"no worker joined the Dask scheduler at {scheduler!r} within "
                                f"{WORKER_WAIT_SECONDS:g} s; start workers (`dask worker "
                                f"{scheduler}`).") from None
        yield client


def _check_workers(client: Any, jobs: Sequence[RowJob], execution: Execution) -> None:
    """Fail before the batch when a worker cannot import volqa, see the inputs, or use the
    device (see the module docstring)."""
    from .. import __version__

    paths = sorted({split_series(os.fspath(p))[0] for job in jobs
                    for p in (job.reference, job.test, job.mask)
                    if isinstance(p, str | os.PathLike)
                    and os.path.exists(split_series(os.fspath(p))[0])})
    # the output folder, where the workers write the maps (its maps/ may not exist yet)
    maps = {os.path.dirname(os.path.dirname(job.map_path)) for job in jobs if job.map_path}
    try:
        report = client.run(_worker_check, paths + sorted(maps), execution)
    except Exception as exc:  # noqa: BLE001 - e.g. volqa not importable on a worker
        raise SettingsError(f"the Dask workers cannot run volqa ({type(exc).__name__}: {exc}); "
                            "install volqa (the same version) in the workers' environment."
                            ) from None
    for worker, info in sorted(report.items()):
        where = f"Dask worker {worker} (host {info['host']})"
        if info["version"] != __version__:
            raise SettingsError(f"{where} runs volqa {info['version']}, this process "
                                f"{__version__}; install the same version on the workers.")
        if str(info["device"]).startswith("error"):
            raise SettingsError(f"{where}: {info['device'][len('error: '):]}")
        if info["missing"]:
            missing = info["missing"]
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise SettingsError(
                f"{where} cannot see {missing[0]!r}{more}: the manifest's paths must name the "
                "same files on every worker (a shared file system mounted at the same path; "
                "write the manifest with those absolute paths)."
            )
