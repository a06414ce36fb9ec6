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
from ..io.tables import REGIONS_CSV_NAME, REGIONS_PARQUET_NAME, build_table, write_tables
from ..schema import output_columns, region_columns
from ..settings import Settings
from .executors import Executor, ThreadExecutor
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
        """Score the rows the plan left to do; write the tables; return all finished rows."""
        results = {i: f for i, f in self.plan.reused.items()}
        regions = dict(self.plan.reused_regions)
        labels = row_labels(self.manifest)
        rows = {row.index: row for row in self.plan.todo}
        jobs = [self._job(row) for row in self.plan.todo]
        executor = self.executor or ThreadExecutor(self.execution.workers)
        scorer = self.scorer or RowScorer()
        bar = Progress(len(self.manifest), len(results), self.progress)
        journal = Journal(self.out_dir / JOURNAL_NAME) if self.out_dir is not None else None
        stop = StopRequest()
        interrupted: int | None = None

        def on_start(job: RowJob) -> None:
            stop.current = f"subject {job.subject_id!r}"
            bar.start(labels[job.index])

        stream = executor.run(jobs, scorer, self.settings, self.execution, on_start)
        try:
            with catch_signals(stop):
                for result in stream:
                    fields = self._record(rows[result.index], result, journal)
                    results[result.index] = fields
                    regions[result.index] = result.regions
                    bar.done(result.ok)
                    if stop.signum is not None:
                        interrupted = stop.signum
                        break
                    if self.fail_fast and not result.ok:
                        break
        except KeyboardInterrupt:
            interrupted = stop.signum or signal.SIGINT
        finally:
            stream.close()
            bar.close()
            if journal is not None:
                journal.close()
        frame = self._write(results, regions)
        if interrupted is not None:
            raise BatchInterrupted(interrupted, frame, len(results), len(self.manifest))
        return frame

    def _job(self, row: ManifestRow) -> RowJob:
        map_path = None
        if self.settings.save_maps and self.out_dir is not None:
            map_path = str(self.out_dir / MAPS_DIR / map_name(row))
        return RowJob(row.index, row.subject_id, row.reference, row.test, row.mask, map_path,
                      row.labels)

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
                **({"regions": result.regions} if self.manifest.has_labels else {}),
            })  # fmt: skip
        return fields

    def _write(self, results: dict[int, dict[str, Any]],
               regions: dict[int, list[dict[str, Any]]]) -> pd.DataFrame:
        settings = self.settings
        columns = output_columns(self.manifest.columns, settings.metrics or (),
                                 save_maps=settings.save_maps,
                                 protocol=settings.protocol is not None)
        setting_values = settings.columns()
        done = []
        for i in sorted(results):
            row = dict(self.manifest.rows[i].values)
            row.update(setting_values)
            row.update(results[i])
            done.append(row)
        meta = dict(self.meta or {})
        meta.update(rows_total=len(self.manifest), rows_done=len(done),
                    rows_ok=sum(r.get("status") == "ok" for r in done))
        table = build_table(done, columns, meta)
        if self.out_dir is not None:
            write_tables(table, self.out_dir)
        frame = table.to_pandas()
        frame.attrs["volqa"] = meta
        if self.manifest.has_labels:
            frame.attrs["regions"] = self._write_regions(regions, meta)
        return frame

    def _write_regions(self, regions: dict[int, list[dict[str, Any]]],
                       meta: dict[str, Any]) -> pd.DataFrame:
        """The long table: one row per (manifest row, label), manifest columns first."""
        columns = region_columns(self.manifest.columns, self.settings.metrics or ())
        rows = [{**self.manifest.rows[i].values, **r}
                for i in sorted(regions) for r in regions[i]]
        table = build_table(rows, columns, meta)
        if self.out_dir is not None:
            write_tables(table, self.out_dir, names=(REGIONS_CSV_NAME, REGIONS_PARQUET_NAME))
        return table.to_pandas()
