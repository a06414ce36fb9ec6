"""Join the output folders of shards (``volqa merge``) into the table of one run.

Each part is an output folder of ``volqa score --shard I/N`` (or any ``volqa score`` run):
``settings.json`` records the manifest's content hash and row count, the shard and the
settings; ``results.parquet`` the rows and, in its metadata, their manifest indices. The parts
are joined only when they come from the same manifest (content hash) with the same settings
(hash) and cover every manifest row exactly once; otherwise :class:`MergeError` says what
differs, which rows are missing (and the command that produces them) or which are duplicated.
The merged ``results.csv`` / ``results.parquet`` hold the rows in manifest order and equal a
single run of the manifest except for the per-row ``seconds`` and ``host`` (and ``ssim_map``
paths, which point into the part folders); the parts' journals are joined too, so the merged
folder is a complete output folder (``--resume`` there recomputes nothing).
"""

from __future__ import annotations

import json
import os
import shlex
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import SettingsError, VolqaError
from ..io.journal import JOURNAL_NAME
from ..io.manifest import read_manifest
from ..io.outdir import SETTINGS_NAME, prepare_out_dir, read_json, write_json
from ..io.tables import (
    METADATA_KEY,
    PARQUET_NAME,
    REGIONS_CSV_NAME,
    REGIONS_PARQUET_NAME,
    write_tables,
)
from ..settings import Settings
from .shards import stored_shard

__all__ = ["MergeError", "Part", "read_part", "merge_parts"]

_LISTED = 10  # rows named in a message before "... and N more"


class MergeError(SettingsError):
    """The parts cannot be merged (other manifest or settings, missing or duplicated rows)."""


@dataclass
class Part:
    """One output folder: its ``settings.json``, its table and the manifest index of each row."""

    path: Path
    meta: dict[str, Any]
    table: pa.Table
    rows: list[int]

    @property
    def shard(self) -> tuple[int, int] | None:
        return stored_shard(self.meta)

    def name(self) -> str:
        s = self.shard
        return f"{str(self.path)!r}" + (f" (shard {s[0]}/{s[1]})" if s else "")


def read_part(path: str | os.PathLike[str]) -> Part:
    """Read one part folder.

    Raises
    ------
    MergeError
        Not a finished volqa output folder.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    meta = read_json(p / SETTINGS_NAME) if p.is_dir() else None
    if meta is None or "manifest_sha256" not in meta:
        raise MergeError(f"{str(p)!r} is not a volqa output folder (no {SETTINGS_NAME} written "
                         "by `volqa score`); give the --out folders of the shards.")
    if not (p / PARQUET_NAME).is_file():
        raise MergeError(f"{str(p)!r} has no {PARQUET_NAME}: its run stopped before writing "
                         f"its tables; finish it with: {_resume_command(meta, p)}")
    try:
        table = pq.read_table(p / PARQUET_NAME)
    except (OSError, pa.ArrowException) as exc:
        raise MergeError(f"{str(p / PARQUET_NAME)!r} cannot be read ({exc}); run that part "
                         f"again: {_resume_command(meta, p)}") from None
    table_meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    rows = table_meta.get("row_index")
    if not isinstance(rows, list) or len(rows) != table.num_rows:
        raise MergeError(f"{str(p / PARQUET_NAME)!r} does not record the manifest index of its "
                         "rows (written by an older volqa); score that part again with this "
                         "version.")
    return Part(p, meta, table, [int(i) for i in rows])


def merge_parts(parts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                overwrite: bool = False) -> pa.Table:
    """Check the parts and write their merged tables to ``out`` (see the module docstring).

    Parameters
    ----------
    parts : sequence of str or PathLike
        The output folders of the shards (any order).
    out : str or PathLike
        The merged output folder (created; must be empty unless ``overwrite``).
    overwrite : bool, default False
        Replace volqa's files in a non-empty ``out``.

    Returns
    -------
    pyarrow.Table
        The merged table (also written to ``out``).

    Raises
    ------
    MergeError
        The parts differ in manifest or settings, a row is missing or duplicated, a folder is
        not a finished part, or ``out`` is one of the parts or not empty.
    """
    paths = [Path(p) for p in parts]
    if not paths:
        raise MergeError("give at least one part folder to merge.")
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            raise MergeError(f"{str(p)!r} is given twice; give each part once.")
        seen[p.resolve()] = p
    out_dir = Path(out)
    if out_dir.resolve() in seen:
        raise MergeError(f"--out {str(out_dir)!r} is one of the parts; merge into another "
                         "folder.")
    loaded = [read_part(p) for p in paths]
    _check_same(loaded, "manifest_sha256", "manifest", _manifest_text)
    _check_same(loaded, "settings_hash", "settings", _settings_text)
    _check_same(loaded, "columns", "output columns",
                lambda part: ", ".join(part.table.column_names), key=_columns)
    order = _check_rows(loaded)

    table = pa.concat_tables([part.table for part in loaded])
    positions = {i: k for k, i in enumerate(i for part in loaded for i in part.rows)}
    table = table.take(pa.array([positions[i] for i in order]))
    table = _relink_maps(table, loaded, out_dir)
    first = loaded[0].meta
    status = table.column("status").to_pylist()
    meta = {k: v for k, v in first.items() if k not in ("shard", "execution")}
    meta.update(shard=None, parts=[str(p.path) for p in loaded])
    table_meta = dict(meta, rows_total=len(order), rows_done=len(order),
                      rows_ok=status.count("ok"), row_index=order)
    table = table.replace_schema_metadata(
        {METADATA_KEY: json.dumps(table_meta, sort_keys=True, default=str).encode()})

    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise MergeError(f"output folder {str(out_dir)!r} is not empty; use --overwrite to "
                         "replace volqa's files there, or another --out.")
    prepare_out_dir(out_dir, resume=False, overwrite=overwrite)
    with open(out_dir / JOURNAL_NAME, "w", encoding="utf-8") as journal:
        for part in loaded:
            if (part.path / JOURNAL_NAME).is_file():
                text = (part.path / JOURNAL_NAME).read_text(encoding="utf-8", errors="replace")
                journal.write(text if not text or text.endswith("\n") else text + "\n")
    write_json(out_dir / SETTINGS_NAME, meta)
    write_tables(table, out_dir)
    regions = _merged_regions(loaded, table)
    if regions is not None:
        write_tables(regions, out_dir, names=(REGIONS_CSV_NAME, REGIONS_PARQUET_NAME))
    return table


def _merged_regions(parts: Sequence[Part], merged: pa.Table) -> pa.Table | None:
    """The parts' region tables (``--labels``) as one, in the merged table's row order (each
    row's regions in label order); None when the parts have none."""
    import pyarrow.parquet as pq

    files = [part.path / REGIONS_PARQUET_NAME for part in parts]
    present = [f.is_file() for f in files]
    if not any(present):
        return None
    if not all(present):
        missing = ", ".join(str(p.path) for p, ok in zip(parts, present) if not ok)
        raise MergeError(f"some parts have a region table ({REGIONS_PARQUET_NAME}) and some do "
                         f"not ({missing}); score every part with the same manifest columns.")
    tables = [pq.read_table(f) for f in files]
    regions = pa.concat_tables(tables)
    order = {key: k for k, key in enumerate(zip(merged.column("subject_id").to_pylist(),
                                                 merged.column("test").to_pylist()))}
    keys = zip(regions.column("subject_id").to_pylist(), regions.column("test").to_pylist())
    position = [(order[key], n) for n, key in enumerate(keys)]
    regions = regions.take(pa.array([n for _, n in sorted(position)]))
    return regions.replace_schema_metadata(merged.schema.metadata)


def _columns(part: Part) -> str:
    return repr([(f.name, str(f.type)) for f in part.table.schema])


def _manifest_text(part: Part) -> str:
    m = part.meta
    return f"manifest {m.get('manifest')!r} (sha256 {str(m.get('manifest_sha256'))[:12]}…)"


def _settings_text(part: Part) -> str:
    return f"settings hash {part.meta.get('settings_hash')}"


def _check_same(parts: list[Part], field: str, what: str, describe: Any,
                key: Any = None) -> None:
    """All parts agree on ``field`` (or ``key(part)``); else a MergeError grouping them."""
    key = key or (lambda part: part.meta.get(field))
    groups: dict[Any, list[Part]] = defaultdict(list)
    for part in parts:
        groups[key(part)].append(part)
    if len(groups) == 1:
        return
    lines = [f"the parts differ in their {what}; merge only parts of one manifest scored with "
             "the same settings:"]
    for members in groups.values():
        lines.append(f"  {', '.join(m.name() for m in members)}: {describe(members[0])}")
    if field == "settings_hash":
        base = _settings(parts[0])
        for members in list(groups.values())[1:]:
            other = _settings(members[0])
            if base is not None and other is not None:
                lines.append(f"  {members[0].name()} vs {parts[0].name()}: "
                             + ", ".join(other.differences(base)))
    raise MergeError("\n".join(lines))


def _settings(part: Part) -> Settings | None:
    try:
        return Settings.from_dict(part.meta["settings"])
    except (KeyError, VolqaError):
        return None


def _check_rows(parts: list[Part]) -> list[int]:
    """Every manifest row in exactly one part; returns the indices in manifest order."""
    total = int(parts[0].meta.get("manifest_rows", 0))
    where: dict[int, list[Part]] = defaultdict(list)
    for part in parts:
        for i in part.rows:
            where[i].append(part)
    labels = _row_labels(parts[0], total)
    twice = sorted(i for i, ps in where.items() if len(ps) > 1)
    if twice:
        lines = [f"{len(twice)} row(s) are in more than one part (each row must come from "
                 "exactly one: are two parts the same shard, or shards of different N?):"]
        lines += [f"  {labels(i)}: in {', '.join(p.name() for p in where[i])}"
                  for i in twice[:_LISTED]]
        if len(twice) > _LISTED:
            lines.append(f"  ... and {len(twice) - _LISTED} more")
        raise MergeError("\n".join(lines))
    missing = [i for i in range(total) if i not in where]
    if missing:
        shown = ", ".join(labels(i) for i in missing[:_LISTED])
        more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
        lines = [f"{len(missing)} of the manifest's {total} row(s) are in no part: {shown}{more}.",
                 "Produce them with:"]
        lines += [f"  {c}" for c in _commands_for(parts, missing)]
        lines.append("then merge again with the new folder(s) added.")
        raise MergeError("\n".join(lines))
    return sorted(where)


def _row_labels(part: Part, total: int) -> Any:
    """``row 4 (subject 'sub-03')`` when the manifest is readable and unchanged, else ``row 4``."""
    subjects: dict[int, str] = {}
    try:
        import hashlib

        path = Path(part.meta["manifest"])
        if hashlib.sha256(path.read_bytes()).hexdigest() == part.meta["manifest_sha256"]:
            subjects = {r.index: r.subject_id for r in read_manifest(path).rows}
    except (KeyError, OSError, VolqaError):
        pass
    return lambda i: f"row {i + 1}" + (f" (subject {subjects[i]!r})" if i in subjects else "")


def _commands_for(parts: list[Part], missing: list[int]) -> list[str]:
    """A ``volqa score`` command for each shard that holds missing rows."""
    by_shard = {part.shard: part for part in parts}
    counts = {part.shard[1] for part in parts if part.shard}
    if len(counts) != 1:  # no common N: the missing rows are not one shard's
        return [_score_command(parts[0].meta, Path("MISSING_ROWS"), None)
                + "  (after listing only the missing rows in a manifest of their own)"]
    n = counts.pop()
    commands = []
    for k in sorted({i % n for i in missing}):
        part = by_shard.get((k, n))
        if part is not None:  # the shard ran but did not finish
            commands.append(_resume_command(part.meta, part.path))
        else:
            commands.append(_score_command(parts[0].meta, _guess_out(parts, k), (k, n)))
    return commands


def _guess_out(parts: list[Part], k: int) -> Path:
    """A folder name for shard k, following the others' (``part-3`` -> ``part-1``)."""
    for part in parts:
        s = part.shard
        name = part.path.name
        if s is not None and name.endswith(str(s[0])):
            return part.path.with_name(name[: len(name) - len(str(s[0]))] + str(k))
    return parts[0].path.with_name(f"shard-{k}")


def _score_command(meta: dict[str, Any], out: Path, shard: tuple[int, int] | None) -> str:
    argv = ["volqa", "score", str(meta.get("manifest")), "--out", str(out)]
    if shard is not None:
        argv += ["--shard", f"{shard[0]}/{shard[1]}"]
    return shlex.join(argv)


def _resume_command(meta: dict[str, Any], out: Path) -> str:
    return shlex.join(["volqa", "score", str(meta.get("manifest")), "--out", str(out),
                       "--resume"])


def _relink_maps(table: pa.Table, parts: list[Part], out: Path) -> pa.Table:
    """``ssim_map`` paths relative to the merged folder (they stay in the part folders)."""
    if "ssim_map" not in table.column_names:
        return table
    owner = {i: part.path for part in parts for i in part.rows}
    values = table.column("ssim_map").to_pylist()
    rows = sorted(owner)
    relinked = [None if v is None else os.path.relpath(owner[i] / v, out)
                for i, v in zip(rows, values, strict=True)]
    index = table.schema.get_field_index("ssim_map")
    return table.set_column(index, "ssim_map", pa.array(relinked, type=pa.string()))
