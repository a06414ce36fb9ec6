"""volqa: reference-based quality metrics for reconstructed medical volumes.

The SSIM engine (:func:`ssim`, :func:`ssim_slices`, :class:`SSIMLoss`) is pure tensor code
and imports only torch and numpy. The file pipeline (:func:`score_pair`,
:func:`score_manifest`, :func:`read_volume`) is imported on first use, so the engine works
where nibabel or SimpleITK are not installed.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .errors import GeometryError, InputError, ManifestError, SettingsError, VolqaError
from .losses import SSIMLoss
from .ssim import PRESETS, ssim, ssim_slices

try:
    __version__ = version("volqa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "score_pair": "volqa.runner",
    "score_manifest": "volqa.runner",
    "read_volume": "volqa.io",
    "Volume": "volqa.io",
}

__all__ = [
    "PRESETS",
    "SSIMLoss",
    "ssim",
    "ssim_slices",
    "VolqaError",
    "SettingsError",
    "InputError",
    "GeometryError",
    "ManifestError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volqa' has no attribute {name!r}")
