"""The one volume type, :class:`Volume`, and the one definition of the RAS <-> LPS flip.

A :class:`Volume` is a float32 array indexed ``(i, j, k)`` and a ``(4, 4)`` affine mapping voxel
indices to world RAS+ millimetres (nibabel's convention). Its geometry (spacing, direction,
origin, orientation codes from :mod:`nibabel.orientations`) is derived from the affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nibabel.orientations import aff2axcodes

from .paths import read_error

__all__ = ["LPS_TO_RAS", "Volume", "lps_geometry", "as_3d", "as_float32", "c_order_float32",
           "check_finite", "check_affine", "check_memory", "format_bytes", "integer_notes"]

#: Integers above this magnitude are not all exactly representable in float64 (2**53).
FLOAT64_EXACT_INT = 2**53
#: ... and in float32, volqa's working type (2**24): larger values are rounded (a note).
FLOAT32_EXACT_INT = 2**24
#: Bytes per voxel of a volume in memory (volqa holds every volume as float32).
BYTES_PER_VOXEL = 4

# World coordinates. nibabel, NIfTI and volqa use RAS+: +x towards the patient's Right,
# +y Anterior, +z Superior. DICOM and ITK (SimpleITK) use LPS+: +x Left, +y Posterior,
# +z Superior. The same point therefore has x and y negated in the other system, and
# affine_ras = LPS_TO_RAS @ affine_lps (the matrix is its own inverse, so it also converts
# back). This is the only place in volqa where the flip is defined.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D scalar volume and its voxel-to-world geometry.

    Parameters
    ----------
    array : (I, J, K) float32 ndarray
        Voxel values in nibabel's index order ``(i, j, k)``, C-contiguous. Other float or
        integer dtypes, and other memory layouts, are converted.
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
        array = c_order_float32(self.array)
        affine = np.asarray(self.affine, dtype=np.float64)
        if array.ndim != 3:
            raise ValueError(f"Volume needs a 3-D array, got shape {array.shape} ({self.source})")
        if affine.shape != (4, 4):
            raise ValueError(f"Volume needs a (4, 4) affine, got {affine.shape} ({self.source})")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "notes", tuple(self.notes))

    def __sizeof__(self) -> int:
        """Bytes held, the voxels included (``sys.getsizeof``; Dask's memory accounting)."""
        return object.__sizeof__(self) + self.array.nbytes + self.affine.nbytes

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


def lps_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """SimpleITK (LPS) spacing, row-major direction and origin of a RAS affine."""
    affine_lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    direction = affine_lps[:3, :3] / spacing
    return spacing.tolist(), direction.ravel().tolist(), affine_lps[:3, 3].tolist()


def as_3d(data: np.ndarray, source: str) -> np.ndarray:
    """Drop trailing length-1 axes beyond the third; reject 2-D and multi-volume data."""
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise read_error(source, f"{len(shape)}-D image of shape {shape} "
                         f"({int(np.prod(shape[3:]))} volumes)",
                         "volqa compares single 3-D volumes: extract one volume first")
    if data.ndim < 3 or 1 in data.shape:
        raise read_error(source, f"2-D image of shape {shape}; volqa needs a 3-D volume",
                         "for a DICOM slice, give the folder holding the whole series")
    return data


def check_finite(volume: Volume) -> None:
    """Refuse NaN and Inf voxels (volqa does not guess values)."""
    if np.isfinite(volume.array).all():  # one pass; the counts only for the message
        return
    nan = int(np.isnan(volume.array).sum())
    inf = int(np.isinf(volume.array).sum())
    if nan or inf:
        raise read_error(volume.source, f"{nan} NaN and {inf} Inf voxels (of "
                         f"{volume.array.size}; values beyond the float32 range count as Inf)",
                         "volqa does not guess values: fix or replace them and save again")


def as_float32(data: np.ndarray, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Real-valued voxels as float32, refusing what a conversion would silently change.

    Complex voxels (the imaginary part would be dropped), colour (RGB/RGBA) voxels and
    integers beyond 2**53 (not exact in any floating-point type volqa uses) are an
    :class:`~volqa.errors.InputError`; integers beyond 2**24, which float32 rounds, get a note.

    Returns
    -------
    (ndarray, tuple of str)
        The float32 array (C order) and the notes.
    """
    dtype = np.dtype(data.dtype)
    if dtype.fields is not None:
        raise read_error(source, f"colour voxels ({', '.join(dtype.names or ())} channels): "
                         "volqa needs a scalar (greyscale) volume",
                         "convert it to one intensity channel first")
    if dtype.kind == "c":
        raise read_error(source, f"complex-valued voxels ({dtype}): volqa scores real-valued "
                         "volumes and will not drop the imaginary part silently",
                         "save the magnitude (numpy.abs) or the real part as a real image")
    notes = integer_notes(data, source)
    # one copy, into C order: NIfTI data is stored Fortran-ordered, and every consumer (the
    # SSIM engine, the error sums) works in slabs along the first axis
    return c_order_float32(data), notes


def integer_notes(data: np.ndarray, source: str) -> tuple[str, ...]:
    """Check integer voxels against what floating point holds exactly (no copy): beyond 2**53
    an :class:`~volqa.errors.InputError`, beyond 2**24 (float32 rounds them) a note."""
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "iu" or not data.size:
        return ()
    largest = max(abs(int(data.min())), abs(int(data.max())))
    if largest > FLOAT64_EXACT_INT:
        raise read_error(source, f"{dtype} voxel values up to {largest} exceed 2**53 = "
                         f"{FLOAT64_EXACT_INT}, beyond which integers are not exact in "
                         "floating point (their differences would be lost)",
                         "store the values in a smaller range (e.g. with a scale factor)")
    if largest > FLOAT32_EXACT_INT:
        return (f"{dtype} voxel values up to {largest} exceed 2**24 = {FLOAT32_EXACT_INT}: "
                "float32 rounds them (relative error <= 6e-8)",)
    return ()


#: Edge of the blocks :func:`c_order_float32` copies (16 x all x 16 voxels).
_BLOCK = 16


def c_order_float32(data: np.ndarray) -> np.ndarray:
    """``data`` as a C-contiguous float32 array: itself when it already is one, else a copy.

    A 3-D array in another layout (NIfTI's Fortran order, ITK's reversed axes, a reoriented
    view) is copied in blocks of 16 along its first and last axes. ``numpy.ascontiguousarray``
    walks the whole source at a stride of a plane per element, which at power-of-two sizes
    (256^3, 512 x 512 x N) keeps evicting the same cache sets: 3x slower than the blocks.
    """
    if data.ndim != 3 or data.flags.c_contiguous:
        return np.ascontiguousarray(data, dtype=np.float32)
    out = np.empty(data.shape, dtype=np.float32)
    for i in range(0, data.shape[0], _BLOCK):
        for k in range(0, data.shape[2], _BLOCK):
            out[i:i + _BLOCK, :, k:k + _BLOCK] = data[i:i + _BLOCK, :, k:k + _BLOCK]
    return out


def check_affine(affine: np.ndarray, source: str, origin: str = "the affine") -> None:
    """Refuse a voxel-to-world matrix with non-finite entries or a zero-length voxel axis.

    Parameters
    ----------
    affine : (4, 4) ndarray
    source : str
        The file, for the message.
    origin : str
        Where the matrix came from (e.g. ``"the sform"``), for the message.
    """
    bad = np.argwhere(~np.isfinite(affine[:3]))
    if bad.size:
        where = ", ".join(f"[{i}, {j}] = {affine[i, j]}" for i, j in bad[:6])
        raise read_error(source, f"{origin} (voxel-to-world matrix) has non-finite entries "
                         f"({where}): the volume's position cannot be known",
                         "fix the header (or copy the reference's header) and save again")
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(lengths > 0) or abs(np.linalg.det(affine[:3, :3])) == 0.0:
        raise read_error(source, f"{origin} (voxel-to-world matrix) is singular: voxel sizes "
                         f"{tuple(round(float(v), 6) for v in lengths)} mm (a zero voxel size "
                         "or parallel axes)", "fix the header (voxel size / pixdim) and save "
                         "again")


def format_bytes(n: float) -> str:
    """``n`` bytes as e.g. ``"4 GiB"`` or ``"512.5 MiB"`` (powers of 1024)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.4g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_memory(shape: tuple[int, ...], source: str, max_bytes: int | None,
                 what: str = "the header declares") -> None:
    """Refuse, before reading, a volume whose float32 array would exceed ``max_bytes``.

    The estimate is ``voxels x 4`` bytes (volqa holds every volume as float32); reading takes
    up to about three times that for a moment (the stored data, a scaled copy, the float32
    array).
    """
    if max_bytes is None:
        return
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    need = voxels * BYTES_PER_VOXEL
    if need > max_bytes:
        dims = "x".join(str(int(n)) for n in shape)
        raise read_error(source, f"{what} {dims} voxels: {format_bytes(need)} as float32 in "
                         f"memory, more than the limit of {format_bytes(max_bytes)} per volume "
                         "(--max-volume-memory)", "raise the limit if this machine has the "
                         "memory, or crop or downsample the volume")
