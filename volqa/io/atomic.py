"""volqa's one way of writing a file: a temporary file in the same folder, fsynced, renamed.

A reader sees either the old complete file or the new complete one, never a half-written
file; after the rename the folder is fsynced too, so the new name survives a power cut.
Every writer in volqa (tables, settings, maps, GIFs) goes through :func:`atomic_write_many`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_many", "temp_path", "fsync_dir"]

Writer = Callable[[Path], None]


def temp_path(final: Path) -> Path:
    """A hidden temporary name beside ``final`` that keeps its suffix (some writers choose the
    format from it, e.g. nibabel's ``.nii.gz``)."""
    name = final.name
    ext = ".nii.gz" if name.lower().endswith(".nii.gz") else final.suffix
    stem = name[: len(name) - len(ext)] if ext else name
    return final.with_name(f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(3)}{ext}")


def fsync_dir(path: Path) -> None:
    """fsync a folder so that renames inside it are durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not supported on this platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Writer) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    ``write`` is called with the temporary path and must create and close that file.
    """
    atomic_write_many({path: write})


def atomic_write_many(writers: Mapping[str | os.PathLike[str], Writer]) -> None:
    """Write several files through temporary files; rename them only when all are written.

    A failure (or an interrupt) while writing any of them leaves every previous file untouched
    and removes the temporary files.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in writers.items():
            final = Path(path)
            tmp = temp_path(final)
            temps.append((tmp, final))
            write(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for tmp, final in temps:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for parent in {final.parent for _, final in temps}:
        fsync_dir(parent)
