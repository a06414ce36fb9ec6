"""The row journal: one JSON object per finished row, appended and fsynced.

A crash or SIGKILL loses at most the row being computed; ``--resume`` reads the journal back
(a torn last line from a killed run is skipped).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_NAME", "Journal", "load_journal"]

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
