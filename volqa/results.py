"""Output of a scoring batch: the row journal, the final tables and the summary.

Files in the output folder
--------------------------
``journal.jsonl``
    One JSON object per finished row (``ok`` or ``error``), appended, flushed and fsynced as
    soon as the row is done, so a crash or SIGKILL loses at most the row being computed.
    ``--resume`` reads it back (a torn last line is ignored).
``results.csv``, ``results.parquet``
    One row per finished manifest row, in manifest order. Both are written to temporary files
    in the same folder and renamed into place (:func:`os.replace`) only when both are
    complete, so a reader sees either the old or the new complete file, never a half-written
    one.
``maps/``
    SSIM maps (``--save-maps``).

Column types (Parquet; the CSV holds the same values as text): the manifest's columns are
strings, metric columns, ``data_range``, ``sigma``, ``k1``, ``k2`` and ``seconds`` float64
(null where not computed; ``psnr`` is ``inf`` for identical images), ``win_size`` int64,
``resampled`` bool, every other column string. The complete settings are stored as JSON under
the key ``volqa`` of the Parquet schema metadata.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import SettingsError

__all__ = [
    "ALL_METRICS",
    "RESERVED_COLUMNS",
    "JOURNAL_NAME",
    "CSV_NAME",
    "PARQUET_NAME",
    "MAPS_DIR",
    "OutputExistsError",
    "Journal",
    "load_journal",
    "prepare_out_dir",
    "output_columns",
    "build_table",
    "write_tables",
    "atomic_write",
    "atomic_write_many",
    "summarize",
]

JOURNAL_NAME = "journal.jsonl"
CSV_NAME = "results.csv"
PARQUET_NAME = "results.parquet"
MAPS_DIR = "maps"
METADATA_KEY = b"volqa"

#: Every metric volqa can compute, in output column order.
ALL_METRICS: tuple[str, ...] = (
    "ssim", "ssim_masked", "ssim_2d",
    "psnr", "psnr_masked",
    "nrmse", "nrmse_masked",
    "mae", "mae_masked",
    "mse", "mse_masked",
)  # fmt: skip

# Columns after the manifest's own and the metrics, with their Arrow types.
_TAIL: tuple[tuple[str, pa.DataType], ...] = (
    ("shape", pa.string()),
    ("spacing", pa.string()),
    ("data_range", pa.float64()),
    ("normalize", pa.string()),
    ("window", pa.string()),
    ("win_size", pa.int64()),
    ("sigma", pa.float64()),
    ("covariance", pa.string()),
    ("border", pa.string()),
    ("preset", pa.string()),
    ("k1", pa.float64()),
    ("k2", pa.float64()),
    ("reoriented", pa.string()),
    ("resampled", pa.bool_()),
    ("device", pa.string()),
    ("seconds", pa.float64()),
    ("notes", pa.string()),
    ("ssim_map", pa.string()),
    ("volqa_version", pa.string()),
)
_HEAD: tuple[tuple[str, pa.DataType], ...] = (("status", pa.string()), ("error", pa.string()))

#: Column names a manifest may not use (they would collide with volqa's output).
RESERVED_COLUMNS: frozenset[str] = frozenset(
    [n for n, _ in _HEAD] + list(ALL_METRICS) + [n for n, _ in _TAIL]
)


class OutputExistsError(SettingsError):
    """The output folder is not empty and neither resume nor overwrite was asked for."""


def output_columns(
    manifest_columns: Sequence[str], metrics: Sequence[str], *, save_maps: bool = False
) -> list[tuple[str, pa.DataType]]:
    """The output schema: manifest columns, status/error, metrics, then the fixed tail.

    Parameters
    ----------
    manifest_columns : sequence of str
        The manifest's columns in file order (all strings).
    metrics : sequence of str
        Selected metric names (any order; written in :data:`ALL_METRICS` order).
    save_maps : bool
        Include the ``ssim_map`` column (path of the map relative to the output folder).
    """
    cols = [(c, pa.string()) for c in manifest_columns]
    cols += list(_HEAD)
    cols += [(m, pa.float64()) for m in ALL_METRICS if m in metrics]
    cols += [(n, t) for n, t in _TAIL if save_maps or n != "ssim_map"]
    return cols


# --------------------------------------------------------------------------------------------
# journal


class Journal:
    """Append-only JSON-lines file; every :meth:`append` is flushed and fsynced.

    Parameters
    ----------
    path : Path
        The journal file (created if missing, appended to otherwise).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self._fh.tell() > 0:
            self._repair_tail()

    def _repair_tail(self) -> None:
        # A SIGKILL during a write can leave a last line without its newline; start on a new
        # line so the next record is not glued to the torn one.
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            self._fh.write("\n")
            self._fh.flush()

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as a line and make it durable (flush + fsync)."""
        self._fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_journal(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a journal: the last record of each key wins; unreadable lines are skipped.

    Returns
    -------
    dict
        ``key -> record`` for every record that parsed and has a ``key``.
    """
    out: dict[str, dict[str, Any]] = {}
    p = Path(path)
    if not p.exists():
        return out
    with open(p, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn line from a killed run
            if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                out[rec["key"]] = rec
    return out


# --------------------------------------------------------------------------------------------
# output folder and atomic writes


def prepare_out_dir(out: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> Path:
    """Check and create the output folder.

    Rules: ``resume`` and ``overwrite`` exclude each other; a non-empty existing folder needs
    one of them. ``overwrite`` deletes volqa's own files there (journal, results.csv,
    results.parquet) and nothing else; maps are replaced as they are written.

    Raises
    ------
    SettingsError, OutputExistsError
    """
    path = Path(out)
    if resume and overwrite:
        raise SettingsError("--resume and --overwrite exclude each other; give one of them.")
    if path.exists() and not path.is_dir():
        raise SettingsError(f"output path {str(path)!r} exists and is not a folder; choose --out.")
    if path.is_dir():
        entries = sorted(e.name for e in path.iterdir())
        if entries and not (resume or overwrite):
            shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
            raise OutputExistsError(
                f"output folder {str(path)!r} is not empty ({shown}). Use --resume to continue "
                "the batch recorded there, --overwrite to start it again, or another --out."
            )
        if overwrite:
            for name in (JOURNAL_NAME, CSV_NAME, PARQUET_NAME):
                (path / name).unlink(missing_ok=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"cannot create output folder {str(path)!r}: {e.strerror or e}; "
                            "choose another --out") from None
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not supported on this platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    Parameters
    ----------
    path : path-like
        The final file.
    write : callable
        Called with the temporary path; must create and close that file.
    """
    atomic_write_many({path: write})


def atomic_write_many(writers: Mapping[str | os.PathLike[str], Callable[[Path], None]]) -> None:
    """Write several files through temporary files; rename them only when all are written.

    A failure while writing any of them leaves every previous file untouched and removes
    the temporary files.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in writers.items():
            final = Path(path)
            tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            temps.append((tmp, final))
            write(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for tmp, final in temps:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for parent in {final.parent for _, final in temps}:
        _fsync_dir(parent)


# --------------------------------------------------------------------------------------------
# tables


def _cell(value: Any, dtype: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_floating(dtype):
        return float(value)
    if pa.types.is_integer(dtype):
        return int(value)
    if pa.types.is_boolean(dtype):
        return bool(value)
    return str(value)


def build_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[tuple[str, pa.DataType]],
    metadata: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Build the typed Arrow table (missing keys become nulls).

    Parameters
    ----------
    rows : iterable of mappings
        One mapping per output row, keyed by column name.
    columns : sequence of (name, arrow type)
        From :func:`output_columns`.
    metadata : mapping, optional
        Stored as JSON under the schema metadata key ``volqa``.
    """
    rows = list(rows)
    arrays = [
        pa.array([_cell(r.get(name), dtype) for r in rows], type=dtype) for name, dtype in columns
    ]
    schema = pa.schema([pa.field(n, t) for n, t in columns])
    if metadata is not None:
        schema = schema.with_metadata(
            {METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()}
        )
    return pa.Table.from_arrays(arrays, schema=schema)


def write_tables(table: pa.Table, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``results.parquet`` and ``results.csv`` atomically into ``out_dir``.

    Returns
    -------
    (Path, Path)
        The CSV and Parquet paths.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    csv_path, pq_path = out / CSV_NAME, out / PARQUET_NAME
    frame = table.to_pandas()
    atomic_write_many({
        pq_path: lambda tmp: pq.write_table(table, tmp),
        csv_path: lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"),
    })  # fmt: skip
    return csv_path, pq_path


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], *, total: int) -> str:
    """A plain-text end-of-batch summary.

    Parameters
    ----------
    rows : sequence of mappings
        The finished output rows (with ``status``, ``error``, ``subject_id`` and metrics).
    metrics : sequence of str
        Metric columns to summarise (mean ± sd, median, min, max over ok rows; infinite
        values, e.g. the PSNR of identical images, are counted but left out of the statistics).
    total : int
        Number of rows in the manifest.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    lines = [f"{len(rows)} of {total} row(s) done: {len(ok)} ok, {len(failed)} failed"]
    table = []
    for m in metrics:
        vals = [r.get(m) for r in ok]
        vals = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
        finite = [v for v in vals if math.isfinite(v)]
        if not vals:
            continue
        n_inf = len(vals) - len(finite)
        extra = f"  ({n_inf} inf left out)" if n_inf else ""
        if not finite:
            table.append(f"{m:<13} all {len(vals)} value(s) infinite")
            continue
        sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
        cells = [statistics.median(finite), min(finite), max(finite)]
        table.append(
            f"{m:<13}{_fmt(statistics.fmean(finite)):>10} ± {_fmt(sd):<10}"
            + "".join(f"{_fmt(v):>11}" for v in cells)
            + f"{len(finite):>5}{extra}"
        )
    if table:
        lines.append(f"{'metric':<13}{'mean':>10} ± {'sd':<10}{'median':>11}{'min':>11}"
                     f"{'max':>11}{'n':>5}")
        lines += table
    for r in failed:
        lines.append(f"failed: {r.get('error')}")
    return "\n".join(lines)
