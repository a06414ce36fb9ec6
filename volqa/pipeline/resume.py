"""What ``--resume`` may reuse: fingerprints of inputs, row keys, journal checks, the plan.

A journal result is reused when it finished ``ok`` and its key matches: the same subject and
test path, the same input *contents* and the same settings hash. An input's fingerprint is
the SHA-256 of every file that feeds it (:func:`volqa.io.paths.input_files`: a NIfTI file; an
``.mhd``/``.nhdr`` header and its data files; every file of a DICOM folder), so a file
replaced by another of the same size and modification time (``cp -p``, ``rsync -t``, tar)
is noticed. Hashing reads each input once more (about 1.4 GB/s on one core when the file is
in the page cache; ``scripts/bench_fingerprint.py``).

Journal lines are checked before any is used (:func:`record_problem`): a line that is not a
record volqa wrote (missing or mistyped fields, a metric given as text, a checksum that does
not match, i.e. a hand edit) is skipped and reported.

A row that was in flight when a run was killed (an ``attempt`` record with neither a result
nor a ``stop`` record after it: a run that ends in order, interrupted or not, writes
``stop``) is run again with nothing else in flight (``solo``); once it has been killed
:data:`KILL_LIMIT` times, the last time while running solo, it is recorded as failed
instead of being retried (it is what kills the process, e.g. out of memory).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..io.journal import read_journal
from ..io.manifest import ManifestRow
from ..io.paths import input_files
from ..schema import HEAD_COLUMNS, METRICS, REGION_COLUMNS, ROW_COLUMNS, SETTING_COLUMNS

__all__ = ["KILL_LIMIT", "fingerprint", "row_inputs", "row_key", "record_problem",
           "journal_records", "ResumePlan", "plan_resume"]

#: Kills after which a row is recorded as failed instead of being retried.
KILL_LIMIT = 2
_BLOCK = 1 << 20


def fingerprint(path: str | None) -> Any:
    """Identity of an input for --resume: its path and the SHA-256 of every file feeding it."""
    if path is None:
        return None
    files = input_files(path)
    if not files:
        return {"path": path, "missing": True}
    digest = hashlib.sha256()
    for name in files:
        digest.update(os.path.basename(name).encode("utf-8", "surrogateescape") + b"\0")
        try:
            with open(name, "rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
        except OSError as e:  # unreadable now: the row will say why; never reuse it
            digest.update(f"unreadable: {e.errno}".encode())
    return {"path": path, "files": len(files), "sha256": digest.hexdigest()}


def row_inputs(row: ManifestRow) -> dict[str, Any]:
    """Fingerprints of the row's reference, test and mask (and label map, when it has one:
    rows without keep the keys of earlier volqa versions)."""
    inputs = {role: fingerprint(getattr(row, role)) for role in ("reference", "test", "mask")}
    if row.labels is not None:
        inputs["labels"] = fingerprint(row.labels)
    return inputs


def row_key(row: ManifestRow, inputs: Mapping[str, Any], settings_hash: str) -> str:
    """The journal key of a row: subject, input fingerprints and settings."""
    ident = {"subject_id": row.subject_id, **inputs, "settings": settings_hash}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


_FIELD_TYPES = {c.name: c.dtype for c in (*HEAD_COLUMNS, *ROW_COLUMNS, *SETTING_COLUMNS)}
_RECORD_FIELDS = {  # record type -> required fields and their types
    "result": {"key": str, "index": int, "subject_id": str, "test": str, "inputs": dict,
               "settings_hash": str, "fields": dict},
    "attempt": {"key": str, "index": int, "subject_id": str, "solo": bool},
    "stop": {},
}
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "float64": (int, float),
                                              "int64": (int,), "bool": (bool,)}


def record_problem(record: Mapping[str, Any]) -> str | None:
    """Why a journal record (checksum already verified) is not one volqa wrote, or None."""
    kind = record.get("type")
    if kind not in _RECORD_FIELDS:
        return f"unknown record type {kind!r}"
    for name, typ in _RECORD_FIELDS[kind].items():
        value = record.get(name)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            return f"field {name!r} is {value!r}, not a {typ.__name__}"
    if kind != "result":
        return None
    fields = record["fields"]
    if fields.get("status") not in ("ok", "error"):
        return f"status {fields.get('status')!r} is neither 'ok' nor 'error'"
    problem = _values_problem(fields, lambda name: METRICS[name].dtype if name in METRICS
                              else _FIELD_TYPES.get(name))
    if problem:
        return problem
    if fields["status"] == "ok" and fields.get("error") is not None:
        return "an 'ok' row with an error message"
    if "regions" in record:
        return _regions_problem(record["regions"])
    return None


def _values_problem(values: Mapping[str, Any], dtype_of: Callable[[str], str | None],
                    where: str = "") -> str | None:
    """The first value whose name is unknown (``dtype_of(name)`` is None) or whose type is not
    its column's, or None."""
    for name, value in values.items():
        dtype = dtype_of(name)
        if dtype is None:
            return f"unknown field {name!r}{where}"
        allowed = _PYTHON_TYPES[dtype]
        if value is not None and (not isinstance(value, allowed)
                                  or (bool not in allowed and isinstance(value, bool))):
            return f"field {name!r} = {value!r}{where} is not a {dtype} value"
    return None


def _regions_problem(regions: Any) -> str | None:
    """Why a result record's per-region rows are not what volqa writes, or None."""
    if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
        return "field 'regions' is not a list of region rows"
    types = {c.name: c.dtype for c in REGION_COLUMNS}
    types |= {m.name.removesuffix("_masked"): m.dtype
              for m in METRICS.masked_forms(METRICS.names())}
    for r in regions:
        where = f" in region {r.get('region')!r}"
        if not isinstance(r.get("region"), int) or isinstance(r.get("region"), bool):
            return f"a region row without an integer 'region' ({r.get('region')!r})"
        if r.get("status") not in ("ok", "undefined"):
            return f"status {r.get('status')!r}{where} is neither 'ok' nor 'undefined'"
        problem = _values_problem(r, types.get, where)
        if problem:
            return problem
    return None


def journal_records(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The journal's records that verify and validate, in file order, and why each other
    line was skipped (``"line 7: ..."``, ``"record '<key>': ..."``)."""
    lines = read_journal(path)
    records = []
    for rec in lines.records:
        problem = record_problem(rec)
        if problem is None:
            records.append(rec)
        else:
            lines.skipped.append(f"record {rec.get('key')!r}: {problem}")
    return records, lines.skipped


@dataclass
class ResumePlan:
    """Rows to reuse (index -> journal fields), rows to compute, rows killed too often."""

    keys: dict[int, str]
    inputs: dict[int, dict[str, Any]]
    reused: dict[int, dict[str, Any]] = field(default_factory=dict)
    todo: list[ManifestRow] = field(default_factory=list)
    solo: set[int] = field(default_factory=set)
    killed: dict[int, int] = field(default_factory=dict)
    reused_regions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        """E.g. ``"5 row(s) reused, 3 to compute (2 failed before, 1 input changed)"``."""
        why = ", ".join(f"{n} {r}" for r, n in self.reasons.most_common())
        killed = f", {len(self.killed)} not retried (killed {KILL_LIMIT} times)" \
            if self.killed else ""
        return (f"{len(self.reused)} row(s) reused, {len(self.todo)} to compute{killed}"
                + (f" ({why})" if why else ""))


def plan_resume(rows: Sequence[ManifestRow], records: Sequence[Mapping[str, Any]],
                settings_hash: str, *, hash_inputs: bool = True) -> ResumePlan:
    """Sort rows into reused, to compute (``solo`` when a kill left them unfinished) and
    killed, with a reason for each recomputed row. ``records`` are valid journal records in
    file order. ``hash_inputs=False`` skips the fingerprints (a run without a journal)."""
    inputs = {row.index: row_inputs(row) if hash_inputs else {} for row in rows}
    plan = ResumePlan({r.index: row_key(r, inputs[r.index], settings_hash) for r in rows}, inputs)
    results: dict[str, Mapping[str, Any]] = {}
    unfinished: dict[str, list[bool]] = {}  # key -> solo flags of attempts after its last result
    for rec in records:
        if rec["type"] == "result":
            results[rec["key"]] = rec
            unfinished.pop(rec["key"], None)
        elif rec["type"] == "attempt":
            unfinished.setdefault(rec["key"], []).append(rec["solo"])
        else:  # "stop": that run ended in order, so what it left unfinished was not killed
            unfinished.clear()
    by_row = {(rec["subject_id"], rec["test"]): rec for rec in results.values()}
    for row in rows:
        key = plan.keys[row.index]
        rec = results.get(key)
        kills = unfinished.get(key, [])
        if rec is not None and rec["fields"]["status"] == "ok" and not kills:
            plan.reused[row.index] = dict(rec["fields"])
            plan.reused_regions[row.index] = list(rec.get("regions") or [])
            continue
        if len(kills) >= KILL_LIMIT and kills[-1]:
            plan.killed[row.index] = len(kills)
            continue
        plan.todo.append(row)
        if kills:
            plan.solo.add(row.index)
            plan.reasons["in flight when a run was killed"] += 1
            continue
        if not records:
            continue
        if rec is not None:
            plan.reasons["failed before"] += 1
            continue
        prev = by_row.get((row.subject_id, row.test))
        if prev is None:
            plan.reasons["not run before"] += 1
        elif prev["settings_hash"] != settings_hash:
            plan.reasons["settings changed"] += 1
        else:
            plan.reasons["input file changed"] += 1
    return plan
