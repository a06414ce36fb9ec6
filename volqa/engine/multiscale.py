"""Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) of images and volumes, exact and bounded.

MS-SSIM = Π_{j<M} relu(cs_j)^{w_j} · relu(ssim_M)^{w_M}: the mean contrast-structure term
cs = (2σxy + C2) / (σx² + σy² + C2) at each of the first M - 1 scales and the mean SSIM at the
coarsest, each scale's images the previous ones average-pooled by 2 along every spatial axis.
Every scale runs through the same tiling loop as :func:`volqa.ssim` (slabs with a halo), so its
maps are exact and its memory bounded by ``max_memory``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import InputError, SettingsError
from .checks import ArrayLike, check_data_range, check_mask, check_pair, check_reduction
from .conventions import Border, Covariance, SSIMSettings, Window, per_axis
from .structural import _choose, _ssim
from .tiling import crop_to_map

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim", "ms_ssim_weights", "ms_ssim_min_size", "downsample"]

#: Wang, Simoncelli & Bovik 2003 ("Multiscale structural similarity for image quality
#: assessment", Asilomar), section 3.2: the exponents of the five scales, finest first.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_weights(scales: int) -> tuple[float, ...]:
    """The first ``scales`` of :data:`MS_SSIM_WEIGHTS`, renormalised to sum 1.

    Five scales give Wang's weights exactly as published (they sum to 1.0001); fewer keep
    their proportions, renormalised so that a value from a small volume is still a weighted
    geometric mean of its scales.
    """
    if isinstance(scales, bool) or not isinstance(scales, int) or not 1 <= scales <= 5:
        raise SettingsError(f"scales must be an integer from 1 to 5 (Wang et al. 2003 weigh "
                            f"five), got {scales!r}; for other weights pass weights=")
    chosen = MS_SSIM_WEIGHTS[:scales]
    if scales == len(MS_SSIM_WEIGHTS):
        return chosen
    return tuple(w / sum(chosen) for w in chosen)


def _check_weights(weights: Sequence[float] | None, scales: int | None) -> tuple[float, ...]:
    if weights is not None and scales is not None:
        raise SettingsError("give weights= or scales=, not both (scales picks the first of "
                            "Wang's weights)")
    if weights is None:
        return ms_ssim_weights(5 if scales is None else scales)
    w = tuple(float(v) for v in weights)
    if not w or not all(math.isfinite(v) and v >= 0 for v in w):
        raise SettingsError(f"weights must be one or more finite numbers >= 0, got {weights!r}")
    return w


def ms_ssim_min_size(win_size: int, scales: int, border: str = "valid") -> int:
    """Fewest voxels an axis needs for ``scales`` scales of a ``win_size`` window.

    Each scale halves the axis (rounding up, see :func:`downsample`); under "valid" the
    coarsest must still hold the window: (win_size - 1) · 2^(scales-1) + 1 (161 for 11 taps
    and 5 scales, 97 for 7). Under "reflect" the coarsest must exceed the window's radius.
    """
    r = (win_size - 1) // 2
    need = {"valid": win_size - 1, "reflect": r, "same-zero": 0}[border]
    return need * 2 ** (scales - 1) + 1


def downsample(t: torch.Tensor) -> torch.Tensor:
    """Average-pool the spatial axes of an (N, C, ...) tensor by 2, as pytorch-msssim does.

    An axis of odd length n is zero-padded by one voxel at both ends first and the padded zero
    counts in the mean (``avg_pool`` with ``padding = n % 2``, ``count_include_pad``), so
    output voxel k averages input voxels 2k-1 and 2k (the first one with the zero); an even
    axis pairs 2k and 2k+1. The output has ceil(n / 2) voxels per axis.
    """
    pool = F.avg_pool2d if t.ndim == 4 else F.avg_pool3d
    return pool(t, kernel_size=2, padding=[s % 2 for s in t.shape[2:]])


def _downsample_mask(m: torch.Tensor) -> torch.Tensor:
    """A coarse voxel is inside when at least half of the voxels :func:`downsample` averages
    into it are inside (the zero padding of odd axes counts as outside)."""
    pooled = downsample(m[None, None].to(torch.float32))[0, 0]
    return pooled >= 0.5


def ms_ssim(
    x: ArrayLike,
    y: ArrayLike,
    *,
    data_range: float | None = None,
    weights: Sequence[float] | None = None,
    scales: int | None = None,
    preset: str | None = None,
    window: Window | None = None,
    win_size: int | Sequence[int] | None = None,
    sigma: float | Sequence[float] | None = None,
    k1: float | None = None,
    k2: float | None = None,
    covariance: Covariance | None = None,
    border: Border | None = None,
    mask: ArrayLike | None = None,
    reduction: Literal["mean", "none"] = "mean",
    max_memory: int | None = None,
    settings: SSIMSettings | None = None,
) -> torch.Tensor:
    """Multi-scale structural similarity of two images or volumes.

    Parameters
    ----------
    x, y : (H, W), (D, H, W), (N, C, H, W) or (N, C, D, H, W) array or tensor
        As in :func:`volqa.ssim` (dtype rules included).
    data_range : float
        Required: L of C1 = (K1 L)², C2 = (K2 L)² at every scale.
    weights : sequence of float, optional
        One exponent per scale, finest first; the number of scales is ``len(weights)``.
        Default: Wang et al. 2003, (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).
    scales : int, optional
        Instead of ``weights``: the first ``scales`` (1-5) of Wang's weights, renormalised to
        sum 1 (:func:`ms_ssim_weights`), for volumes too small for five scales.
    preset, window, win_size, sigma, k1, k2, covariance, border, settings
        The SSIM convention at every scale, as in :func:`volqa.ssim` (default Gaussian 11,
        σ 1.5, population covariance, valid border). A slice convention (``fastmri``) has no
        multi-scale form and is refused.
    mask : bool array of the spatial shape, optional
        Each scale's mean is taken over its mask voxels inside that scale's map; the mask of the
        next scale is pooled like the images, a coarse voxel being inside when at least half of
        the voxels pooled into it are (zero padding of odd axes counts as outside). A scale
        whose mask has no voxel in its map is an error naming the scale.
    reduction : {"mean", "none"}
        As in :func:`volqa.ssim`.
    max_memory : int, optional
        Tile budget of every scale, as in :func:`volqa.ssim`.

    Returns
    -------
    tensor, float64
        0-dim per image; shape (N,) for batches ((N, C) with ``reduction="none"``).

    Raises
    ------
    SettingsError
        Missing data_range, bad weights or scales, unknown options, a slice convention.
    InputError
        Bad images or mask (see :func:`volqa.ssim`); an axis too short for the requested
        scales: the message names the minimum size (:func:`ms_ssim_min_size`).

    Notes
    -----
    Equal to pytorch-msssim's ``ms_ssim(X, Y, data_range=L, win_size=11, weights=...)`` (1.0,
    2-D and 3-D) with the defaults here: the same relu of each scale's mean, the same pooling
    (:func:`downsample`). pytorch-msssim checks only the last two axes of a volume and skips
    smoothing along shorter ones with a warning; volqa refuses every axis too short instead.
    """
    s = _choose(settings, preset, window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                covariance=covariance, border=border)
    L = check_data_range(data_range)
    check_reduction(reduction)
    w = _check_weights(weights, scales)
    x, y = check_pair(x, y, L)
    if s.slices and x.ndim in (3, 5):
        raise SettingsError(f"preset {s.preset!r} averages 2-D slices; MS-SSIM has no slice "
                            "convention: pass 2-D images, or another preset")
    batched = x.ndim in (4, 5)
    if not batched:
        x, y = x[None, None], y[None, None]
    spatial = tuple(x.shape[2:])
    sizes = per_axis(s.win_size, len(spatial), "win_size")
    _check_scales(spatial, sizes, len(w), s.border)
    m = check_mask(mask, spatial, x.device) if mask is not None else None

    terms = []
    for j in range(len(w)):
        last = j == len(w) - 1
        if m is not None:
            _check_level_mask(m, tuple(x.shape[2:]), sizes, s.border, j)
        terms.append(torch.relu(_ssim(x, y, s, L, m, "none", False, max_memory, cs=not last)))
        if not last:
            x, y = downsample(x), downsample(y)
            m = _downsample_mask(m) if m is not None else None
    exps = torch.tensor(w, dtype=torch.float64, device=x.device).view(-1, 1, 1)
    per_nc = torch.prod(torch.stack(terms) ** exps, dim=0)
    value = per_nc if reduction == "none" else per_nc.mean(1)
    if not batched:
        value = value[0, 0] if reduction == "none" else value[0]
    return value


def _check_scales(spatial: tuple[int, ...], sizes: Sequence[int], scales: int,
                  border: str) -> None:
    for ax, (n, win) in enumerate(zip(spatial, sizes)):
        need = ms_ssim_min_size(win, scales, border)
        if n < need:
            fits = max((k for k in range(1, scales) if n >= ms_ssim_min_size(win, k, border)),
                       default=0)
            way = f"scales={fits}" if fits else "ssim() (one scale does not fit either)"
            raise InputError(
                f"MS-SSIM with {scales} scales and a {win}-voxel window needs at least {need} "
                f"voxels along every axis, but spatial axis {ax} has {n} (shape {spatial}); "
                f"use fewer scales ({way}), a smaller win_size, or pad the images"
            )


def _check_level_mask(m: torch.Tensor, shape: tuple[int, ...], sizes: Sequence[int],
                      border: str, level: int) -> None:
    if border == "valid":
        m = crop_to_map(m, tuple(n - w + 1 for n, w in zip(shape, sizes)))
    if not bool(m.any()):
        raise InputError(f"the mask has no voxel inside the SSIM map at scale {level + 1} "
                         f"(images {shape} there; the mask is pooled with the images); use "
                         "fewer scales or a larger mask")
