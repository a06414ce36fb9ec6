"""Loading volqa result tables for analysis, and checking that they can be compared.

:func:`load_results` reads one or more tables written by ``volqa score`` (``results.parquet``
or ``results.csv``, one per method or one merged, or a per-region table with a ``region``
column) into one :class:`Study`. A CSV file is typed like the Parquet file: metric and setting
columns from :mod:`volqa.schema`, covariates by the rules of :mod:`volqa.io.covariates`; its
provenance comes from ``settings.json`` in the same folder when there is one.

Every check names the table and the way out: a file that is not a volqa table, a ``by``,
``subject`` or ``group`` column that does not exist, a metric volqa does not know or that is
not in the tables, a single method, no subject scored for two methods, one subject twice for
one method, and tables scored with different settings. Different settings are refused unless
``allow_different_settings`` is given; the differences are then kept in
:attr:`Study.settings_override` and written into every output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError, SettingsError
from ..io.covariates import infer_type, misfits, parse_cell
from ..io.outdir import SETTINGS_NAME
from ..io.tables import METADATA_KEY
from ..pipeline.progress import distinct_tails
from ..schema import HEAD_COLUMNS, METRICS, ROW_COLUMNS, SETTING_COLUMNS

__all__ = ["Table", "Study", "read_table", "load_results"]

_SCHEMA_DTYPES = {c.name: c.dtype for c in (*HEAD_COLUMNS, *ROW_COLUMNS, *SETTING_COLUMNS)}
#: Settings entries that do not change a number (which metrics, whether maps were saved).
_NOT_NUMERIC = ("metrics", "save_maps")


@dataclass(frozen=True)
class Table:
    """One input table: where it came from and what volqa recorded about it."""

    path: Path
    rows: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any] | None:
        return self.meta.get("settings")


@dataclass(frozen=True)
class Study:
    """The rows of every input table, ready for the statistics.

    Attributes
    ----------
    frame : pandas.DataFrame
        All rows, with ``_table`` (index into ``tables``) and ``_ok`` (status ok) columns.
    by, subject : str
        The method column and the pairing key.
    group : str or None
        The stratifying column (each value is analysed on its own).
    metrics : tuple of str
        Metric columns to analyse, registry order.
    methods : tuple
        The values of ``by`` in order of first appearance.
    tables : tuple of Table
    settings_override : tuple of str
        Setting differences accepted with ``allow_different_settings`` (empty otherwise).
    """

    frame: pd.DataFrame
    by: str
    subject: str
    group: str | None
    metrics: tuple[str, ...]
    methods: tuple[Any, ...]
    tables: tuple[Table, ...]
    settings_override: tuple[str, ...] = ()

    def groups(self) -> list[tuple[Any, pd.DataFrame]]:
        """``(group value, rows)`` pairs; one ``(None, frame)`` without a group column."""
        if self.group is None:
            return [(None, self.frame)]
        return [(g, rows) for g, rows in self.frame.groupby(self.group, sort=False,
                                                            dropna=False)]

    def direction(self, metric: str) -> str:
        return "higher" if METRICS[metric].higher_is_better else "lower"


def read_table(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, Table]:
    """One volqa result table (Parquet or CSV) as a typed DataFrame and its provenance.

    Raises
    ------
    InputError
        The file cannot be read or is not a volqa table.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"result table {str(p)!r} does not exist; give the results.parquet "
                         "or results.csv that volqa score wrote.")
    meta: dict[str, Any] = {}
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(p)
            raw = (table.schema.metadata or {}).get(METADATA_KEY)
            meta = json.loads(raw) if raw else {}
            frame = table.to_pandas()
        else:
            frame = _typed_csv(pd.read_csv(p, dtype=str, keep_default_na=False))
            stored = p.parent / SETTINGS_NAME
            meta = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        kind = "Parquet" if p.suffix.lower() in (".parquet", ".pq") else "CSV"
        raise InputError(f"cannot read {str(p)!r} as a {kind} result table: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}."
                         ) from None
    volqa_columns = {"status", "volqa_version"} <= set(frame.columns)
    if not ("settings" in meta or volqa_columns):  # (compare's own tables have neither)
        raise InputError(
            f"{str(p)!r} is not a volqa result table: it has neither volqa's Parquet metadata "
            f"nor the columns status and volqa_version (columns: "
            f"{', '.join(map(str, frame.columns[:12]))}{' ...' if frame.shape[1] > 12 else ''})."
            " Give the results.parquet or results.csv written by volqa score."
        )
    return frame, Table(p, len(frame), meta)


_KIND_OF_DTYPE = {"float64": "float", "int64": "integer", "bool": "boolean", "string": "text"}


def _typed_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV read as text, typed as its Parquet twin reads: metrics as float64, schema columns
    with their schema type, covariates by the rules of :mod:`volqa.io.covariates` (a column
    edited by hand so that it no longer fits its schema type is typed like a covariate);
    empty cells are missing."""
    out = {}
    for col in frame.columns:
        cells = frame[col].tolist()
        if col in METRICS:
            out[col] = pd.to_numeric(frame[col].replace("", None), errors="coerce")
            continue
        kind = _KIND_OF_DTYPE.get(_SCHEMA_DTYPES.get(col, ""), "") or infer_type(cells)
        if misfits(cells, kind):
            kind = infer_type(cells)
        values = [parse_cell(c, kind) for c in cells]
        missing = any(v is None for v in values)
        dtype = {"float": "float64", "integer": "float64" if missing else "int64",
                 "boolean": "object" if missing else "bool", "text": "str"}[kind]
        out[col] = pd.Series(values, index=frame.index, dtype=dtype)
    return pd.DataFrame(out, index=frame.index)


def _settings_signature(frame: pd.DataFrame, table: Table) -> dict[str, Any]:
    """What decided the numbers of a table: its setting columns (one value each, or the
    tuple of values when rows differ), or, for a table without them, the settings in its
    metadata."""
    columns = [c.name for c in SETTING_COLUMNS if c.name in frame.columns]
    sig: dict[str, Any] = {}
    for col in columns:
        values = {_plain(v) for v in frame[col].drop_duplicates().tolist()}
        sig[col] = values.pop() if len(values) == 1 else tuple(sorted(map(str, values)))
    if columns:
        return sig
    for key, value in (table.settings or {}).items():
        if key in _NOT_NUMERIC:
            continue
        if isinstance(value, dict):
            sig.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            sig[key] = value
    return sig


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v


def _setting_differences(frames: Sequence[pd.DataFrame], tables: Sequence[Table]) -> list[str]:
    sigs = [_settings_signature(f, t) for f, t in zip(frames, tables, strict=True)]
    names = distinct_tails([str(t.path) for t in tables])
    keys = list(dict.fromkeys(k for s in sigs for k in s))
    out = []
    for key in keys:
        seen = [(name, s[key]) for s, name in zip(sigs, names, strict=True) if key in s]
        values = {json.dumps(v, default=str) for _, v in seen}
        mixed = [(name, v) for name, v in seen if isinstance(v, tuple)]
        if len(values) > 1 or mixed:
            out.append(f"{key}: " + ", ".join(f"{v!r} in {name}" for name, v in seen))
    return out


def load_results(
    paths: Sequence[str | os.PathLike[str]],
    *,
    by: str,
    subject: str = "subject_id",
    metrics: Sequence[str] | None = None,
    group: str | None = None,
    allow_different_settings: bool = False,
) -> Study:
    """Read and check result tables for :func:`volqa.analysis.compare`.

    Parameters
    ----------
    paths : sequence of paths
        ``results.parquet`` / ``results.csv`` files of ``volqa score`` (or per-region tables).
    by : str
        The column naming the method (e.g. ``method``).
    subject : str, default "subject_id"
        The column that pairs rows of different methods.
    metrics : sequence of str, optional
        Metric columns to analyse (default: every metric of :data:`volqa.schema.METRICS`
        present with at least one value).
    group : str, optional
        A column to stratify by (site, region, ...).
    allow_different_settings : bool, default False
        Accept tables scored with different settings (the differences are recorded).

    Raises
    ------
    InputError
        Bad tables or columns, one method only, no subject scored for two methods, a subject
        twice for one method.
    SettingsError
        The tables were scored with different settings (without the override).
    """
    if not paths:
        raise InputError("no result table given; pass one or more results.parquet/.csv files.")
    frames, tables = zip(*(read_table(p) for p in paths), strict=True)
    frame = pd.concat([f.assign(_table=i) for i, f in enumerate(frames)], ignore_index=True)
    where = ", ".join(str(t.path) for t in tables)
    for role, col in (("--by", by), ("--subject", subject), ("--group", group)):
        if col is not None and col not in frame.columns:
            covariates = [c for c in frame.columns if c not in _SCHEMA_DTYPES
                          and c not in METRICS and not c.startswith("_")]
            raise InputError(f"{role} column {col!r} is not in {where} (columns that can be "
                             f"used: {', '.join(map(str, covariates))}).")
    chosen = _metrics(frame, metrics, where)
    for col in {by, subject, group} - {None}:  # plain Python values: fast to iterate and hash
        frame[col] = frame[col].astype(object)
    status = frame["status"] if "status" in frame.columns else pd.Series("ok", frame.index)
    frame["_ok"] = status.eq("ok")
    if frame[by].isna().any():
        raise InputError(f"{frame[by].isna().sum()} row(s) of {where} have no {by!r} value; "
                         "every row needs its method.")
    methods = tuple(pd.unique(frame[by]))
    if len(methods) < 2:
        raise InputError(f"only one method in column {by!r} ({methods[0]!r}) of {where}: "
                         "comparing needs at least two. Give the tables of the other methods "
                         "too, or another --by column.")
    keys = [c for c in (group, subject, by) if c is not None]
    twice = frame[frame.duplicated(keys, keep=False)]
    if len(twice):
        first = twice.iloc[0]
        tails = distinct_tails([str(t.path) for t in tables])
        names = sorted({tails[i] for i in twice["_table"]})
        same = (twice[subject] == first[subject]) & (twice[by] == first[by])
        raise InputError(
            f"subject {first[subject]!r} has {int(same.sum())} rows for {by} {first[by]!r} "
            f"(in {', '.join(names)}; {len(twice)} such rows in all): pairing needs one row per "
            "subject and method. Use a --by column that tells them apart (e.g. one that "
            "combines method and acceleration), --group for a column whose values are analysed "
            "apart (e.g. region, in a per-region table), or remove the duplicates."
        )
    ok = frame[frame["_ok"]]
    per_subject = ok.groupby([c for c in (group, subject) if c is not None])[by].nunique()
    if not (per_subject >= 2).any():
        raise InputError(f"no subject in {where} is scored ok for two methods of {by!r}, so "
                         f"nothing can be paired; check the {subject!r} values (they must "
                         "be equal across methods) and the failed rows.")
    differences = _setting_differences(frames, tables)
    if differences and not allow_different_settings:
        raise SettingsError(
            "the tables were scored with different settings, so their numbers are not "
            "comparable:\n  " + "\n  ".join(differences)
            + "\nScore them again with the same settings, or pass --allow-different-settings "
            "to compare them anyway (the differences are then written into every output)."
        )
    return Study(frame, by, subject, group, chosen, methods, tuple(tables), tuple(differences))


def _metrics(frame: pd.DataFrame, metrics: Sequence[str] | None, where: str
             ) -> tuple[str, ...]:
    present = [m for m in METRICS.names() if m in frame.columns
               and frame[m].notna().any()]
    if metrics is None:
        if not present:
            raise InputError(f"{where} hold no metric values (every row failed?).")
        return tuple(present)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(map(repr, unknown))}: volqa knows "
                         f"{', '.join(METRICS.names())} (the direction of a metric comes "
                         "from volqa's registry).")
    absent = [m for m in metrics if m not in present]
    if absent:
        raise InputError(f"metric(s) {', '.join(map(repr, absent))} not in {where} (metrics "
                         f"with values there: {', '.join(present) or 'none'}).")
    return METRICS.ordered(metrics)
