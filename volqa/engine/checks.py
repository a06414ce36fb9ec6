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


def check_pair(x: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Same shape, device and a real dtype; NaN/Inf refused. float64 stays float64, every
    other dtype (float16, bfloat16, integers) is computed in float32."""
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
    if dtype != torch.float64:
        dtype = torch.float32
    x, y = x.to(dtype), y.to(dtype)
    for name, t in (("x", x), ("y", y)):
        # a sum is NaN/Inf if any voxel is (or on overflow): count only then, no big temporary
        if math.isfinite(float(t.detach().sum())):
            continue
        bad = t.numel() - int(torch.isfinite(t).sum())
        if bad:
            raise InputError(f"{name} holds {bad} NaN or Inf values; SSIM is undefined there")
    return x, y


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
