"""What volqa writes: the one registry of metrics and of output columns, with their types.

Everything that lists metrics or columns follows from here: the CLI's ``--metrics`` help, the
default metric set, the output schema (CSV and Parquet), the journal check on ``--resume``,
the end-of-run summary and the direction (higher or lower is better) the analysis uses.

Adding a metric is one :meth:`MetricRegistry.register` call with a :class:`Metric`. Its
``compute`` receives the pipeline's per-row context (:class:`MetricContext`), which holds the
normalised pair and caches what several metrics share (the SSIM map, the error sums), and
returns a float or None.

Column types are the names ``string``, ``float64``, ``int64`` and ``bool``; the table writer
maps them to Arrow types (:data:`ARROW_TYPES` in :mod:`volqa.io.tables`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Column",
    "Metric",
    "MetricContext",
    "MetricRegistry",
    "METRICS",
    "HEAD_COLUMNS",
    "SETTING_COLUMNS",
    "output_columns",
    "reserved_columns",
    "REGION_COLUMNS",
    "region_columns",
]

DTYPES = ("string", "float64", "int64", "bool")


@dataclass(frozen=True)
class Column:
    """One output column.

    Attributes
    ----------
    name, dtype, doc : str
    value : callable(Settings) -> value, optional
        For setting columns: how the value is read from the run's ``Settings``.
    """

    name: str
    dtype: str = "string"
    doc: str = ""
    value: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name!r}: dtype must be one of {DTYPES}")


class MetricContext(Protocol):
    """What a metric's ``compute`` may use (implemented by :mod:`volqa.pipeline.context`).

    ``reference`` and ``test`` are the normalised (I, J, K) float32 volumes, ``mask`` the
    row's boolean mask or None, ``data_range`` L; ``region`` arguments are a boolean mask or
    None for the whole volume. ``errors(region)`` returns :class:`volqa.engine.ErrorStats` of
    the pair; ``ssim(region)`` the SSIM over the valid map, or the mean of the map over the
    region's voxels; ``ssim_2d()`` the mean 2-D slice SSIM along ``Settings.ssim_2d``.
    """

    reference: Any
    test: Any
    mask: Any
    data_range: float

    def errors(self, region: Any = None) -> Any: ...

    def ssim(self, region: Any = None) -> float: ...

    def ssim_2d(self) -> float: ...

    def ms_ssim(self, region: Any = None) -> float: ...

    def hfen(self, region: Any = None) -> float: ...

    def slice_errors(self) -> list[Any]: ...

    def outside_mask(self) -> Any: ...


@dataclass(frozen=True)
class Metric:
    """One metric: a column of the results and how to compute it.

    Attributes
    ----------
    name : str
        Column name and the name ``--metrics`` takes.
    compute : callable(MetricContext) -> float or None
    doc : str
        One line for the README's column table and the CLI help.
    needs_mask : bool
        Computed only for rows with a mask (others get an empty cell); selecting it needs a
        ``mask`` column.
    default : bool
        In the default metric set (masked ones only when the manifest has a ``mask`` column).
    higher_is_better : bool
        Direction used by the analysis layer (SSIM, PSNR: higher; errors: lower).
    engine : bool
        Computed by the tensor engine on the chosen device, under the out-of-memory policy;
        other metrics are computed on the CPU while the row is prepared.
    undefined_ok : bool
        An :class:`~volqa.errors.InputError` from ``compute`` (the metric is undefined for this
        pair, e.g. NRMSE of a constant reference) leaves the cell empty with a note instead of
        failing the row.
    requires : (str, str), optional
        A ``Settings`` attribute that must be set for this metric, and how to set it (for the
        error message); ``ssim_2d`` needs its slice axis.
    unit : str
    dtype : str
    """

    name: str
    compute: Callable[[MetricContext], float | None]
    doc: str
    needs_mask: bool = False
    default: bool = False
    higher_is_better: bool = True
    engine: bool = False
    undefined_ok: bool = False
    requires: tuple[str, str] | None = None
    unit: str = ""
    dtype: str = "float64"

    @property
    def column(self) -> Column:
        return Column(self.name, self.dtype, self.doc)


class MetricRegistry:
    """The ordered set of known metrics (output columns follow the registration order)."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._metrics: dict[str, Metric] = {}
        for m in metrics:
            self.register(m)

    def register(self, metric: Metric) -> Metric:
        """Add a metric; its name must be new and must not be a fixed column's name."""
        fixed = {c.name for c in (*HEAD_COLUMNS, *ROW_COLUMNS, *SETTING_COLUMNS)}
        if metric.name in self._metrics or metric.name in fixed:
            raise ValueError(f"metric name {metric.name!r} is already taken")
        self._metrics[metric.name] = metric
        return metric

    def unregister(self, name: str) -> None:
        """Remove a metric (for plug-ins and tests that registered one)."""
        del self._metrics[name]

    def __getitem__(self, name: str) -> Metric:
        return self._metrics[name]

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def __iter__(self) -> Iterator[Metric]:
        return iter(tuple(self._metrics.values()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._metrics)

    def defaults(self, has_mask: bool) -> tuple[str, ...]:
        """The default metric set for a manifest with or without a ``mask`` column."""
        return tuple(m.name for m in self if m.default and (has_mask or not m.needs_mask))

    def ordered(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` in registry (column) order."""
        wanted = set(names)
        return tuple(n for n in self._metrics if n in wanted)

    def masked_forms(self, names: Iterable[str]) -> tuple[Metric, ...]:
        """The masked forms of ``names`` (``x`` -> ``x_masked``, ``x_masked`` itself), once
        each, in column order: what the region table reports (its column is the name without
        ``_masked``). Metrics without a masked form are left out."""
        twins = {n if n.endswith("_masked") else f"{n}_masked" for n in names}
        return tuple(self[n] for n in self.ordered(twins) if self[n].needs_mask)


#: What the 2-D slice metrics need: the slice axis (``requires`` of their entries).
_SLICE_AXIS = ("ssim_2d", "the slice axis: --ssim-2d AXIS (ssim_2d=0)")


def _slice_mean(c: MetricContext, get: Callable[[Any], float]) -> float:
    """Mean over the 2-D slices (along ``Settings.ssim_2d``) of a per-slice error metric."""
    values = [get(e) for e in c.slice_errors() if e is not None]
    return float(sum(values) / len(values))


def _errors(masked: bool) -> Callable[[MetricContext], Any]:
    return lambda c: c.errors(c.mask if masked else None)


def _voxelwise(name: str, doc: str, get: Callable[[Any, MetricContext], float], *,
               higher: bool, default: bool, unit: str = "", undefined_ok: bool = False
               ) -> list[Metric]:
    """A voxel-wise metric and its masked variant (same conventions inside the mask)."""
    return [
        Metric(name + suffix, (lambda c, e=_errors(masked): get(e(c), c)),
               doc + (" inside the mask" if masked else ""), needs_mask=masked,
               default=default and not masked, higher_is_better=higher, unit=unit,
               undefined_ok=undefined_ok)
        for suffix, masked in (("", False), ("_masked", True))
    ]


#: First columns after the manifest's own.
HEAD_COLUMNS: tuple[Column, ...] = (
    Column("status", "string", "ok or error"),
    Column("error", "string", "empty when ok; else subject '<id>': <file>: <cause>"),
)

#: Every setting of the run, one column each (read from the run's Settings), named so that
#: none can be mistaken for another: SSIM settings start with ``ssim_``, the intensity
#: normalisation's with ``normalize``, ``percentile_`` or ``intensity_window_``. Parameters of
#: other normalisation modes are empty.
SETTING_COLUMNS: tuple[Column, ...] = (
    Column("normalize", "string", "intensity normalisation mode (--normalize)",
           lambda s: s.normalize),
    Column("data_range_fixed", "float64", "L fixed by --data-range (normalize none); empty: "
           "from each reference", lambda s: s.data_range),
    Column("percentile_low", "float64", "lower reference percentile (normalize percentile)",
           lambda s: s.percentiles[0] if s.normalize == "percentile" else None),
    Column("percentile_high", "float64", "upper reference percentile (normalize percentile)",
           lambda s: s.percentiles[1] if s.normalize == "percentile" else None),
    Column("intensity_window_level", "float64", "--window LEVEL (normalize window)",
           lambda s: s.intensity_window[0] if s.intensity_window else None),
    Column("intensity_window_width", "float64", "--window WIDTH (normalize window)",
           lambda s: s.intensity_window[1] if s.intensity_window else None),
    Column("ssim_preset", "string", "SSIM preset (--preset); empty: none",
           lambda s: s.ssim.preset),
    Column("ssim_window", "string", "SSIM window (--ssim-window)", lambda s: s.ssim.window),
    Column("ssim_win_size", "int64", "SSIM window length in voxels", lambda s: s.ssim.win_size),
    Column("ssim_sigma", "float64", "Gaussian SSIM window sigma (voxels)",
           lambda s: s.ssim.sigma),
    Column("ssim_covariance", "string", "covariance estimator", lambda s: s.ssim.covariance),
    Column("ssim_border", "string", "border handling", lambda s: s.ssim.border),
    Column("ssim_k1", "float64", "SSIM K1", lambda s: s.ssim.k1),
    Column("ssim_k2", "float64", "SSIM K2", lambda s: s.ssim.k2),
    Column("ssim_slices", "bool", "SSIM is the mean of 2-D slice SSIM (fastmri preset)",
           lambda s: s.ssim.slices),
    Column("ssim_2d_axis", "int64", "slice axis of the ssim_2d metric (--ssim-2d)",
           lambda s: s.ssim_2d),
    Column("resample", "bool", "--resample: tests/masks on another grid were allowed",
           lambda s: s.resample),
    Column("min_coverage", "float64", "--min-coverage: least fraction of the reference grid "
           "a resampled test must cover (with --resample)",
           lambda s: s.min_coverage if s.resample else None),
    Column("ms_ssim_scales", "int64", "scales of the ms_ssim metrics",
           lambda s: s.ms_ssim_scales),
    # "eval_": a manifest may well have its own "protocol" covariate (an MR acquisition)
    Column("eval_protocol", "string", "published evaluation followed (--protocol)",
           lambda s: s.protocol),
    Column("eval_protocol_source", "string", "repository@commit and file of that evaluation",
           lambda s: s.protocol_source),
)

#: Per-row facts, split around the setting columns: (before, after).
ROW_COLUMNS_BEFORE: tuple[Column, ...] = (
    Column("shape", "string", "reference shape IxJxK"),
    Column("spacing", "string", "reference voxel size in mm"),
    Column("data_range", "float64", "L used by SSIM and PSNR"),
    Column("norm_offset", "float64", "normalisation map y = (clip(x) - offset) * scale: "
           "offset, from the reference (min, mean, low percentile or window bottom)"),
    Column("norm_scale", "float64", "normalisation map: scale"),
    Column("norm_clip_low", "float64", "normalisation clipping, input units (percentile, "
           "window)"),
    Column("norm_clip_high", "float64", "normalisation clipping, input units"),
)
ROW_COLUMNS_AFTER: tuple[Column, ...] = (
    Column("reoriented", "string", "axis permutation/flip applied to test/mask"),
    Column("resampled", "bool", "test/mask resampled onto the reference grid"),
    Column("coverage", "float64", "with --resample: fraction of the reference grid inside the "
           "test's extent"),
    Column("device", "string", "where SSIM ran"),
    Column("host", "string", "machine that computed the row (its host name)"),
    Column("seconds", "float64", "wall time of the row"),
    Column("notes", "string", "non-fatal findings"),
    Column("ssim_map", "string", "saved SSIM map, relative to the output folder"),
    Column("volqa_version", "string", "volqa version that computed the row"),
)
ROW_COLUMNS = ROW_COLUMNS_BEFORE + ROW_COLUMNS_AFTER


#: The metrics volqa knows, in output column order.
METRICS = MetricRegistry([
    Metric("ssim", lambda c: c.ssim(), "3-D SSIM, mean over the valid map", default=True,
           engine=True),
    Metric("ssim_masked", lambda c: c.ssim(c.mask), "mean of the SSIM map over the mask "
           "voxels it covers (map computed on the real images)", needs_mask=True,
           default=True, engine=True),
    Metric("ssim_2d", lambda c: c.ssim_2d(), "mean 2-D SSIM over the slices along voxel "
           "axis --ssim-2d AXIS", engine=True, requires=_SLICE_AXIS),
    *_voxelwise("psnr", "10 log10(L^2 / MSE) in dB; inf for identical images",
                lambda e, c: e.psnr(c.data_range), higher=True, default=True, unit="dB"),
    *_voxelwise("nrmse", "RMSE / (max - min of the reference)", lambda e, c: e.nrmse(),
                higher=False, default=True, undefined_ok=True),
    *_voxelwise("mae", "mean absolute error after normalisation", lambda e, c: e.mae,
                higher=False, default=True),
    *_voxelwise("mse", "mean squared error after normalisation", lambda e, c: e.mse,
                higher=False, default=True),
    *_voxelwise("nmse", "||test - ref||^2 / ||ref||^2 (fastMRI)", lambda e, c: e.nmse(),
                higher=False, default=False, undefined_ok=True),
    Metric("ms_ssim", lambda c: c.ms_ssim(), "MS-SSIM (Wang et al. 2003 weights, "
           "--ms-ssim-scales, average pooling)", engine=True, undefined_ok=True),
    Metric("ms_ssim_masked", lambda c: c.ms_ssim(c.mask), "MS-SSIM, each scale's mean over "
           "the (pooled) mask", needs_mask=True, engine=True, undefined_ok=True),
    Metric("hfen", lambda c: c.hfen(), "||LoG(test) - LoG(ref)|| / ||LoG(ref)||, LoG sigma "
           "1.5, 15 taps, symmetric border (Ravishankar & Bresler 2011)", higher_is_better=False,
           undefined_ok=True),
    Metric("hfen_masked", lambda c: c.hfen(c.mask), "HFEN with the norms over the mask",
           needs_mask=True, higher_is_better=False, undefined_ok=True),
    Metric("ssim_outside", lambda c: c.ssim(c.outside_mask()), "mean of the SSIM map over "
           "the voxels outside the mask (BraSyn's healthy region)", needs_mask=True,
           engine=True),
    Metric("psnr_2d", lambda c: _slice_mean(c, lambda e: e.psnr(c.data_range)), "mean PSNR "
           "of the 2-D slices along --ssim-2d AXIS", unit="dB", requires=_SLICE_AXIS),
    Metric("nmse_2d", lambda c: _slice_mean(c, lambda e: e.nmse()), "mean NMSE of the 2-D "
           "slices along --ssim-2d AXIS", higher_is_better=False, requires=_SLICE_AXIS,
           undefined_ok=True),
])

def _manifest_columns(manifest_columns: Sequence[str] | Mapping[str, str]) -> list[Column]:
    """Manifest columns as text, or typed from a name -> dtype mapping (typed covariates)."""
    if isinstance(manifest_columns, Mapping):
        return [Column(c, dtype) for c, dtype in manifest_columns.items()]
    return [Column(c, "string") for c in manifest_columns]


def output_columns(manifest_columns: Sequence[str] | Mapping[str, str], metrics: Iterable[str],
                   *, save_maps: bool = False, protocol: bool = False) -> list[Column]:
    """The output schema: manifest columns (text, or name -> dtype for typed covariates),
    status/error, the selected metrics in registry order, the row facts and the setting
    columns. ``ms_ssim_scales`` appears with an ms_ssim metric, ``eval_protocol`` and
    ``eval_protocol_source`` with a protocol."""
    chosen = METRICS.ordered(metrics)
    shown = {"ms_ssim_scales": any(m.startswith("ms_ssim") for m in chosen),
             "eval_protocol": protocol, "eval_protocol_source": protocol}
    cols = _manifest_columns(manifest_columns)
    cols += HEAD_COLUMNS
    cols += [METRICS[m].column for m in chosen]
    cols += ROW_COLUMNS_BEFORE
    cols += [c for c in SETTING_COLUMNS if shown.get(c.name, True)]
    cols += [c for c in ROW_COLUMNS_AFTER if save_maps or c.name != "ssim_map"]
    return cols


#: The region table's own columns (after the manifest's; the metrics follow).
REGION_COLUMNS: tuple[Column, ...] = (
    Column("region", "int64", "label value of the region"),
    Column("n_voxels", "int64", "voxels of the region"),
    Column("status", "string", "ok, or undefined when a metric could not be computed there"),
    Column("note", "string", "why a metric is undefined in the region, other findings"),
)


def region_columns(manifest_columns: Sequence[str] | Mapping[str, str],
                   metrics: Iterable[str]) -> list[Column]:
    """The region table's schema: manifest columns (as in :func:`output_columns`),
    :data:`REGION_COLUMNS`, then each selected metric's masked form under the metric's plain
    name (see :meth:`MetricRegistry.masked_forms`)."""
    cols = _manifest_columns(manifest_columns) + list(REGION_COLUMNS)
    return cols + [Column(m.name.removesuffix("_masked"), m.dtype, m.doc)
                   for m in METRICS.masked_forms(metrics)]


def reserved_columns(labels: bool = False) -> frozenset[str]:
    """Names a manifest column may not have (they would collide with volqa's output); with a
    ``labels`` column also the region table's own columns."""
    fixed = (*HEAD_COLUMNS, *ROW_COLUMNS, *SETTING_COLUMNS, *(REGION_COLUMNS if labels else ()))
    return frozenset([c.name for c in fixed] + list(METRICS.names()))
