"""Separable filtering as sums of shifted slices, differentiable.

One 1-D window is applied per spatial axis ("valid": the output shrinks by ``len(taps) - 1``
along that axis). No dense k³ kernel and no convolution is involved, so TF32 never applies on
GPU and float64 never falls back to im2col on CPU. Backward is the same filter with the taps
reversed over the zero-padded gradient, so gradients cost one more pass and keep no
intermediate tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def shifted_sum(t: torch.Tensor, taps: Sequence[float], dim: int) -> torch.Tensor:
    """Valid correlation of ``t`` with ``taps`` along ``dim`` as a sum of shifted slices."""
    n = t.shape[dim] - len(taps) + 1
    out = t.narrow(dim, 0, n) * taps[0]
    for i in range(1, len(taps)):
        out.add_(t.narrow(dim, i, n), alpha=taps[i])
    return out


class _Filter1d(torch.autograd.Function):
    """Valid 1-D filter along one axis; backward = full correlation with reversed taps."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, taps: tuple, dim: int) -> torch.Tensor:  # type: ignore[override]
        ctx.taps, ctx.dim = taps, dim
        return shifted_sum(t, taps, dim)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        k, dim = len(ctx.taps), ctx.dim
        pad = [0, 0] * (g.ndim - 1 - dim) + [k - 1, k - 1]
        return _Filter1d.apply(F.pad(g, pad), tuple(reversed(ctx.taps)), dim), None, None


def separable_filter(t: torch.Tensor, taps: Sequence[tuple], first_dim: int) -> torch.Tensor:
    """Apply one 1-D valid filter per spatial axis (axes ``first_dim``, ``first_dim + 1``, ...).

    Axes whose window has one tap are left alone (a 1-tap normalised window is the identity).
    """
    apply = _Filter1d.apply if torch.is_grad_enabled() and t.requires_grad else shifted_sum
    for i, tp in enumerate(taps):
        if len(tp) > 1:
            t = apply(t, tp, first_dim + i)
    return t
