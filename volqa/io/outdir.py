"""The output folder of a run: creating it, ``--overwrite``, and ``settings.json``.

``settings.json`` records the run's :class:`~volqa.settings.Settings` (and, for information,
its :class:`~volqa.settings.Execution`, the manifest and the volqa version) when the run
starts; ``--resume`` reads the settings back from it, so a resumed run needs no options.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from .atomic import atomic_write
from .journal import JOURNAL_NAME
from .lock import LOCK_NAME, OutDirLock
from .paths import split_series
from .tables import CSV_NAME, PARQUET_NAME, REGIONS_CSV_NAME, REGIONS_PARQUET_NAME

__all__ = ["SETTINGS_NAME", "MAPS_DIR", "OutputExistsError", "prepare_out_dir",
           "refuse_overwriting_inputs", "write_json", "read_json"]

SETTINGS_NAME = "settings.json"
MAPS_DIR = "maps"
#: volqa's own files in an output folder (what --overwrite replaces).
OWN_FILES = (JOURNAL_NAME, CSV_NAME, PARQUET_NAME, SETTINGS_NAME, REGIONS_CSV_NAME,
             REGIONS_PARQUET_NAME)


class OutputExistsError(SettingsError):
    """The output folder is not empty and neither resume nor overwrite was asked for."""


def prepare_out_dir(out: str | os.PathLike[str], *, resume: bool, overwrite: bool,
                    lock: OutDirLock | None = None) -> Path:
    """Check and create the output folder.

    Rules: ``resume`` and ``overwrite`` exclude each other; a non-empty existing folder needs
    one of them (the lock file alone does not count). ``overwrite`` deletes volqa's own files
    there (journal, tables, settings) and nothing else; maps are replaced as they are
    written. ``lock`` (an :class:`~volqa.io.lock.OutDirLock` of this folder) is acquired
    once the folder exists and before anything in it is looked at or deleted; the caller
    releases it.

    Raises
    ------
    SettingsError, OutputExistsError, OutputLockedError
    """
    path = Path(out)
    if resume and overwrite:
        raise SettingsError("--resume and --overwrite exclude each other; give one of them.")
    if path.exists() and not path.is_dir():
        raise SettingsError(f"output path {str(path)!r} exists and is not a folder; choose --out.")
    existed = path.is_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"cannot create output folder {str(path)!r}: {e.strerror or e}; "
                            "choose another --out") from None
    if lock is not None:
        lock.acquire()
    if existed:
        entries = sorted(e.name for e in path.iterdir() if e.name != LOCK_NAME)
        if entries and not (resume or overwrite):
            shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
            raise OutputExistsError(
                f"output folder {str(path)!r} is not empty ({shown}). Use --resume to continue "
                "the batch recorded there, --overwrite to start it again, or another --out."
            )
        if overwrite:
            for name in OWN_FILES:
                (path / name).unlink(missing_ok=True)
    return path


def refuse_overwriting_inputs(out: str | os.PathLike[str],
                              inputs: Iterable[tuple[str, str]]) -> None:
    """Refuse a run whose outputs would replace or be written into one of its inputs.

    The outputs are volqa's own files in ``out`` (tables, journal, settings, lock), anything
    under ``out/maps`` and ``out`` itself as a folder that files are written into. Paths are
    compared after resolving symbolic links, so a link does not hide a clash.

    Parameters
    ----------
    out : path
        The output folder (it may not exist yet).
    inputs : iterable of (str, str)
        ``(what, path)`` pairs, e.g. ``("the manifest", path)`` or ``("subject 's1': test",
        path)``; a ``#<SeriesInstanceUID>`` suffix is ignored.

    Raises
    ------
    SettingsError
        Naming the input, the output and the way out.
    """
    root = Path(os.path.realpath(out))
    files = {Path(os.path.realpath(root / name)): name for name in (*OWN_FILES, LOCK_NAME)}
    maps = Path(os.path.realpath(root / MAPS_DIR))
    for what, given in inputs:
        real = Path(os.path.realpath(split_series(given)[0]))
        if real in files:
            clash = f"is this run's output {files[real]}"
        elif real == maps or maps in real.parents:
            clash = f"lies in this run's {MAPS_DIR}/ folder, where SSIM maps are written"
        elif real == root:
            clash = "is this run's output folder, where its tables are written"
        else:
            continue
        raise SettingsError(
            f"{what} {given!r} {clash} (--out {str(out)!r}): the run would overwrite or "
            "change an input. Move the input or choose another --out.")


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file does not exist.

    Raises
    ------
    SettingsError
        The file exists but is not a JSON object.
    """
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{str(p)!r} cannot be read as JSON ({exc}); remove it or use "
                            "--overwrite") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{str(p)!r} is not a JSON object; remove it or use --overwrite")
    return data
