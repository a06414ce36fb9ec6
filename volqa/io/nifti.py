"""NIfTI-1/2 files: read with nibabel (sform if set, else qform; scl_slope/scl_inter applied;
positions converted to mm from the header's spatial unit), write through volqa's atomic
writer."""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from ..errors import InputError, SettingsError
from .atomic import atomic_write
from .paths import NIFTI_SUFFIXES, read_error, suffix
from .volume import Volume, as_3d, as_float32, check_affine, check_memory, integer_notes

__all__ = ["read_nifti", "read_nifti_header", "check_nifti_header", "affine_mm",
           "form_notes", "write_nifti"]


#: Bytes read (after decompression) to parse a header: NIfTI-2's 540 plus the extension flag.
_HEAD_BYTES = 544
_SINGLE_FILE_MAGIC = {b"n+1": 352, b"n+2": 544}  # magic -> first byte voxel data may start


def read_nifti(path: Path, source: str, max_bytes: int | None = None) -> Volume:
    """Read a ``.nii`` or ``.nii.gz`` file, checking the header before the data.

    The header is parsed from the first bytes only (for ``.nii.gz`` only those are
    decompressed) and checked (:func:`check_nifti_header`, and the declared size against
    ``max_bytes``) before the data is read (:func:`read_data`); then the gzip stream and the
    data length.
    """
    header = read_nifti_header(path, source)
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    check_memory(shape, source, max_bytes)
    offset = int(header["vox_offset"])
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    try:
        raw = read_data(path, needed)
    except (EOFError, zlib.error) as e:
        raise read_error(source, f"corrupt gzip stream ({e})",
                         "the file is damaged or incomplete: re-create or re-copy it") from None
    if len(raw) < needed:
        raise read_error(source, f"truncated NIfTI: the header says {shape} voxels of {dtype} "
                                 f"({needed} bytes with the header), the data holds "
                                 f"{len(raw)} bytes", "the file is incomplete: re-create or "
                                 "re-copy it")
    # the header and its extensions (the voxels are viewed in ``raw`` below, not copied)
    image = _parse_nifti(bytes(raw[:max(offset, _HEAD_BYTES)]), source)
    proxy = image.dataobj
    try:
        # the stored voxels, a view of the decompressed bytes (nibabel would copy them first)
        stored = np.ndarray(shape, dtype, buffer=raw, offset=offset, order=proxy.order)
        if dtype.kind in "iu" and dtype.itemsize == 8:  # check 64-bit integers before scaling
            integer_notes(stored, source)
        # scl_slope / scl_inter in floating point, as nibabel's ArrayProxy applies them
        data = apply_read_scaling(stored, np.asanyarray(proxy.slope), np.asanyarray(proxy.inter))
    except (OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise read_error(source, f"cannot read the voxel data ({e})") from None
    array, notes = as_float32(as_3d(data, source), source)
    affine, unit_notes = affine_mm(header, image.affine)
    return Volume(array, affine, source, (*notes, *unit_notes, *form_notes(header)))


#: NIfTI's spatial units (``xyzt_units``) other than mm, in millimetres; "unknown" is read as
#: mm, as every tool reads it.
_UNIT_MM = {"meter": 1000.0, "micron": 1e-3}


def _mm_per_unit(header: nib.Nifti1Header) -> tuple[float, str]:
    """(millimetres per unit of the header's positions, the unit's name)."""
    unit = header.get_xyzt_units()[0]
    return _UNIT_MM.get(unit, 1.0), unit


def affine_mm(header: nib.Nifti1Header, affine: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """The affine in millimetres, with a note when the header's spatial unit is another.

    The NIfTI standard gives positions and voxel sizes in the header's unit (``xyzt_units``),
    and ITK converts metres and microns to mm; nibabel leaves the numbers as they are. volqa
    converts, so that a NIfTI and an ITK file of one volume are on one grid and the
    ``spacing`` column is in mm.
    """
    factor, unit = _mm_per_unit(header)
    if factor == 1.0:
        return affine, ()
    out = np.array(affine, dtype=np.float64)
    out[:3] *= factor
    return out, (f"the header gives positions in {unit}s; volqa converts them to mm (x{factor:g}), "
                 "as ITK does (nibabel alone would read them as mm)",)


#: sform and qform place a voxel apart by more than this fraction of the smallest voxel size
#: (at least ``_FORM_MIN_ATOL_MM``): float32 header fields agree far closer than that.
_FORM_TOL_VOXELS = 1e-3
_FORM_MIN_ATOL_MM = 1e-4


def form_notes(header: nib.Nifti1Header) -> tuple[str, ...]:
    """A note when the sform and the qform both name a space (codes > 0) and place the volume
    differently: volqa uses the sform, as nibabel does, and a tool that prefers the qform puts
    the same voxels elsewhere. The distance is the largest over the volume's eight corners."""
    if int(header["sform_code"]) <= 0 or int(header["qform_code"]) <= 0:
        return ()
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in header.get_data_shape()[:3]],
                                   indexing="ij"))
    corners = np.vstack([corners.reshape(3, -1), np.ones((1, 8))])
    sform, qform = header.get_sform(), header.get_qform()
    mm = _mm_per_unit(header)[0]
    apart = mm * float(np.linalg.norm((sform - qform)[:3] @ corners, axis=0).max())
    voxel = mm * float(np.linalg.norm(sform[:3, :3], axis=0).min())
    if not apart > max(_FORM_TOL_VOXELS * voxel, _FORM_MIN_ATOL_MM):
        return ()
    return (f"the header's sform and qform place the volume up to {apart:.3g} mm apart; "
            "volqa uses the sform (as nibabel does), so a tool that uses the qform puts these "
            "voxels elsewhere",)


#: Compressed bytes read and inflated at once, and the most bytes one call inflates.
_IN_CHUNK = 1 << 18
_OUT_CHUNK = 1 << 22
_NONZERO = re.compile(rb"[^\x00]")


def read_data(path: Path, size: int) -> np.ndarray:
    """The first ``size`` bytes (what the header declares) of a ``.nii`` file, or of the
    decompressed stream of a ``.nii.gz``, in one numpy buffer; fewer if the file holds fewer.

    A ``.nii.gz`` is inflated as it is read, 256 KiB at a time, so the compressed file is never
    held whole, and each inflated piece goes straight into the buffer (zlib alone would
    collect the pieces and join them: twice the memory). numpy maps a large buffer with
    transparent huge pages where the kernel offers them: 64 MiB then costs 32 page faults
    instead of the 16,384 of a ``bytes`` object, and page faults are slow on virtual machines.
    Bytes past ``size`` are inflated and checked but not kept, so a stream that inflates to
    more than its header declares cannot take more memory. zlib checks each member's CRC-32
    and length; zero bytes between or after members are padding, as gzip allows; a stream
    that ends inside a member raises :class:`EOFError`.
    """
    if suffix(path) != ".nii.gz":
        return np.fromfile(path, np.uint8, count=size)
    out = np.empty(size, np.uint8)
    filled = 0

    def keep(piece: bytes) -> None:
        nonlocal filled
        n = min(len(piece), size - filled)
        if n > 0:
            out[filled:filled + n] = np.frombuffer(piece, np.uint8, count=n)
            filled += n

    with open(path, "rb", buffering=0) as fh:
        member = None
        while chunk := fh.read(_IN_CHUNK):
            while chunk:
                if member is None:  # between members: skip zero padding
                    start = _NONZERO.search(chunk)
                    if start is None:
                        break
                    member, chunk = zlib.decompressobj(wbits=31), chunk[start.start():]
                keep(member.decompress(chunk, _OUT_CHUNK))
                while member.unconsumed_tail and not member.eof:  # the rest: unused_data
                    keep(member.decompress(member.unconsumed_tail, _OUT_CHUNK))
                if not member.eof:
                    break
                member, chunk = None, member.unused_data
    if member is not None:
        raise EOFError("the stream ends before its end-of-stream marker")
    return out[:filled]


def read_nifti_header(path: Path, source: str) -> nib.Nifti1Header:
    """The header of a ``.nii``/``.nii.gz`` file as stored (not "fixed" by nibabel), from its
    first bytes only, checked by :func:`check_nifti_header`."""
    try:
        if suffix(path) == ".nii.gz":
            with gzip.open(path, "rb") as fh:
                head = fh.read(_HEAD_BYTES)
        else:
            with open(path, "rb") as fh:
                head = fh.read(_HEAD_BYTES)
    except (OSError, EOFError, zlib.error) as e:
        with open(path, "rb") as fh:
            start = fh.read(_HEAD_BYTES)
        if start[344:347] in (b"n+1", b"ni1", b"n+2", b"ni2") or start[4:8] == b"n+2\0":
            raise read_error(source, "not gzip-compressed although named .nii.gz: it is a "
                                     "plain NIfTI file", "rename it to .nii") from None
        raise read_error(source, f"corrupt gzip stream ({e})",
                         "the file is damaged or incomplete: re-create or re-copy it") from None
    klass = _nifti_class(head, source)
    try:
        header = klass.header_class.from_fileobj(io.BytesIO(head), check=False)
    except Exception as e:  # nibabel raises several types for a damaged header
        raise read_error(source, f"invalid NIfTI header ({e})") from None
    check_nifti_header(header, source)
    return header


def check_nifti_header(header: nib.Nifti1Header, source: str) -> None:
    """Refuse headers that would give silently wrong voxels or positions.

    - ``vox_offset`` inside the header of a single-file NIfTI (the header would be read as
      voxel data; it must be at least 352 for NIfTI-1, 544 for NIfTI-2);
    - complex or colour (RGB/RGBA) data types;
    - a non-finite entry in the transform the affine comes from (the sform when
      ``sform_code > 0``, else the quaternion qform, else pixdim), or a zero or non-finite
      voxel size (pixdim) where the qform or pixdim decides the affine.
    """
    magic = bytes(header["magic"]).rstrip(b"\0")
    first = _SINGLE_FILE_MAGIC.get(magic)
    offset = float(header["vox_offset"])
    if first is not None and not offset >= first:
        raise read_error(source, f"vox_offset = {offset:g} in the header, but the voxel data "
                         f"of a single-file NIfTI ({magic.decode()}) starts at byte {first} or "
                         "later: the header itself would be read as voxels",
                         "the header is damaged: re-create the file")
    dtype = header.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "c":
        as_float32(np.empty(0, dtype), source)  # the one message for these types
    fields: list[tuple[str, np.ndarray]]
    if int(header["sform_code"]) > 0:
        fields = [(f"srow_{a}", np.asarray(header[f"srow_{a}"])) for a in "xyz"]
    else:
        fields = [("pixdim[1:4]", np.asarray(header["pixdim"][1:4]))]
        if int(header["qform_code"]) > 0:
            fields += [(n, np.asarray([header[n]])) for n in
                       ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                        "qoffset_z")]
    for name, values in fields:
        if not np.isfinite(values).all():
            raise read_error(source, f"the header's {name} = {values.tolist()} has non-finite "
                             "entries, so the volume's position in space cannot be known",
                             "fix the header (or copy the reference's header) and save again")
    if int(header["sform_code"]) == 0:
        pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
        if not np.all(pixdim != 0):
            raise read_error(source, f"zero voxel size in the header: pixdim[1:4] = "
                             f"{pixdim.tolist()} (the qform/pixdim decides the geometry)",
                             "set the voxel size (pixdim) and save again")


def _nifti_class(raw: bytes, source: str) -> type[nib.Nifti1Image]:
    """NIfTI-1 or NIfTI-2, chosen by the header size field (348 or 540)."""
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    klass = nib.Nifti1Image if 348 in sizes else nib.Nifti2Image if 540 in sizes else None
    if klass is None or len(raw) < 348:
        raise read_error(source, "not a NIfTI image (no NIfTI-1/2 header: the first 4 bytes should "
                                 "hold the header size 348 or 540)",
                         "is it another format, or text, renamed to .nii?")
    return klass


def _parse_nifti(raw: bytes, source: str) -> nib.Nifti1Image:
    """Parse NIfTI-1 or NIfTI-2 bytes."""
    klass = _nifti_class(raw, source)
    try:
        image = klass.from_bytes(raw)
    except Exception as e:  # nibabel raises several types for a damaged header
        raise read_error(source, f"invalid NIfTI header ({e})") from None
    origin = "the sform" if int(image.header["sform_code"]) > 0 else (
        "the qform" if int(image.header["qform_code"]) > 0 else "the pixdim affine")
    check_affine(image.affine, source, origin)
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
    image.header.set_xyzt_units(xyz="mm")
    atomic_write(target, lambda tmp: nib.save(image, tmp))
