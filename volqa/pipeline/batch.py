"""The batch loop: rows from an executor -> journal -> results -> tables.

The loop alone owns the journal, the progress bar, signal handling and the final write; the
executor decides where rows are computed, the scorer how. Every finished row is appended to
``journal.jsonl`` and fsynced before the next; the tables are written at the end (also after
a failed row with ``fail_fast`` and after SIGINT/SIGTERM, which then raise
:class:`BatchInterrupted`).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..execution import Execution
from ..io.journal import JOURNAL_NAME, Journal
from ..io.manifest import Manifest, ManifestRow
from ..io.outdir import MAPS_DIR
from ..io.tables import build_table, write_tables
from ..schema import output_columns
from ..settings import Settings
from .executors import Executor, make_executor
from .progress import Progress, row_labels
from .resume import ResumePlan
from .row import RowJob, RowResult, RowScorer
from .signals import StopRequest, catch_signals

__all__ = ["BatchInterrupted", "Batch", "map_name"]


class BatchInterrupted(KeyboardInterrupt):
    """A manifest run stopped by SIGINT or SIGTERM after writing the rows it had finished.

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGINT`` or ``signal.SIGTERM``); exit status ``128 + signum``.
    results : pandas.DataFrame or None
        The finished rows (also written to the output folder, if any).
    done, total : int
        Finished rows and rows in the manifest.
    """

    def __init__(self, signum: int, results: pd.DataFrame | None, done: int, total: int):
        super().__init__(f"interrupted by signal {signum} after {done} of {total} rows")
        self.signum = signum
        self.results = results
        self.done = done
        self.total = total


def _running(running: dict[int, str]) -> str:
    """``subject 'a'`` or ``subject 'a' and 2 other rows`` (for the signal message)."""
    if not running:
        return ""
    first = next(iter(running.values()))
    return first + (f" and {len(running) - 1} other row(s)" if len(running) > 1 else "")


def map_name(row: ManifestRow) -> str:
    """The SSIM map file of a row: unique per (subject, test), short, stable across resume."""
    import hashlib
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", row.subject_id).strip("_.")[:40] or "subject"
    tag = hashlib.sha256(f"{row.subject_id}\0{row.test}".encode()).hexdigest()[:12]
    return f"{slug}_{tag}_ssim.nii.gz"


@dataclass
class Batch:
    """One manifest run with resolved settings."""

    manifest: Manifest
    settings: Settings
    execution: Execution
    plan: ResumePlan
    out_dir: Path | None = None
    fail_fast: bool = False
    progress: bool = False
    scorer: RowScorer | None = None
    executor: Executor | None = None
    meta: dict[str, Any] | None = None

    def run(self) -> pd.DataFrame:
        """Score the rows the plan left to do; write the tables; return all finished rows.

        After SIGINT/SIGTERM or a failed row with ``fail_fast`` no new row is started; the
        rows already running (one with threads, one per worker otherwise) are finished and
        recorded."""
        results = {i: f for i, f in self.plan.reused.items()}
        labels = row_labels(self.manifest)
        rows = {row.index: row for row in self.plan.todo}
        jobs = [self._job(row) for row in self.plan.todo]
        executor = self.executor or make_executor(self.execution)
        scorer = self.scorer or RowScorer()
        bar = Progress(len(self.manifest), len(results), self.progress)
        journal = Journal(self.out_dir / JOURNAL_NAME) if self.out_dir is not None else None
        stop = StopRequest()
        running: dict[int, str] = {}
        failed = False
        interrupted: int | None = None

        def on_start(job: RowJob) -> None:
            running[job.index] = f"subject {job.subject_id!r}"
            stop.current = _running(running)
            bar.start(labels[job.index])

        def stopping() -> bool:
            return stop.signum is not None or (self.fail_fast and failed)

        stream = executor.run(jobs, scorer, self.settings, self.execution, on_start, stopping)
        try:
            with catch_signals(stop):
                for result in stream:
                    fields = self._record(rows[result.index], result, journal)
                    results[result.index] = fields
                    running.pop(result.index, None)
                    stop.current = _running(running)
                    bar.done(result.ok)
                    failed = failed or not result.ok
                interrupted = stop.signum
        except KeyboardInterrupt:
            interrupted = stop.signum or signal.SIGINT
        finally:
            stream.close()
            bar.close()
            if journal is not None:
                journal.close()
        frame = self._write(results)
        if interrupted is not None:
            raise BatchInterrupted(interrupted, frame, len(results), len(self.manifest))
        return frame

    def _job(self, row: ManifestRow) -> RowJob:
        map_path = None
        if self.settings.save_maps and self.out_dir is not None:
            map_path = str(self.out_dir / MAPS_DIR / map_name(row))
        return RowJob(row.index, row.subject_id, row.reference, row.test, row.mask, map_path)

    def _record(self, row: ManifestRow, result: RowResult, journal: Journal | None
                ) -> dict[str, Any]:
        fields = dict(result.fields)
        if fields.get("ssim_map") and self.out_dir is not None:
            fields["ssim_map"] = os.path.relpath(fields["ssim_map"], self.out_dir)
        if journal is not None:
            journal.append({
                "key": self.plan.keys[row.index], "index": row.index,
                "subject_id": row.subject_id, "test": row.test,
                "inputs": self.plan.inputs[row.index],
                "settings_hash": self.settings.hash(), "fields": fields,
            })  # fmt: skip
        return fields

    def _write(self, results: dict[int, dict[str, Any]]) -> pd.DataFrame:
        settings = self.settings
        columns = output_columns(self.manifest.columns, settings.metrics or (),
                                 save_maps=settings.save_maps)
        setting_values = settings.columns()
        by_index = {row.index: row for row in self.manifest.rows}
        done = []
        for i in sorted(results):
            row = dict(by_index[i].values)
            row.update(setting_values)
            row.update(results[i])
            done.append(row)
        meta = dict(self.meta or {})
        meta.update(rows_total=len(self.manifest), rows_done=len(done),
                    rows_ok=sum(r.get("status") == "ok" for r in done),
                    row_index=sorted(results))
        table = build_table(done, columns, meta)
        if self.out_dir is not None:
            write_tables(table, self.out_dir)
        frame = table.to_pandas()
        frame.attrs["volqa"] = meta
        return frame
