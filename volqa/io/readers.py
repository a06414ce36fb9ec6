"""Read medical volumes into one type, :class:`~volqa.io.volume.Volume`.

Formats
-------
- ``.nii`` / ``.nii.gz``: nibabel (:mod:`volqa.io.nifti`).
- ``.mha`` / ``.mhd`` / ``.nrrd`` / ``.nhdr``: SimpleITK (:mod:`volqa.io.itk`).
- A folder of DICOM files: SimpleITK's ``ImageSeriesReader`` (:mod:`volqa.io.dicom`);
  ``"folder#<SeriesInstanceUID>"`` (or ``series_uid=``) picks one series of a folder that holds
  several.
- A single DICOM file (``.dcm``/``.dicom``/``.ima``, or any file with the ``DICM`` preamble),
  e.g. a multi-frame object.

DICOM RescaleSlope/RescaleIntercept are applied by SimpleITK (GDCM); integer voxels of every
format become float32 after scaling, so ``int16 * slope + intercept`` cannot overflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from .dicom import dicom_series_shape, read_dicom_folder
from .itk import itk_size, read_itk_file
from .nifti import read_nifti, read_nifti_header
from .paths import (
    DICOM_SUFFIXES,
    FILE_SUFFIXES,
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    read_error,
    special_file_kind,
    split_series,
    suffix,
)
from .volume import Volume, check_finite

__all__ = ["read_volume", "volume_shape"]


def read_volume(path: str | os.PathLike[str], *, series_uid: str | None = None,
                max_bytes: int | None = None) -> Volume:
    """Read a 3-D volume from a NIfTI, MHA/MHD/NRRD or DICOM file or a DICOM folder.

    Parameters
    ----------
    path : str or os.PathLike
        A file, a folder of DICOM files, or ``"folder#<SeriesInstanceUID>"``.
    series_uid : str, optional
        SeriesInstanceUID to read from a DICOM folder that holds several series.
    max_bytes : int, optional
        Refuse, from the header and before reading any voxel, a volume whose float32 array
        would take more bytes (voxels x 4).

    Returns
    -------
    Volume
        float32 array ``(i, j, k)`` and RAS+ affine.

    Raises
    ------
    InputError
        Naming the file and the cause: missing, empty (0 bytes), a directory where a file is
        expected, unreadable, unknown extension, corrupt gzip stream, truncated NIfTI, not a
        NIfTI image, colour/vector or complex voxels, integers beyond 2**53, 4-D with more
        than one volume, 2-D image, a non-finite or singular affine (or NIfTI header field
        it comes from), a NIfTI ``vox_offset`` inside the header, a declared size over
        ``max_bytes``, a FIFO/device/socket where a file is expected (also inside a DICOM
        folder), empty folder, folder without DICOM, several series and none named, unknown
        series, slices of one series with different orientations or pixel spacings, NaN/Inf
        voxels.

    Notes
    -----
    Dimensions: trailing axes of length 1 beyond the third are dropped (a NIfTI of shape
    ``(I, J, K, 1)`` is a 3-D volume). An image with fewer than 3 axes or with an axis of
    length 1 among the first three (one slice) is 2-D and rejected.

    DICOM slice positions (ImagePositionPatient projected on the slice normal) are checked:
    when a step between neighbouring slices differs from the median step by more than
    max(1 % of the median, 0.01 mm), the volume gets a "non-uniform slice spacing" note, and
    steps over 1.5 x the median (gaps) are listed in a "possible missing slices" note.
    SimpleITK still assumes equally spaced slices, (last - first) / (n - 1) apart; the notes
    say so.
    """
    p, uid, source = _locate(path, series_uid)
    if p.is_dir():
        volume = read_dicom_folder(p, uid, source, max_bytes)
    else:
        kind = _file_kind(p, source)
        if kind == "nifti":
            volume = read_nifti(p, source, max_bytes)
        else:
            volume = read_itk_file(p, source, "GDCMImageIO" if kind == "dicom" else "",
                                   max_bytes)
    check_finite(volume)
    return volume


def volume_shape(path: str | os.PathLike[str], *, series_uid: str | None = None
                 ) -> tuple[int, ...]:
    """The size a volume's header declares, without reading its voxels.

    NIfTI: the header's dims (for ``.nii.gz`` only the first bytes are decompressed); ITK
    formats and DICOM files: ``ReadImageInformation`` (size, then components); a DICOM
    series: one file's size times the number of files. The float32 array of the volume
    takes ``prod(shape) x 4`` bytes.

    Raises
    ------
    InputError
        As :func:`read_volume`, for what the header alone shows.
    """
    p, uid, source = _locate(path, series_uid)
    if p.is_dir():
        return dicom_series_shape(p, uid, source)
    kind = _file_kind(p, source)
    if kind == "nifti":
        return tuple(read_nifti_header(p, source).get_data_shape())
    return itk_size(p, source, "GDCMImageIO" if kind == "dicom" else "")


def _locate(path: str | os.PathLike[str], series_uid: str | None) -> tuple[Path, str | None, str]:
    """(file-system path, series UID, source name); errors for missing or misnamed paths."""
    text, in_path = split_series(os.fspath(path))
    if in_path is not None and series_uid is not None and in_path != series_uid:
        raise read_error(os.fspath(path), f"two series UIDs given: {in_path!r} in the path and "
                         f"{series_uid!r} as series_uid", "give one")
    series_uid = series_uid or in_path
    source = f"{text}#{series_uid}" if series_uid is not None else text
    p = Path(text)
    if not p.exists():
        hint = "check the path"
        if "#" in text and os.path.isdir(text.rpartition("#")[0]):
            hint = ("to pick a DICOM series write 'folder#<SeriesInstanceUID>', the UID being "
                    "digits and dots")
        raise read_error(source, "no such file or directory", hint)
    if p.is_dir():
        if suffix(p) in FILE_SUFFIXES:
            raise read_error(source, f"is a directory, but a {suffix(p)} file was expected",
                             "point to the file itself")
    elif series_uid is not None:
        raise read_error(source, "a series UID was given but the path is a file, not a "
                         "DICOM folder", "drop '#<uid>' / series_uid or give the folder")
    return p, series_uid, source


def _file_kind(path: Path, source: str) -> str:
    """"nifti", "itk" or "dicom" for a readable file; errors name why not."""
    head = _check_file(path, source)
    ext = suffix(path)
    if ext in NIFTI_SUFFIXES:
        return "nifti"
    if ext in ITK_SUFFIXES:
        return "itk"
    if ext in DICOM_SUFFIXES or head[128:132] == b"DICM":
        return "dicom"
    raise read_error(source, f"unknown extension {ext or '(none)'!r} and not a DICOM file",
                     f"volqa reads {', '.join(NIFTI_SUFFIXES + ITK_SUFFIXES)}, DICOM files and "
                     "DICOM folders")


def _check_file(path: Path, source: str) -> bytes:
    """Reject special, empty and unreadable files; return the first 132 bytes."""
    kind = special_file_kind(path)
    if kind:
        raise read_error(source, f"is {kind}, not a regular file: reading it could block or "
                         "never end", "point to the volume file itself")
    if path.stat().st_size == 0:
        raise read_error(source, "the file is empty (0 bytes)", "re-create or re-copy it")
    try:
        with open(path, "rb") as f:
            return f.read(132)
    except PermissionError:
        raise read_error(source, "permission denied (the file is not readable by this user)",
                         "fix its permissions") from None
    except OSError as e:
        raise read_error(source, f"cannot open it ({e.strerror or e})") from None
