"""What decides the numbers of a run: the frozen :class:`Settings`.

:class:`Settings` holds everything that decides a number in the output: the metrics, the
intensity normalisation, the SSIM convention (:class:`~volqa.engine.SSIMSettings`), the 2-D
slice axis, resampling and map saving. It is hashable and always valid (it checks itself when
made); the CLI builds it once and it travels unchanged to every row, into ``settings.json``,
the Parquet metadata and the setting columns of every row. How a run is carried out (device,
memory, workers) is the other object, :class:`volqa.execution.Execution`: changing it never
changes a number.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .engine.conventions import DEFAULT_SSIM, SSIMSettings, check_constants, resolve_settings
from .errors import SettingsError
from .protocols import PROTOCOL_NAMES, PROTOCOLS
from .schema import METRICS, SETTING_COLUMNS

__all__ = ["NORMALIZE_MODES", "DEFAULT_NORMALIZE", "DEFAULT_PERCENTILES", "DEFAULT_MIN_COVERAGE",
           "Settings"]

NORMALIZE_MODES: tuple[str, ...] = ("none", "minmax", "percentile", "zscore", "window")
DEFAULT_NORMALIZE = "minmax"
DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: With resampling, the smallest fraction of the reference grid the test must cover.
DEFAULT_MIN_COVERAGE = 0.95
#: Version of the ``settings.json`` layout (bumped when :meth:`Settings.as_dict` changes).
SETTINGS_FORMAT = 1


def _finite_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _pair(value: Any, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        a, b = value
        pair = (float(a), float(b))
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be two numbers LOW,HIGH / LEVEL,WIDTH; got "
                            f"{value!r}.") from None
    if not all(math.isfinite(v) for v in pair):
        raise SettingsError(f"{name} must be two finite numbers; got {value!r}.")
    return pair


@dataclass(frozen=True)
class Settings:
    """Everything that decides the numbers of a run; frozen, hashable, always valid.

    Attributes
    ----------
    metrics : tuple of str or None
        Metric names from :data:`volqa.schema.METRICS`, in column order; None means the
        default set, resolved per manifest by :meth:`for_manifest`.
    normalize : {"none", "minmax", "percentile", "zscore", "window"}
        See :mod:`volqa.pipeline.normalize`. Statistics come from the reference only.
    data_range : float or None
        L for ``normalize="none"`` (default there: the reference's max - min).
    percentiles : (float, float)
        Reference percentiles for ``normalize="percentile"``.
    intensity_window : (float, float) or None
        LEVEL, WIDTH for ``normalize="window"``.
    ssim : SSIMSettings
        The SSIM convention; ``win_size`` and ``sigma`` are single numbers here (one column).
    ssim_2d : {0, 1, 2} or None
        Also compute the mean 2-D SSIM over slices along this voxel axis (metric ``ssim_2d``).
    resample : bool
        Resample a test/mask on another grid onto the reference grid instead of failing.
    min_coverage : float
        With ``resample``: a row fails when the resampled test covers less than this fraction
        of the reference grid (default 0.95; see :mod:`volqa.pipeline.geometry`).
    save_maps : bool
        Write each SSIM map as NIfTI beside the results.
    protocol : str or None
        A published evaluation (:data:`volqa.protocols.PROTOCOLS`): it fixes the
        normalisation (``normalize="protocol"``), data range, SSIM convention and default
        metric set; :meth:`from_options` applies it.
    ms_ssim_scales : int
        Scales of the ``ms_ssim`` metrics (1-5, Wang et al.'s first weights, renormalised
        below 5; :func:`volqa.engine.multiscale.ms_ssim_weights`).

    Raises
    ------
    SettingsError
        Any invalid value, with the rule and the way out.
    """

    metrics: tuple[str, ...] | None = None
    normalize: str = DEFAULT_NORMALIZE
    data_range: float | None = None
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    intensity_window: tuple[float, float] | None = None
    ssim: SSIMSettings = DEFAULT_SSIM
    ssim_2d: int | None = None
    resample: bool = False
    min_coverage: float = DEFAULT_MIN_COVERAGE
    save_maps: bool = False
    protocol: str | None = None
    ms_ssim_scales: int = 5

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        self._check_protocol()
        if self.normalize not in NORMALIZE_MODES and self.protocol is None:
            raise SettingsError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}; "
                                f"got {self.normalize!r}.")
        if self.data_range is not None:
            if not (_finite_number(self.data_range) and self.data_range > 0):
                raise SettingsError(f"data_range must be a finite number > 0; got "
                                    f"{self.data_range!r}.")
            if self.normalize != "none":
                raise SettingsError(
                    f"data_range={self.data_range!r} applies only to normalize='none', but "
                    f"normalize is {self.normalize!r} (it sets its own range: 1, or "
                    "(max - min) / std for zscore); add --normalize none (normalize='none') "
                    "to score raw intensities with this range."
                )
            set_("data_range", float(self.data_range))
        pct = _pair(self.percentiles, "percentiles")
        if pct is None or not 0.0 <= pct[0] < pct[1] <= 100.0:
            raise SettingsError(f"percentiles must be two numbers LOW,HIGH with "
                                f"0 <= LOW < HIGH <= 100; got {self.percentiles!r}.")
        set_("percentiles", pct)
        if self.normalize == "window" and self.intensity_window is None:
            raise SettingsError(
                "normalize='window' needs the window as LEVEL,WIDTH (CLI: --window 40,400; "
                "Python: intensity_window=(40, 400))."
            )
        if self.intensity_window is not None and self.normalize != "window":
            raise SettingsError(
                f"an intensity window ({tuple(self.intensity_window)!r}) applies only to "
                f"normalize='window' (got normalize={self.normalize!r}); drop it or use "
                "--normalize window."
            )
        window = _pair(self.intensity_window, "the intensity window")
        if window is not None and not window[1] > 0:
            raise SettingsError(f"the intensity window must be LEVEL,WIDTH with a finite LEVEL "
                                f"and WIDTH > 0; got {window!r}.")
        set_("intensity_window", window)
        if not isinstance(self.ssim, SSIMSettings):
            raise SettingsError(f"ssim must be an SSIMSettings, got {type(self.ssim).__name__}")
        for name in ("win_size", "sigma"):
            value = getattr(self.ssim, name)
            if isinstance(value, tuple):
                raise SettingsError(
                    f"{name} must be one number here (got {value!r}); per-axis values are "
                    "available in volqa.ssim() but not in the batch table's columns."
                )
        known_range = (self.data_range if self.normalize == "none" else
                       None if self.normalize == "zscore" else 1.0)
        if known_range is not None:  # else L comes from the data: checked by the engine
            check_constants(self.ssim.k1, self.ssim.k2, known_range)
        if self.ssim_2d is not None and (isinstance(self.ssim_2d, bool)
                                         or self.ssim_2d not in (0, 1, 2)):
            raise SettingsError(f"ssim_2d must be the slice axis 0, 1 or 2; got {self.ssim_2d!r}.")
        set_("resample", bool(self.resample))
        if not (_finite_number(self.min_coverage) and 0.0 <= self.min_coverage <= 1.0):
            raise SettingsError(f"min_coverage must be a fraction between 0 and 1; got "
                                f"{self.min_coverage!r}.")
        set_("min_coverage", float(self.min_coverage))
        set_("save_maps", bool(self.save_maps))
        if (isinstance(self.ms_ssim_scales, bool) or not isinstance(self.ms_ssim_scales, int)
                or not 1 <= self.ms_ssim_scales <= 5):
            raise SettingsError(f"ms_ssim_scales must be an integer from 1 to 5; got "
                                f"{self.ms_ssim_scales!r}.")
        if self.metrics is not None:
            set_("metrics", self._checked_metrics(self.metrics))

    def _check_protocol(self) -> None:
        if self.protocol is None:
            if self.normalize == "protocol":
                raise SettingsError("normalize='protocol' is set by a protocol; give "
                                    f"protocol= one of {', '.join(PROTOCOL_NAMES)}.")
            return
        if self.protocol not in PROTOCOLS:
            raise SettingsError(f"unknown protocol {self.protocol!r}; choose one of "
                                f"{', '.join(PROTOCOL_NAMES)}.")
        if self.normalize != "protocol" or self.data_range is not None:
            raise SettingsError(f"protocol {self.protocol!r} sets the normalisation and data "
                                "range itself; build the settings with "
                                "Settings.from_options(protocol=...).")

    @property
    def protocol_source(self) -> str | None:
        """The evaluation code the protocol follows (``owner/repo@commit path``)."""
        return PROTOCOLS[self.protocol].source if self.protocol is not None else None

    def _checked_metrics(self, metrics: Sequence[str] | str) -> tuple[str, ...]:
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        chosen = list(metrics)
        unknown = [m for m in chosen if m not in METRICS]
        if unknown or not chosen:
            raise SettingsError(
                f"unknown metric(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose "
                f"from {', '.join(METRICS.names())} (comma-separated)."
            )
        if self.ssim_2d is not None and "ssim_2d" not in chosen:
            chosen.append("ssim_2d")
        if self.ssim.slices and any(m.startswith("ms_ssim") for m in chosen):
            raise SettingsError(f"the {self.ssim.preset} SSIM convention averages 2-D slices; "
                                "ms_ssim has no slice form: drop it from the metrics or use "
                                "another preset.")
        for name in chosen:
            needs = METRICS[name].requires
            if needs is not None and getattr(self, needs[0]) is None:
                raise SettingsError(f"metric {name!r} needs {needs[1]}.")
        return METRICS.ordered(chosen)

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def from_options(
        cls,
        base: Settings | None = None,
        *,
        metrics: Sequence[str] | str | None = None,
        normalize: str | None = None,
        data_range: float | None = None,
        percentiles: Sequence[float] | None = None,
        intensity_window: Sequence[float] | None = None,
        preset: str | None = None,
        window: str | None = None,
        win_size: int | None = None,
        sigma: float | None = None,
        k1: float | None = None,
        k2: float | None = None,
        covariance: str | None = None,
        border: str | None = None,
        ssim_2d: int | None = None,
        resample: bool | None = None,
        min_coverage: float | None = None,
        save_maps: bool | None = None,
        protocol: str | None = None,
        ms_ssim_scales: int | None = None,
    ) -> Settings:
        """``base`` (default: all defaults) with every option that is not None replacing its
        value. ``window`` is the SSIM window (gaussian/uniform); ``intensity_window`` the
        LEVEL, WIDTH of ``normalize="window"``. A ``preset`` restarts the SSIM settings from
        that preset; other SSIM options then override it. A ``protocol`` (or a ``base`` that
        has one) fixes normalisation, data range and the SSIM convention: giving one of those
        options too is an error; ``metrics`` may still choose from any metric."""
        base = base if base is not None else cls()
        if protocol is not None or base.protocol is not None:
            fixed = dict(normalize=normalize, data_range=data_range, percentiles=percentiles,
                         intensity_window=intensity_window, preset=preset, window=window,
                         win_size=win_size, sigma=sigma, k1=k1, k2=k2, covariance=covariance,
                         border=border, ssim_2d=ssim_2d)
            base = _with_protocol(base, protocol or base.protocol,
                                  [k for k, v in fixed.items() if v is not None])
            return replace(base, **{k: v for k, v in dict(
                metrics=metrics, resample=resample, save_maps=save_maps,
                ms_ssim_scales=ms_ssim_scales).items() if v is not None})
        ssim_opts = dict(window=window, win_size=win_size, sigma=sigma, k1=k1, k2=k2,
                         covariance=covariance, border=border)
        ssim = base.ssim
        if preset is not None:
            ssim = resolve_settings(preset, **ssim_opts)
        elif any(v is not None for v in ssim_opts.values()):
            given = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in ssim_opts.items() if v is not None}
            ssim = replace(base.ssim, **given)
        new: dict[str, Any] = dict(
            metrics=metrics, normalize=normalize, data_range=data_range,
            percentiles=percentiles, intensity_window=intensity_window, ssim_2d=ssim_2d,
            resample=resample, min_coverage=min_coverage, save_maps=save_maps,
            ms_ssim_scales=ms_ssim_scales,
        )
        if ssim_2d is not None and metrics is None and base.metrics is not None:
            new["metrics"] = (*base.metrics, "ssim_2d")
        return replace(base, ssim=ssim, **{k: v for k, v in new.items() if v is not None})

    def for_manifest(self, has_mask: bool) -> Settings:
        """The settings with the metric set resolved for a manifest with/without masks."""
        if self.metrics is None:
            chosen = list(METRICS.defaults(has_mask))
            if self.ssim_2d is not None:
                chosen.append("ssim_2d")
            return replace(self, metrics=METRICS.ordered(chosen))
        masked = [m for m in self.metrics if METRICS[m].needs_mask]
        if masked and not has_mask:
            why = (f" (protocol {self.protocol} scores inside the mask)"
                   if self.protocol is not None else "")
            raise SettingsError(
                f"metric(s) {', '.join(masked)} need a mask{why}, but there is none (add a "
                "'mask' column to the manifest / pass mask=)."
            )
        return self

    # -- records ------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``settings.json``, Parquet metadata); parameters of other normalisation
        modes are None, so they do not change the hash. The protocol (with its source) and
        the MS-SSIM scales appear only when set / not the default, so the hashes of runs
        without them are those of earlier volqa versions."""
        extra: dict[str, Any] = {}
        if self.protocol is not None:
            extra.update(protocol=self.protocol, protocol_source=self.protocol_source)
        if self.ms_ssim_scales != 5:
            extra["ms_ssim_scales"] = self.ms_ssim_scales
        return extra | {
            "metrics": None if self.metrics is None else list(self.metrics),
            "normalize": self.normalize,
            "data_range": self.data_range,
            "percentiles": list(self.percentiles) if self.normalize == "percentile" else None,
            "intensity_window": list(self.intensity_window) if self.intensity_window else None,
            "ssim": self.ssim.as_dict(),
            "ssim_2d_axis": self.ssim_2d,
            "resample": self.resample,
            "min_coverage": self.min_coverage if self.resample else None,
            "save_maps": self.save_maps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        """The inverse of :meth:`as_dict`."""
        try:
            return cls(
                metrics=None if data["metrics"] is None else tuple(data["metrics"]),
                normalize=data["normalize"],
                data_range=data["data_range"],
                percentiles=tuple(data["percentiles"] or DEFAULT_PERCENTILES),
                intensity_window=data["intensity_window"],
                ssim=SSIMSettings.from_dict(data["ssim"]),
                ssim_2d=data["ssim_2d_axis"],
                resample=data["resample"],
                min_coverage=(DEFAULT_MIN_COVERAGE if data.get("min_coverage") is None
                              else data["min_coverage"]),
                save_maps=data["save_maps"],
                protocol=data.get("protocol"),
                ms_ssim_scales=data.get("ms_ssim_scales", 5),
            )
        except (KeyError, TypeError) as exc:
            raise SettingsError(f"not a volqa settings record (missing or invalid {exc})"
                                ) from None

    def hash(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`as_dict` (keys sorted)."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: Settings) -> list[str]:
        """What differs from ``other``, e.g. ``["win_size 11 -> 7"]`` (empty when equal)."""
        def flat(s: Settings) -> dict[str, Any]:
            d = s.as_dict()
            d.update({f"{k}": v for k, v in d.pop("ssim").items()})
            return d
        mine, theirs = flat(self), flat(other)
        return [f"{k} {theirs.get(k)!r} -> {mine.get(k)!r}".replace("'", "")
                for k in mine if mine.get(k) != theirs.get(k)]

    def columns(self) -> dict[str, Any]:
        """The setting columns of every output row (:data:`volqa.schema.SETTING_COLUMNS`)."""
        return {c.name: c.value(self) for c in SETTING_COLUMNS if c.value is not None}


def _with_protocol(base: Settings, name: str, given: list[str]) -> Settings:
    """``base`` with everything a protocol fixes set as that protocol says."""
    if name not in PROTOCOLS:
        raise SettingsError(f"unknown protocol {name!r}; choose one of "
                            f"{', '.join(PROTOCOL_NAMES)}.")
    if given:
        raise SettingsError(
            f"protocol {name!r} fixes the normalisation, data range and SSIM convention of "
            f"{PROTOCOLS[name].source}; drop {', '.join(given)} (or drop the protocol). "
            "Only metrics, ms_ssim_scales, resample and save_maps may be given with it."
        )
    if name == base.protocol:  # resuming: the stored settings already follow it
        return base
    opts = dict(PROTOCOLS[name].options)
    metrics = opts.pop("metrics", None)
    return replace(base, protocol=name, normalize="protocol", data_range=None,
                   intensity_window=None, percentiles=DEFAULT_PERCENTILES,
                   ssim=resolve_settings(opts.pop("preset")), ssim_2d=opts.pop("ssim_2d", None),
                   metrics=metrics, ms_ssim_scales=opts.pop("ms_ssim_scales", 5))
