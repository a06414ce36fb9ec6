"""The types of a manifest's covariate columns: inferred once, or declared in the header.

A covariate (any manifest column other than ``subject_id``, ``reference``, ``test`` and
``mask``) is copied into every output row. So that ``results.csv`` and ``results.parquet``
read back the same (pandas, R, duckdb), each covariate gets one type for the whole column,
all or nothing:

========= ================================================ ===========================
type      every non-empty cell is                          examples
========= ================================================ ===========================
integer   a decimal integer written without a sign ``+``,  ``4``, ``-2``, ``0``
          leading zeros or spaces, within int64
float     a decimal number written as above, with an       ``0.03``, ``1e-3``, ``-2.5``
          optional fraction and exponent
boolean   ``true`` or ``false`` (any letter case)          ``True``, ``FALSE``
text      anything else                                    ``unet``, ``01``, `` B ``,
                                                           ``.5``, ``inf``
========= ================================================ ===========================

An empty cell is missing (null in Parquet, an empty field in the CSV) whatever the type; a
column with no value at all is text. Zero-padded codes (``01``, ``007``) stay text so that
their zeros survive (a CSV reader that guesses types still reads them as numbers: read such
a column as text, or use the Parquet file).

A header cell ``NAME:TYPE`` declares the type instead (``acceleration:integer``,
``site:text``; also ``int``, ``str``, ``bool``); the column is then called ``NAME`` and every
cell must fit the declared type, else the manifest is refused with the cells that do not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["COVARIATE_TYPES", "DTYPE_OF", "split_declaration", "infer_type", "misfits",
           "parse_cell"]

#: Covariate type -> column dtype of :mod:`volqa.schema`.
DTYPE_OF: dict[str, str] = {"integer": "int64", "float": "float64", "boolean": "bool",
                            "text": "string"}
COVARIATE_TYPES: tuple[str, ...] = tuple(DTYPE_OF)
_ALIASES = {"int": "integer", "int64": "integer", "str": "text", "string": "text",
            "bool": "boolean", "float64": "float", "double": "float"}

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_BOOLEAN = {"true": True, "false": False}
_INT64 = (-(2**63), 2**63 - 1)


def split_declaration(header_cell: str) -> tuple[str, str | None]:
    """``"acc:integer"`` -> ``("acc", "integer")``; a cell without a known ``:TYPE`` suffix
    is returned whole with None (so names that merely contain a colon keep it)."""
    name, sep, declared = header_cell.rpartition(":")
    kind = declared.strip().lower()
    kind = _ALIASES.get(kind, kind)
    if sep and name.strip() and kind in DTYPE_OF:
        return name.strip(), kind
    return header_cell, None


def _fits(cell: str, kind: str) -> bool:
    if kind == "integer":
        return _INTEGER.fullmatch(cell) is not None and _INT64[0] <= int(cell) <= _INT64[1]
    if kind == "float":
        return _FLOAT.fullmatch(cell) is not None
    if kind == "boolean":
        return cell.lower() in _BOOLEAN
    return True


def infer_type(cells: Iterable[str]) -> str:
    """The narrowest type that every non-empty cell fits: integer, float, boolean or text."""
    values = [c for c in cells if c != ""]
    if not values:
        return "text"
    for kind in ("integer", "float", "boolean"):
        if all(_fits(c, kind) for c in values):
            return kind
    return "text"


def misfits(cells: Iterable[str], kind: str) -> list[str]:
    """The non-empty cells that do not fit ``kind`` (for the manifest's error message)."""
    return [c for c in cells if c != "" and not _fits(c, kind)]


def parse_cell(cell: str, kind: str) -> int | float | bool | str | None:
    """The typed value of a cell (None for an empty cell); the cell must fit ``kind``."""
    if cell == "":
        return None
    if kind == "integer":
        return int(cell)
    if kind == "float":
        return float(cell)
    if kind == "boolean":
        return _BOOLEAN[cell.lower()]
    return cell
