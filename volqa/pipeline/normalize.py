"""Intensity normalisation of a reference/test pair before scoring.

Every mode derives one affine map ``x -> (clip(x) - offset) * scale`` from the *reference*
volume only and applies the same map to the test volume, so a reconstruction whose
intensities are scaled or shifted is still penalised. The statistics use every voxel of the
reference (not only the mask).

========== ======================================== ============= ========================
mode       map                                      clipping      data range ``L``
========== ======================================== ============= ========================
none       identity                                 no            ``data_range`` if given,
                                                                  else ref max - ref min
minmax     ``(x - min) / (max - min)``               no            1
percentile ``(x - p_lo) / (p_hi - p_lo)``            to [p_lo,     1
                                                    p_hi], both
zscore     ``(x - mean) / std`` (population std)     no            (max - min) / std of the
                                                                  reference
window     ``(x - (level - width/2)) / width``       to the        1
                                                    window, both
========== ======================================== ============= ========================

``minmax`` is the default, for three reasons. (1) SSIM's luminance term
``(2 μx μy + C1) / (μx² + μy² + C1)`` depends on where zero is: on raw values the score changes
when both volumes are shifted by a constant (CT stored as HU or as HU + 1024 gives different
SSIMs) and it can even turn negative where local means change sign (soft tissue near 0 HU).
Mapping the reference's min to 0 and max to 1 removes the origin and the unit and gives the
common "images in [0, 1], L = 1" convention. (2) The map comes from the reference only and the
test is not clipped, so a reconstruction's intensity errors (scaling, offset, overshoot) still
count. (3) PSNR and the range-normalised NRMSE are unchanged by any common affine map when
``L`` follows it, so they equal those of ``none`` with ``L = max - min`` of the reference; only
MAE and MSE change unit (fractions of the reference's range). Use ``none`` to keep MAE/MSE in
the scanner's units (e.g. Hounsfield units), with ``data_range`` for a fixed ``L``.

Percentiles are computed exactly (linear interpolation between order statistics, numpy's and
torch's default ``"linear"`` method) with :func:`numpy.partition`, which has no limit on the
number of elements (``torch.quantile`` refuses more than 2**24).

A reference with no spread (constant, or equal percentiles, or zero standard deviation) gives
an :class:`~volqa.errors.InputError` that says so: there is no data range to normalise by.
With ``none`` and an explicit ``data_range`` a constant reference is accepted (SSIM and PSNR
are defined; the range-normalised NRMSE is not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..settings import DEFAULT_NORMALIZE, DEFAULT_PERCENTILES, NORMALIZE_MODES, Settings

__all__ = [
    "NORMALIZE_MODES",
    "Normalized",
    "normalize",
    "normalize_pair",
    "percentiles",
    "range_note",
]

#: A test whose intensity range is this many times wider or narrower than the reference's
#: gets a note (:func:`range_note`).
RANGE_RATIO_NOTE = 10.0


@dataclass(frozen=True)
class Normalized:
    """A normalised pair and the map that produced it.

    Attributes
    ----------
    reference, test : ndarray, float32, same shape as the inputs
        The normalised volumes (the inputs themselves, as float32, for ``none``).
    data_range : float
        ``L`` for SSIM and PSNR, in normalised units.
    mode : str
        The normalisation mode.
    offset, scale : float
        The map ``y = (clip(x) - offset) * scale`` (0 and 1 for ``none``).
    clip : (float, float) or None
        The clipping range in input units, applied to both volumes before the map.
    """

    reference: np.ndarray
    test: np.ndarray
    data_range: float
    mode: str
    offset: float = 0.0
    scale: float = 1.0
    clip: tuple[float, float] | None = None

    def fields(self) -> dict[str, float | None]:
        """The map as the output row's ``norm_*`` columns (:data:`volqa.schema.ROW_COLUMNS`)."""
        low, high = self.clip if self.clip is not None else (None, None)
        return {"norm_offset": self.offset, "norm_scale": self.scale,
                "norm_clip_low": low, "norm_clip_high": high}


def percentiles(array: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Exact percentiles of an array of any size, linear interpolation, float64 result.

    Parameters
    ----------
    array : ndarray
        Any shape; flattened. Must not contain NaN.
    q : sequence of float
        Percentiles in [0, 100].

    Returns
    -------
    ndarray of float64, shape (len(q),)
        Equal to ``numpy.percentile(array.astype(float64), q)`` (method ``"linear"``).
    """
    flat = np.asarray(array).ravel()
    n = flat.size
    if n == 0:
        raise InputError("cannot compute percentiles of an empty volume.")
    pos = [(n - 1) * float(v) / 100.0 for v in q]
    ks = sorted({k for p in pos for k in (math.floor(p), min(math.floor(p) + 1, n - 1))})
    part = np.partition(flat, ks)  # copy in the input dtype; order statistics are exact
    out = np.empty(len(pos), dtype=np.float64)
    for i, p in enumerate(pos):
        lo = math.floor(p)
        hi = min(lo + 1, n - 1)
        a, b = float(part[lo]), float(part[hi])
        out[i] = a + (b - a) * (p - lo)
    return out


def range_note(reference: np.ndarray, test: np.ndarray) -> str | None:
    """A note when the test's intensities do not look like the reference's: a constant test, a
    range :data:`RANGE_RATIO_NOTE` times wider or narrower, or ranges that do not overlap.

    The normalisation map comes from the reference and applies to both, so a test in other
    units (``[0, 255]`` against ``[0, 1]``, HU against ``[0, 1]``) scores low: correctly, but
    the note says why. None for a constant reference (refused or explained elsewhere).
    """
    rmin, rmax = float(reference.min()), float(reference.max())
    tmin, tmax = float(test.min()), float(test.max())
    if not rmax > rmin:
        return None
    ref = f"the reference's [{rmin:.4g}, {rmax:.4g}]"
    if tmax == tmin:
        return f"the test is constant (every voxel is {tmin:.4g}), against {ref}"
    ratio = (tmax - tmin) / (rmax - rmin)
    apart = tmax < rmin or tmin > rmax
    if not (apart or ratio > RANGE_RATIO_NOTE or ratio < 1 / RANGE_RATIO_NOTE):
        return None
    return (f"the test's intensities span [{tmin:.4g}, {tmax:.4g}], {ratio:.3g} x the width of "
            f"{ref}{' and apart from it' if apart else ''}: other units or scaling, or a few "
            "extreme voxels? The reference's normalisation applies to both, so this counts "
            "against the test")


def _apply(x: np.ndarray, offset: float, scale: float, clip: tuple[float, float] | None):
    # float32 arithmetic on one fresh array, two passes (no copy, no float64 volume): the
    # relative rounding error is ~1e-7, far below any metric's meaningful digits.
    y = np.asarray(x, dtype=np.float32)
    if clip is not None:
        y = np.clip(y, np.float32(clip[0]), np.float32(clip[1]))
        y -= np.float32(offset)
    else:
        y = np.subtract(y, np.float32(offset), dtype=np.float32)
    y *= np.float32(scale)
    return y


def normalize_pair(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    mode: str = DEFAULT_NORMALIZE,
    data_range: float | None = None,
    percentile_range: Sequence[float] = DEFAULT_PERCENTILES,
    intensity_window: Sequence[float] | None = None,
) -> Normalized:
    """Normalise a pair with a map computed from the reference (see the module docstring).

    Parameters
    ----------
    reference, test : ndarray, (D, H, W) or any shape, same shape
        Finite values.
    mode : {"none", "minmax", "percentile", "zscore", "window"}, default "minmax"
    data_range : float, optional
        ``L`` for ``mode="none"``; default the reference's max - min.
    percentile_range : (float, float), default (0.5, 99.5)
        For ``mode="percentile"``: lower and upper percentile of the reference.
    intensity_window : (float, float), optional
        For ``mode="window"``: LEVEL, WIDTH in input units (e.g. Hounsfield units).

    Returns
    -------
    Normalized

    Raises
    ------
    SettingsError
        Invalid settings (checked by :class:`volqa.Settings`).
    InputError
        The reference has no spread for the chosen mode (constant volume).
    """
    settings = Settings(normalize=mode, data_range=data_range,
                        percentiles=tuple(percentile_range),  # type: ignore[arg-type]
                        intensity_window=intensity_window)  # type: ignore[arg-type]
    return normalize(reference, test, settings)


def normalize(reference: np.ndarray, test: np.ndarray, settings: Settings) -> Normalized:
    """:func:`normalize_pair` with the normalisation of a run's :class:`~volqa.Settings`."""
    mode, data_range = settings.normalize, settings.data_range
    percentile_range, intensity_window = settings.percentiles, settings.intensity_window
    ref = np.asarray(reference)
    tst = np.asarray(test)
    if ref.shape != tst.shape:
        raise InputError(f"reference shape {ref.shape} and test shape {tst.shape} differ.")
    if mode == "window":
        level, width = (float(v) for v in intensity_window)  # type: ignore[union-attr]
        lo = level - width / 2.0
        clip = (lo, lo + width)
        return Normalized(
            _apply(ref, lo, 1.0 / width, clip), _apply(tst, lo, 1.0 / width, clip),
            1.0, mode, lo, 1.0 / width, clip,
        )  # fmt: skip

    rmin, rmax = float(ref.min()), float(ref.max())
    constant = (
        f"the reference is constant (every voxel is {rmin:g}), so it has no intensity "
        "range to normalise by"
    )
    if mode == "none":
        if data_range is None:
            if rmax <= rmin:
                raise InputError(
                    f"{constant} and no data range for SSIM/PSNR. Pass --data-range L "
                    "(SSIM and PSNR are then defined, NRMSE is not), or check the file."
                )
            data_range = rmax - rmin
        return Normalized(
            np.asarray(ref, dtype=np.float32), np.asarray(tst, dtype=np.float32),
            float(data_range), mode,
        )  # fmt: skip
    if mode == "minmax":
        if rmax <= rmin:
            raise InputError(f"{constant}; use --normalize none --data-range L.")
        scale = 1.0 / (rmax - rmin)
        return Normalized(
            _apply(ref, rmin, scale, None), _apply(tst, rmin, scale, None), 1.0, mode, rmin, scale
        )
    if mode == "zscore":
        mean = float(np.mean(ref, dtype=np.float64))
        std = float(np.std(ref, dtype=np.float64))
        if not std > 0:
            raise InputError(
                f"{constant} (standard deviation 0); use --normalize none --data-range L."
            )
        scale = 1.0 / std
        return Normalized(
            _apply(ref, mean, scale, None), _apply(tst, mean, scale, None),
            (rmax - rmin) * scale, mode, mean, scale,
        )  # fmt: skip
    # percentile
    plo, phi = (float(v) for v in percentile_range)
    lo, hi = (float(v) for v in percentiles(ref, (plo, phi)))
    if not hi > lo:
        raise InputError(
            f"the reference's {plo:g}th and {phi:g}th percentiles are equal ({lo:g}): more than "
            f"{phi - plo:g}% of its voxels share one value, so there is no range to scale by. "
            "Widen --percentiles, or use --normalize none --data-range L."
        )
    scale = 1.0 / (hi - lo)
    return Normalized(
        _apply(ref, lo, scale, (lo, hi)), _apply(tst, lo, scale, (lo, hi)),
        1.0, mode, lo, scale, (lo, hi),
    )  # fmt: skip
