"""The numeric core: pure tensor functions, no files, no batch, no settings beyond SSIM's own.

:func:`ssim`, :func:`ssim_slices`, :func:`ms_ssim`, :class:`SSIMLoss` and :class:`MSSSIMLoss`
(torch), the frozen :class:`SSIMSettings` and its presets, :func:`hfen` (float64), and the
voxel-wise error metrics (numpy, float64 sums).
Names are imported on first use, so the conventions can be read without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_LAZY = {
    "PRESETS": ".conventions",
    "PRESET_NOTES": ".conventions",
    "SSIMSettings": ".conventions",
    "resolve_settings": ".conventions",
    "window_taps": ".conventions",
    "SSIMLoss": ".losses",
    "MSSSIMLoss": ".losses",
    "ssim": ".structural",
    "ssim_slices": ".structural",
    "default_max_memory": ".tiling",
    "map_region": ".tiling",
    "ErrorStats": ".voxelwise",
    "error_stats": ".voxelwise",
    "mse": ".voxelwise",
    "mae": ".voxelwise",
    "psnr": ".voxelwise",
    "nrmse": ".voxelwise",
    "masked_mean": ".voxelwise",
    "nmse": ".voxelwise",
    "slice_stats": ".voxelwise",
    "MS_SSIM_WEIGHTS": ".multiscale",
    "ms_ssim": ".multiscale",
    "hfen": ".highfreq",
}
__all__ = list(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .conventions import PRESET_NOTES, PRESETS, SSIMSettings, resolve_settings, window_taps
    from .highfreq import hfen
    from .losses import MSSSIMLoss, SSIMLoss
    from .multiscale import MS_SSIM_WEIGHTS, ms_ssim
    from .structural import ssim, ssim_slices
    from .tiling import default_max_memory, map_region
    from .voxelwise import (
        ErrorStats,
        error_stats,
        mae,
        masked_mean,
        mse,
        nmse,
        nrmse,
        psnr,
        slice_stats,
    )


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
