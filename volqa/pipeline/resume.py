"""What ``--resume`` may reuse: fingerprints of inputs, row keys, and the plan with reasons.

A journal record is reused when it finished ``ok`` and its key matches: the same subject and
test path, the same input files (path, size and modification time; a folder: every entry's)
and the same settings hash. Every other row is computed again, and the plan says why: it
failed before, its settings changed, an input file changed, or it was never run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..io.manifest import ManifestRow
from ..io.paths import split_series

__all__ = ["fingerprint", "row_inputs", "row_key", "ResumePlan", "plan_resume"]


def fingerprint(path: str | None) -> Any:
    """Identity of an input for --resume: path + size + mtime (a folder: of every entry)."""
    if path is None:
        return None
    fs_path, _ = split_series(path)
    try:
        st = os.stat(fs_path)
    except OSError:
        return {"path": path, "missing": True}
    if os.path.isdir(fs_path):
        entries = []
        for e in sorted(os.scandir(fs_path), key=lambda e: e.name):
            try:
                s = e.stat()
                entries.append((e.name, s.st_size, s.st_mtime_ns))
            except OSError:
                entries.append((e.name, -1, -1))
        digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
        return {"path": path, "folder": digest}
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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


@dataclass
class ResumePlan:
    """Rows to reuse (index -> journal fields), rows to compute, and why."""

    keys: dict[int, str]
    inputs: dict[int, dict[str, Any]]
    reused: dict[int, dict[str, Any]] = field(default_factory=dict)
    todo: list[ManifestRow] = field(default_factory=list)
    reused_regions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        """E.g. ``"5 row(s) reused, 3 to compute (2 failed before, 1 input changed)"``."""
        why = ", ".join(f"{n} {r}" for r, n in self.reasons.most_common())
        return (f"{len(self.reused)} row(s) reused, {len(self.todo)} to compute"
                + (f" ({why})" if why else ""))


def plan_resume(rows: Sequence[ManifestRow], journal: Mapping[str, Mapping[str, Any]],
                settings_hash: str) -> ResumePlan:
    """Sort rows into reused and to-compute, with a reason for each recomputed row."""
    inputs = {row.index: row_inputs(row) for row in rows}
    plan = ResumePlan({r.index: row_key(r, inputs[r.index], settings_hash) for r in rows}, inputs)
    by_row = {(rec.get("subject_id"), rec.get("test")): rec for rec in journal.values()}
    for row in rows:
        rec = journal.get(plan.keys[row.index])
        if rec is not None and rec.get("fields", {}).get("status") == "ok":
            plan.reused[row.index] = dict(rec["fields"])
            plan.reused_regions[row.index] = list(rec.get("regions") or [])
            continue
        plan.todo.append(row)
        if not journal:
            continue
        if rec is not None:
            plan.reasons["failed before"] += 1
            continue
        prev = by_row.get((row.subject_id, row.test))
        if prev is None:
            plan.reasons["not run before"] += 1
        elif prev.get("settings_hash") != settings_hash:
            plan.reasons["settings changed"] += 1
        else:
            plan.reasons["input file changed"] += 1
    return plan
