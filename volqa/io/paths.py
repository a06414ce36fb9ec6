"""Input paths: file suffixes, the ``folder#<SeriesInstanceUID>`` suffix, read errors."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import InputError

__all__ = [
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "DICOM_SUFFIXES",
    "FILE_SUFFIXES",
    "suffix",
    "split_series",
    "read_error",
    "same_file",
    "special_file_kind",
    "input_files",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
FILE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + DICOM_SUFFIXES

# A DICOM UID: numeric components separated by dots, at most 64 characters (PS3.5 §9.1).
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UID_MAX = 64


def suffix(path: str | os.PathLike[str]) -> str:
    """Lower-case extension, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def split_series(path: str) -> tuple[str, str | None]:
    """Split an optional ``#<SeriesInstanceUID>`` suffix off a path.

    The suffix is recognised only when the text after the last ``#`` is a DICOM UID (digits
    and dots, at most 64 characters) and the whole string is not itself an existing path, so
    file names that contain ``#`` keep working. This is volqa's only parser of the suffix:
    the manifest, the readers and the resume fingerprints all use it.

    Returns
    -------
    (str, str or None)
        The file-system path and the series UID (None when there is no suffix).
    """
    head, sep, tail = path.rpartition("#")
    if (sep and head and _UID.match(tail) and len(tail) <= _UID_MAX
            and not os.path.exists(path)):
        return head, tail
    return path, None


def read_error(source: str, cause: str, hint: str = "") -> InputError:
    """``cannot read '<source>': <cause>; <hint>`` as an :class:`InputError`."""
    return InputError(f"cannot read {source!r}: {cause}" + (f"; {hint}" if hint else ""))


def same_file(a: str, b: str) -> bool:
    """The same path, or two names of one file (a link, ``.`` and ``..``): a stat, no read.
    False for a missing path and for ``folder#<uid>`` series names that differ."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def special_file_kind(path: str | os.PathLike[str]) -> str:
    """"" for a regular file, a folder or a dangling link; else what it is (a FIFO, ...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return ""
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device"
            if stat.S_ISBLK(mode) else "a special file")
    if os.path.islink(path):
        kind += f" (a symbolic link to {os.path.realpath(path)!r})"
    return kind


def input_files(path: str) -> list[str]:
    """Every file whose bytes feed the volume at ``path``, for change detection.

    A file, plus the data files an ``.mhd`` header (``ElementDataFile``) or an ``.nhdr``
    header (``data file``) names; a DICOM folder (a ``#<uid>`` suffix is ignored): its
    regular files (subfolders are not read). A data-file pattern (``%d``) or an unparsable
    header counts every regular file in the header's folder. Missing files are left out.
    """
    fs_path, _ = split_series(path)
    if os.path.isdir(fs_path):
        return _regular_files(fs_path)
    if not os.path.isfile(fs_path):
        return []
    files = [fs_path]
    ext = suffix(fs_path)
    if ext in (".mhd", ".nhdr"):
        folder = os.path.dirname(fs_path)
        named = _detached_data_files(fs_path, ext)
        if named is None:
            return sorted(set(files) | set(_regular_files(folder)))
        files += [os.path.join(folder, n) for n in named if os.path.isfile(os.path.join(folder, n))]
    return files


def _regular_files(folder: str) -> list[str]:
    with os.scandir(folder or ".") as entries:
        return sorted(e.path for e in entries if e.is_file())


def _detached_data_files(header: str, ext: str) -> list[str] | None:
    """File names an .mhd/.nhdr header points to; None for patterns or an unreadable header."""
    key = "elementdatafile" if ext == ".mhd" else "datafile"
    try:
        with open(header, encoding="latin-1") as fh:
            lines = fh.read(1 << 20).splitlines()
    except OSError:
        return None
    for n, line in enumerate(lines):
        name, sep, value = line.partition("=" if ext == ".mhd" else ":")
        if sep and name.replace(" ", "").lower() in (key, "data_file") and value.strip():
            value = value.strip()
            if value.upper().startswith("LIST"):
                return [v.strip() for v in lines[n + 1:] if v.strip()]
            if value.upper() == "LOCAL":
                return []
            if "%" in value:
                return None
            return [value]
    return [] if ext == ".mhd" else None
