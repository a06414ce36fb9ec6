"""High-frequency error norm (HFEN; Ravishankar & Bresler 2011), in 3-D and per 2-D slice.

HFEN = ||LoG(test) - LoG(reference)||₂ / ||LoG(reference)||₂, LoG the Laplacian-of-Gaussian
filter of MATLAB's ``fspecial('log', 15, 1.5)`` that Ravishankar & Bresler ("MR image
reconstruction from highly undersampled k-space data by dictionary learning", IEEE TMI 30(5),
2011) use: a Gaussian of σ = 1.5 voxels sampled on 15 taps per axis and normalised to sum 1,
times (|x|² - nσ²)/σ⁴, minus its mean so the kernel sums to zero (n = 2 for slices, 3 for
volumes). Its images are filtered with symmetric padding (MATLAB ``imfilter(...,
'symmetric')``: d c b a | a b c d). The kernel is a sum of separable terms, Σ_i d_i Π_{j≠i} g_j
minus a constant box, so it is applied as 1-D passes (:mod:`volqa.engine.filters`) in float64,
slab by slab with a halo of 14 voxels: no dense 15³ kernel, memory bounded. The filter is linear,
so LoG(test) - LoG(reference) is computed as LoG(test - reference).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from ..errors import InputError, SettingsError
from .filters import separable_filter
from .tiling import map_region

__all__ = ["hfen", "log_kernel"]

#: Output voxels per slab of the filtering: float64 temporaries of ~100 MiB at most.
SLAB_VOXELS = 1 << 20


def _taps(sigma: float, win_size: int, nd: int) -> tuple[tuple, tuple, float]:
    """1-D Gaussian g (sum 1), 1-D second-moment term d = g·(x² - σ²)/σ⁴ and the constant c
    such that the n-D kernel is Σ_i d_i Π_{j≠i} g_j - c (MATLAB's zero-sum correction)."""
    x = np.arange(win_size) - (win_size - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    g /= g.sum()
    d = g * (x * x - sigma * sigma) / sigma**4
    c = nd * d.sum() / win_size**nd
    return tuple(g.tolist()), tuple(d.tolist()), float(c)


def log_kernel(sigma: float = 1.5, win_size: int = 15, ndim: int = 2) -> np.ndarray:
    """The dense LoG kernel HFEN applies (for inspection and tests; HFEN itself never forms it).

    Equal to MATLAB's ``fspecial('log', win_size, sigma)`` for ``ndim=2`` (whose truncation of
    taps below eps·max never applies here: the smallest tap is 3e-10 of the largest).
    """
    g_taps, d_taps, c = _taps(sigma, win_size, ndim)
    g, d = np.asarray(g_taps), np.asarray(d_taps)
    out = np.zeros((win_size,) * ndim)
    for i in range(ndim):
        term = np.ones(())
        for j in range(ndim):
            term = np.multiply.outer(term, d if j == i else g)
        out += term
    return out - c


def _log(t: torch.Tensor, taps: tuple[tuple, tuple, float], nd: int) -> torch.Tensor:
    """Valid LoG filtering of the last ``nd`` axes of a float64 tensor."""
    g, d, c = taps
    first = t.ndim - nd
    out = None
    for i in range(nd):
        term = separable_filter(t, [d if j == i else g for j in range(nd)], first)
        out = term if out is None else out.add_(term)
    box = separable_filter(t, [(1.0,) * len(g)] * nd, first)
    return out.sub_(box, alpha=c)  # type: ignore[union-attr]


def hfen(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    sigma: float = 1.5,
    win_size: int = 15,
    border: Literal["symmetric", "valid"] = "symmetric",
    axis: int | None = None,
    mask: np.ndarray | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> float | np.ndarray:
    """High-frequency error norm of a 2-D image or 3-D volume (see the module docstring).

    Parameters
    ----------
    reference, test : (H, W) or (D, H, W) ndarray or CPU tensor, same shape
        Real-valued (magnitude) images; computed in float64.
    sigma : float, default 1.5
        Standard deviation of the LoG's Gaussian, in voxels (Ravishankar & Bresler 2011).
    win_size : int, default 15
        Odd kernel length per axis (15: MATLAB ``fspecial('log', 15, 1.5)``).
    border : {"symmetric", "valid"}, default "symmetric"
        "symmetric": images padded by mirroring with the edge repeated (MATLAB ``imfilter``
        'symmetric', as Ravishankar & Bresler), every voxel scored. "valid": no padding, only
        voxels whose whole kernel lies inside the image are scored.
    axis : int, optional
        For a volume: 2-D LoG within each slice along this axis, HFEN per slice.
    mask : bool ndarray of the images' shape, optional
        Norms over the mask voxels only (the LoG still sees the real images around them).
    reduction : {"mean", "none"}, default "mean"
        With ``axis``: the mean of the per-slice values, or the array of them (NaN for a slice
        without mask voxels). Without ``axis`` the result is one number either way.

    Returns
    -------
    float, or ndarray of float64 (``axis`` and ``reduction="none"``)

    Raises
    ------
    SettingsError
        Bad sigma, win_size, border, axis or reduction.
    InputError
        Shapes differ, non-finite values, an axis shorter than the kernel under "valid", an
        empty mask, or a reference whose LoG is zero where scored (a constant image: HFEN is
        0/0; per slice, the message counts such slices).
    """
    ref, tst, msk, nd = _checked(reference, test, mask, sigma, win_size, border, axis, reduction)
    taps = _taps(float(sigma), int(win_size), nd)
    if axis is not None:  # slices first: (S, A, B), filtered over the last two axes
        ref, tst = np.moveaxis(ref, axis, 0), np.moveaxis(tst, axis, 0)
        msk = np.moveaxis(msk, axis, 0) if msk is not None else None
    err, energy, count = _sums(ref, tst, msk, taps, nd, int(win_size), border, axis is not None)
    # a reference with no high frequencies: its LoG is zero up to rounding (the kernel sums to
    # zero only to ~1e-16), so "zero" is relative to the reference's magnitude
    floor = count * (1e-12 * float(np.abs(ref).max())) ** 2
    if axis is None:
        if not energy > floor:
            raise InputError("HFEN is undefined: the LoG of the reference is zero over the "
                             "scored voxels (a constant image has no high frequencies).")
        return math.sqrt(err / energy)
    scored = ~np.isnan(energy)
    flat = scored & (energy <= floor)
    if flat.any():
        raise InputError(f"HFEN is undefined for {int(flat.sum())} slice(s) along axis {axis} "
                         f"(e.g. slice {int(np.argmax(flat))}) whose reference has no "
                         "high frequencies (constant); score them in 3-D or mask them out.")
    values = np.full(energy.shape, np.nan)
    values[scored] = np.sqrt(err[scored] / energy[scored])
    return float(values[scored].mean()) if reduction == "mean" else values


def _checked(reference, test, mask, sigma, win_size, border, axis, reduction):
    ref, tst = (a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
                for a in (reference, test))
    if ref.shape != tst.shape or ref.ndim not in (2, 3):
        raise InputError(f"HFEN needs two 2-D images or 3-D volumes of the same shape, got "
                         f"{ref.shape} and {tst.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(tst).all()):
        raise InputError("the images hold NaN or Inf values; HFEN is undefined there")
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise SettingsError(f"sigma must be > 0, got {sigma!r}")
    if isinstance(win_size, bool) or int(win_size) != win_size or win_size < 3 \
            or win_size % 2 == 0:
        raise SettingsError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if border not in ("symmetric", "valid"):
        raise SettingsError(f"unknown border {border!r}; choose symmetric or valid")
    if reduction not in ("mean", "none"):
        raise SettingsError(f"unknown reduction {reduction!r}; choose mean or none")
    if axis is not None and (ref.ndim != 3 or isinstance(axis, bool) or axis not in (0, 1, 2)):
        raise SettingsError(f"axis must be 0, 1 or 2 of a 3-D volume, got {axis!r} for shape "
                            f"{ref.shape}")
    nd = 2 if axis is not None else ref.ndim
    filtered = [n for i, n in enumerate(ref.shape) if i != axis]
    if border == "valid" and min(filtered) < win_size:
        raise InputError(f"an axis has {min(filtered)} voxels, fewer than the {win_size}-voxel "
                         f"LoG kernel (shape {ref.shape}); use border='symmetric'")
    msk = None
    if mask is not None:
        msk = np.asarray(mask)
        if msk.shape != ref.shape:
            raise InputError(f"mask shape {msk.shape} differs from the images' {ref.shape}")
        msk = msk.astype(bool)
        if not msk.any():
            raise InputError("mask is empty: it selects no voxel")
    return ref, tst, msk, nd


def _sums(ref, tst, msk, taps, nd, k, border, per_slice):
    """Σ LoG(test - ref)², Σ LoG(ref)² over the scored voxels and the number of scored voxels:
    scalars, or one per slice (Σ NaN for slices without mask voxels) when ``per_slice``."""
    r = (k - 1) // 2
    n0 = ref.shape[0]
    plane = math.prod(ref.shape[1:])
    if per_slice:  # no halo across slices
        rows_of = lambda a, b: np.arange(a, b)  # noqa: E731
        out_n0, pad = n0, [(0, 0)] + [(r, r)] * nd
    elif border == "symmetric":
        index = np.pad(np.arange(n0), r, mode="symmetric")
        rows_of = lambda a, b: index[a:b + k - 1]  # noqa: E731
        out_n0, pad = n0, [(0, 0)] + [(r, r)] * (nd - 1)
    else:
        rows_of = lambda a, b: np.arange(a, b + k - 1)  # noqa: E731
        out_n0, pad = n0 - k + 1, None
    if border == "valid" and msk is not None:  # scored voxels: the centred valid region
        full = ref.shape if not per_slice else ref.shape[1:]
        valid = tuple(n - k + 1 for n in full)
        region = map_region(full, valid)
        msk = msk[(slice(None),) + region] if per_slice else msk[region]
    if per_slice and border == "valid":
        pad = None
    step = max(1, SLAB_VOXELS // plane)
    err_parts, energy_parts = [], []
    for o0 in range(0, out_n0, step):
        o1 = min(o0 + step, out_n0)
        rows = rows_of(o0, o1)
        a = ref[rows].astype(np.float64)
        b = tst[rows].astype(np.float64) - a
        if pad is not None:
            a, b = np.pad(a, pad, mode="symmetric"), np.pad(b, pad, mode="symmetric")
        filtered = _log(torch.from_numpy(np.stack([b, a])), taps, nd)  # (2, rows, ...)
        sq = filtered.square_()
        if msk is not None:
            sq = sq * torch.from_numpy(msk[o0:o1])
        dims = tuple(range(2, sq.ndim)) if per_slice else tuple(range(1, sq.ndim))
        sums = sq.sum(dims).numpy()
        err_parts.append(sums[0])
        energy_parts.append(sums[1])
    scored_shape = filtered.shape[2:] if per_slice else None
    if not per_slice:
        count = int(msk.sum()) if msk is not None else out_n0 * math.prod(filtered.shape[2:])
        if count == 0:
            raise InputError("the mask has no voxel in the scored region (the valid border "
                             f"skips {r} voxels at each side)")
        return float(np.sum(err_parts)), float(np.sum(energy_parts)), count
    err, energy = np.concatenate(err_parts), np.concatenate(energy_parts)
    count = (msk.reshape(msk.shape[0], -1).sum(1) if msk is not None
             else np.full(out_n0, math.prod(scored_shape)))
    if msk is not None:
        energy[count == 0] = np.nan
        if not count.any():
            raise InputError("the mask has no voxel in the scored region of any slice")
    return err, energy, count
