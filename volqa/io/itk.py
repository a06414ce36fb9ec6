"""SimpleITK images <-> :class:`~volqa.io.volume.Volume`, and reading ITK formats.

ITK and DICOM geometry is LPS; the conversion to volqa's RAS affine is ``LPS_TO_RAS``
(:mod:`volqa.io.volume`), applied here and nowhere else.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .paths import read_error
from .volume import (
    LPS_TO_RAS,
    Volume,
    as_3d,
    as_float32,
    check_affine,
    check_memory,
    lps_geometry,
)

__all__ = ["volume_from_sitk", "volume_to_sitk", "read_itk_file", "itk_size", "itk_message",
           "itk_quiet"]


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
    if image.GetNumberOfComponentsPerPixel() != 1 or "complex" in \
            image.GetPixelIDTypeAsString():
        raise read_error(source, f"{image.GetNumberOfComponentsPerPixel()} components per voxel "
                         f"({image.GetPixelIDTypeAsString()})", "volqa needs a scalar, "
                         "real-valued volume (save the magnitude or one channel)")
    kji = sitk.GetArrayViewFromImage(image)
    array = as_3d(kji.transpose(tuple(range(kji.ndim))[::-1]), source)
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.asarray(image.GetSpacing()[:3])
    affine_lps[:3, 3] = image.GetOrigin()[:3]
    check_affine(LPS_TO_RAS @ affine_lps, source, "the spacing, direction and origin")
    floats, found = as_float32(array, source)  # a copy, never a view of the ITK buffer
    return Volume(floats, LPS_TO_RAS @ affine_lps, source, (*notes, *found))


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
    spacing, direction, origin = lps_geometry(volume.affine)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def read_itk_file(path: Path, source: str, image_io: str = "",
                  max_bytes: int | None = None) -> Volume:
    """Read an MHA/MHD/NRRD file (or one DICOM file with ``image_io="GDCMImageIO"``).

    The header is read first (``ReadImageInformation``) and the declared size checked against
    ``max_bytes`` before any voxel is read.
    """
    reader = _header_reader(path, source, image_io)
    check_memory(_declared(reader), source, max_bytes)
    with itk_quiet():
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise read_error(source, f"SimpleITK cannot read it ({itk_message(e)})") from None
    return volume_from_sitk(image, source)


def itk_size(path: str | Path, source: str, image_io: str = "") -> tuple[int, ...]:
    """The size ``(i, j, k, ...)`` an ITK-readable file declares (header only), with the
    number of components per voxel appended when it is more than one."""
    return _declared(_header_reader(path, source, image_io))


def _declared(reader: sitk.ImageFileReader) -> tuple[int, ...]:
    components = reader.GetNumberOfComponents()
    return (*reader.GetSize(), *((components,) if components > 1 else ()))


def _header_reader(path: str | Path, source: str, image_io: str) -> sitk.ImageFileReader:
    """An ``ImageFileReader`` that has read the file's header (``ReadImageInformation``)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io:
        reader.SetImageIO(image_io)
    with itk_quiet():
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise read_error(source, f"SimpleITK cannot read it ({itk_message(e)})") from None
    return reader


def itk_message(error: RuntimeError) -> str:
    """The last meaningful line of a SimpleITK exception text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        if prefix in last:
            last = last.split(prefix, 1)[1].strip()
    return last


@contextlib.contextmanager
def itk_quiet() -> Iterator[None]:
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
