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
from .volume import LPS_TO_RAS, Volume, as_3d, lps_geometry

__all__ = ["volume_from_sitk", "volume_to_sitk", "read_itk_file", "itk_message", "itk_quiet"]


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
        raise read_error(source, f"{image.GetNumberOfComponentsPerPixel()} components per voxel "
                         f"({image.GetPixelIDTypeAsString()})", "volqa needs a scalar volume")
    kji = sitk.GetArrayViewFromImage(image)
    array = as_3d(kji.transpose(tuple(range(kji.ndim))[::-1]), source)
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
    spacing, direction, origin = lps_geometry(volume.affine)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def read_itk_file(path: Path, source: str, image_io: str = "") -> Volume:
    """Read an MHA/MHD/NRRD file (or one DICOM file with ``image_io="GDCMImageIO"``)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io:
        reader.SetImageIO(image_io)
    with itk_quiet():
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise read_error(source, f"SimpleITK cannot read it ({itk_message(e)})") from None
    return volume_from_sitk(image, source)


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
