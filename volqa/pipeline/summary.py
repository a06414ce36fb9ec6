"""The plain-text end-of-batch summary printed by ``volqa score``, and the number format that it
and the analysis tables share (one format per column)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["number_format", "summarize", "failures"]


def number_format(values: Iterable[float], digits: int = 4) -> Callable[[float], str]:
    """One format for a whole column, chosen from its largest finite magnitude.

    Fixed point with enough decimals for ``digits`` significant digits of the largest value
    (0.9947 -> 4 decimals, 24.55 -> 2, 0.0130 -> 5), at most 6; scientific notation
    (``1.234e+05``) when that value is 1e5 or more or below 1e-4. Infinities print as
    ``inf``/``-inf``, NaN as ``nan``.
    """
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    exponent = math.floor(math.log10(top)) if top > 0 else 0
    scientific = top >= 1e5 or 0 < top < 1e-4

    def fmt(v: float) -> str:
        if v is None or math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if scientific:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{min(max(digits - 1 - exponent, 0), 6)}f}"

    return fmt


def _finite(rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[float], int]:
    vals = [r.get(metric) for r in rows]
    vals = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
    finite = [v for v in vals if math.isfinite(v)]
    return finite, len(vals) - len(finite)


def _group_label(value: Any) -> str:
    return "(missing)" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else str(value)


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], *, total: int,
              group_by: str | None = None) -> str:
    """A plain-text end-of-batch summary.

    Parameters
    ----------
    rows : sequence of mappings
        The finished output rows (with ``status``, ``error``, ``subject_id`` and metrics).
    metrics : sequence of str
        Metric columns to summarise (mean ± sd, median, min, max over ok rows; infinite
        values, e.g. the PSNR of identical images, are counted but left out of the statistics).
        Every number of one metric has the same format (:func:`number_format`).
    total : int
        Number of rows in the manifest.
    group_by : str, optional
        A column (e.g. ``method``): one line per metric and value of that column, in order of
        first appearance, instead of one line per metric over all rows.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    lines = [f"{len(rows)} of {total} row(s) done: {len(ok)} ok, {len(failed)} failed"]
    groups: dict[str, list[Mapping[str, Any]]] = {"": ok}
    if group_by is not None:
        groups = {}
        for r in ok:
            groups.setdefault(_group_label(r.get(group_by)), []).append(r)
    width = max([len(g) for g in groups] + [len(group_by or "")]) + 2 if group_by else 0
    table = []
    for m in metrics:
        fmt = number_format(_finite(ok, m)[0])
        first = True
        for label, members in groups.items():
            finite, n_inf = _finite(members, m)
            if not finite and not n_inf:
                continue
            head = f"{m if first else '':<13}{label:<{width}}"
            first = False
            extra = f"  ({n_inf} inf left out)" if n_inf else ""
            if not finite:
                table.append(f"{head}all {n_inf} value(s) infinite")
                continue
            sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
            cells = [statistics.median(finite), min(finite), max(finite)]
            table.append(f"{head}{fmt(statistics.fmean(finite)):>10} ± {fmt(sd):<10}"
                         + "".join(f"{fmt(v):>11}" for v in cells)
                         + f"{len(finite):>5}{extra}")
    if table:
        lines.append(f"{'metric':<13}{group_by or '':<{width}}{'mean':>10} ± {'sd':<10}"
                     f"{'median':>11}{'min':>11}{'max':>11}{'n':>5}")
        lines += table
    return "\n".join(lines)


def failures(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``failed: <error>`` for every row that is not ``ok`` (printed on stderr)."""
    return [f"failed: {r.get('error')}" for r in rows if r.get("status") != "ok"]
