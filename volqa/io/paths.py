"""Input paths: file suffixes, the ``folder#<SeriesInstanceUID>`` suffix, read errors."""

from __future__ import annotations

import os
import re
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
