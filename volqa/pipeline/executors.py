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
from .row import Prepared, RowFailure, RowJob, RowResult, RowScorer

__all__ = ["Executor", "ThreadExecutor"]


class Executor(Protocol):
    """Runs jobs; yields their results (each once, in any order)."""

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None
            ) -> Iterator[RowResult]: ...


class ThreadExecutor:
    """Read ahead in threads, finish in order in the calling thread.

    The next ``workers`` rows are prepared (read, aligned, normalised, CPU metrics) in
    background threads while the engine stage of the current row runs in the calling thread;
    results come in manifest order. ``workers=0`` does everything in the calling thread.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, jobs: Sequence[RowJob], scorer: RowScorer, settings: Settings,
            execution: Execution, on_start: Callable[[RowJob], None] | None = None
            ) -> Iterator[RowResult]:
        pool = ThreadPoolExecutor(max_workers=self.workers) if self.workers else None
        pending: dict[int, Future[Prepared]] = {}
        try:
            for j, job in enumerate(jobs):
                if pool is not None:
                    for k in range(j, min(j + self.workers + 1, len(jobs))):
                        if k not in pending:
                            pending[k] = pool.submit(scorer.prepare, jobs[k], settings)
                if on_start is not None:
                    on_start(job)
                try:
                    prepared = (pending.pop(j).result() if pool is not None
                                else scorer.prepare(job, settings))
                    yield scorer.finish(prepared, settings, execution)
                except RowFailure as failure:
                    yield scorer.failed(job, failure)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
