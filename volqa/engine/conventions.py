"""SSIM conventions: the frozen :class:`SSIMSettings`, the named presets, the window taps.

SSIM(x, y) = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)),
C1 = (K1 L)², C2 = (K2 L)², L = ``data_range``. Published tools differ in the window, the
covariance estimator, the border and the data range; an :class:`SSIMSettings` fixes all but
the data range (which every call must give), and is always valid: it checks itself when made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from ..errors import SettingsError

Window = Literal["gaussian", "uniform"]
Covariance = Literal["population", "sample"]
Border = Literal["valid", "same-zero", "reflect"]

#: Gaussian sigma (voxels) for which 2 sigma^2 is a normal, finite float64: the window taps
#: exp(-d^2 / (2 sigma^2)) are then well defined (outside, they are NaN or overflow).
SIGMA_RANGE = (math.sqrt(np.finfo(np.float64).tiny / 2), math.sqrt(np.finfo(np.float64).max / 2))
#: float32's smallest normal and largest finite numbers (SSIM of float32 data is float32).
FLOAT32_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))

WINDOWS = ("gaussian", "uniform")
COVARIANCES = ("population", "sample")
BORDERS = ("valid", "same-zero", "reflect")
_NUMBER = (int, float, np.integer, np.floating)


def as_tuple(value: Any, name: str) -> tuple:
    """``value`` as a tuple: a sequence as is, a number as a 1-tuple."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise SettingsError(f"{name} must not be empty")
        if not all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in value):
            raise SettingsError(f"{name} must hold numbers, got {value!r}")
        return tuple(value)
    if isinstance(value, _NUMBER) and not isinstance(value, bool):
        return (value,)
    raise SettingsError(f"{name} must be a number or a sequence of numbers, got {value!r}")


def per_axis(value: Any, ndim: int, name: str) -> tuple:
    """One value per spatial axis from a scalar or a sequence of length ``ndim``."""
    t = as_tuple(value, name)
    if len(t) == 1:
        return t * ndim
    if len(t) != ndim:
        raise SettingsError(f"{name} has {len(t)} values but the images have {ndim} spatial axes")
    return t


def _unwrap(t: tuple) -> Any:
    return t[0] if len(t) == 1 else t


@dataclass(frozen=True)
class SSIMSettings:
    """Every choice that decides an SSIM value except the data range; hashable, always valid.

    Attributes
    ----------
    preset : str or None
        The preset these settings came from (a label only; the values below decide).
    window : {"gaussian", "uniform"}
        Gaussian: ``win_size`` taps of exp(-d²/2σ²), normalised. Uniform: a box.
    win_size : int or tuple of int
        Odd window length in voxels, one value or one per spatial axis.
    sigma : float or tuple of float
        Gaussian standard deviation in voxels (ignored for "uniform").
    k1, k2 : float
        The constants of C1 = (K1 L)² and C2 = (K2 L)².
    covariance : {"population", "sample"}
        "sample" scales variances and covariance by N/(N-1), N = voxels in the window.
    border : {"valid", "same-zero", "reflect"}
        See :func:`volqa.ssim`.
    slices : bool
        True for conventions that average 2-D SSIM over the slices along the first spatial
        axis of a volume (fastMRI).

    Raises
    ------
    SettingsError
        Unknown window, covariance or border; an even or non-positive window; sigma, K1 or K2
        not a positive finite number.
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

    def __post_init__(self) -> None:
        for name, allowed in (("window", WINDOWS), ("covariance", COVARIANCES),
                              ("border", BORDERS)):
            if getattr(self, name) not in allowed:
                raise SettingsError(f"unknown {name} {getattr(self, name)!r}; choose one of "
                                    f"{', '.join(allowed)}")
        sizes = as_tuple(self.win_size, "win_size")
        if any(isinstance(w, bool) or int(w) != w or w < 1 or w % 2 == 0 for w in sizes):
            raise SettingsError(f"win_size must be odd positive integers, got {self.win_size!r}")
        sigmas = as_tuple(self.sigma, "sigma")
        if any(not (v > 0 and math.isfinite(v)) for v in sigmas):
            raise SettingsError(f"sigma must be > 0, got {self.sigma!r}")
        low, high = SIGMA_RANGE
        if any(not low <= v <= high for v in sigmas):
            raise SettingsError(f"sigma must lie in [{low:.3g}, {high:.3g}] voxels, so that the "
                                "Gaussian taps exp(-d^2 / (2 sigma^2)) are finite numbers; got "
                                f"{self.sigma!r}")
        for name in ("k1", "k2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, _NUMBER) or not (
                value > 0 and math.isfinite(value)
            ):
                raise SettingsError(f"k1 and k2 must be finite numbers > 0, got k1={self.k1}, "
                                    f"k2={self.k2}")
        if self.covariance == "sample" and math.prod(sizes) == 1:
            # the rule is about the voxels in the window: (1, 7) holds 7, N/(N-1) = 7/6
            raise SettingsError(f"sample covariance divides by N - 1 for the N voxels of the "
                                f"window; win_size={self.win_size!r} holds one voxel. Use a "
                                "larger window or covariance='population'")
        object.__setattr__(self, "win_size", _unwrap(tuple(int(w) for w in sizes)))
        object.__setattr__(self, "sigma", _unwrap(tuple(float(v) for v in sigmas)))
        object.__setattr__(self, "k1", float(self.k1))
        object.__setattr__(self, "k2", float(self.k2))

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for JSON and result rows."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSIMSettings:
        """The inverse of :meth:`as_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


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
    "Gaussian 11, sigma 1.5, reflect padding, mean over the whole input-sized map. With "
    "another sigma the window has int(3.5 sigma + 0.5) * 2 + 1 taps, as torchmetrics derives "
    "it (its kernel_size is ignored for Gaussian windows): equal to torchmetrics for 2-D "
    "images at every sigma, for 3-D volumes only where that length is 11 (1.43 <= sigma < "
    "1.57), because torchmetrics pads the last axis of a volume by (kernel_size - 1) / 2 = 5 "
    "whatever the window",
    "pytorch_msssim": "pytorch_msssim.ssim(win_size=11) (pytorch-msssim 1.0): "
    "Gaussian 11, sigma 1.5, valid",
    "pytorch_ssim": "pytorch-ssim / ssim3D (Po-Hsun-Su, 2017-2019): Gaussian 11, sigma 1.5, "
    "zero padding, mean over the input-sized map",
    "fastmri": "fastmri/evaluate.py ssim(): mean over slices (first spatial axis) of 2-D "
    "skimage SSIM with defaults; fastMRI passes data_range = gt.max()",
    "synthrad2023": "the SSIM convention of SynthRAD2023 image_metrics (3-D skimage defaults: "
    "uniform 7, sample covariance, valid; masked mean over the mask cropped like the map). "
    "The whole evaluation (HU clipping to [-1024, 3000], -1024 outside the mask, the +1024 "
    "shift, L = 4024) is the protocol: --protocol synthrad2023",
}
DEFAULT_SSIM = SSIMSettings()


def check_constants(k1: float, k2: float, data_range: float, *,
                    limits: tuple[float, float] = FLOAT32_RANGE) -> None:
    """Refuse K1, K2 and L whose SSIM constants do not fit the computation's float type.

    C1 = (K1 L)^2 and C2 = (K2 L)^2 must be normal numbers (at least ``limits[0]``), their
    product too (the denominator of a flat region), and (L^2 + C1)(L^2 + C2), the size of
    the denominator for intensities of the order of L, at most ``limits[1]``. Outside, SSIM
    is NaN, 0/0 or an overflow. ``limits`` are float32's by default (volqa's volumes).

    Raises
    ------
    SettingsError
        With the valid range of each of K1, K2 and L when the other two are kept.
    """
    tiny, huge = limits
    rr = data_range * data_range  # products, not **: they give inf instead of raising
    c1, c2 = (k1 * data_range) ** 2 if k1 * data_range < 1e150 else math.inf, \
        (k2 * data_range) ** 2 if k2 * data_range < 1e150 else math.inf
    if min(c1, c2, c1 * c2) >= tiny and (rr + c1) * (rr + c2) <= huge:
        return

    def k_range(c_other: float) -> tuple[float, float]:
        low = max(math.sqrt(tiny), math.sqrt(tiny / c_other) if c_other > 0 else math.inf)
        top = huge / (rr + c_other) - rr if rr + c_other > 0 else math.inf
        high = math.sqrt(top) / data_range if top > 0 else 0.0
        return low / data_range, high

    l_low = max(math.sqrt(tiny) / min(k1, k2), tiny ** 0.25 / math.sqrt(k1) / math.sqrt(k2))
    l_high = (huge / (1 + k1 * k1) / (1 + k2 * k2)) ** 0.25
    ranges = [("k1", k_range(c2)), ("k2", k_range(c1)), ("L", (l_low, l_high))]
    valid = "; ".join(f"{n} in [{lo:.3g}, {hi:.3g}]" for n, (lo, hi) in ranges
                      if lo <= hi < math.inf)
    raise SettingsError(
        f"k1={k1:g}, k2={k2:g} and data range L={data_range:g} give SSIM constants "
        f"C1 = (K1 L)^2 = {c1:.3g} and C2 = (K2 L)^2 = {c2:.3g} that float32 cannot use (C1, "
        f"C2 and C1 C2 must be at least {tiny:.3g}, (L^2 + C1)(L^2 + C2) at most {huge:.3g}; "
        f"else SSIM is NaN or overflows). Valid, keeping the other two: "
        f"{valid or 'none'}."
    )


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
    """Combine a preset with explicit options (explicit options win); the result is valid.

    Raises
    ------
    SettingsError
        Unknown preset or an invalid option (see :class:`SSIMSettings`).
    """
    if preset is None:
        base = DEFAULT_SSIM
    elif preset in _PRESETS:
        base = _PRESETS[preset]
    else:
        raise SettingsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    given = dict(window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                 covariance=covariance, border=border)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
    if (preset == "torchmetrics" and sigma is not None and win_size is None
            and given.get("window", base.window) == "gaussian"):
        given["win_size"] = _unwrap(tuple(torchmetrics_taps(v)
                                          for v in as_tuple(given["sigma"], "sigma")))
    return replace(base, **given)


def torchmetrics_taps(sigma: float) -> int:
    """Gaussian window length torchmetrics derives from sigma: int(3.5 sigma + 0.5) * 2 + 1
    (torchmetrics.functional.image.ssim, 1.x; 11 for sigma = 1.5)."""
    if not (isinstance(sigma, _NUMBER) and sigma > 0 and math.isfinite(sigma)):
        raise SettingsError(f"sigma must be > 0, got {sigma!r}")
    return int(3.5 * float(sigma) + 0.5) * 2 + 1


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
