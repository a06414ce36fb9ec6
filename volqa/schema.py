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

from collections.abc import Callable, Iterable, Iterator, Sequence
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
    requires : str, optional
        A ``Settings`` attribute that must be set for this metric (``ssim_2d`` needs its axis).
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
    requires: str | None = None
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

#: The SSIM and normalisation settings of the row (read from the run's Settings).
SETTING_COLUMNS: tuple[Column, ...] = (
    Column("normalize", "string", "normalisation mode", lambda s: s.normalize),
    Column("window", "string", "SSIM window", lambda s: s.ssim.window),
    Column("win_size", "int64", "SSIM window length", lambda s: s.ssim.win_size),
    Column("sigma", "float64", "Gaussian sigma (voxels)", lambda s: s.ssim.sigma),
    Column("covariance", "string", "covariance estimator", lambda s: s.ssim.covariance),
    Column("border", "string", "border handling", lambda s: s.ssim.border),
    Column("preset", "string", "SSIM preset", lambda s: s.ssim.preset),
    Column("k1", "float64", "SSIM K1", lambda s: s.ssim.k1),
    Column("k2", "float64", "SSIM K2", lambda s: s.ssim.k2),
)

#: Per-row facts, split around the setting columns: (before, after).
ROW_COLUMNS_BEFORE: tuple[Column, ...] = (
    Column("shape", "string", "reference shape IxJxK"),
    Column("spacing", "string", "reference voxel size in mm"),
    Column("data_range", "float64", "L used by SSIM and PSNR"),
)
ROW_COLUMNS_AFTER: tuple[Column, ...] = (
    Column("reoriented", "string", "axis permutation/flip applied to test/mask"),
    Column("resampled", "bool", "test/mask resampled onto the reference grid"),
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
           "axis --ssim-2d AXIS", engine=True, requires="ssim_2d"),
    *_voxelwise("psnr", "10 log10(L^2 / MSE) in dB; inf for identical images",
                lambda e, c: e.psnr(c.data_range), higher=True, default=True, unit="dB"),
    *_voxelwise("nrmse", "RMSE / (max - min of the reference)", lambda e, c: e.nrmse(),
                higher=False, default=True, undefined_ok=True),
    *_voxelwise("mae", "mean absolute error after normalisation", lambda e, c: e.mae,
                higher=False, default=True),
    *_voxelwise("mse", "mean squared error after normalisation", lambda e, c: e.mse,
                higher=False, default=True),
])

def output_columns(manifest_columns: Sequence[str], metrics: Iterable[str], *,
                   save_maps: bool = False) -> list[Column]:
    """The output schema: manifest columns (text), status/error, the selected metrics in
    registry order, the row facts and the setting columns."""
    cols = [Column(c, "string") for c in manifest_columns]
    cols += HEAD_COLUMNS
    cols += [METRICS[m].column for m in METRICS.ordered(metrics)]
    cols += ROW_COLUMNS_BEFORE + SETTING_COLUMNS
    cols += [c for c in ROW_COLUMNS_AFTER if save_maps or c.name != "ssim_map"]
    return cols


def reserved_columns() -> frozenset[str]:
    """Names a manifest column may not have (they would collide with volqa's output)."""
    fixed = (*HEAD_COLUMNS, *ROW_COLUMNS, *SETTING_COLUMNS)
    return frozenset([c.name for c in fixed] + list(METRICS.names()))
