"""Read medical volumes into one type, :class:`Volume`, and write NIfTI files.

Every reader returns a :class:`Volume`: a float32 array indexed ``(i, j, k)`` and a
``(4, 4)`` affine mapping voxel indices to world RAS+ millimetres (nibabel's convention).

Formats
-------
- ``.nii`` / ``.nii.gz``: nibabel (sform if set, else qform; ``scl_slope``/``scl_inter``
  applied).
- ``.mha`` / ``.mhd`` / ``.nrrd`` / ``.nhdr``: SimpleITK.
- A folder of DICOM files: SimpleITK's ``ImageSeriesReader``. Series are listed with
  ``GetGDCMSeriesIDs`` and the files of the chosen series are sorted along the slice normal
  by ``GetGDCMSeriesFileNames``; subfolders are not searched. ``"folder#<SeriesInstanceUID>"``
  (or ``series_uid=``) picks one series of a folder that holds several.
- A single DICOM file (``.dcm``/``.dicom``/``.ima``, or any file with the ``DICM`` preamble),
  e.g. a multi-frame object.

DICOM RescaleSlope/RescaleIntercept are applied by SimpleITK (GDCM); integer voxels of every
format become float32 after scaling, so ``int16 * slope + intercept`` cannot overflow.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import aff2axcodes

from .errors import InputError, SettingsError

__all__ = [
    "LPS_TO_RAS",
    "Volume",
    "read_volume",
    "volume_from_sitk",
    "volume_to_sitk",
    "write_nifti",
]

# World coordinates. nibabel, NIfTI and volqa use RAS+: +x towards the patient's Right,
# +y Anterior, +z Superior. DICOM and ITK (SimpleITK) use LPS+: +x Left, +y Posterior,
# +z Superior. The same point therefore has x and y negated in the other system, and
# affine_ras = LPS_TO_RAS @ affine_lps (the matrix is its own inverse, so it also converts
# back). This is the only place in volqa where the flip is defined.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
FILE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + DICOM_SUFFIXES

# DICOM slice-position rule (see _slice_notes): a step between neighbouring slices is
# "non-uniform" when it differs from the median step by more than max(1 % of the median,
# 0.01 mm), and a step larger than 1.5 x the median is a gap ("missing slices").
SLICE_STEP_RTOL = 0.01
SLICE_STEP_ATOL_MM = 0.01
SLICE_GAP_FACTOR = 1.5
# Largest difference between the direction cosines of two slices of one series.
SLICE_ORIENTATION_ATOL = 1e-4


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D scalar volume and its voxel-to-world geometry.

    Parameters
    ----------
    array : (I, J, K) float32 ndarray
        Voxel values in nibabel's index order ``(i, j, k)``. Other float or integer dtypes
        are converted to float32.
    affine : (4, 4) float64 ndarray
        Maps a voxel index ``(i, j, k, 1)`` to world RAS+ millimetres.
    source : str
        The path as given to :func:`read_volume` (plus ``"#<SeriesInstanceUID>"`` when a
        DICOM series was picked), used in messages.
    notes : tuple of str
        Non-fatal findings of the reader, e.g. non-uniform DICOM slice spacing.
    """

    array: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)
    source: str
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        array = np.asarray(self.array, dtype=np.float32)
        affine = np.asarray(self.affine, dtype=np.float64)
        if array.ndim != 3:
            raise ValueError(f"Volume needs a 3-D array, got shape {array.shape} ({self.source})")
        if affine.shape != (4, 4):
            raise ValueError(f"Volume needs a (4, 4) affine, got {affine.shape} ({self.source})")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(I, J, K)``."""
        i, j, k = self.array.shape
        return (int(i), int(j), int(k))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (norms of the affine's columns)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) ndarray: columns are the unit vectors of the i, j, k axes in RAS+."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def origin(self) -> np.ndarray:
        """(3,) ndarray: RAS+ position in mm of the centre of voxel ``(0, 0, 0)``."""
        return self.affine[:3, 3].copy()

    @property
    def orientation(self) -> str:
        """Axis codes from :func:`nibabel.orientations.aff2axcodes`, e.g. ``"RAS"``, ``"LPS"``.

        Each letter names the world direction the i, j or k axis points to (for an oblique
        affine, the closest one).
        """
        return "".join(aff2axcodes(self.affine))

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:g}" for s in self.spacing)
        return (
            f"Volume(source={self.source!r}, shape={self.shape}, spacing=({spacing}), "
            f"orientation={self.orientation!r}, notes={len(self.notes)})"
        )


# --------------------------------------------------------------------------- public API


def read_volume(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Volume:
    """Read a 3-D volume from a NIfTI, MHA/MHD/NRRD or DICOM file or a DICOM folder.

    Parameters
    ----------
    path : str or os.PathLike
        A file, a folder of DICOM files, or ``"folder#<SeriesInstanceUID>"``.
    series_uid : str, optional
        SeriesInstanceUID to read from a DICOM folder that holds several series.

    Returns
    -------
    Volume
        float32 array ``(i, j, k)`` and RAS+ affine.

    Raises
    ------
    InputError
        Naming the file and the cause: missing, empty (0 bytes), a directory where a file is
        expected, unreadable, unknown extension, corrupt gzip stream, truncated NIfTI, not a
        NIfTI image, colour/vector voxels, 4-D with more than one volume, 2-D image, empty
        folder, folder without DICOM, several series and none named, unknown series,
        slices of one series with different orientations, NaN/Inf voxels.

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
    text, series_uid, source = _split_series(os.fspath(path), series_uid)
    p = Path(text)
    if not p.exists():
        raise _fail(source, "no such file or directory", "check the path")
    if p.is_dir():
        if _suffix(p) in FILE_SUFFIXES:
            raise _fail(source, f"is a directory, but a {_suffix(p)} file was expected",
                        "point to the file itself")
        volume = _read_dicom_folder(p, series_uid, source)
    else:
        if series_uid is not None:
            raise _fail(source, "a series UID was given but the path is a file, not a DICOM folder",
                        "drop '#<uid>' / series_uid or give the folder")
        volume = _read_file(p, source)
    _check_finite(volume)
    return volume


def volume_from_sitk(image: sitk.Image, source: str, notes: Sequence[str] = ()) -> Volume:
    """Convert a SimpleITK image (LPS geometry, array ``(k, j, i)``) to a :class:`Volume`.

    Parameters
    ----------
    image : SimpleITK.Image
        Scalar image with 3 spatial axes (trailing axes of length 1 are dropped).
    source : str
        Name used in messages and stored in :attr:`Volume.source`.
    notes : sequence of str
        Stored in :attr:`Volume.notes`.

    Returns
    -------
    Volume
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise _fail(source, f"{image.GetNumberOfComponentsPerPixel()} components per voxel "
                            f"({image.GetPixelIDTypeAsString()})", "volqa needs a scalar volume")
    kji = sitk.GetArrayViewFromImage(image)
    array = _as_3d(kji.transpose(tuple(range(kji.ndim))[::-1]), source)
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.asarray(image.GetSpacing()[:3])
    affine_lps[:3, 3] = image.GetOrigin()[:3]
    copied = np.array(array, dtype=np.float32, order="C")  # never a view of the ITK buffer
    return Volume(copied, LPS_TO_RAS @ affine_lps, source, tuple(notes))


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """Convert a :class:`Volume` to a float32 SimpleITK image with LPS geometry.

    Parameters
    ----------
    volume : Volume

    Returns
    -------
    SimpleITK.Image
        Size ``(I, J, K)``; spacing, direction and origin from ``LPS_TO_RAS @ affine``.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    spacing, direction, origin = _lps_geometry(volume.affine)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def write_nifti(array: np.ndarray, like: Volume, path: str | os.PathLike[str]) -> None:
    """Write ``array`` as NIfTI in the geometry of ``like``, atomically.

    Parameters
    ----------
    array : (I, J, K) ndarray
        Same shape as ``like.array``. Floats are stored as float32, booleans as uint8,
        integers unchanged.
    like : Volume
        Its affine becomes the sform and qform (code 1, scanner) of the file.
    path : str or os.PathLike
        Ends in ``.nii`` or ``.nii.gz`` (gzip-compressed).

    Notes
    -----
    The file is written to a temporary name in the same folder and moved over ``path`` with
    :func:`os.replace`, so readers never see a half-written file.
    """
    target = Path(path)
    suffix = _suffix(target)
    if suffix not in NIFTI_SUFFIXES:
        raise SettingsError(f"write_nifti writes .nii or .nii.gz files, got {str(target)!r}")
    data = np.asarray(array)
    if data.shape != like.shape:
        raise SettingsError(f"write_nifti: array shape {data.shape} differs from the shape "
                            f"{like.shape} of {like.source!r} whose geometry it should take")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype.kind == "f":
        data = data.astype(np.float32, copy=False)
    image = nib.Nifti1Image(data, like.affine)
    image.set_sform(like.affine, code=1)
    image.set_qform(like.affine, code=1)
    stem = target.name[: -len(suffix)]
    tmp = target.with_name(f".{stem}.tmp-{secrets.token_hex(4)}{suffix}")
    try:
        nib.save(image, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- files


def _read_file(path: Path, source: str) -> Volume:
    head = _check_file(path, source)
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path, source)
    if suffix in ITK_SUFFIXES:
        return _read_itk_file(path, source)
    if suffix in DICOM_SUFFIXES or head[128:132] == b"DICM":
        return _read_itk_file(path, source, image_io="GDCMImageIO")
    raise _fail(source, f"unknown extension {suffix or '(none)'!r} and not a DICOM file",
                f"volqa reads {', '.join(NIFTI_SUFFIXES + ITK_SUFFIXES)}, DICOM files and "
                "DICOM folders")


def _check_file(path: Path, source: str) -> bytes:
    """Reject empty and unreadable files; return the first 132 bytes."""
    if path.stat().st_size == 0:
        raise _fail(source, "the file is empty (0 bytes)", "re-create or re-copy it")
    try:
        with open(path, "rb") as f:
            return f.read(132)
    except PermissionError:
        raise _fail(source, "permission denied (the file is not readable by this user)",
                    "fix its permissions") from None
    except OSError as e:
        raise _fail(source, f"cannot open it ({e.strerror or e})") from None


def _read_nifti(path: Path, source: str) -> Volume:
    raw = path.read_bytes()
    if _suffix(path) == ".nii.gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            if raw[344:347] in (b"n+1", b"ni1", b"n+2", b"ni2") or raw[4:8] == b"n+2\0":
                raise _fail(source, "not gzip-compressed although named .nii.gz: it is a plain "
                                    "NIfTI file", "rename it to .nii") from None
            raise _fail(source, f"corrupt gzip stream ({e})",
                        "the file is damaged or incomplete: re-create or re-copy it") from None
    image = _parse_nifti(raw, source)
    shape = image.header.get_data_shape()
    dtype = image.header.get_data_dtype()
    needed = int(image.dataobj.offset) + int(np.prod(shape)) * dtype.itemsize
    if len(raw) < needed:
        raise _fail(source, f"truncated NIfTI: the header says {shape} voxels of {dtype} "
                            f"({needed} bytes with the header), the data holds {len(raw)} bytes",
                    "the file is incomplete: re-create or re-copy it")
    try:
        data = np.asarray(image.dataobj)  # applies scl_slope / scl_inter in floating point
    except (OSError, ValueError) as e:
        raise _fail(source, f"cannot read the voxel data ({e})") from None
    array = _as_3d(data, source).astype(np.float32)
    return Volume(array, image.affine, source)


def _parse_nifti(raw: bytes, source: str) -> nib.Nifti1Image:
    """Parse NIfTI-1 or NIfTI-2 bytes, choosing by the header size field (348 or 540)."""
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    klass = nib.Nifti1Image if 348 in sizes else nib.Nifti2Image if 540 in sizes else None
    if klass is None or len(raw) < 348:
        raise _fail(source, "not a NIfTI image (no NIfTI-1/2 header: the first 4 bytes should "
                            "hold the header size 348 or 540)",
                    "is it another format, or text, renamed to .nii?")
    try:
        return klass.from_bytes(raw)
    except Exception as e:  # nibabel raises several types for a damaged header
        raise _fail(source, f"invalid NIfTI header ({e})") from None


def _read_itk_file(path: Path, source: str, image_io: str = "") -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io:
        reader.SetImageIO(image_io)
    with _itk_quiet():
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise _fail(source, f"SimpleITK cannot read it ({_itk_message(e)})") from None
    return volume_from_sitk(image, source)


# --------------------------------------------------------------------------- DICOM folders


def _read_dicom_folder(folder: Path, series_uid: str | None, source: str) -> Volume:
    try:
        count = len(os.listdir(folder))
    except PermissionError:
        raise _fail(source, "permission denied (the folder is not readable)") from None
    if count == 0:
        raise _fail(source, "empty folder", "expected the DICOM files of one series")
    with _itk_quiet():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise _fail(source, f"no DICOM series in this folder ({count} entries; subfolders are "
                            "not searched)",
                    "point to the folder holding the DICOM files, or to a NIfTI/MHA/NRRD file")
    if series_uid is None and len(uids) > 1:
        raise _fail(source, f"the folder holds {len(uids)} DICOM series: "
                            f"{_describe_series(folder, uids)}",
                    f"name one as '{folder}#<SeriesInstanceUID>' (or series_uid=...)")
    uid = series_uid or uids[0]
    if uid not in uids:
        raise _fail(source, f"no series with SeriesInstanceUID {uid!r}; the folder holds "
                            f"{_describe_series(folder, uids)}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    with _itk_quiet():
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise _fail(source, f"SimpleITK cannot read series {uid} ({_itk_message(e)})") from None
    orientations = _slice_tags(reader, len(files), "0020|0037")
    if orientations is not None and np.ptp(orientations, axis=0).max() > SLICE_ORIENTATION_ATOL:
        raise _fail(source, f"the {len(files)} slices of series {uid} have different "
                            "ImageOrientationPatient values, so they do not form one 3-D volume",
                    "is it a localizer or a radial series?")
    positions = _slice_tags(reader, len(files), "0020|0032")
    normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
    notes = _slice_notes(positions @ normal, image.GetSpacing()[2]) if positions is not None else ()
    if len(uids) == 1:
        left_out = _count_dicom_files(folder) - len(files)
        if left_out > 0:  # GDCM drops files it cannot parse, at either end of the stack too
            notes = (*notes, f"{left_out} DICOM file(s) in the folder are not part of series "
                             f"{uid} (damaged or truncated?); the volume has {len(files)} slices")
    return volume_from_sitk(image, source, notes)


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
        with contextlib.suppress(RuntimeError), _itk_quiet():
            reader.ReadImageInformation()
            if reader.HasMetaDataKey("0008|103e"):
                description = reader.GetMetaData("0008|103e").strip()
        parts.append(f"{uid} ({description!r}, {len(files)} files)")
    return "; ".join(parts)


def _slice_tags(reader: sitk.ImageSeriesReader, n: int, tag: str) -> np.ndarray | None:
    """(n, m) array of a numeric multi-valued tag of every slice, or None if any lacks it."""
    rows = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, tag):
            return None
        try:
            rows.append([float(v) for v in reader.GetMetaData(i, tag).split("\\")])
        except ValueError:
            return None
    return np.asarray(rows)


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


# --------------------------------------------------------------------------- helpers


def _split_series(text: str, series_uid: str | None) -> tuple[str, str | None, str]:
    """Split ``"folder#uid"`` (when no such path exists); return (path, uid, source)."""
    if "#" in text and not os.path.exists(text):
        folder, uid = text.rsplit("#", 1)
        if series_uid is not None and series_uid != uid:
            raise _fail(text, f"two series UIDs given: {uid!r} in the path and "
                              f"{series_uid!r} as series_uid", "give one")
        return folder, uid, text
    return text, series_uid, text if series_uid is None else f"{text}#{series_uid}"


def _as_3d(data: np.ndarray, source: str) -> np.ndarray:
    """Drop trailing length-1 axes beyond the third; reject 2-D and multi-volume data."""
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise _fail(source, f"{len(shape)}-D image of shape {shape} "
                            f"({int(np.prod(shape[3:]))} volumes)",
                    "volqa compares single 3-D volumes: extract one volume first")
    if data.ndim < 3 or 1 in data.shape:
        raise _fail(source, f"2-D image of shape {shape}; volqa needs a 3-D volume",
                    "for a DICOM slice, give the folder holding the whole series")
    return data


def _check_finite(volume: Volume) -> None:
    nan = int(np.isnan(volume.array).sum())
    inf = int(np.isinf(volume.array).sum())
    if nan or inf:
        raise _fail(volume.source, f"{nan} NaN and {inf} Inf voxels (of {volume.array.size}; "
                                   "values beyond the float32 range count as Inf)",
                    "volqa does not guess values: fix or replace them and save again")


def _lps_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """SimpleITK (LPS) spacing, row-major direction and origin of a RAS affine."""
    affine_lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    direction = affine_lps[:3, :3] / spacing
    return spacing.tolist(), direction.ravel().tolist(), affine_lps[:3, 3].tolist()


def _suffix(path: Path) -> str:
    """Lower-case extension, with ``.nii.gz`` as one suffix."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _fail(source: str, cause: str, hint: str = "") -> InputError:
    return InputError(f"cannot read {source!r}: {cause}" + (f"; {hint}" if hint else ""))


def _itk_message(error: RuntimeError) -> str:
    """The last meaningful line of a SimpleITK exception text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        if prefix in last:
            last = last.split(prefix, 1)[1].strip()
    return last


@contextlib.contextmanager
def _itk_quiet() -> Iterator[None]:
    """Silence ITK warnings on stderr (findings are reported as notes or errors instead).

    ITK's switch is global and volumes are read from several threads: the first reader in
    turns it off, the last one out restores it.
    """
    global _quiet_depth, _quiet_saved
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                sitk.ProcessObject.SetGlobalWarningDisplay(_quiet_saved)


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved = True
