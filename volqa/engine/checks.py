"""Argument checks shared by every public engine function.

Each check raises a :class:`~volqa.errors.SettingsError` (a bad option) or an
:class:`~volqa.errors.InputError` (a bad image) whose message names the rule, the offending
value and a way out; both are ``ValueError`` subclasses.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from ..errors import InputError, SettingsError

ArrayLike = Union[np.ndarray, torch.Tensor]
REDUCTIONS = ("mean", "none")


def as_tensor(a: ArrayLike, name: str) -> torch.Tensor:
    """A torch view of a numpy array (native byte order), or the tensor itself."""
    if isinstance(a, np.ndarray):
        if not a.dtype.isnative:  # e.g. big-endian data straight from a file
            a = a.astype(a.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, torch.Tensor):
        return a
    raise SettingsError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")


def check_data_range(data_range: object) -> float:
    """``data_range`` as a positive finite float; there is deliberately no default."""
    if data_range is None:
        raise SettingsError(
            "data_range is required: pass the intensity range L used in C1=(K1*L)^2, "
            "C2=(K2*L)^2, e.g. data_range=1.0 for images scaled to [0, 1], or "
            "float(reference.max() - reference.min())"
        )
    try:
        value = float(data_range)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        raise SettingsError(f"data_range must be a number, got {data_range!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise SettingsError(f"data_range must be > 0 and finite, got {value}")
    return value


#: Largest magnitude (of a voxel or of L) computed in float32: SSIM's products of means,
#: variances and C1, C2 reach about 4·M², which must stay below float32's 3.4e38.
FLOAT32_MAX_MAGNITUDE = 1e18
#: Largest magnitude computed at all (float64 overflows near 1.8e308).
FLOAT64_MAX_MAGNITUDE = 1e150


def check_pair(x: ArrayLike, y: ArrayLike,
               data_range: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same shape, device and a real dtype; NaN/Inf refused; the dtype of the computation.

    float64 and integer inputs are computed in float64 (integer data is exact, and float32
    would round it: 1.9e-6 from skimage's float64 value on uint8 images); float32, float16 and
    bfloat16 in float32. float32 inputs whose values, or ``data_range``, exceed
    :data:`FLOAT32_MAX_MAGNITUDE` in magnitude are computed in float64 too, since their squares
    would overflow float32 (SSIM would be NaN); beyond :data:`FLOAT64_MAX_MAGNITUDE` they are
    refused.
    """
    x, y = as_tensor(x, "x"), as_tensor(y, "y")
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
    if not dtype.is_floating_point:
        dtype = torch.float64
    elif dtype != torch.float64:
        dtype = torch.float32
    largest = 0.0 if data_range is None else abs(float(data_range))
    for name, t in (("x", x), ("y", y)):
        if t.numel() == 0:
            raise InputError(f"{name} is empty (shape {tuple(t.shape)})")
        if not t.is_floating_point():  # integers: finite, and float64 squares any of them
            continue
        lo, hi = (float(v) for v in torch.aminmax(t.detach()))  # NaN and Inf propagate
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = t.numel() - int(torch.isfinite(t.detach()).sum())
            raise InputError(f"{name} holds {bad} NaN or Inf values; SSIM is undefined there")
        largest = max(largest, abs(lo), abs(hi))
    if largest > FLOAT64_MAX_MAGNITUDE:
        raise InputError(
            f"values or data_range of magnitude {largest:.3g} exceed {FLOAT64_MAX_MAGNITUDE:g}: "
            "SSIM's squared terms would overflow even float64; rescale the images and "
            "data_range by the same factor (SSIM does not change)"
        )
    if dtype == torch.float32 and largest > FLOAT32_MAX_MAGNITUDE:
        dtype = torch.float64
    return x.to(dtype), y.to(dtype)


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    if reduction not in allowed:
        raise SettingsError(f"unknown reduction {reduction!r}; choose one of {allowed}")
    return reduction


def check_mask(mask: ArrayLike, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A boolean mask of the images' spatial shape that selects at least one voxel."""
    m = as_tensor(mask, "mask")
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
