"""DICOM series folders: list series, sort slices (GDCM), check positions and orientations.

Series are listed with ``GetGDCMSeriesIDs`` and the files of the chosen series are sorted along
the slice normal by ``GetGDCMSeriesFileNames``; subfolders are not searched. A folder that holds
several series needs ``folder#<SeriesInstanceUID>``; the error lists every series.

Every slice of a series of classic single-frame files must carry a finite
ImagePositionPatient, ImageOrientationPatient and PixelSpacing (SimpleITK would otherwise guess
the slices' order, spacing, direction or size without a word); slices of multi-frame (enhanced)
objects keep these in functional groups, which GDCM reads and SimpleITK's dictionary does not
show, so they are not checked here. All slices must share one orientation and one pixel
spacing, and each must have a position of its own: two slices at one position (several echoes,
phases or time points in one series) are refused. Slice positions (ImagePositionPatient
projected on the slice normal) are checked: when a step
between neighbouring slices differs from the median step by more than max(1 % of the median,
0.01 mm) the volume gets a "non-uniform slice spacing" note, and steps over 1.5 x the median
(gaps) are listed in a "possible missing slices" note. SimpleITK still assumes equally spaced
slices, (last - first) / (n - 1) apart; the notes say so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .itk import itk_message, itk_quiet, itk_size, volume_from_sitk
from .paths import read_error, special_file_kind
from .volume import Volume, check_memory

__all__ = ["read_dicom_folder", "dicom_series_shape"]

SLICE_STEP_RTOL = 0.01
SLICE_STEP_ATOL_MM = 0.01
SLICE_GAP_FACTOR = 1.5
# Largest difference between the direction cosines of two slices of one series.
SLICE_ORIENTATION_ATOL = 1e-4


def read_dicom_folder(folder: Path, series_uid: str | None, source: str,
                      max_bytes: int | None = None) -> Volume:
    """Read one series of a DICOM folder (see the module docstring).

    The declared size (one file's rows x columns x frames, times the files of the series) is
    checked against ``max_bytes`` before any pixel is read.
    """
    uid, files, n_series = _series_files(folder, series_uid, source)
    check_memory(_series_shape(files, source), source, max_bytes, "the series declares")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    with itk_quiet():
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise read_error(source, f"SimpleITK cannot read series {uid} "
                             f"({itk_message(e)})") from None
    orientations = _slice_tags(reader, len(files), "0020|0037")
    positions = _slice_tags(reader, len(files), "0020|0032")
    pixel_spacing = _slice_tags(reader, len(files), "0028|0030")
    # classic single-frame slices; a multi-frame (enhanced) object keeps its geometry in
    # functional groups, which GDCM reads but SimpleITK's dictionary does not show
    if len(files) > 1 and not any(reader.HasMetaDataKey(i, "0028|0008")
                                  for i in range(len(files))):
        for tags, name, what in ((positions, "ImagePositionPatient (0020,0032)",
                                  "order and spacing"),
                                 (orientations, "ImageOrientationPatient (0020,0037)",
                                  "direction"),
                                 (pixel_spacing, "PixelSpacing (0028,0030)", "voxel size")):
            if tags is None:
                raise read_error(source, f"not every slice of series {uid} has a readable "
                                 f"{name}, so the slices' {what} cannot be known (SimpleITK "
                                 "would guess without a word)", "restore the tag from the "
                                 "original export, or pick another series")
    if orientations is not None and np.ptp(orientations, axis=0).max() > SLICE_ORIENTATION_ATOL:
        raise read_error(source, f"the {len(files)} slices of series {uid} have different "
                                 "ImageOrientationPatient values, so they do not form one 3-D "
                                 "volume", "is it a localizer or a radial series?")
    if pixel_spacing is not None and np.ptp(pixel_spacing, axis=0).max() > \
            SLICE_STEP_RTOL * pixel_spacing.min():
        values = sorted({tuple(row) for row in pixel_spacing.tolist()})
        raise read_error(source, f"the {len(files)} slices of series {uid} have different "
                                 f"PixelSpacing values ({', '.join(map(str, values[:4]))} mm), "
                                 "so they do not form one voxel grid",
                         "resample the slices to one pixel spacing, or pick another series")
    normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
    notes: tuple[str, ...] = ()
    if positions is not None:
        depths = positions @ normal
        same = np.flatnonzero(np.abs(np.diff(depths)) <= SLICE_STEP_ATOL_MM)
        if same.size:
            k = int(same[0])
            raise read_error(source, f"{same.size} slice(s) of series {uid} lie where the slice "
                             f"before lies (first: slices {k} and {k + 1}, at {depths[k]:.4g} mm "
                             "along the slice normal), so they do not form one 3-D volume",
                             "is it several echoes, phases or time points in one series? "
                             "Split it, or pick another series")
        notes = _slice_notes(depths, image.GetSpacing()[2])
    if n_series == 1:
        left_out = _count_dicom_files(folder) - len(files)
        if left_out > 0:  # GDCM drops files it cannot parse, at either end of the stack too
            notes = (*notes, f"{left_out} DICOM file(s) in the folder are not part of series "
                             f"{uid} (damaged or truncated?); the volume has {len(files)} slices")
    return volume_from_sitk(image, source, notes)


def dicom_series_shape(folder: Path, series_uid: str | None, source: str) -> tuple[int, ...]:
    """The size a series declares (from one file's header and the number of files)."""
    return _series_shape(_series_files(folder, series_uid, source)[1], source)


def _series_shape(files: Sequence[str], source: str) -> tuple[int, ...]:
    size = itk_size(files[0], source, "GDCMImageIO")  # (columns, rows, frames[, components])
    return (size[0], size[1], size[2] * len(files), *size[3:])


def _series_files(folder: Path, series_uid: str | None, source: str
                  ) -> tuple[str, Sequence[str], int]:
    """(uid, its files sorted by GDCM, number of series in the folder); errors name why not."""
    try:
        entries = list(os.scandir(folder))
    except PermissionError:
        raise read_error(source, "permission denied (the folder is not readable)") from None
    if not entries:
        raise read_error(source, "empty folder", "expected the DICOM files of one series")
    for entry in entries:
        kind = special_file_kind(entry.path)
        if kind:
            raise read_error(source, f"{entry.path!r} is {kind}, not a file: reading it could "
                             "block or never end", "remove it from the DICOM folder")
    with itk_quiet():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise read_error(source, f"no DICOM series in this folder ({len(entries)} entries; "
                                 "subfolders are not searched)",
                         "point to the folder holding the DICOM files, or to a NIfTI/MHA/NRRD file")
    if series_uid is None and len(uids) > 1:
        raise read_error(source, f"the folder holds {len(uids)} DICOM series: "
                                 f"{_describe_series(folder, uids)}",
                         f"name one as '{folder}#<SeriesInstanceUID>' (or series_uid=...)")
    uid = series_uid or uids[0]
    if uid not in uids:
        raise read_error(source, f"no series with SeriesInstanceUID {uid!r}; the folder holds "
                                 f"{_describe_series(folder, uids)}")
    return uid, sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid), len(uids)


def _count_dicom_files(folder: Path) -> int:
    """Files in ``folder`` that carry the DICOM preamble ('DICM' at byte 128)."""
    count = 0
    for entry in os.scandir(folder):
        if entry.is_file():
            with contextlib.suppress(OSError), open(entry.path, "rb") as fh:
                count += fh.read(132)[128:132] == b"DICM"
    return count


def _describe_series(folder: Path, uids: Sequence[str]) -> str:
    """'uid (description, n files); ...' for every series of a folder."""
    parts = []
    for uid in uids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        description = ""
        with contextlib.suppress(RuntimeError), itk_quiet():
            reader.ReadImageInformation()
            if reader.HasMetaDataKey("0008|103e"):
                description = reader.GetMetaData("0008|103e").strip()
        parts.append(f"{uid} ({description!r}, {len(files)} files)")
    return "; ".join(parts)


def _slice_tags(reader: sitk.ImageSeriesReader, n: int, tag: str) -> np.ndarray | None:
    """(n, m) array of a numeric multi-valued tag of every slice, or None if any lacks it or
    holds something other than m finite numbers."""
    rows = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, tag):
            return None
        try:
            rows.append([float(v) for v in reader.GetMetaData(i, tag).split("\\")])
        except ValueError:
            return None
    if len({len(r) for r in rows}) != 1:
        return None
    out = np.asarray(rows)
    return out if np.isfinite(out).all() else None


def _slice_notes(depths: np.ndarray, spacing: float) -> tuple[str, ...]:
    """Notes on non-uniform steps and gaps between sorted slice positions (mm along the normal).

    See :func:`read_volume` for the rule.
    """
    steps = np.abs(np.diff(depths))
    if steps.size < 2:
        return ()
    median = float(np.median(steps))
    tolerance = max(SLICE_STEP_RTOL * median, SLICE_STEP_ATOL_MM)
    notes = []
    if np.abs(steps - median).max() > tolerance:
        notes.append(f"non-uniform slice spacing: steps between slice positions range from "
                     f"{steps.min():.4g} to {steps.max():.4g} mm (median {median:.4g} mm); "
                     f"the volume assumes equal steps of {spacing:.4g} mm")
    gaps = np.flatnonzero(steps > SLICE_GAP_FACTOR * median)
    if gaps.size:
        where = ", ".join(f"{steps[g]:.4g} mm after slice {g}" for g in gaps[:5])
        notes.append(f"possible missing slices: {gaps.size} gap(s) over {SLICE_GAP_FACTOR} x "
                     f"the median step {median:.4g} mm ({where})")
    return tuple(notes)
