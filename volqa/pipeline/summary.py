"""The plain-text end-of-batch summary printed by ``volqa score``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["summarize", "failures"]


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], *, total: int) -> str:
    """A plain-text end-of-batch summary.

    Parameters
    ----------
    rows : sequence of mappings
        The finished output rows (with ``status``, ``error``, ``subject_id`` and metrics).
    metrics : sequence of str
        Metric columns to summarise (mean ± sd, median, min, max over ok rows; infinite
        values, e.g. the PSNR of identical images, are counted but left out of the statistics).
    total : int
        Number of rows in the manifest.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    lines = [f"{len(rows)} of {total} row(s) done: {len(ok)} ok, {len(failed)} failed"]
    table = []
    for m in metrics:
        vals = [r.get(m) for r in ok]
        vals = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
        finite = [v for v in vals if math.isfinite(v)]
        if not vals:
            continue
        n_inf = len(vals) - len(finite)
        extra = f"  ({n_inf} inf left out)" if n_inf else ""
        if not finite:
            table.append(f"{m:<13} all {len(vals)} value(s) infinite")
            continue
        sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
        cells = [statistics.median(finite), min(finite), max(finite)]
        table.append(
            f"{m:<13}{_fmt(statistics.fmean(finite)):>10} ± {_fmt(sd):<10}"
            + "".join(f"{_fmt(v):>11}" for v in cells)
            + f"{len(finite):>5}{extra}"
        )
    if table:
        lines.append(f"{'metric':<13}{'mean':>10} ± {'sd':<10}{'median':>11}{'min':>11}"
                     f"{'max':>11}{'n':>5}")
        lines += table
    return "\n".join(lines)


def failures(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``failed: <error>`` for every row that is not ``ok`` (printed on stderr)."""
    return [f"failed: {r.get('error')}" for r in rows if r.get("status") != "ok"]
