"""NIfTI-1/2 files: read with nibabel (sform if set, else qform; scl_slope/scl_inter applied),
write through volqa's atomic writer."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import SettingsError
from .atomic import atomic_write
from .paths import NIFTI_SUFFIXES, read_error, suffix
from .volume import Volume, as_3d

__all__ = ["read_nifti", "write_nifti"]


def read_nifti(path: Path, source: str) -> Volume:
    """Read a ``.nii`` or ``.nii.gz`` file, checking the gzip stream and the data length."""
    raw = path.read_bytes()
    if suffix(path) == ".nii.gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            if raw[344:347] in (b"n+1", b"ni1", b"n+2", b"ni2") or raw[4:8] == b"n+2\0":
                raise read_error(source, "not gzip-compressed although named .nii.gz: it is a "
                                         "plain NIfTI file", "rename it to .nii") from None
            raise read_error(source, f"corrupt gzip stream ({e})",
                             "the file is damaged or incomplete: re-create or re-copy it") from None
    image = _parse_nifti(raw, source)
    shape = image.header.get_data_shape()
    dtype = image.header.get_data_dtype()
    needed = int(image.dataobj.offset) + int(np.prod(shape)) * dtype.itemsize
    if len(raw) < needed:
        raise read_error(source, f"truncated NIfTI: the header says {shape} voxels of {dtype} "
                                 f"({needed} bytes with the header), the data holds "
                                 f"{len(raw)} bytes", "the file is incomplete: re-create or "
                                 "re-copy it")
    try:
        data = np.asarray(image.dataobj)  # applies scl_slope / scl_inter in floating point
    except (OSError, ValueError) as e:
        raise read_error(source, f"cannot read the voxel data ({e})") from None
    # one copy into C order: NIfTI data is stored Fortran-ordered, and every consumer (the
    # SSIM engine, the error sums) works in slabs along the first axis
    array = np.array(as_3d(data, source), dtype=np.float32, order="C")
    return Volume(array, image.affine, source)


def _parse_nifti(raw: bytes, source: str) -> nib.Nifti1Image:
    """Parse NIfTI-1 or NIfTI-2 bytes, choosing by the header size field (348 or 540)."""
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    klass = nib.Nifti1Image if 348 in sizes else nib.Nifti2Image if 540 in sizes else None
    if klass is None or len(raw) < 348:
        raise read_error(source, "not a NIfTI image (no NIfTI-1/2 header: the first 4 bytes should "
                                 "hold the header size 348 or 540)",
                         "is it another format, or text, renamed to .nii?")
    try:
        return klass.from_bytes(raw)
    except Exception as e:  # nibabel raises several types for a damaged header
        raise read_error(source, f"invalid NIfTI header ({e})") from None


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
    Written through :func:`volqa.io.atomic.atomic_write`: readers never see a half-written file.
    """
    target = Path(path)
    if suffix(target) not in NIFTI_SUFFIXES:
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
    atomic_write(target, lambda tmp: nib.save(image, tmp))
