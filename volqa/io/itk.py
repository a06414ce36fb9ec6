"""SimpleITK images <-> :class:`~volqa.io.volume.Volume`, and reading ITK formats.

ITK and DICOM geometry is LPS; the conversion to volqa's RAS affine is ``LPS_TO_RAS``
(:mod:`volqa.io.volume`), applied here and nowhere else.
"""

from __future__ import annotations

import contextlib
import math
import re
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
           "itk_quiet", "check_metaimage_header"]

#: MetaImage fields that place the voxels in space, and the power of NDims numbers each holds.
_META_FIELDS = {"Offset": 1, "Origin": 1, "Position": 1, "ElementSpacing": 1, "ElementSize": 1,
                "TransformMatrix": 2, "Rotation": 2, "Orientation": 2}
#: Names MetaIO reads into the same place (the origin; the direction).
_META_SYNONYMS = (("Offset", "Origin", "Position"), ("TransformMatrix", "Rotation", "Orientation"))
#: A decimal number as a hand-written header would give it (no hex, no ``1_000``, no ``nan``).
_META_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_META_HEAD_BYTES = 1 << 16


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
    if not image_io and Path(path).suffix.lower() in (".mha", ".mhd"):
        check_metaimage_header(Path(path), source)
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


def check_metaimage_header(path: Path, source: str) -> None:
    """Refuse an MHA/MHD header whose geometry ITK would read other than it is written.

    ITK's MetaIO reads a field's numbers up to the first one it cannot parse (``nan``, ``inf``,
    ``1,2,3``, ``0x10``) and leaves the rest 0; it reads the first NDims numbers of a longer
    list and fills a shorter one with 0; it ignores keys in another case (``offset``); and of
    ``Offset``, ``Origin`` and ``Position`` it takes one. Each of these places the volume
    somewhere else without a word, and hand-written headers (for raw data) are common, so the
    fields are checked here: exactly NDims (NDims² for a matrix) finite decimal numbers, keys
    spelt as MetaIO spells them, and one value where a header names the same thing twice.
    A header ITK cannot read at all is left to ITK's own error.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(_META_HEAD_BYTES)
    except OSError:
        return
    fields: dict[str, list[str]] = {}
    for line in head.split(b"\n"):
        key, eq, value = line.decode("latin-1").partition("=")
        key = key.strip()
        if key == "ElementDataFile":
            break
        if eq:
            fields.setdefault(key, []).append(value.strip())
    try:
        ndims = int(fields["NDims"][-1])
    except (KeyError, ValueError):
        return
    fix = "fix the header and read again"
    spelt = {k.lower(): k for k in _META_FIELDS}
    for key, values in fields.items():
        known = spelt.get(key.lower())
        if known is not None and key != known:
            raise read_error(source, f"the header's key {key!r} is not MetaImage's {known!r} "
                             "(keys are case-sensitive, and ITK ignores this one)",
                             f"write it as {known!r}")
        if known is not None and len(set(values)) > 1:
            raise read_error(source, f"the header gives {key} twice, as "
                             f"{' and '.join(map(repr, values))}", fix)
    for key, power in _META_FIELDS.items():
        if key not in fields:
            continue
        tokens = fields[key][0].split()
        if len(tokens) != ndims ** power or not all(
                _META_NUMBER.fullmatch(t) and math.isfinite(float(t)) for t in tokens):
            raise read_error(source, f"the header's {key} = {fields[key][0]!r} is not "
                             f"{ndims ** power} finite decimal numbers (NDims = {ndims}): ITK "
                             "would read other numbers than are written, so where the voxels "
                             "lie in space cannot be known", fix)
    for names in _META_SYNONYMS:
        given = {k: tuple(map(float, fields[k][0].split())) for k in names if k in fields}
        if len(set(given.values())) > 1:
            raise read_error(source, "the header gives " + " and ".join(
                f"{k} = {fields[k][0]!r}" for k in given) + ", which MetaImage reads into "
                "the same place (ITK takes one of them)", f"keep one; {fix}")


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
