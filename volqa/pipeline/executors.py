"""Executors: how the rows of a batch are spread over threads, processes or hosts.

An executor takes the jobs and yields one :class:`~.row.RowResult` per job. It never knows a
metric: it only calls the scorer's stages. The batch loop alone owns the journal, the
progress bar, signals and the tables.

- :class:`ThreadExecutor` (``--executor threads``, the default): read-ahead threads of this
  process; the engine stage runs in the calling thread.
- :class:`~.processes.ProcessExecutor` (``--executor processes --jobs N``): N worker
  processes of this machine, each scoring whole rows.
- :class:`~.cluster.DaskExecutor` (``--executor dask --scheduler ADDRESS``): the workers of a
  ``dask.distributed`` cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Protocol

from ..execution import Execution
from ..settings import Settings
from .cache import ReadCache
from .memory import read_ahead_budget
from .row import Prepared, RowFailure, RowJob, RowResult, RowScorer

__all__ = ["Executor", "ThreadExecutor", "make_executor", "torch_threads"]


class Executor(Protocol):
    """Runs jobs; yields their results (each once, in any order).

    ``on_start(job)`` is called in the calling thread before any work on ``job`` begins
    (rows read ahead, or handed to a worker): the batch journals an ``attempt`` record there,
    so that a row in flight when the process is killed is known on ``--resume``.
    ``stopping()`` is polled before a job is started: once it returns True the executor
    starts no new job, yields the results of the jobs already running and ends
    (SIGINT/SIGTERM, ``--fail-fast``). A ``job.solo`` job (one that was in flight when a run
    was killed) runs with no other job in flight in this process (executors that score rows
    in other processes are not taken down by a row, so they may ignore it).
    """

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None,
            stopping: Callable[[], bool] | None = None) -> Iterator[RowResult]: ...


def make_executor(execution: Execution) -> Executor:
    """The executor ``execution.executor`` names, configured from ``execution``."""
    if execution.executor == "processes":
        from .processes import ProcessExecutor

        return ProcessExecutor(execution.jobs)
    if execution.executor == "dask":
        from .cluster import DaskExecutor

        return DaskExecutor(execution.scheduler)  # type: ignore[arg-type]
    return ThreadExecutor(execution.workers)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous number."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadExecutor:
    """Read ahead in threads, finish in order in the calling thread.

    The next ``workers`` rows are prepared (read, aligned, normalised, CPU metrics) in
    background threads while the engine stage of the current row runs in the calling thread;
    results come in manifest order. ``workers=0`` does everything in the calling thread.

    Read-ahead is bounded by memory too: a row is read ahead only while the rows in flight
    (the current one included) are estimated, from their headers, to hold at most
    :func:`~volqa.pipeline.memory.read_ahead_budget` bytes together. A ``solo`` job runs with
    nothing else in flight: read-ahead stops before it and resumes after it.

    References and masks are read through one :class:`~.cache.ReadCache` per run. The engine
    runs with ``threads`` torch threads, by default the usable cores divided among the
    ``1 + workers`` concurrent computations (:meth:`Execution.torch_threads`): the read-ahead
    threads decompress, which releases the GIL and takes a core each, and torch threads that
    wait for a busy core slow the engine down several times.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None,
            stopping: Callable[[], bool] | None = None) -> Iterator[RowResult]:
        pool = ThreadPoolExecutor(max_workers=self.workers) if self.workers else None
        budget = read_ahead_budget(execution) if pool is not None else 0
        pending: dict[int, Future[Prepared]] = {}
        held: dict[int, int] = {}  # estimated bytes of each row in flight
        cache = ReadCache()
        try:
            with torch_threads(execution.torch_threads(1 + self.workers)):
                for j, job in enumerate(jobs):
                    if stopping is not None and stopping():
                        return
                    if pool is not None and not job.solo:
                        self._read_ahead(jobs, j, pending, held, budget, pool, scorer,
                                         settings, cache, on_start)
                    if j not in pending and on_start is not None:
                        on_start(job)
                    try:
                        prepared = (pending.pop(j).result() if j in pending
                                    else scorer.prepare(job, settings, cache))
                        yield scorer.finish(prepared, settings, execution)
                    except RowFailure as failure:
                        yield scorer.failed(job, failure)
                    finally:
                        held.pop(j, None)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _read_ahead(self, jobs: Sequence[RowJob], j: int, pending: dict[int, Future[Prepared]],
                    held: dict[int, int], budget: int, pool: ThreadPoolExecutor,
                    scorer: RowScorer, settings: Settings, cache: ReadCache,
                    on_start: Callable[[RowJob], None] | None) -> None:
        """Submit rows ``j..j+workers`` for preparation while they fit the memory budget,
        stopping before a solo row."""
        for k in range(j, min(j + self.workers + 1, len(jobs))):
            if jobs[k].solo:
                break
            if k in pending:
                continue
            need = scorer.memory_estimate(jobs[k])
            if k > j and sum(held.values()) + need > budget:
                break
            held[k] = need
            if on_start is not None:
                on_start(jobs[k])
            pending[k] = pool.submit(scorer.prepare, jobs[k], settings, cache)
