"""Volumes read recently, kept so that a reference listed for several rows is read once.

A study lists each reference once per method (sub-01 with unet, cs, zero-filled, ...), and
reading a compressed volume costs more than scoring it. A :class:`ReadCache` keeps the volumes
it read, keyed by the path and the identity of every file that feeds it (size, modification
time and inode: no read, unlike the content hash ``--resume`` uses), newest first, within a
byte budget. It is thread-safe: two threads asking for the same file wait for one read. Cached
arrays are made read-only, so a row cannot change what the next row sees. Executors own a
cache (one per run, one per worker process) and hand it to
:meth:`~volqa.pipeline.row.RowScorer.prepare`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..io.paths import input_files
from ..io.volume import Volume

__all__ = ["DEFAULT_CACHE_BYTES", "SHARED_ROLES", "ReadCache"]

#: Default byte budget of one cache (a 512^3 float32 volume is 512 MiB).
DEFAULT_CACHE_BYTES = 1 << 30
#: The inputs of a row that other rows may list too, read through a cache (or, on a cluster,
#: shared: :mod:`.shared`); a test is listed once and would only take up the budget.
SHARED_ROLES = ("reference", "mask", "labels")


def _identity(path: str) -> tuple[tuple[str, int, int, int], ...]:
    """Size, modification time and inode of every file that feeds ``path`` (cheap: no read;
    a file replaced during a run is read again)."""
    out = []
    for name in input_files(path):
        try:
            st = os.stat(name)
            out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((name, -1, -1, -1))
    return tuple(out)


class ReadCache:
    """A byte-bounded, thread-safe store of volumes by path and file identity.

    Parameters
    ----------
    max_bytes : int
        Budget for the cached arrays; the least recently used volume is dropped first, and a
        volume larger than the budget is not kept (0 keeps nothing).

    Attributes
    ----------
    reads, hits : int
        Volumes read through the cache, and requests answered from it.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.reads = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._volumes: OrderedDict[Any, Volume] = OrderedDict()
        self._pending: dict[Any, Future[Volume]] = {}
        self._bytes = 0

    def get(self, path: str | os.PathLike[str], read: Callable[[], Volume]) -> Volume:
        """The volume of ``path``: from the cache, or ``read()`` (whose errors propagate and
        are not cached)."""
        key = (os.fspath(path), _identity(os.fspath(path)))
        with self._lock:
            volume = self._volumes.get(key)
            if volume is not None:
                self._volumes.move_to_end(key)
                self.hits += 1
                return volume
            waiting = self._pending.get(key)
            if waiting is None:
                mine: Future[Volume] = Future()
                self._pending[key] = mine
        if waiting is not None:  # another thread is reading this file
            volume = waiting.result()
            with self._lock:
                self.hits += 1
            return volume
        try:
            volume = read()
            volume.array.flags.writeable = False
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            mine.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self.reads += 1
            self._keep(key, volume)
        mine.set_result(volume)
        return volume

    def _keep(self, key: Any, volume: Volume) -> None:
        size = volume.array.nbytes
        if size > self.max_bytes:
            return
        while self._volumes and self._bytes + size > self.max_bytes:
            _, old = self._volumes.popitem(last=False)
            self._bytes -= old.array.nbytes
        self._volumes[key] = volume
        self._bytes += size

    def __len__(self) -> int:
        return len(self._volumes)
