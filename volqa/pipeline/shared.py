"""Which inputs a distributed batch reads once for several rows, and how long it keeps them.

A study lists each reference (and often its mask) once per method, and decompressing a volume
costs more than scoring it. The threads and processes executors read such files once per
process through a :class:`~.cache.ReadCache`. On a Dask cluster a row may run on any worker,
so the driver reads a shared file in a task of its own and hands that task's result to every
row that lists the file: Dask runs those rows where the volume already is (or moves the array,
which is cheaper than decompressing it again) and reads it again if that worker dies.

:class:`SharedReads` decides, row by row in submission order, which read tasks a row gets. It
keeps at most ``budget`` bytes of volumes (estimated from the headers) wanted by rows still to
come. When a new one does not fit, it lets go of the volume whose next row comes last, if that
row comes after the new volume's next row (Belady's rule: the order of the rows is known); a
file let go and listed again later gets a new read. Rows already handed out keep their volumes
until they finish. A file whose header cannot be read is not shared: each row reads it and
reports the error itself.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .cache import SHARED_ROLES
from .memory import header_bytes
from .row import RowJob

__all__ = ["SharedReads"]


def _paths(job: RowJob) -> list[tuple[str, str]]:
    """``(role, path)`` of the job's inputs that are files and may be shared."""
    out = []
    for role in SHARED_ROLES:
        source = getattr(job, role)
        if isinstance(source, str | os.PathLike):
            out.append((role, os.fspath(source)))
    return out


class SharedReads:
    """Read tasks shared by rows (see the module docstring).

    Parameters
    ----------
    jobs : sequence of RowJob
        The rows, in the order they will be submitted.
    budget : int
        Bytes of volumes kept for rows still to come.
    submit_read : callable
        ``submit_read(path)`` starts reading ``path`` and returns a handle (a Dask future).
    size : callable
        ``size(path)``: the volume's bytes, or None when it is not to be shared.
    """

    def __init__(self, jobs: Sequence[RowJob], budget: int,
                 submit_read: Callable[[str], Any],
                 size: Callable[[str], int | None] = header_bytes) -> None:
        uses: dict[str, deque[int]] = {}
        for pos, job in enumerate(jobs):
            for _, path in _paths(job):
                uses.setdefault(path, deque()).append(pos)
        self._uses = {p: u for p, u in uses.items() if len(u) > 1}
        self._budget = budget
        self._submit_read = submit_read
        self._size = size
        self._sizes: dict[str, int | None] = {}
        self._live: dict[str, tuple[Any, int]] = {}  # path -> (handle, bytes)
        self.reads = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of the volumes kept for rows still to come."""
        return sum(n for _, n in self._live.values())

    def for_job(self, pos: int, job: RowJob) -> dict[str, Any]:
        """``role -> handle`` for the row at position ``pos``: call once per row, in order."""
        out: dict[str, Any] = {}
        for role, path in _paths(job):
            uses = self._uses.get(path)
            if uses is None:
                continue
            while uses and uses[0] <= pos:
                uses.popleft()
            live = self._live.get(path)
            if live is None and uses and self._make_room(path, uses[0]):
                live = (self._submit_read(path), self._sizes[path] or 0)
                self._live[path] = live
                self.reads += 1
            if live is not None:
                out[role] = live[0]
                if not uses:  # its last row: let go (the rows handed out keep it)
                    self._live.pop(path, None)
        return out

    def _make_room(self, path: str, next_use: int) -> bool:
        """Let go of volumes used later than ``next_use`` until ``path`` fits; False if it
        cannot (too large, no header, or everything kept is needed sooner)."""
        if path not in self._sizes:
            self._sizes[path] = self._size(path)
        need = self._sizes[path]
        if need is None or need > self._budget:
            return False
        while self.held_bytes + need > self._budget:
            victim = max(self._live, key=lambda p: self._uses[p][0])
            if self._uses[victim][0] <= next_use:
                return False
            del self._live[victim]
        return True

    def close(self) -> None:
        """Let go of every volume kept."""
        self._live.clear()
