"""SSIM and MS-SSIM as differentiable training losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import SettingsError
from .checks import check_data_range
from .conventions import resolve_settings
from .multiscale import _check_weights, ms_ssim
from .structural import ssim


class SSIMLoss(nn.Module):
    """``1 - SSIM`` for (N, C, H, W) or (N, C, D, H, W) batches.

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes; inputs of another rank are
        an error (no guessing).
    data_range : float
        Required: L of C1 = (K1 L)², C2 = (K2 L)² (1 for images in [0, 1]).
    preset, window, win_size, sigma, k1, k2, covariance, border, max_memory
        As in :func:`volqa.ssim` (defaults: Gaussian 11, σ 1.5, population covariance, valid).
    reduction : {"mean", "sum", "none"}, default "mean"
        Over the batch of per-item losses (channels are averaged within each item);
        "none" returns shape (N,).

    Notes
    -----
    Inputs in float16/bfloat16 (e.g. under ``torch.autocast``) are computed in float32 and the
    loss is float32; float64 inputs give a float64 loss. Volumes larger than ``max_memory``
    are computed in slabs and each slab is recomputed in backward, so memory stays bounded.
    """

    def __init__(
        self,
        spatial_dims: Literal[2, 3] = 3,
        *,
        data_range: float | None = None,
        preset: str | None = None,
        window: str | None = None,
        win_size: int | Sequence[int] | None = None,
        sigma: float | Sequence[float] | None = None,
        k1: float | None = None,
        k2: float | None = None,
        covariance: str | None = None,
        border: str | None = None,
        reduction: Literal["mean", "sum", "none"] = "mean",
        max_memory: int | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise SettingsError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if reduction not in ("mean", "sum", "none"):
            raise SettingsError(f"unknown reduction {reduction!r}; choose mean, sum or none")
        self.spatial_dims = spatial_dims
        self.data_range = check_data_range(data_range)
        self.settings = resolve_settings(preset, window=window, win_size=win_size, sigma=sigma,
                                         k1=k1, k2=k2, covariance=covariance, border=border)
        self.reduction = reduction
        self.max_memory = max_memory

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim != self.spatial_dims + 2:
            layout = "(N, C, H, W)" if self.spatial_dims == 2 else "(N, C, D, H, W)"
            raise SettingsError(f"SSIMLoss(spatial_dims={self.spatial_dims}) expects {layout} "
                                f"batches, got shape {tuple(input.shape)}")
        value = self._similarity(input, target)
        dtype = torch.float64 if torch.float64 in (input.dtype, target.dtype) else torch.float32
        loss = (1.0 - value).to(dtype)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def _similarity(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ssim(input, target, data_range=self.data_range, settings=self.settings,
                    max_memory=self.max_memory)

    def extra_repr(self) -> str:
        s = self.settings
        return (f"spatial_dims={self.spatial_dims}, data_range={self.data_range}, "
                f"preset={s.preset}, window={s.window}, win_size={s.win_size}, sigma={s.sigma}, "
                f"covariance={s.covariance}, border={s.border}, reduction={self.reduction}")


class MSSSIMLoss(SSIMLoss):
    """``1 - MS-SSIM`` for (N, C, H, W) or (N, C, D, H, W) batches (:func:`volqa.ms_ssim`).

    Parameters
    ----------
    spatial_dims, data_range, preset, window, win_size, sigma, k1, k2, covariance, border,
    reduction, max_memory
        As in :class:`SSIMLoss`.
    weights : sequence of float, optional
        Exponents per scale (default Wang et al. 2003's five).
    scales : int, optional
        The first ``scales`` of Wang's weights, renormalised (for small inputs).

    Notes
    -----
    Inputs must hold every scale's window (:func:`volqa.engine.multiscale.ms_ssim_min_size`:
    161 voxels per axis for 11 taps and 5 scales); smaller ones are an error that names the
    minimum, never a silent change.
    """

    def __init__(self, spatial_dims: Literal[2, 3] = 3, *, data_range: float | None = None,
                 weights: Sequence[float] | None = None, scales: int | None = None,
                 **options) -> None:
        super().__init__(spatial_dims, data_range=data_range, **options)
        self.weights = _check_weights(weights, scales)

    def _similarity(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ms_ssim(input, target, data_range=self.data_range, weights=self.weights,
                       settings=self.settings, max_memory=self.max_memory)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weights={self.weights}"
