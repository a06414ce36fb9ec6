"""Executors: how the rows of a batch are spread over threads (and, later, processes or hosts).

An executor takes the jobs and yields one :class:`~.row.RowResult` per job. It never knows a
metric: it only calls the scorer's stages. The batch loop alone owns the journal, the
progress bar, signals and the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from ..execution import Execution
from ..settings import Settings
from .memory import read_ahead_budget
from .row import Prepared, RowFailure, RowJob, RowResult, RowScorer

__all__ = ["Executor", "ThreadExecutor"]


class Executor(Protocol):
    """Runs jobs; yields their results (each once, in any order).

    ``on_start(job)`` is called in the calling thread before any work on ``job`` begins
    (rows read ahead included): the batch journals an ``attempt`` record there, so that a
    row in flight when the process is killed is known on ``--resume``. A ``job.solo`` job
    must run with no other job in flight.
    """

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None
            ) -> Iterator[RowResult]: ...


class ThreadExecutor:
    """Read ahead in threads, finish in order in the calling thread.

    The next ``workers`` rows are prepared (read, aligned, normalised, CPU metrics) in
    background threads while the engine stage of the current row runs in the calling thread;
    results come in manifest order. ``workers=0`` does everything in the calling thread.

    Read-ahead is bounded by memory too: a row is read ahead only while the rows in flight
    (the current one included) are estimated, from their headers, to hold at most
    :func:`~volqa.pipeline.memory.read_ahead_budget` bytes together. A ``solo`` job runs with
    nothing else in flight: read-ahead stops before it and resumes after it.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None
            ) -> Iterator[RowResult]:
        pool = ThreadPoolExecutor(max_workers=self.workers) if self.workers else None
        budget = read_ahead_budget(execution) if pool is not None else 0
        pending: dict[int, Future[Prepared]] = {}
        held: dict[int, int] = {}  # estimated bytes of each row in flight
        try:
            for j, job in enumerate(jobs):
                if pool is not None and not job.solo:
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
                        pending[k] = pool.submit(scorer.prepare, jobs[k], settings)
                if j not in pending and on_start is not None:
                    on_start(job)
                try:
                    prepared = (pending.pop(j).result() if j in pending
                                else scorer.prepare(job, settings))
                    yield scorer.finish(prepared, settings, execution)
                except RowFailure as failure:
                    yield scorer.failed(job, failure)
                finally:
                    held.pop(j, None)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
