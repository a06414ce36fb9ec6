"""Voxel-wise error metrics (MSE, MAE, PSNR, NRMSE, NMSE) and the mean of a map inside a mask.

Conventions
-----------
- Sums are accumulated in float64 over slabs of the first axis, whatever the input dtype,
  so no float64 copy of a whole volume is made; a slab (2 MiB of float64) stays in the CPU's
  cache while its sums are taken, and no sum calls BLAS (whose threads would compete with the
  other rows of a batch for the cores).
- ``reference`` is the ground truth; ``test`` the reconstruction. Arguments are not symmetric
  for NRMSE (normalised by the reference).
- ``mse = mean((test - reference)**2)``, ``mae = mean(|test - reference|)``.
- ``psnr = 10 * log10(L**2 / mse)`` in dB with the data range ``L`` given by the caller;
  identical images give ``+inf`` (written as ``inf`` in CSV files). Equal to
  ``skimage.metrics.peak_signal_noise_ratio(reference, test, data_range=L)``.
- ``nrmse = sqrt(mse) / (max(reference) - min(reference))``: skimage's
  ``normalized_root_mse(reference, test, normalization="min-max")``. The range normalisation
  makes NRMSE independent of a common affine intensity map, so it does not depend on the
  ``--normalize`` mode (except for the clipping modes). A constant reference has no range:
  :func:`nrmse` raises :class:`~volqa.errors.InputError`.
- ``nmse = sum((test - reference)**2) / sum(reference**2)``: fastMRI's
  ``nmse = ||gt - pred||² / ||gt||²`` (``fastmri/evaluate.py``). A reference that is zero
  everywhere has no energy: :func:`nmse` raises :class:`~volqa.errors.InputError`.
- With ``mask``, every metric uses the voxels where the mask is True only (NRMSE then
  divides by the reference's range inside the mask).
- Per 2-D slice (``axis=``): the metric of each slice along that axis, then the mean over
  slices (CMRxRecon averages per-image values this way); :func:`slice_stats` gives the sums of
  every slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .tiling import map_region

__all__ = [
    "ErrorStats",
    "error_stats",
    "mse",
    "mae",
    "psnr",
    "nrmse",
    "nmse",
    "slice_stats",
    "masked_mean",
]

#: Voxels per slab of the float64 accumulation (bounds the temporary copies).
SLAB_VOXELS = 1 << 18


@dataclass(frozen=True)
class ErrorStats:
    """Sums behind every voxel-wise metric, all float64.

    Attributes
    ----------
    n : int
        Number of voxels used (inside the mask, if any).
    mae, mse : float
        Mean absolute and mean squared error.
    ref_min, ref_max : float
        Range of the reference over the same voxels.
    ref_ss : float
        Sum of squares of the reference over the same voxels (NMSE's denominator).
    """

    n: int
    mae: float
    mse: float
    ref_min: float
    ref_max: float
    ref_ss: float

    def psnr(self, data_range: float) -> float:
        """PSNR in dB for the data range ``L``; ``inf`` when ``mse == 0``."""
        if not (math.isfinite(data_range) and data_range > 0):
            raise InputError(f"data_range must be a finite number > 0; got {data_range!r}.")
        if self.mse == 0:
            return math.inf
        return 10.0 * math.log10(data_range * data_range / self.mse)

    def nrmse(self) -> float:
        """RMSE divided by the reference's max - min."""
        span = self.ref_max - self.ref_min
        if not span > 0:
            raise InputError(
                f"NRMSE is undefined: the reference is constant ({self.ref_min:g}) over the "
                "scored voxels, so its range (max - min) is 0."
            )
        return math.sqrt(self.mse) / span

    def nmse(self) -> float:
        """Sum of squared errors divided by the reference's sum of squares (fastMRI)."""
        if not self.ref_ss > 0:
            raise InputError("NMSE is undefined: the reference is zero over the scored voxels, "
                             "so its energy (sum of squares) is 0.")
        return self.mse * self.n / self.ref_ss


def _check_pair(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None) -> None:
    if reference.shape != test.shape:
        raise InputError(f"reference shape {reference.shape} and test shape {test.shape} differ.")
    if mask is not None and mask.shape != reference.shape:
        raise InputError(
            f"mask shape {mask.shape} differs from the volume shape {reference.shape}."
        )


def error_stats(
    reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None
) -> ErrorStats:
    """Accumulate the error sums of a pair in float64.

    Parameters
    ----------
    reference, test : ndarray, same shape (any number of dimensions >= 1)
    mask : ndarray of bool, same shape, optional
        Voxels to use. Must select at least one voxel.

    Returns
    -------
    ErrorStats
    """
    ref = np.asarray(reference)
    tst = np.asarray(test)
    msk = None if mask is None else np.asarray(mask, dtype=bool)
    _check_pair(ref, tst, msk)
    if ref.size == 0:
        raise InputError("cannot score an empty volume (0 voxels).")
    rows = max(1, SLAB_VOXELS // max(1, ref[0].size)) if ref.ndim > 1 else ref.shape[0]
    n = 0
    s_abs = 0.0
    s_sq = 0.0
    r_sq = 0.0
    rmin, rmax = math.inf, -math.inf
    for start in range(0, ref.shape[0], rows):
        sl = slice(start, start + rows)
        r = ref[sl]
        d = tst[sl].astype(np.float64)
        d -= r  # exact for float32 inputs: their difference is a float64
        if msk is not None:
            m = msk[sl]
            r = r[m]
            d = d[m]
        if d.size == 0:
            continue
        n += d.size
        flat = d.ravel()
        s_sq += float(np.einsum("i,i->", flat, flat))
        s_abs += float(np.abs(flat, out=flat).sum())
        flat = r.ravel().astype(np.float64)
        r_sq += float(np.einsum("i,i->", flat, flat))
        rmin = min(rmin, float(r.min()))
        rmax = max(rmax, float(r.max()))
    if n == 0:
        raise InputError("the mask selects no voxel (it is empty); nothing to score.")
    return ErrorStats(n, s_abs / n, s_sq / n, rmin, rmax, r_sq)


def mse(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Mean squared error, float64 accumulation. See the module docstring."""
    return error_stats(reference, test, mask=mask).mse


def mae(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Mean absolute error, float64 accumulation. See the module docstring."""
    return error_stats(reference, test, mask=mask).mae


def psnr(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(L**2 / mse)``; ``inf`` for identical images.

    Parameters
    ----------
    reference, test : ndarray, same shape
    data_range : float
        ``L``, the intensity range (required: there is no safe default).
    mask : ndarray of bool, optional
    """
    return error_stats(reference, test, mask=mask).psnr(data_range)


def nrmse(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """RMSE / (max(reference) - min(reference)) (skimage's ``normalization="min-max"``).

    Raises
    ------
    InputError
        The reference is constant over the scored voxels.
    """
    return error_stats(reference, test, mask=mask).nrmse()


def nmse(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None,
         axis: int | None = None) -> float:
    """Normalised MSE, ``||test - reference||² / ||reference||²`` (fastMRI), float64 sums.

    Parameters
    ----------
    reference, test : ndarray, same shape
    mask : ndarray of bool, optional
        Sums over the mask voxels only.
    axis : int, optional
        Per 2-D slice along this axis of a 3-D volume: the mean over slices of each slice's
        NMSE (slices without mask voxels are left out).

    Raises
    ------
    InputError
        The reference is zero over the scored voxels (of a slice, with ``axis``).
    """
    if axis is None:
        return error_stats(reference, test, mask=mask).nmse()
    return float(np.mean([e.nmse() for e in slice_stats(reference, test, axis, mask=mask)
                          if e is not None]))


def slice_stats(reference: np.ndarray, test: np.ndarray, axis: int, *,
                mask: np.ndarray | None = None) -> list[ErrorStats | None]:
    """:class:`ErrorStats` of every 2-D slice of a 3-D pair along ``axis`` (None for a slice
    without mask voxels).

    Raises
    ------
    InputError
        Shapes differ, the volumes are not 3-D, or the mask selects no voxel at all.
    """
    ref, tst = np.asarray(reference), np.asarray(test)
    msk = None if mask is None else np.asarray(mask, dtype=bool)
    _check_pair(ref, tst, msk)
    if ref.ndim != 3 or isinstance(axis, bool) or axis not in (0, 1, 2):
        raise InputError(f"per-slice metrics need a 3-D volume and a slice axis 0, 1 or 2; got "
                         f"shape {ref.shape} and axis {axis!r}.")
    out: list[ErrorStats | None] = []
    for k in range(ref.shape[axis]):
        sl = np.take(msk, k, axis=axis) if msk is not None else None
        if sl is not None and not sl.any():
            out.append(None)
            continue
        out.append(error_stats(np.take(ref, k, axis=axis), np.take(tst, k, axis=axis), mask=sl))
    if all(e is None for e in out):
        raise InputError("the mask selects no voxel (it is empty); nothing to score.")
    return out


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of a map over the mask voxels it covers, accumulated in float64.

    Parameters
    ----------
    values : ndarray, shape (d - 2r, h - 2r, w - 2r) or (d, h, w)
        A map centred on the volume: a "valid" map is smaller by the same amount on both
        sides of each axis (the offset is (full - map) // 2 per axis).
    mask : ndarray of bool, shape (d, h, w)

    Raises
    ------
    InputError
        No mask voxel lies inside the map's region.
    """
    v = np.asarray(values)
    m = np.asarray(mask, dtype=bool)
    try:
        crop = m[map_region(m.shape, v.shape)]
    except ValueError:
        raise InputError(f"map shape {v.shape} does not fit in the mask shape {m.shape}.") from None
    n = int(crop.sum())
    if n == 0:
        raise InputError(
            f"no mask voxel lies inside the region the SSIM map covers (map {v.shape} centred "
            f"in {m.shape}); the mask only touches the border the window cannot reach."
        )
    return float(np.sum(v[crop], dtype=np.float64) / n)
