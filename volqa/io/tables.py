"""The result tables: ``results.csv`` and ``results.parquet``, typed from the schema.

Column types come from :mod:`volqa.schema` (``string``, ``float64``, ``int64``, ``bool``):
the manifest's covariates have the type :mod:`volqa.io.covariates` gives them (the other manifest
columns are strings), metric columns float64 (null where not computed; ``psnr`` is ``inf`` for
identical images). The CSV holds the same values as text, so that both files read back alike:
a null is an empty field, integers are written without a decimal point even when a column has
nulls, booleans as ``True``/``False``. The run's metadata (settings, version, counts) is stored
as JSON under the key ``volqa`` of the Parquet schema metadata. Both files are written
together through :func:`volqa.io.atomic.atomic_write_many`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..schema import Column
from .atomic import atomic_write_many

__all__ = ["CSV_NAME", "PARQUET_NAME", "REGIONS_CSV_NAME", "REGIONS_PARQUET_NAME",
           "METADATA_KEY", "ARROW_TYPES", "build_table", "write_tables"]

CSV_NAME = "results.csv"
PARQUET_NAME = "results.parquet"
#: The per-region long table (one row per manifest row and label), same writer and types.
REGIONS_CSV_NAME = "regions.csv"
REGIONS_PARQUET_NAME = "regions.parquet"
METADATA_KEY = b"volqa"
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
}
_CAST = {"string": str, "float64": float, "int64": int, "bool": bool}


def _cell(value: Any, dtype: str) -> Any:
    return None if value is None else _CAST[dtype](value)


def _pandas_int64() -> object:
    import pandas as pd

    return pd.Int64Dtype()  # nullable: 4 stays "4" in the CSV next to an empty cell


def build_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    metadata: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Build the typed Arrow table (missing keys become nulls).

    Parameters
    ----------
    rows : iterable of mappings
        One mapping per output row, keyed by column name.
    columns : sequence of Column
        From :func:`volqa.schema.output_columns`.
    metadata : mapping, optional
        Stored as JSON under the schema metadata key ``volqa``.
    """
    rows = list(rows)
    arrays = [pa.array([_cell(r.get(c.name), c.dtype) for r in rows], type=ARROW_TYPES[c.dtype])
              for c in columns]
    schema = pa.schema([pa.field(c.name, ARROW_TYPES[c.dtype]) for c in columns])
    if metadata is not None:
        schema = schema.with_metadata(
            {METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()}
        )
    return pa.Table.from_arrays(arrays, schema=schema)


def write_tables(table: pa.Table, out_dir: str | os.PathLike[str], *,
                 names: tuple[str, str] = (CSV_NAME, PARQUET_NAME)) -> tuple[Path, Path]:
    """Write ``results.parquet`` and ``results.csv`` (or the CSV and Parquet ``names``, e.g.
    the region table's) into ``out_dir``, both or neither.

    Returns
    -------
    (Path, Path)
        The CSV and Parquet paths.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    csv_path, pq_path = out / names[0], out / names[1]
    frame = table.to_pandas(types_mapper={pa.int64(): _pandas_int64()}.get)
    atomic_write_many({
        pq_path: lambda tmp: pq.write_table(table, tmp),
        csv_path: lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"),
    })  # fmt: skip
    return csv_path, pq_path
