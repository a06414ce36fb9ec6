"""The SSIM engine: exact, separable, memory-bounded 2-D and 3-D SSIM on CPU and GPU.

Pure tensor code (torch and numpy only): nothing here reads or writes files.

SSIM(x, y) = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)),
C1 = (K1 L)², C2 = (K2 L)², L = ``data_range``. The local statistics μ, σ² and σxy come from a
normalised window applied as one 1-D filter per spatial axis (separable; never a dense k³
kernel). Each 1-D pass is a sum of shifted slices, written as an autograd function whose
backward is the same filter with the taps reversed, so gradients cost one more pass and keep
no intermediate tensors.

Volumes are processed in tiles that fit a memory budget: slabs along the first spatial axis,
cut along the second axis too when slices are large, each read with a halo of ``win_size - 1``
voxels, so every map voxel is computed from exactly the data (and with exactly the arithmetic)
of an unchunked run. Image means are accumulated in float64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .errors import InputError, SettingsError

ArrayLike = Union[np.ndarray, torch.Tensor]
Window = Literal["gaussian", "uniform"]
Covariance = Literal["population", "sample"]
Border = Literal["valid", "same-zero", "reflect"]

WINDOWS = ("gaussian", "uniform")
COVARIANCES = ("population", "sample")
BORDERS = ("valid", "same-zero", "reflect")
REDUCTIONS = ("mean", "none")

#: CPU tile budget when ``max_memory`` is not given. Small tiles stay in cache and are faster
#: than whole-volume passes (256^3: 0.26 s at 32 MiB, 0.37 s at 64 MiB, ~2 s at 1 GiB on a
#: 2-core machine, scripts/bench_ssim.py).
CPU_DEFAULT_MAX_MEMORY = 32 * 2**20
#: CUDA tile budget when ``max_memory`` is not given: this fraction of the free device memory,
#: capped at CUDA_DEFAULT_MAX_MEMORY for evaluation (few, large kernels and bounded extra memory:
#: ~0.3 GiB at 256^3). Under autograd there is no cap: several tiles would mean recomputing each
#: in backward (checkpointing), which costs more time than training can spare.
CUDA_FREE_FRACTION = 0.5
CUDA_DEFAULT_MAX_MEMORY = 512 * 2**20


@dataclass(frozen=True)
class SSIMSettings:
    """Every choice that decides an SSIM value (see the module docstring for the formula).

    ``win_size`` and ``sigma`` are one value or one value per spatial axis. ``slices`` is True
    for conventions that average 2-D SSIM over the slices along the first spatial axis of a
    volume (fastMRI).
    """

    preset: str | None = None
    window: Window = "gaussian"
    win_size: int | tuple[int, ...] = 11
    sigma: float | tuple[float, ...] = 1.5
    k1: float = 0.01
    k2: float = 0.03
    covariance: Covariance = "population"
    border: Border = "valid"
    slices: bool = False

    def as_dict(self) -> dict:
        """Plain dict (tuples as lists) for JSON and result rows."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: Named conventions: each fixes the options so the value equals that tool's standard call
#: with the same ``data_range``. Tool versions matched are in :data:`PRESET_NOTES`.
_PRESETS: dict[str, SSIMSettings] = {
    "skimage": SSIMSettings("skimage", "uniform", 7, 1.5, 0.01, 0.03, "sample", "valid"),
    "monai": SSIMSettings("monai", "gaussian", 11, 1.5, 0.01, 0.03, "population", "valid"),
    "torchmetrics": SSIMSettings(
        "torchmetrics", "gaussian", 11, 1.5, 0.01, 0.03, "population", "reflect"
    ),
    "pytorch_msssim": SSIMSettings(
        "pytorch_msssim", "gaussian", 11, 1.5, 0.01, 0.03, "population", "valid"
    ),
    "pytorch_ssim": SSIMSettings(
        "pytorch_ssim", "gaussian", 11, 1.5, 0.01, 0.03, "population", "same-zero"
    ),
    "fastmri": SSIMSettings(
        "fastmri", "uniform", 7, 1.5, 0.01, 0.03, "sample", "valid", slices=True
    ),
    "synthrad2023": SSIMSettings(
        "synthrad2023", "uniform", 7, 1.5, 0.01, 0.03, "sample", "valid"
    ),
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)
PRESET_NOTES: dict[str, str] = {
    "skimage": "skimage.metrics.structural_similarity defaults (scikit-image 0.19-0.26): "
    "uniform 7, sample covariance, mean of the map cropped by 3 voxels",
    "monai": "monai.metrics.SSIMMetric defaults (MONAI 1.x): Gaussian 11, sigma 1.5, valid",
    "torchmetrics": "torchmetrics StructuralSimilarityIndexMeasure defaults (>= 1.4.2): "
    "Gaussian 11, sigma 1.5, reflect padding, mean over the whole input-sized map",
    "pytorch_msssim": "pytorch_msssim.ssim(win_size=11) (pytorch-msssim 1.0): "
    "Gaussian 11, sigma 1.5, valid",
    "pytorch_ssim": "pytorch-ssim / ssim3D (Po-Hsun-Su, 2017-2019): Gaussian 11, sigma 1.5, "
    "zero padding, mean over the input-sized map",
    "fastmri": "fastmri/evaluate.py ssim(): mean over slices (first spatial axis) of 2-D "
    "skimage SSIM with defaults; fastMRI passes data_range = gt.max()",
    "synthrad2023": "SynthRAD2023 image_metrics: 3-D skimage defaults; masked mean over the "
    "mask cropped like the map (its HU clipping, shift and data range 4024 are normalisation)",
}
_DEFAULTS = SSIMSettings()


def resolve_settings(
    preset: str | None = None,
    *,
    window: str | None = None,
    win_size: int | Sequence[int] | None = None,
    sigma: float | Sequence[float] | None = None,
    k1: float | None = None,
    k2: float | None = None,
    covariance: str | None = None,
    border: str | None = None,
) -> SSIMSettings:
    """Combine a preset with explicit options (explicit options win) and validate them.

    Raises
    ------
    SettingsError
        Unknown preset or option value, even or non-positive window, sigma <= 0, K <= 0.
    """
    if preset is None:
        base = _DEFAULTS
    elif preset in _PRESETS:
        base = _PRESETS[preset]
    else:
        raise SettingsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    given = dict(window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                 covariance=covariance, border=border)
    s = replace(base, **{k: v for k, v in given.items() if v is not None})
    for name, value, allowed in (("window", s.window, WINDOWS),
                                 ("covariance", s.covariance, COVARIANCES),
                                 ("border", s.border, BORDERS)):
        if value not in allowed:
            raise SettingsError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    sizes = _as_tuple(s.win_size, "win_size")
    if any(int(w) != w or w < 1 or w % 2 == 0 for w in sizes):
        raise SettingsError(f"win_size must be odd positive integers, got {s.win_size!r}")
    sigmas = _as_tuple(s.sigma, "sigma")
    if any(not (v > 0 and math.isfinite(v)) for v in sigmas):
        raise SettingsError(f"sigma must be > 0, got {s.sigma!r}")
    if not (s.k1 > 0 and s.k2 > 0):
        raise SettingsError(f"k1 and k2 must be > 0, got k1={s.k1}, k2={s.k2}")
    if s.covariance == "sample" and any(w == 1 for w in sizes):
        raise SettingsError("sample covariance needs a window of more than one voxel")
    return replace(s, win_size=_unwrap(tuple(int(w) for w in sizes)),
                   sigma=_unwrap(tuple(float(v) for v in sigmas)))


def _as_tuple(value, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if not value:
            raise SettingsError(f"{name} must not be empty")
        return tuple(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (value,)
    raise SettingsError(f"{name} must be a number or a sequence of numbers, got {value!r}")


def _unwrap(t: tuple):
    return t[0] if len(t) == 1 else t


def _per_axis(value, ndim: int, name: str) -> tuple:
    t = _as_tuple(value, name)
    if len(t) == 1:
        return t * ndim
    if len(t) != ndim:
        raise SettingsError(f"{name} has {len(t)} values but the images have {ndim} spatial axes")
    return t


def window_taps(window: str, win_size: int, sigma: float) -> list[float]:
    """Normalised 1-D window taps (float64 values as Python floats).

    "gaussian": exp(-d² / 2σ²) for d = -(win_size-1)/2 .. (win_size-1)/2, truncated to
    ``win_size`` taps and normalised to sum 1 (scipy's gaussian_filter with truncate such that
    the radius is (win_size-1)/2, as skimage uses). "uniform": 1/win_size each.
    """
    if window == "uniform":
        return [1.0 / win_size] * win_size
    r = (win_size - 1) / 2
    w = np.exp(-((np.arange(win_size) - r) ** 2) / (2.0 * sigma**2))
    return (w / w.sum()).tolist()


# --------------------------------------------------------------------------- filtering


def _shifted_sum(t: torch.Tensor, taps: Sequence[float], dim: int) -> torch.Tensor:
    """Valid correlation of ``t`` with ``taps`` along ``dim`` as a sum of shifted slices."""
    n = t.shape[dim] - len(taps) + 1
    out = t.narrow(dim, 0, n) * taps[0]
    for i in range(1, len(taps)):
        out.add_(t.narrow(dim, i, n), alpha=taps[i])
    return out


class _Filter1d(torch.autograd.Function):
    """Valid 1-D filter along one axis; backward = full correlation with reversed taps."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, taps: tuple, dim: int) -> torch.Tensor:
        ctx.taps, ctx.dim = taps, dim
        return _shifted_sum(t, taps, dim)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        k, dim = len(ctx.taps), ctx.dim
        pad = [0, 0] * (g.ndim - 1 - dim) + [k - 1, k - 1]
        return _Filter1d.apply(F.pad(g, pad), tuple(reversed(ctx.taps)), dim), None, None


def _filter(t: torch.Tensor, taps: Sequence[tuple], first_dim: int) -> torch.Tensor:
    """Apply one 1-D valid filter per spatial axis (axes ``first_dim``, ``first_dim+1``, ...)."""
    apply = _Filter1d.apply if torch.is_grad_enabled() and t.requires_grad else _shifted_sum
    for i, tp in enumerate(taps):
        if len(tp) > 1:
            t = apply(t, tp, first_dim + i)
    return t


# --------------------------------------------------------------------------- the SSIM map


def _ssim_slab(
    x: torch.Tensor,
    y: torch.Tensor,
    centre: tuple[torch.Tensor, torch.Tensor],
    taps: Sequence[tuple],
    c1: float,
    c2: float,
    cov_norm: float,
) -> torch.Tensor:
    """SSIM map of one slab (valid region of the slab's input, which includes its halo).

    Local variances are computed from data centred on per-image constants (exact in exact
    arithmetic, far less cancellation in float32), then clamped at zero: a negative local
    variance can only come from rounding.
    """
    cx, cy = centre
    stats = _filter(_moments(x - cx, y - cy), taps, x.ndim - len(taps) + 1)
    mx, my, exx, eyy, exy = stats.unbind(0)
    vx = (exx - mx * mx).clamp_min_(0)
    vy = (eyy - my * my).clamp_min_(0)
    vxy = exy - mx * my
    mx, my = mx + cx, my + cy
    num = (2 * mx * my + c1) * (2 * cov_norm * vxy + c2)
    return num / ((mx * mx + my * my + c1) * (cov_norm * (vx + vy) + c2))


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


#: Fewest output slices per slab before volumes are also tiled along their second spatial axis
#: (large slices: a slab of a few slices with its halo would not stay in cache).
MIN_SLAB_SLICES = 8


def _tile_bytes(s0: int, s1: int, sizes: Sequence[int], shape: tuple[int, ...], item: int) -> int:
    """Approximate peak bytes of one tile of s0 x s1 output rows: the 5 statistics over its
    input (halo included) and the filtered copies and map terms over its output."""
    rest = shape[0] * shape[1] * math.prod(shape[4:]) * item  # batch and axes after the 2nd
    return rest * (5 * (s0 + sizes[0] - 1) * (s1 + sizes[1] - 1) + 18 * s0 * s1)


def _plan_tiles(shape, sizes, map_shape, item: int, budget: int) -> tuple[int, int]:
    """Output rows per tile along the first two spatial axes so one tile fits ``budget``.

    Whole slabs along the first axis while they hold at least MIN_SLAB_SLICES slices; else that
    many slices, tiled along the second axis too. One output voxel row is the smallest tile.
    """
    m0, m1 = map_shape[0], map_shape[1]
    per0 = _tile_bytes(1, m1, sizes, shape, item) - _tile_bytes(0, m1, sizes, shape, item)
    s0 = max(1, min(m0, (budget - _tile_bytes(0, m1, sizes, shape, item)) // per0))
    if s0 >= min(m0, MIN_SLAB_SLICES):
        return s0, m1
    s0 = min(m0, MIN_SLAB_SLICES)
    per1 = _tile_bytes(s0, 1, sizes, shape, item) - _tile_bytes(s0, 0, sizes, shape, item)
    s1 = max(1, min(m1, (budget - _tile_bytes(s0, 0, sizes, shape, item)) // per1))
    if _tile_bytes(s0, s1, sizes, shape, item) > budget:  # not even one row of 8 slices fits
        s0 = max(1, min(m0, (budget - _tile_bytes(0, 1, sizes, shape, item))
                        // (_tile_bytes(1, 1, sizes, shape, item)
                            - _tile_bytes(0, 1, sizes, shape, item))))
    return s0, s1


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


def default_max_memory(device: torch.device | str, *, grad: bool = False) -> int:
    """The tile budget in bytes that :func:`ssim` uses when ``max_memory`` is not given."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * CUDA_FREE_FRACTION)
        return budget if grad else min(budget, CUDA_DEFAULT_MAX_MEMORY)
    return int(os.environ.get("VOLQA_CPU_MAX_MEMORY", CPU_DEFAULT_MAX_MEMORY))


# --------------------------------------------------------------------------- public API


def _to_tensor(a: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        if not a.dtype.isnative:  # e.g. big-endian data straight from a file
            a = a.astype(a.dtype.newbyteorder("="))
        a = torch.from_numpy(np.ascontiguousarray(a))
    elif not isinstance(a, torch.Tensor):
        raise SettingsError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
    return a


def _check_inputs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise InputError(f"x and y must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.ndim not in (2, 3, 4, 5):
        raise InputError(f"expected (H, W), (D, H, W), (N, C, H, W) or (N, C, D, H, W) inputs, "
                         f"got shape {tuple(x.shape)}")
    if x.device != y.device:
        raise InputError(f"x is on {x.device} but y is on {y.device}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    if dtype == torch.bool or dtype.is_complex:
        raise InputError(f"unsupported dtype {dtype}: SSIM needs real-valued images")
    if dtype != torch.float64:
        dtype = torch.float32  # float16/bfloat16 and integers are computed in float32
    x, y = x.to(dtype), y.to(dtype)
    for name, t in (("x", x), ("y", y)):
        # a sum is NaN/Inf if any voxel is (or on overflow): count only then, no big temporary
        if math.isfinite(float(t.detach().sum())):
            continue
        bad = t.numel() - int(torch.isfinite(t).sum())
        if bad:
            raise InputError(f"{name} holds {bad} NaN or Inf values; SSIM is undefined there")
    return x, y


def _check_data_range(data_range) -> float:
    if data_range is None:
        raise SettingsError(
            "data_range is required: pass the intensity range L used in C1=(K1*L)^2, "
            "C2=(K2*L)^2, e.g. data_range=1.0 for images scaled to [0, 1], or "
            "float(reference.max() - reference.min())"
        )
    try:
        value = float(data_range)
    except (TypeError, ValueError, RuntimeError):
        raise SettingsError(f"data_range must be a number, got {data_range!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise SettingsError(f"data_range must be > 0 and finite, got {value}")
    return value


def _check_call(x: ArrayLike, y: ArrayLike, data_range, reduction: str):
    """Validate what every public entry point takes; returns tensors and data_range."""
    L = _check_data_range(data_range)
    if reduction not in REDUCTIONS:
        raise SettingsError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    x, y = _check_inputs(_to_tensor(x, "x"), _to_tensor(y, "y"))
    return x, y, L


def _check_mask(mask: ArrayLike, spatial: tuple[int, ...], device) -> torch.Tensor:
    m = _to_tensor(mask, "mask")
    if tuple(m.shape) != spatial:
        raise InputError(f"mask shape {tuple(m.shape)} differs from the images' spatial shape "
                         f"{spatial}")
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise InputError("mask must be boolean or hold only 0 and 1")
        m = m != 0
    if not bool(m.any()):
        raise InputError("mask is empty: it selects no voxel")
    return m.to(device)


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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Structural similarity of two images or volumes.

    Parameters
    ----------
    x, y : (H, W), (D, H, W), (N, C, H, W) or (N, C, D, H, W) array or tensor
        Same shape, device and (after promotion) float dtype; float16/bfloat16 and integers are
        computed in float32. The layout is read from ``ndim``: 2 and 4 are 2-D, 3 and 5 are 3-D.
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
        tile, so a budget below that is exceeded rather than refused.

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
        bad or empty mask.

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
    s = resolve_settings(preset, window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                         covariance=covariance, border=border)
    x, y, L = _check_call(x, y, data_range, reduction)
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mean of 2-D SSIM over the slices of a volume along spatial ``axis`` (0, 1 or 2).

    Takes (D, H, W) or (N, C, D, H, W) inputs and the options of :func:`ssim`. fastMRI's
    evaluation is ``ssim_slices(gt, pred, axis=0, preset="fastmri", data_range=gt.max())``.
    With a mask, each slice's value is its masked mean and slices whose map holds no mask voxel
    are left out of the mean. ``return_map`` returns the stack of 2-D maps in the input's axis
    order.
    """
    s = resolve_settings(preset, window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                         covariance=covariance, border=border)
    x, y, L = _check_call(x, y, data_range, reduction)
    if x.ndim not in (3, 5):
        raise InputError(f"ssim_slices needs (D, H, W) or (N, C, D, H, W) volumes, got shape "
                         f"{tuple(x.shape)}")
    if axis not in (0, 1, 2, -1, -2, -3):
        raise SettingsError(f"axis must be a spatial axis 0, 1 or 2, got {axis}")
    return _slices(x, y, axis % 3, s, L, mask, reduction, return_map, max_memory)


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
        m = _crop_mask(_check_mask(mask, tuple(x.shape[2:]), x.device).movedim(axis, 0), s2,
                       smap.shape[-2:], slices=True)  # (S, A', B')
        counts = m.flatten(1).sum(1)
        keep = counts > 0
        if not bool(keep.any()):
            raise InputError("mask has no voxel inside the region the SSIM maps cover")
        sums = (smap.reshape(n, c, -1, *smap.shape[-2:]) * m).sum((-2, -1), dtype=torch.float64)
        per_slice = sums[..., keep] / counts[keep]
    per_nc = per_slice.mean(-1)
    out = per_nc if reduction == "none" else per_nc.mean(1)
    if not batched:
        out = out[0, 0] if reduction == "none" else out[0]
    if not return_map:
        return out
    smap = smap.reshape(n, c, x.shape[d], *smap.shape[-2:]).movedim(2, d)
    return out, (smap if batched else smap[0, 0])


def _crop_mask(m: torch.Tensor, s: SSIMSettings, map_shape, slices: bool = False):
    """Crop a spatial mask exactly like the valid map (centre voxels of each window)."""
    if s.border != "valid":
        return m
    start = 1 if slices else 0
    for i, size in enumerate(map_shape):
        dim = start + i
        r = (m.shape[dim] - size) // 2
        m = m.narrow(dim, r, size)
    return m


def _ssim(x, y, s: SSIMSettings, L: float, mask, reduction, return_map, max_memory):
    batched = x.ndim in (4, 5)
    nd = x.ndim - 2 if batched else x.ndim
    if not batched:
        x, y = x[None, None], y[None, None]
    spatial = tuple(x.shape[2:])
    sizes = _per_axis(s.win_size, nd, "win_size")
    sigmas = _per_axis(s.sigma, nd, "sigma")
    for ax, (n, w) in enumerate(zip(spatial, sizes)):
        if s.border == "valid" and n < w:
            raise InputError(
                f"spatial axis {ax} has {n} voxels, fewer than the {w}-voxel window "
                f"(shape {spatial}); use a smaller win_size, border='same-zero'/'reflect', or "
                f"2-D slices (ssim_slices)"
            )
        if s.border == "reflect" and n <= (w - 1) // 2:
            raise InputError(f"spatial axis {ax} has {n} voxels, too few to reflect-pad a "
                             f"{w}-voxel window (shape {spatial})")
    m = _check_mask(mask, spatial, x.device) if mask is not None else None

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
    c1, c2 = (s.k1 * L) ** 2, (s.k2 * L) ** 2
    dims = tuple(range(2, x.ndim))
    centre = (x.detach().mean(dims, keepdim=True), y.detach().mean(dims, keepdim=True))

    map_shape = tuple(n - w + 1 for n, w in zip(x.shape[2:], sizes))
    if m is not None:
        m = _crop_mask(m, s, map_shape)
        count = int(m.sum())
        if count == 0:
            raise InputError(
                "mask has no voxel inside the region the SSIM map covers "
                f"(the valid map skips {[(w - 1) // 2 for w in sizes]} voxels at each border)"
            )
    grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    budget = max_memory if max_memory is not None else default_max_memory(x.device, grad=grad)
    step0, step1 = _plan_tiles(tuple(x.shape), sizes, map_shape, x.element_size() * (1 + grad),
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
            args = (xs, ys, centre, taps, c1, c2, cov_norm)
            if grad and (step0, step1) != map_shape[:2]:
                smap = checkpoint(_ssim_slab, *args, use_reentrant=False)
            else:
                smap = slab(*args)
            inside = smap * m[o0:o1, h0:h1] if m is not None else smap
            total += inside.sum(dims, dtype=torch.float64)
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
