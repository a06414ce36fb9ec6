"""Per-region scores: every selected metric over each label of a label map.

A ``labels`` manifest column names an integer label map on the reference's grid. Each non-zero
label is a region; a metric over a region is the metric's masked form with the region as the
mask (``ssim`` over region 3 is ``ssim_masked`` with mask = label 3: the mean of the SSIM map,
computed on the real images, over the region's voxels inside the map). Metrics without a masked
form (``ssim_2d``, ``psnr_2d``, ``nmse_2d``, ``ssim_outside``) are not reported per region.

The results table keeps one row per manifest row (the whole volume); regions go to a long
table, one row per (manifest row, label) with ``region``, ``n_voxels``, ``status`` and ``note``
(:data:`volqa.schema.REGION_COLUMNS`). A region where a metric is undefined (e.g. no voxel of it
inside the SSIM window's valid map) has that cell empty, ``status`` "undefined" and the reason
in ``note``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..schema import METRICS, Metric
from .context import PairContext
from .masks import whole_numbers

__all__ = ["label_values", "region_metrics", "RegionScores", "score_regions", "region_rows"]


def label_values(array: np.ndarray, *, source: str = "labels") -> np.ndarray:
    """The non-zero labels of a label map, sorted (float64 values of whole numbers).

    Raises
    ------
    InputError
        NaN/Inf or fractional values (a resampled or probability map is not a label map).
    """
    a = whole_numbers(array, f"labels {source!r}", "a label map holds whole numbers "
                      "(resample label maps with nearest neighbour).")
    return np.unique(a[a != 0]).astype(np.float64)


def region_metrics(names: Iterable[str]) -> list[Metric]:
    """The masked forms of the selected metrics (:meth:`volqa.schema.MetricRegistry.
    masked_forms`): ``ssim`` and ``ssim_masked`` both give ``ssim_masked``."""
    return list(METRICS.masked_forms(names))


def column(metric: Metric) -> str:
    """The region table's column of a masked metric: its name without ``_masked``."""
    return metric.name.removesuffix("_masked")


@dataclass
class RegionScores:
    """Values and notes per label from one stage (CPU or engine)."""

    values: dict[float, dict[str, float | None]] = field(default_factory=dict)
    notes: dict[float, list[str]] = field(default_factory=dict)
    counts: dict[float, int] = field(default_factory=dict)


def score_regions(ctx: PairContext, labels: np.ndarray, values: Sequence[float],
                  metrics: Sequence[Metric]) -> RegionScores:
    """Each metric over each label, on ``ctx`` (whose mask is swapped for the region; cached
    full-volume results such as the SSIM map are shared, per-region ones are dropped after
    each region)."""
    out = RegionScores()
    saved = ctx.mask
    try:
        for v in values:
            region = labels == v
            out.counts[v] = int(region.sum())
            vals: dict[str, float | None] = {}
            notes: list[str] = []
            ctx.mask = region
            for m in metrics:
                before = len(ctx.notes)
                try:
                    vals[column(m)] = ctx.compute([m]).get(m.name)
                except InputError as exc:
                    vals[column(m)] = None
                    notes.append(f"{column(m)}: {exc}")
                notes += [n.replace(f"{m.name} not computed:", f"{column(m)}:")
                          for n in ctx.notes[before:]]
                del ctx.notes[before:]
            out.values[v], out.notes[v] = vals, notes
            ctx.forget(region)
    finally:
        ctx.mask = saved
    return out


def region_rows(values: Sequence[float], metrics: Sequence[Metric],
                *parts: RegionScores) -> list[dict[str, Any]]:
    """One dict per label: ``region``, ``n_voxels``, the metrics, ``status``, ``note``."""
    rows = []
    names = [column(m) for m in metrics]
    for v in values:
        row: dict[str, Any] = {"region": int(v)}
        notes: list[str] = []
        for part in parts:
            if v in part.counts:
                row["n_voxels"] = part.counts[v]
            row.update(part.values.get(v, {}))
            notes += part.notes.get(v, [])
        missing = [n for n in names if row.get(n) is None]
        row["status"] = "undefined" if missing else "ok"
        row["note"] = "; ".join(notes) or None
        rows.append(row)
    return rows
