"""SSIM of images and volumes: exact, separable, memory-bounded, on CPU and GPU.

Pure tensor code (torch and numpy only): nothing here reads or writes files.

The local statistics μ, σ² and σxy come from a normalised window applied as one 1-D filter per
spatial axis (:mod:`volqa.engine.filters`). Volumes are processed in tiles that fit a memory
budget (:mod:`volqa.engine.tiling`), each with a ``win_size - 1`` halo, so every map voxel is
computed from exactly the data (and with exactly the arithmetic) of an unchunked run. Image
means are accumulated in float64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import InputError, SettingsError
from .checks import ArrayLike, check_data_range, check_mask, check_pair, check_reduction
from .conventions import (
    Border,
    Covariance,
    SSIMSettings,
    Window,
    check_constants,
    per_axis,
    resolve_settings,
    window_taps,
)
from .filters import separable_filter
from .tiling import crop_to_map, default_max_memory, image_mean, plan_tiles, sum64

# --------------------------------------------------------------------------- one slab


def _ssim_slab(
    x: torch.Tensor,
    y: torch.Tensor,
    centre: tuple[torch.Tensor, torch.Tensor],
    taps: Sequence[tuple],
    c1: float,
    c2: float,
    cov_norm: float,
    cs_only: bool = False,
) -> torch.Tensor:
    """SSIM map of one slab (valid region of the slab's input, which includes its halo), or with
    ``cs_only`` its contrast-structure map (2σxy + C2) / (σx² + σy² + C2) (MS-SSIM's lower
    scales).

    Local variances are computed from data centred on per-image constants (exact in exact
    arithmetic, far less cancellation in float32), then clamped at zero: a negative local
    variance can only come from rounding. The map is the product of the luminance and the
    contrast-structure ratios, each a ratio of terms of order L², so nothing of order L⁴ is
    formed (no overflow for any L that float32 can square).
    """
    cx, cy = centre
    stats = separable_filter(_moments(x - cx, y - cy), taps, x.ndim - len(taps) + 1)
    mx, my, exx, eyy, exy = stats.unbind(0)
    vx = (exx - mx * mx).clamp_min_(0)
    vy = (eyy - my * my).clamp_min_(0)
    vxy = exy - mx * my
    cs = (2 * cov_norm * vxy + c2) / (cov_norm * (vx + vy) + c2)
    if cs_only:
        return cs
    mx, my = mx + cx, my + cy
    return (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs


def _moments(xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """Stack of the five images whose local means are the statistics: x, y, x², y², xy."""
    if _is_compiling() or (torch.is_grad_enabled() and (xc.requires_grad or yc.requires_grad)):
        return torch.stack([xc, yc, xc * xc, yc * yc, xc * yc])
    out = xc.new_empty((5, *xc.shape))  # without autograd: no temporaries
    out[0], out[1] = xc, yc
    torch.mul(xc, xc, out=out[2])
    torch.mul(yc, yc, out=out[3])
    torch.mul(xc, yc, out=out[4])
    return out


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


_compiled_slab = None


def _slab_function():
    """The slab kernel: plain eager code, or with ``VOLQA_COMPILE=1`` the same code fused by
    ``torch.compile``. Compiling costs tens of seconds once per process and slab shape and
    needs a compiler toolchain (a C++ compiler on CPU, Triton on CUDA)."""
    global _compiled_slab
    if os.environ.get("VOLQA_COMPILE", "0") != "1":
        return _ssim_slab
    if _compiled_slab is None:
        _compiled_slab = torch.compile(_ssim_slab, dynamic=False)
    return _compiled_slab


# --------------------------------------------------------------------------- public API


def _choose(settings: SSIMSettings | None, preset: str | None, **options: Any) -> SSIMSettings:
    """``settings`` as given, or a preset combined with explicit options; never both."""
    if settings is None:
        return resolve_settings(preset, **options)
    if not isinstance(settings, SSIMSettings):
        raise SettingsError(f"settings must be a volqa.SSIMSettings, got {type(settings).__name__}")
    given = [k for k, v in {"preset": preset, **options}.items() if v is not None]
    if given:
        raise SettingsError(f"give either settings= or the options {', '.join(given)}, not both")
    return settings


def ssim(
    x: ArrayLike,
    y: ArrayLike,
    *,
    data_range: float | None = None,
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
    return_map: bool = False,
    max_memory: int | None = None,
    settings: SSIMSettings | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Structural similarity of two images or volumes.

    Parameters
    ----------
    x, y : (H, W), (D, H, W), (N, C, H, W) or (N, C, D, H, W) array or tensor
        Same shape and device; float64 and integers are computed in float64 (integer data is
        exact), float32/float16/bfloat16 in float32 (in float64 when values or data_range
        exceed 1e18, whose squares float32 cannot hold). The layout is read from ``ndim``:
        2 and 4 are 2-D, 3 and 5 are 3-D.
        SSIM is symmetric in x and y.
    data_range : float
        Required. L in C1 = (K1 L)², C2 = (K2 L)²: the intensity range of the data (1 for images
        in [0, 1]; 4024 for SynthRAD CT; fastMRI uses the reference's max). There is no default
        because every tool's default differs.
    preset : str, optional
        One of :data:`PRESETS`; fixes the options below to reproduce that tool (see Notes).
        Options given explicitly override the preset.
    window : {"gaussian", "uniform"}, default "gaussian"
        Gaussian: ``win_size`` taps of exp(-d²/2σ²), normalised. Uniform: box of ``win_size``.
    win_size : int or one int per spatial axis, default 11
        Odd window length in voxels.
    sigma : float or one float per spatial axis, default 1.5
        Gaussian standard deviation in voxels (ignored for "uniform").
    k1, k2 : float, default 0.01, 0.03
    covariance : {"population", "sample"}, default "population"
        "sample" scales variances and covariance by N/(N-1), N = voxels in the window
        (skimage's default; fastMRI; SynthRAD2023).
    border : {"valid", "same-zero", "reflect"}, default "valid"
        "valid": the map exists only where the window fits inside the image (shape shrinks by
        ``win_size - 1`` per axis; equals skimage's cropped mean, MONAI, pytorch-msssim).
        "same-zero": zero padding, input-sized map (pytorch-ssim, ssim3D).
        "reflect": reflect padding, input-sized map, uncropped mean (torchmetrics >= 1.4.2).
    mask : bool array of the spatial shape, optional
        The result is the mean of the SSIM map over the mask voxels that the map covers (for
        "valid", the mask is cropped exactly like the map). The map is computed on the real,
        unmasked images. A mask that selects nothing there is an error.
    reduction : {"mean", "none"}, default "mean"
        "mean": one value per image: a 0-dim tensor for unbatched input, shape (N,) for
        (N, C, ...) input (channels averaged). "none": shape (N, C) for batched input.
    return_map : bool, default False
        Also return the SSIM map (float32 or float64 like the computation; batched inputs keep
        their (N, C) dims).
    max_memory : int, optional
        Byte budget of one tile. Default on CUDA: half the free memory, at most 512 MiB unless
        gradients are needed; on CPU 32 MiB (tuned for cache reuse; ``VOLQA_CPU_MAX_MEMORY``
        overrides it). Volumes are cut into slabs along the first spatial axis and, when a slab
        of 8 slices would not fit, into tiles along the second axis too, each read with a
        ``win_size - 1`` halo: the map is identical to one pass. One output row is the smallest
        tile, so a budget below that is exceeded rather than refused. The image means (the
        centring shift) are summed in float64 slabs of 32 MiB, whatever the budget.
    settings : SSIMSettings, optional
        All the SSIM options at once (instead of ``preset``, ``window``, ... which must then
        be left out).

    Returns
    -------
    value : tensor, float64
        See ``reduction``.
    map : tensor, optional
        Only with ``return_map=True``.

    Raises
    ------
    SettingsError
        data_range missing or <= 0, unknown preset or option.
    InputError
        Shapes differ, NaN/Inf in an input, an axis shorter than the window under "valid",
        bad or empty mask. Both are ``ValueError`` subclasses.

    Notes
    -----
    Local variances are E[(x-c)²] - (μx-c)² with c the image mean (exact, less rounding) and are
    clamped at zero. The filters are sums of shifted slices, not convolutions, so TF32 never
    applies on GPU. Gradients flow to both inputs; when a volume needs several tiles under
    autograd, each tile is recomputed in backward (activation checkpointing) so memory stays
    bounded.

    Settings that reproduce published tools with the same ``data_range`` (:data:`PRESET_NOTES`):
    skimage ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` = defaults here = preset "monai" = "pytorch_msssim";
    skimage defaults = preset "skimage"; "fastmri" = :func:`ssim_slices` with skimage defaults.
    """
    s = _choose(settings, preset, window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                covariance=covariance, border=border)
    L = check_data_range(data_range)
    check_reduction(reduction)
    x, y = check_pair(x, y, L)
    if s.slices and x.ndim in (3, 5):
        return _slices(x, y, 0, s, L, mask, reduction, return_map, max_memory)
    return _ssim(x, y, s, L, mask, reduction, return_map, max_memory)


def ssim_slices(
    x: ArrayLike,
    y: ArrayLike,
    *,
    axis: int = 0,
    data_range: float | None = None,
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
    return_map: bool = False,
    max_memory: int | None = None,
    settings: SSIMSettings | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mean of 2-D SSIM over the slices of a volume along spatial ``axis`` (0, 1 or 2).

    Takes (D, H, W) or (N, C, D, H, W) inputs and the options of :func:`ssim`. fastMRI's
    evaluation is ``ssim_slices(gt, pred, axis=0, preset="fastmri", data_range=gt.max())``.
    With a mask, each slice's value is its masked mean and slices whose map holds no mask voxel
    are left out of the mean. ``return_map`` returns the stack of 2-D maps in the input's axis
    order.
    """
    s = _choose(settings, preset, window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                covariance=covariance, border=border)
    L = check_data_range(data_range)
    check_reduction(reduction)
    x, y = check_pair(x, y, L)
    if x.ndim not in (3, 5):
        raise InputError(f"ssim_slices needs (D, H, W) or (N, C, D, H, W) volumes, got shape "
                         f"{tuple(x.shape)}")
    if isinstance(axis, bool) or axis not in (0, 1, 2, -1, -2, -3):
        raise SettingsError(f"axis must be a spatial axis 0, 1 or 2, got {axis}")
    return _slices(x, y, axis % 3, s, L, mask, reduction, return_map, max_memory)


# --------------------------------------------------------------------------- the computation


def _slices(x, y, axis, s, L, mask, reduction, return_map, max_memory):
    """2-D SSIM of every slice along ``axis``, computed as one batch of 2-D images."""
    batched = x.ndim == 5
    if not batched:
        x, y = x[None, None], y[None, None]
    n, c, d = x.shape[0], x.shape[1], 2 + axis
    # (N, C, D, H, W) -> (N*C*S, 1, A, B): the slice axis folded into the batch
    xs, ys = (t.movedim(d, 2).flatten(0, 2).unsqueeze(1) for t in (x, y))
    s2 = replace(s, slices=False)
    need_map = return_map or mask is not None
    result = _ssim(xs, ys, s2, L, None, "none", need_map, max_memory)
    value, smap = result if need_map else (result, None)
    per_slice = value.reshape(n, c, -1)  # (N, C, S)
    if mask is not None:
        m = check_mask(mask, tuple(x.shape[2:]), x.device).movedim(axis, 0)
        if s2.border == "valid":
            m = crop_to_map(m, smap.shape[-2:], first_dim=1)  # (S, A', B')
        counts = m.flatten(1).sum(1)
        keep = counts > 0
        if not bool(keep.any()):
            raise InputError("mask has no voxel inside the region the SSIM maps cover")
        sums = sum64(smap.reshape(n, c, -1, *smap.shape[-2:]) * m, (-2, -1))
        per_slice = sums[..., keep] / counts[keep]
    per_nc = per_slice.mean(-1)
    out = per_nc if reduction == "none" else per_nc.mean(1)
    if not batched:
        out = out[0, 0] if reduction == "none" else out[0]
    if not return_map:
        return out
    smap = smap.reshape(n, c, x.shape[d], *smap.shape[-2:]).movedim(2, d)
    return out, (smap if batched else smap[0, 0])


def _check_sizes(spatial: tuple[int, ...], sizes: tuple[int, ...], border: str) -> None:
    for ax, (n, w) in enumerate(zip(spatial, sizes)):
        if border == "valid" and n < w:
            raise InputError(
                f"spatial axis {ax} has {n} voxels, fewer than the {w}-voxel window "
                f"(shape {spatial}); use a smaller win_size, border='same-zero'/'reflect', or "
                f"2-D slices (ssim_slices)"
            )
        if border == "reflect" and n <= (w - 1) // 2:
            raise InputError(f"spatial axis {ax} has {n} voxels, too few to reflect-pad a "
                             f"{w}-voxel window (shape {spatial})")


def _ssim(x, y, s: SSIMSettings, L: float, mask, reduction, return_map, max_memory,
          cs: bool = False):
    """The tiling loop: mean (or masked mean) of the SSIM map, or with ``cs`` of the
    contrast-structure map, per (N, C) item; the map too with ``return_map``."""
    batched = x.ndim in (4, 5)
    nd = x.ndim - 2 if batched else x.ndim
    if not batched:
        x, y = x[None, None], y[None, None]
    spatial = tuple(x.shape[2:])
    sizes = per_axis(s.win_size, nd, "win_size")
    sigmas = per_axis(s.sigma, nd, "sigma")
    _check_sizes(spatial, sizes, s.border)
    m = check_mask(mask, spatial, x.device) if mask is not None else None

    # padding for the input-sized borders; statistics of the padded images
    if s.border != "valid":
        pad = [p for w in reversed(sizes) for p in ((w - 1) // 2,) * 2]
        mode = "constant" if s.border == "same-zero" else "reflect"
        x, y = F.pad(x, pad, mode=mode), F.pad(y, pad, mode=mode)
    taps = [tuple(window_taps(s.window, w, sg)) for w, sg in zip(sizes, sigmas)]
    cov_norm = 1.0
    if s.covariance == "sample":
        n_win = math.prod(sizes)
        cov_norm = n_win / (n_win - 1)
    info = torch.finfo(x.dtype)
    check_constants(s.k1, s.k2, L, limits=(info.tiny, info.max))
    c1, c2 = (s.k1 * L) ** 2, (s.k2 * L) ** 2
    dims = tuple(range(2, x.ndim))

    map_shape = tuple(n - w + 1 for n, w in zip(x.shape[2:], sizes))
    if m is not None:
        if s.border == "valid":
            m = crop_to_map(m, map_shape)
        count = int(m.sum())
        if count == 0:
            raise InputError(
                "mask has no voxel inside the region the SSIM map covers "
                f"(the valid map skips {[(w - 1) // 2 for w in sizes]} voxels at each border)"
            )
    grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    budget = max_memory if max_memory is not None else default_max_memory(x.device, grad=grad)
    # the shift that keeps the local moments well conditioned (float64 sums, in slabs)
    centre = (image_mean(x.detach()), image_mean(y.detach()))
    step0, step1 = plan_tiles(tuple(x.shape), sizes, map_shape, x.element_size() * (1 + grad),
                              budget)

    slab = _slab_function()
    # one accumulator, added to in place: a list of per-tile sums would scatter small
    # long-lived allocations between the tiles' large temporaries and fragment the heap
    total = torch.zeros(x.shape[:2], dtype=torch.float64, device=x.device)
    rows = []
    for o0 in range(0, map_shape[0], step0):
        o1 = min(o0 + step0, map_shape[0])
        tiles = []
        for h0 in range(0, map_shape[1], step1):
            h1 = min(h0 + step1, map_shape[1])
            xs, ys = (t.narrow(2, o0, o1 - o0 + sizes[0] - 1).narrow(3, h0, h1 - h0 + sizes[1] - 1)
                      for t in (x, y))
            args = (xs, ys, centre, taps, c1, c2, cov_norm, cs)
            if grad and (step0, step1) != map_shape[:2]:
                smap = checkpoint(_ssim_slab, *args, use_reentrant=False)
            else:
                smap = slab(*args)
            inside = smap * m[o0:o1, h0:h1] if m is not None else smap
            total += sum64(inside, dims)
            if return_map:
                tiles.append(smap)
        if return_map:
            rows.append(torch.cat(tiles, 3) if len(tiles) > 1 else tiles[0])
    per_nc = total / (count if m is not None else math.prod(map_shape))
    value = per_nc if reduction == "none" else per_nc.mean(1)
    if not batched:
        value = value[0, 0] if reduction == "none" else value[0]
    if not return_map:
        return value
    full = torch.cat(rows, 2) if len(rows) > 1 else rows[0]
    return value, (full if batched else full[0, 0])
