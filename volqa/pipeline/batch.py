"""The batch loop: rows from an executor -> journal -> results -> tables.

The loop alone owns the journal, the progress bar, signal handling and the final write; the
executor decides where rows are computed, the scorer how. Before a row is computed an
``attempt`` record is appended to ``journal.jsonl``, and when it is finished its result;
both are fsynced. A process killed while a row is in flight (out-of-memory killer, ``kill
-9``) leaves an attempt without a result, which ``--resume`` uses
(:mod:`.resume`). The tables are written at the end (also after a failed row with
``fail_fast`` and after SIGINT/SIGTERM, which then raise :class:`BatchInterrupted`); a
signal during that write lets it finish, a second one abandons it cleanly (no temporary
file left). A failure to write the journal or the tables (disk full, read-only folder)
stops the batch with an :class:`~volqa.errors.OutputError` naming the folder and the cause.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..errors import OutputError
from ..execution import Execution
from ..io.journal import JOURNAL_NAME, Journal
from ..io.manifest import Manifest, ManifestRow
from ..io.outdir import MAPS_DIR
from ..io.tables import (
    REGIONS_CSV_NAME,
    REGIONS_PARQUET_NAME,
    build_table,
    write_tables,
)
from ..schema import output_columns, region_columns
from ..settings import Settings
from .executors import Executor, make_executor
from .memory import volume_limit
from .progress import Progress, row_labels
from .resume import KILL_LIMIT, ResumePlan
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
        The finished rows (also written to the output folder, if any); None when a second
        signal abandoned the final write (the journal holds the rows).
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

        Raises
        ------
        BatchInterrupted
            SIGINT/SIGTERM (after writing what is finished).
        OutputError
            The journal or the tables could not be written.

        After SIGINT/SIGTERM or a failed row with ``fail_fast`` no new row is started; the
        rows already running (one with threads, one per worker otherwise) are finished and
        recorded.
        """
        results = {i: f for i, f in self.plan.reused.items()}
        results.update({i: self._killed(self._by_index[i], n)
                        for i, n in self.plan.killed.items()})
        regions = dict(self.plan.reused_regions)
        labels = row_labels(self.manifest)
        rows = {row.index: row for row in self.plan.todo}
        limit = volume_limit(self.execution)
        jobs = [self._job(row, limit) for row in self.plan.todo]
        executor = self.executor or make_executor(self.execution)
        scorer = self.scorer or RowScorer()
        bar = Progress(len(self.manifest), len(results), self.progress)
        journal = None
        if self.out_dir is not None:
            try:
                journal = Journal(self.out_dir / JOURNAL_NAME)
            except OSError as exc:
                raise self._output_error(exc, JOURNAL_NAME, len(results), False) from None
        stop = StopRequest()
        running: dict[int, str] = {}
        failed = False
        interrupted: int | None = None
        failed_write: OSError | None = None

        def on_start(job: RowJob) -> None:  # work on the row begins (read-ahead included)
            running[job.index] = f"subject {job.subject_id!r}"
            stop.current = _running(running)
            bar.start(labels[job.index])
            if journal is not None:
                journal.append({"type": "attempt", "key": self.plan.keys[job.index],
                                "index": job.index, "subject_id": job.subject_id,
                                "solo": job.solo})

        def stopping() -> bool:
            return stop.signum is not None or (self.fail_fast and failed)

        stream = executor.run(jobs, scorer, self.settings, self.execution, on_start, stopping)
        try:
            with catch_signals(stop):
                for result in stream:
                    fields = self._record(rows[result.index], result, journal)
                    results[result.index] = fields
                    regions[result.index] = result.regions
                    running.pop(result.index, None)
                    stop.current = _running(running)
                    bar.done(result.ok)
                    failed = failed or not result.ok
                interrupted = stop.signum
        except KeyboardInterrupt:
            interrupted = stop.signum or signal.SIGINT
        except OSError as exc:  # the journal: stop here, its whole lines stay valid
            failed_write = exc
        finally:
            stream.close()
            bar.close()
            if journal is not None:
                self._close_journal(journal)
        frame, written = self._write_guarded(results, regions, stop)
        interrupted = interrupted or stop.signum
        if failed_write is not None:
            raise self._output_error(failed_write, JOURNAL_NAME, len(results), written)
        if isinstance(written, OSError):
            raise self._output_error(written, "the tables", len(results), False)
        if interrupted is not None:
            raise BatchInterrupted(interrupted, frame, len(results), len(self.manifest))
        return frame  # type: ignore[return-value]

    @staticmethod
    def _close_journal(journal: Journal) -> None:
        """Append the ``stop`` record (rows left unfinished were not killed: the run ended
        in order) and close; a journal that cannot be written any more is just closed."""
        try:
            journal.append({"type": "stop"})
        except (OSError, ValueError):
            pass
        journal.close()

    def _write_guarded(self, results: dict[int, dict[str, Any]],
                       regions: dict[int, list[dict[str, Any]]], stop: StopRequest
                       ) -> tuple[pd.DataFrame | None, bool | OSError]:
        """The final write under signal handling: (frame, True) when written; (None, False)
        when a second signal abandoned it; (None, error) when it failed."""
        stop.current = "writing the tables"  # a first signal lets the write finish
        try:
            with catch_signals(stop):
                return self._write(results, regions), True
        except KeyboardInterrupt:
            stop.signum = stop.signum or signal.SIGINT
            return None, False
        except OSError as exc:
            return None, exc

    def _output_error(self, exc: OSError, where: str, done: int, written: bool | OSError
                      ) -> OutputError:
        cause = exc.strerror or str(exc) or type(exc).__name__
        state = ("the tables were written" if written is True
                 else "the tables were not written")
        return OutputError(
            f"cannot write to output folder {str(self.out_dir)!r} ({where}: {cause}); "
            f"{done} of {len(self.manifest)} rows are recorded in {JOURNAL_NAME} and {state}. "
            "Free space or fix the folder's permissions, then continue with --resume")

    @cached_property
    def _by_index(self) -> dict[int, ManifestRow]:
        """Manifest rows by manifest index (a shard holds some rows only)."""
        return {row.index: row for row in self.manifest.rows}

    def _job(self, row: ManifestRow, max_volume_bytes: int) -> RowJob:
        map_path = None
        if self.settings.save_maps and self.out_dir is not None:
            map_path = str(self.out_dir / MAPS_DIR / map_name(row))
        return RowJob(row.index, row.subject_id, row.reference, row.test, row.mask, map_path,
                      max_volume_bytes, row.index in self.plan.solo, row.labels)

    def _killed(self, row: ManifestRow, kills: int) -> dict[str, Any]:
        """The error row of a row that took the process down ``kills`` times."""
        files = ", ".join(f"{r} {p!r}" for r, p in (("reference", row.reference),
                                                      ("test", row.test), ("mask", row.mask))
                          if p)
        return {"status": "error", "volqa_version": __version__, "error": (
            f"subject {row.subject_id!r} ({files}): the process was killed {kills} times while "
            f"scoring this row, the last time with no other row in flight (out of memory? "
            f"see --max-volume-memory); after {KILL_LIMIT} kills it is not retried by "
            "--resume: start again with --overwrite to retry it")}

    def _record(self, row: ManifestRow, result: RowResult, journal: Journal | None
                ) -> dict[str, Any]:
        fields = dict(result.fields)
        if fields.get("ssim_map") and self.out_dir is not None:
            fields["ssim_map"] = os.path.relpath(fields["ssim_map"], self.out_dir)
        if journal is not None:
            journal.append({
                "type": "result", "key": self.plan.keys[row.index], "index": row.index,
                "subject_id": row.subject_id, "test": row.test,
                "inputs": self.plan.inputs[row.index],
                "settings_hash": self.settings.hash(), "fields": fields,
                **({"regions": result.regions} if self.manifest.has_labels else {}),
            })  # fmt: skip
        return fields

    def _write(self, results: dict[int, dict[str, Any]],
               regions: dict[int, list[dict[str, Any]]]) -> pd.DataFrame:
        settings = self.settings
        columns = output_columns(self.manifest.dtypes(), settings.metrics or (),
                                 save_maps=settings.save_maps,
                                 protocol=settings.protocol is not None)
        setting_values = settings.columns()
        done = []
        for i in sorted(results):
            row = self.manifest.typed(self._by_index[i])
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
        if self.manifest.has_labels:
            frame.attrs["regions"] = self._write_regions(regions, meta)
        return frame

    def _write_regions(self, regions: dict[int, list[dict[str, Any]]],
                       meta: dict[str, Any]) -> pd.DataFrame:
        """The long table: one row per (manifest row, label), manifest columns first."""
        columns = region_columns(self.manifest.dtypes(), self.settings.metrics or ())
        rows = [{**self.manifest.typed(self._by_index[i]), **r}
                for i in sorted(regions) for r in regions[i]]
        table = build_table(rows, columns, meta)
        if self.out_dir is not None:
            write_tables(table, self.out_dir, names=(REGIONS_CSV_NAME, REGIONS_PARQUET_NAME))
        return table.to_pandas()
