"""volqa: reference-based quality metrics for reconstructed medical volumes.

The SSIM engine (:func:`ssim`, :func:`ssim_slices`, :func:`ms_ssim`, :class:`SSIMLoss`,
:class:`MSSSIMLoss`, :func:`hfen`, :func:`nmse`) is pure tensor code in
:mod:`volqa.engine`; the file pipeline (:func:`score_pair`, :func:`score_manifest`) is in
:mod:`volqa.pipeline`, the readers (:func:`read_volume`) in :mod:`volqa.io`. Every name is
imported on first use, so ``import volqa`` is cheap and the engine works where nibabel or
SimpleITK are not installed. Typer, Pillow and the demo are imported only by the CLI.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._lazy import lazy_names
from .errors import GeometryError, InputError, ManifestError, SettingsError, VolqaError

try:
    __version__ = version("volqa")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "PRESETS": "volqa.engine",
    "SSIMSettings": "volqa.engine",
    "SSIMLoss": "volqa.engine",
    "ssim": "volqa.engine",
    "ssim_slices": "volqa.engine",
    "ms_ssim": "volqa.engine",
    "MSSSIMLoss": "volqa.engine",
    "hfen": "volqa.engine",
    "nmse": "volqa.engine",
    "Settings": "volqa.settings",
    "Execution": "volqa.execution",
    "score_pair": "volqa.pipeline",
    "score_manifest": "volqa.pipeline",
    "BatchInterrupted": "volqa.pipeline",
    "read_volume": "volqa.io",
    "Volume": "volqa.io",
}

__all__ = [
    "VolqaError",
    "SettingsError",
    "InputError",
    "GeometryError",
    "ManifestError",
    "__version__",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from .engine import (
        PRESETS,
        MSSSIMLoss,
        SSIMLoss,
        SSIMSettings,
        hfen,
        ms_ssim,
        nmse,
        ssim,
        ssim_slices,
    )
    from .execution import Execution
    from .io import Volume, read_volume
    from .pipeline import BatchInterrupted, score_manifest, score_pair
    from .settings import Settings


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
