"""Read and validate a scoring manifest (a CSV file listing reference/test pairs).

Format
------
A UTF-8 CSV file (comma-separated, first line is the header, an optional byte-order mark is
accepted) with the columns

``subject_id``
    Any non-empty text naming the subject.
``reference``
    The ground-truth volume: a NIfTI/ITK file, a DICOM file or a DICOM series folder.
``test``
    The reconstruction scored against ``reference``.
``mask`` (optional column; a cell may be empty)
    A binary or label mask in the reference's geometry.
``labels`` (optional column; a cell may be empty)
    An integer label map in the reference's geometry: every metric is also reported per
    non-zero label, in the region table (``regions.csv``).

Every other column (site, method, acceleration, ...) is a covariate, carried into every output
row with one type per column: integer, float, boolean or text, inferred from its cells or
declared in the header as ``NAME:TYPE`` (rules in :mod:`volqa.io.covariates`). Relative paths
resolve against the folder that holds the manifest, not against the working directory. A DICOM
folder holding several series names one of them as ``folder#<SeriesInstanceUID>``; the suffix
is kept and split off by :func:`volqa.io.paths.split_series`.

Validation is about the manifest's *structure* and happens before any subject is scored:
not UTF-8, not a CSV, no data rows, missing or duplicated columns, columns that collide with
volqa's output columns, empty required cells, rows with the wrong number of fields, duplicate
``(subject_id, test)`` pairs, and cells that do not fit a declared covariate type. Every problem
is collected into one :class:`~volqa.errors.ManifestError`. A listed file that does not exist,
and a test that is its reference file, are *not* manifest errors by default (the row fails, or
scores as perfect): :func:`preflight` lists them for a warning, and ``strict=True`` in
:func:`read_manifest` turns them into manifest errors.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ManifestError
from ..schema import reserved_columns
from .covariates import DTYPE_OF, infer_type, misfits, parse_cell, split_declaration
from .paths import same_file, split_series

__all__ = [
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "Manifest",
    "ManifestRow",
    "read_manifest",
    "missing_files",
    "reference_as_test",
    "preflight",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("subject_id", "reference", "test")
OPTIONAL_COLUMNS: tuple[str, ...] = ("mask", "labels")
PATH_COLUMNS: tuple[str, ...] = ("reference", "test", "mask", "labels")

_MAX_LISTED = 50  # problems listed in one message before "... and N more"


@dataclass(frozen=True)
class ManifestRow:
    """One data row of a manifest.

    Attributes
    ----------
    index : int
        0-based position among the data rows (the output row order).
    line : int
        1-based line number in the file where the record ends (the header is line 1).
    subject_id : str
        The ``subject_id`` cell with surrounding whitespace removed.
    reference, test : str
        Absolute, normalised paths (``#<uid>`` suffix kept).
    mask : str or None
        Resolved mask path, or None when the row has no mask.
    values : Mapping[str, str]
        Every cell of the row exactly as written, keyed by column name in file order.
    labels : str or None
        Resolved label-map path, or None when the row has none.
    """

    index: int
    line: int
    subject_id: str
    reference: str
    test: str
    mask: str | None
    values: Mapping[str, str] = field(repr=False)
    labels: str | None = None

    @property
    def row_number(self) -> int:
        """1-based data row number (the first row after the header is 1)."""
        return self.index + 1

    def where(self) -> str:
        """Human-readable location, e.g. ``"row 3 (line 4, subject 'sub-03')"``."""
        return f"row {self.row_number} (line {self.line}, subject {self.subject_id!r})"


@dataclass(frozen=True)
class Manifest:
    """A validated manifest.

    Attributes
    ----------
    path : Path
        The manifest file.
    columns : tuple of str
        Column names in file order (header cells with surrounding whitespace and a
        ``:TYPE`` declaration removed).
    rows : tuple of ManifestRow
        Data rows in file order.
    types : Mapping[str, str]
        Covariate column -> ``integer``, ``float``, ``boolean`` or ``text`` (declared or
        inferred, see :mod:`volqa.io.covariates`); the path and id columns are not listed.
    """

    path: Path
    columns: tuple[str, ...]
    rows: tuple[ManifestRow, ...]
    types: Mapping[str, str] = field(default_factory=dict)

    def dtypes(self) -> dict[str, str]:
        """Every column's output dtype (``string`` unless a covariate has another type)."""
        return {c: DTYPE_OF[self.types.get(c, "text")] for c in self.columns}

    def typed(self, row: ManifestRow) -> dict[str, object]:
        """A row's cells as typed values for the output row (None for an empty cell)."""
        return {c: parse_cell(v, self.types.get(c, "text")) for c, v in row.values.items()}

    @property
    def has_mask(self) -> bool:
        """True when the manifest has a ``mask`` column (cells may still be empty)."""
        return "mask" in self.columns

    @property
    def has_labels(self) -> bool:
        """True when the manifest has a ``labels`` column (region table written)."""
        return "labels" in self.columns

    def __len__(self) -> int:
        return len(self.rows)


def _resolve(cell: str, base: Path) -> str:
    text = os.path.expanduser(cell.strip())
    fs_path, uid = split_series(text)
    resolved = Path(fs_path) if os.path.isabs(fs_path) else base / fs_path
    out = os.path.abspath(resolved)
    return f"{out}#{uid}" if uid is not None else out


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:65536]:
        raise ManifestError(
            f"manifest {str(path)!r} is not a CSV text file (it contains NUL bytes; is it an "
            "image, a spreadsheet or a compressed file?). Give a comma-separated text file "
            "with the columns subject_id, reference, test and optionally mask."
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(
            f"manifest {str(path)!r} is not UTF-8: byte 0x{raw[exc.start]:02x} at line {line} "
            f"(offset {exc.start}) cannot be decoded. Save the file as UTF-8 (in Excel: "
            "'CSV UTF-8'; or `iconv -f latin1 -t utf-8`)."
        ) from None


def read_manifest(path: str | os.PathLike[str], *, strict: bool = False) -> Manifest:
    """Read and validate a manifest.

    Parameters
    ----------
    path : str or PathLike
        The CSV file.
    strict : bool, default False
        Also treat what :func:`preflight` lists (missing files, tests that are their
        reference file) as manifest errors; by default a missing file fails only its own row
        and a reference scored as its own test gets a warning.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        With one message that lists every problem found (up to 50, then a count).
    """
    mpath = Path(path)
    if not mpath.exists():
        raise ManifestError(f"manifest {str(mpath)!r} does not exist; check the path.")
    if mpath.is_dir():
        raise ManifestError(
            f"manifest {str(mpath)!r} is a folder; give the CSV file that lists the pairs."
        )
    try:
        raw = mpath.read_bytes()
    except OSError as exc:
        raise ManifestError(f"manifest {str(mpath)!r} cannot be read: {exc.strerror}.") from None
    text = _decode(mpath, raw)
    if not text.strip():
        raise ManifestError(
            f"manifest {str(mpath)!r} is empty; it needs a header line "
            "'subject_id,reference,test[,mask]' and one line per pair."
        )

    try:
        records = [(line, rec) for line, rec in _records(text) if any(c.strip() for c in rec)]
    except csv.Error as exc:
        raise ManifestError(
            f"manifest {str(mpath)!r} is not a valid CSV file: {exc}. Give a comma-separated "
            "text file with the columns subject_id, reference, test and optionally mask."
        ) from None

    if not records:
        raise ManifestError(
            f"manifest {str(mpath)!r} is empty; it needs a header line "
            "'subject_id,reference,test[,mask]' and one line per pair."
        )
    problems: list[str] = []
    _, header_cells = records[0]
    declared = {}
    header_list = []
    for cell in header_cells:
        name, kind = split_declaration(cell.strip())
        header_list.append(name)
        if kind is not None:
            declared[name] = kind
    header = tuple(header_list)
    fixed = [c for c in declared if c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if fixed:
        problems.append(f"column(s) {', '.join(map(repr, fixed))} cannot have a declared type "
                        "(paths and subject ids are text); remove ':TYPE' from their header.")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        hint = ""
        lower = {c.lower(): c for c in header}
        near = [f"{lower[c]!r} -> {c!r}" for c in missing if c in lower]
        if len(header) == 1 and any(d in header[0] for d in ";\t|"):
            hint = " The header has a single column: volqa needs commas as separators."
        elif near:
            hint = " Column names are case-sensitive: rename " + ", ".join(near) + "."
        elif len(missing) == len(REQUIRED_COLUMNS):
            hint = (
                " The first line must be the header subject_id,reference,test[,mask]: "
                "is this a CSV manifest?"
            )
        problems.append(
            f"missing column(s) {', '.join(missing)} (found: {', '.join(map(repr, header))})."
            + hint
        )
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        problems.append(f"duplicate column name(s) in the header: {', '.join(map(repr, dupes))}.")
    empty_names = [i + 1 for i, c in enumerate(header) if not c]
    if empty_names:
        problems.append(f"header column(s) {empty_names} have no name.")
    reserved = [c for c in header if c in reserved_columns(labels="labels" in header)]
    if reserved:
        problems.append(
            f"column(s) {', '.join(map(repr, reserved))} clash with volqa's output columns; "
            "rename them in the manifest."
        )

    data = records[1:]
    if not data:
        problems.append("no data rows after the header (empty manifest).")
    if missing or dupes:
        raise _error(mpath, problems)

    base = mpath.parent
    rows: list[ManifestRow] = []
    seen: dict[tuple[str, str], int] = {}
    sid_col = header.index("subject_id")
    for index, (line, cells) in enumerate(data):
        where = f"row {index + 1} (line {line})"
        subject = cells[sid_col].strip() if sid_col < len(cells) else ""
        if subject:
            where = f"row {index + 1} (line {line}, subject {subject!r})"
        if len(cells) != len(header):
            problems.append(
                f"{where}: {len(cells)} fields but the header has {len(header)} "
                "(a comma inside a path needs the cell in double quotes)."
            )
            continue
        values = dict(zip(header, cells, strict=True))
        empty = [c for c in REQUIRED_COLUMNS if not values[c].strip()]
        if empty:
            problems.append(f"{where}: empty {', '.join(empty)}.")
            continue
        ref = _resolve(values["reference"], base)
        test = _resolve(values["test"], base)
        mask, labels = (_resolve(values.get(c, ""), base) if values.get(c, "").strip() else None
                        for c in OPTIONAL_COLUMNS)
        key = (subject, test)
        if key in seen:
            problems.append(
                f"{where}: duplicate of row {seen[key] + 1} (same subject_id and test "
                f"{values['test'].strip()!r}); remove one of them."
            )
        else:
            seen[key] = index
        rows.append(ManifestRow(index, line, subject, ref, test, mask, values, labels))

    types = _covariate_types(header, rows, declared, problems)
    manifest = Manifest(mpath, header, tuple(rows), types)
    if strict and not problems:
        problems.extend(preflight(manifest))
    if problems:
        raise _error(mpath, problems)
    return manifest


def missing_files(manifest: Manifest) -> list[str]:
    """List every path of the manifest that does not exist, one message per path.

    Parameters
    ----------
    manifest : Manifest

    Returns
    -------
    list of str
        E.g. ``"row 3 (line 4, subject 'sub-03'): test file not found: /data/x.nii.gz"``.
    """
    out = []
    for row in manifest.rows:
        for role in PATH_COLUMNS:
            p = getattr(row, role)
            if p is None:
                continue
            fs_path, _ = split_series(p)
            if not os.path.exists(fs_path):
                out.append(f"{row.where()}: {role} file not found: {fs_path}")
    return out


def preflight(manifest: Manifest) -> list[str]:
    """What is warned about before a batch and refused with ``strict=True``:
    :func:`missing_files` and :func:`reference_as_test`."""
    return missing_files(manifest) + reference_as_test(manifest)


def reference_as_test(manifest: Manifest) -> list[str]:
    """One message per row whose test is its reference file (:func:`~.paths.same_file`),
    which scores as a perfect reconstruction."""
    return [f"{row.where()}: test {row.values['test'].strip()!r} is the reference file "
            "itself, so it scores as a perfect reconstruction; point test at the method's output"
            for row in manifest.rows if same_file(row.reference, row.test)]


def _covariate_types(header: tuple[str, ...], rows: list[ManifestRow],
                     declared: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """Each covariate's type: declared (its cells checked) or inferred from its cells."""
    types = {}
    for col in header:
        if col in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            continue
        cells = [r.values[col] for r in rows]
        kind = declared.get(col)
        if kind is None:
            kind = infer_type(cells)
        else:
            bad = misfits(cells, kind)
            if bad:
                shown = ", ".join(map(repr, bad[:5])) + (" ..." if len(bad) > 5 else "")
                problems.append(f"column {col!r} is declared {kind} but {len(bad)} cell(s) are "
                                f"not: {shown}; fix the cells or the declaration.")
        types[col] = kind
    return types


def _records(text: str):
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    for rec in reader:
        yield reader.line_num, rec


def _error(path: Path, problems: list[str]) -> ManifestError:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    lines = [f"manifest {str(path)!r} has {len(problems)} problem(s); nothing was scored:"]
    lines += [f"  - {p}" for p in shown]
    if more:
        lines.append(f"  ... and {more} more")
    return ManifestError("\n".join(lines))
