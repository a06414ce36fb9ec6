"""The row journal: one JSON object per line, appended and fsynced.

A crash or SIGKILL loses at most the row being computed; ``--resume`` reads the journal back.
Every record carries ``check``, the first 16 hex digits of the SHA-256 of the record's
canonical JSON (sorted keys, without ``check``): a line edited by hand, or written by
something else, does not verify and is skipped and reported, as is a torn last line from a
killed run. The checksum detects edits, it does not authenticate: whoever can write the
folder can also recompute it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_NAME", "Journal", "JournalLines", "read_journal", "load_journal",
           "record_check"]

JOURNAL_NAME = "journal.jsonl"


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
        """Write one record (with its ``check``) as a line and make it durable (flush +
        fsync). A failed write (disk full, ...) is cut off again, so that the journal stays a
        list of whole lines, and the ``OSError`` is raised; later appends may still work."""
        line = json.dumps({**record, "check": record_check(record)}, ensure_ascii=False,
                          sort_keys=True) + "\n"
        size = os.fstat(self._fh.fileno()).st_size
        try:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                self._fh.close()  # drops what is still buffered
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)  # and the part of the line that was written
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            raise

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_check(record: Mapping[str, Any]) -> str:
    """The checksum of a record: SHA-256 of its canonical JSON without ``check``, 16 hex."""
    body = {k: v for k, v in record.items() if k != "check"}
    text = json.dumps(body, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class JournalLines:
    """The verified records of a journal, in file order, and the lines that were skipped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "line 7: <why>"


def read_journal(path: str | os.PathLike[str]) -> JournalLines:
    """Every record whose checksum verifies, and why each other non-empty line was skipped."""
    out = JournalLines()
    p = Path(path)
    if not p.exists():
        return out
    with open(p, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                out.skipped.append(f"line {number}: not JSON (torn by a killed run?)")
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("check"), str):
                out.skipped.append(f"line {number}: no volqa checksum (not written by this "
                                   "volqa version)")
            elif rec["check"] != record_check(rec):
                out.skipped.append(f"line {number}: checksum mismatch (edited after it was "
                                   "written?)")
            else:
                out.records.append(rec)
    return out


def load_journal(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Verified result records by key (the last of each key wins; attempts left out)."""
    return {rec["key"]: rec for rec in read_journal(path).records
            if rec.get("type") == "result" and isinstance(rec.get("key"), str)}
