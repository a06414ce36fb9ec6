"""Descriptive statistics per method and paired comparisons between methods.

Which values count
    A row counts for a metric when its status is ``ok`` and its value is finite. Failed rows,
    empty cells (a masked metric of a row without a mask, NRMSE of a constant reference) and
    infinite values (the PSNR of identical images) are left out and counted (``n_failed``,
    ``n_missing``, ``n_infinite``), and the subjects left out are listed.

Descriptives (:func:`describe`)
    n, mean, sd (n - 1), median, quartiles and IQR (numpy's linear interpolation), min, max, and
    the 95 % BCa bootstrap interval of the mean (:mod:`.bootstrap`: scipy's BCa, fixed seed).

Paired comparisons (:func:`pairwise`)
    On the subjects with a value for both methods: the mean and median of the differences
    ``method - versus`` with BCa intervals; ``scipy.stats.wilcoxon`` (its defaults: zero
    differences dropped, exact null distribution for n <= 50 without ties or zeros, else a
    permutation test for n <= 13 or the normal approximation) with the matched-pairs
    rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` over the non-zero differences (Kerby
    2014), or ``scipy.stats.ttest_rel`` with Cohen's ``d_z = mean(d) / sd(d)``; wins, ties and
    losses in the metric's direction; and Holm-adjusted p values over the comparisons of each
    metric (and group).

Holm's step-down adjustment is the five lines of :func:`holm` rather than statsmodels'
``multipletests``: it is the whole method, and statsmodels (with patsy) would be a heavy
dependency for it; the tests check it against ``multipletests(method="holm")``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import STATISTICS, Resampler, bca_interval, jackknife, statistic

__all__ = ["values_by_method", "describe", "pairwise", "add_intervals", "holm",
           "rank_biserial"]

DIFF_INTERVALS = {"mean": "mean_diff", "median": "median_diff"}


def values_by_method(rows: pd.DataFrame, metric: str, by: str, subject: str,
                     methods: Sequence[Any]) -> pd.DataFrame:
    """Subjects x methods: the metric where the row is ok (NaN otherwise; inf kept)."""
    ok = rows[rows["_ok"]]
    table = ok.pivot(index=subject, columns=by, values=metric).astype(np.float64)
    subjects = pd.unique(rows[subject])
    return table.reindex(index=subjects, columns=list(methods))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p values (NaN stays NaN and does not count).

    With the m finite p values sorted ascending, p_(i) becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of differences ``d`` (zeros dropped)."""
    from scipy.stats import rankdata

    d = d[d != 0]
    if d.size == 0:
        return math.nan
    r = rankdata(np.abs(d))
    plus, minus = r[d > 0].sum(), r[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def add_intervals(records: list[dict[str, Any]], data: str, names: dict[str, str],
                  n_boot: int, seed: int) -> None:
    """Add BCa intervals to ``records`` in place: for each ``kind -> name`` of ``names``, the
    interval of ``kind`` ("mean", "median") of the 1-D array ``record[data]`` goes into
    ``name_ci_low`` and ``name_ci_high``. Arrays of one length share one pass of bootstrap
    replicates (whatever metric or group they belong to); fewer than two values give NaN."""
    by_length: dict[int, list[int]] = {}
    for i, rec in enumerate(records):
        for name in names.values():
            rec[f"{name}_ci_low"] = rec[f"{name}_ci_high"] = math.nan
        if rec[data].size >= 2:
            by_length.setdefault(rec[data].size, []).append(i)
    for n, members in by_length.items():
        values = np.stack([records[i][data] for i in members], axis=1)
        fns = [STATISTICS[kind](values) for kind in names]
        for kind, name, theta_b in zip(names, names.values(),
                                       Resampler(n, n_boot, seed).replicates(*fns), strict=True):
            low, high = bca_interval(statistic(values, kind), theta_b, jackknife(values, kind))
            for k, i in enumerate(members):
                records[i][f"{name}_ci_low"] = float(low[k])
                records[i][f"{name}_ci_high"] = float(high[k])


def _left_out(subjects: pd.Series, counted: pd.Index) -> str:
    """The subjects (once each, in order) that are not in ``counted``, comma-separated."""
    kept = set(counted.to_numpy(dtype=object))
    return ", ".join(dict.fromkeys(str(s) for s in subjects.to_numpy(object) if s not in kept))


def describe(rows: pd.DataFrame, metric: str, *, by: str, subject: str,
             methods: Sequence[Any], n_boot: int | None, seed: int = 0
             ) -> list[dict[str, Any]]:
    """One record per method of the descriptives of ``metric`` (see the module docstring);
    each keeps its values under ``"_values"``. With ``n_boot`` None the intervals are left to
    :func:`add_intervals` (``compare`` adds them for every metric in one pass)."""
    table = values_by_method(rows, metric, by, subject, methods)
    records = []
    for method in methods:
        mine = rows[rows[by] == method]
        if mine.empty:
            continue
        values = table[method].dropna()
        counted = values[np.isfinite(values)]
        x = counted.to_numpy()
        q1, median, q3 = np.percentile(x, [25, 50, 75]) if x.size else (math.nan,) * 3
        records.append({
            "method": method, "n": int(x.size), "n_rows": len(mine),
            "n_failed": int((~mine["_ok"]).sum()),
            "n_missing": int(mine["_ok"].sum() - values.size),
            "n_infinite": int(values.size - x.size),
            "mean": float(x.mean()) if x.size else math.nan,
            "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan,
            "median": float(median), "q1": float(q1), "q3": float(q3),
            "iqr": float(q3 - q1), "min": float(x.min()) if x.size else math.nan,
            "max": float(x.max()) if x.size else math.nan,
            "left_out": _left_out(mine[subject], counted.index),
            "_values": x,
        })  # fmt: skip
    if n_boot is not None:
        add_intervals(records, "_values", {"mean": "mean"}, n_boot, seed)
    return records


def _test(a: np.ndarray, b: np.ndarray, test: str) -> tuple[float, float, float]:
    """(statistic, p, effect size) of the paired test; NaN where undefined."""
    from scipy import stats

    d = a - b
    if d.size == 0:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and degenerate warnings: NaN says it
        if test == "wilcoxon":
            res = stats.wilcoxon(a, b)
            return float(res.statistic), float(res.pvalue), rank_biserial(d)
        res = stats.ttest_rel(a, b)
        sd = d.std(ddof=1) if d.size > 1 else math.nan
        return (float(res.statistic), float(res.pvalue),
                float(d.mean() / sd) if sd > 0 else math.nan)


def pairwise(rows: pd.DataFrame, metric: str, *, by: str, subject: str,
             methods: Sequence[Any], higher_is_better: bool, baseline: Any = None,
             test: str = "wilcoxon", n_boot: int | None, seed: int = 0
             ) -> list[dict[str, Any]]:
    """One record per pair of methods: ``method`` against ``versus`` (the baseline, or every
    earlier method), on the subjects with a finite value for both; each keeps its
    differences under ``"_diffs"`` (``n_boot`` None: intervals left to :func:`add_intervals`).
    """
    table = values_by_method(rows, metric, by, subject, methods)
    present = [m for m in methods if m in set(rows[by].unique())]
    if baseline is not None:
        pairs = [(m, baseline) for m in present if m != baseline]
    else:
        pairs = [(b, a) for a, b in combinations(present, 2)]
    records = []
    sign = 1.0 if higher_is_better else -1.0
    for method, versus in pairs:
        both = table[[method, versus]]
        finite = np.isfinite(both).all(axis=1)
        mine = rows.loc[(rows[by] == method) | (rows[by] == versus), subject]
        a = both.loc[finite, method].to_numpy()
        b = both.loc[finite, versus].to_numpy()
        d = a - b
        stat, p, effect = _test(a, b, test)
        records.append({
            "method": method, "versus": versus, "n": int(d.size),
            "n_left_out": int(mine.nunique() - d.size),
            "left_out": _left_out(mine, finite.index[finite]),
            "mean_diff": float(d.mean()) if d.size else math.nan,
            "median_diff": float(np.median(d)) if d.size else math.nan,
            "test": test, "statistic": stat, "p": p,
            "effect_size": effect,
            "effect": "rank-biserial r" if test == "wilcoxon" else "Cohen's d_z",
            "wins": int((sign * d > 0).sum()), "ties": int((d == 0).sum()),
            "losses": int((sign * d < 0).sum()), "_diffs": d,
        })  # fmt: skip
    if n_boot is not None:
        add_intervals(records, "_diffs", DIFF_INTERVALS, n_boot, seed)
    for rec, adjusted in zip(records, holm([r["p"] for r in records]), strict=True):
        rec["p_holm"] = float(adjusted)
    return records
