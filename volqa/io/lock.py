"""One run per output folder: an exclusive lock on ``OUT/.volqa.lock``.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a file in the output folder, held by an open
file descriptor for the whole run: the operating system releases it when the process ends,
however it ends (``kill -9``, out-of-memory killer, power cut), so a stale lock never blocks
a later run. The holder writes its process id, host, start time and command line into the
file, so that a refused run can name it. The file itself stays (deleting a lock file races
with a run that is opening it); it is volqa's own and ``--overwrite`` keeps it.

``flock`` is advisory and per host on some network file systems (older NFS): two runs on
different hosts writing into one NFS folder are not stopped there.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import SettingsError

__all__ = ["LOCK_NAME", "OutputLockedError", "OutDirLock"]

LOCK_NAME = ".volqa.lock"


class OutputLockedError(SettingsError):
    """Another volqa run holds the output folder."""


class OutDirLock:
    """The exclusive lock of one output folder (a context manager; see the module docstring).

    Parameters
    ----------
    folder : path
        An existing output folder.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> OutDirLock:
        """Take the lock, or raise :class:`OutputLockedError` naming the run that holds it."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SettingsError(f"cannot create the lock file {str(self.path)!r}: "
                                f"{e.strerror or e}; choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLockedError(
                f"output folder {str(self.path.parent)!r} is in use by another volqa run "
                f"({holder}); wait for it to finish, or choose another --out") from None
        except OSError as e:  # a file system without flock: say so rather than run unlocked
            os.close(fd)
            raise SettingsError(f"cannot lock {str(self.path)!r} ({e.strerror or e}): the "
                                "file system does not support locks; choose another --out"
                                ) from None
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        """Give the lock back (idempotent); the file stays."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> OutDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """"pid 123 on host h, started ..., command: ..." from the lock file (best effort)."""
    try:
        data: Any = json.loads(os.pread(fd, 65536, 0).decode("utf-8", "replace") or "{}")
        command = " ".join(str(a) for a in data.get("command", []))
        return (f"pid {data.get('pid')} on host {data.get('host')}, started "
                f"{data.get('started')}, command: {command}")
    except (OSError, ValueError, AttributeError):
        return "its details could not be read"
