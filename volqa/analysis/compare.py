"""``volqa compare``: descriptives, paired comparisons and rankings of methods from result tables.

:func:`compare` runs the statistics of :mod:`.stats` and :mod:`.ranking` for every metric (and
every value of the group column) of a :class:`~.load.Study`; :meth:`Comparison.write` writes
``summary``, ``pairwise`` and ``ranking`` (CSV and Parquet each), ``long.parquet`` (one row per
subject x method x metric with the covariates, for seaborn or lme4) and ``compare.json`` (the
inputs, their provenance and the options) into a folder. Which direction is better comes from
:data:`volqa.schema.METRICS` and is written into every table (``direction``).

Columns (each table starts with the group column, when there is one, ``metric`` and
``direction``):

``summary``, one row per method
    n, n_rows, n_failed, n_missing, n_infinite, mean, sd, median, q1, q3, iqr, min, max,
    left_out, mean_ci_low, mean_ci_high (:func:`.stats.describe`).
``pairwise``, one row per pair
    method, versus, n, n_left_out, left_out, mean_diff, median_diff, test, statistic, p,
    effect_size, effect, wins, ties, losses, mean_diff_ci_low/high, median_diff_ci_low/high,
    p_holm (:func:`.stats.pairwise`).
``ranking``, one row per scheme and method
    scheme, method, rank, value, n, boot_rank_median, boot_rank_low, boot_rank_high (2.5 and
    97.5 % of the bootstrap ranks), share_rank_1 .. share_rank_m, kendall_tau_median,
    kendall_tau_q1, kendall_tau_q3 (:mod:`.ranking`).
``long``, one row per input row and metric
    the covariates (manifest columns), error, metric, direction, unit, value (empty unless the
    row is ok), status.

With ``allow_different_settings`` every table also gets ``settings_override``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_write_many
from ..schema import HEAD_COLUMNS, METRICS, ROW_COLUMNS, SETTING_COLUMNS
from .load import Study, load_results
from .ranking import SCHEMES, Ranking, rank_methods
from .stats import DIFF_INTERVALS, add_intervals, describe, pairwise, values_by_method

__all__ = ["TESTS", "DEFAULT_N_BOOT", "Comparison", "compare"]

TESTS = ("wilcoxon", "t")
DEFAULT_N_BOOT = 1000
OUTPUT_TABLES = ("summary", "pairwise", "ranking")


@dataclass
class Comparison:
    """The results of :func:`compare`.

    Attributes
    ----------
    study : Study
    summary, pairwise, ranking, long : pandas.DataFrame
        The tables written by :meth:`write` (columns in the module docstring).
    rankings : dict
        ``(group, metric) -> (methods, [Ranking per scheme], n subjects)`` for the figures.
    options : dict
        What decided the statistics (baseline, test, n_boot, seed, alpha, ...).
    notes : list of str
        What was left out of a ranking and why.
    """

    study: Study
    summary: pd.DataFrame
    pairwise: pd.DataFrame
    ranking: pd.DataFrame
    long: pd.DataFrame
    rankings: dict[tuple[Any, str], tuple[list[Any], list[Ranking], int]]
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def provenance(self) -> dict[str, Any]:
        """The inputs (path, rows, volqa version, manifest, command, settings), the options,
        the setting differences accepted, and this volqa's version."""
        return {
            "volqa_version": __version__,
            "inputs": [{"path": str(t.path), "rows": t.rows,
                        **{k: t.meta.get(k) for k in ("volqa_version", "manifest", "command",
                                                      "settings", "settings_hash")}}
                       for t in self.study.tables],
            "options": self.options,
            "settings_override": list(self.study.settings_override),
            "notes": self.notes,
        }

    def write(self, out: str | os.PathLike[str]) -> list[Path]:
        """Write the tables and ``compare.json`` into ``out`` (created), all or none."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(out)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create output folder {str(folder)!r}: "
                             f"{exc.strerror or exc}; choose another --out.") from None
        meta = {b"volqa": json.dumps(self.provenance(), default=str).encode()}
        writers = {}
        for name in OUTPUT_TABLES:
            frame = self._with_override(getattr(self, name))
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
            writers[folder / f"{name}.csv"] = (lambda tmp, f=frame: f.to_csv(
                tmp, index=False, lineterminator="\n"))
            writers[folder / f"{name}.parquet"] = (lambda tmp, t=table: pq.write_table(t, tmp))
        long = pa.Table.from_pandas(self._with_override(self.long), preserve_index=False)
        long = long.replace_schema_metadata({**(long.schema.metadata or {}), **meta})
        writers[folder / "long.parquet"] = lambda tmp: pq.write_table(long, tmp)
        text = json.dumps(self.provenance(), indent=2, default=str) + "\n"
        writers[folder / "compare.json"] = lambda tmp: Path(tmp).write_text(text, "utf-8")
        atomic_write_many(writers)
        return list(writers)

    def _with_override(self, frame: pd.DataFrame) -> pd.DataFrame:
        if not self.study.settings_override:
            return frame
        return frame.assign(settings_override="; ".join(self.study.settings_override))


def _head(study: Study, group: Any, metric: str) -> dict[str, Any]:
    head = {study.group: group} if study.group is not None else {}
    head.update(metric=metric, direction=study.direction(metric))
    return head


def _complete_cases(study: Study, group: Any, metric: str, rows: pd.DataFrame,
                    notes: list[str]) -> tuple[list[Any], np.ndarray] | None:
    """The methods with values and the subjects x methods values of the subjects that have
    one for every such method (a note says who is left out); None when nothing is ranked."""
    table = values_by_method(rows, metric, study.by, study.subject, study.methods)
    finite = table.apply(np.isfinite)
    methods = [m for m in table.columns if finite[m].any()]
    where = f"{metric}" + (f" ({study.group} {group})" if study.group is not None else "")
    if len(methods) < 2:
        notes.append(f"ranking of {where}: fewer than two methods have values; not ranked.")
        return None
    complete = finite[methods].all(axis=1)
    if not complete.any():
        notes.append(f"ranking of {where}: no subject has a value for every method; not "
                     "ranked.")
        return None
    dropped = [str(s) for s in complete.index[~complete]]
    if dropped:
        notes.append(f"ranking of {where}: {len(dropped)} subject(s) without a value for "
                     f"every method left out: {', '.join(dropped)}.")
    return methods, table.loc[complete, methods].to_numpy()


def _rankings(study: Study, cases: dict[tuple[Any, str], tuple[list[Any], np.ndarray]],
              options: dict[str, Any]) -> dict[tuple[Any, str], tuple[list, list[Ranking], int]]:
    """Rank every (group, metric); those with as many subjects share one bootstrap pass."""
    by_n: dict[int, list[tuple[Any, str]]] = {}
    for key, (_, values) in cases.items():
        by_n.setdefault(values.shape[0], []).append(key)
    out = {}
    for keys in by_n.values():
        results = rank_methods([cases[k][1] for k in keys],
                               higher_is_better=[METRICS[k[1]].higher_is_better for k in keys],
                               n_boot=options["n_boot"], seed=options["seed"],
                               test=options["test"], alpha=options["alpha"])
        for key, rankings in zip(keys, results, strict=True):
            out[key] = (cases[key][0], rankings, int(cases[key][1].shape[0]))
    return {k: out[k] for k in cases}


def _ranking_records(study: Study, store: dict) -> list[dict[str, Any]]:
    records = []
    for (group, metric), (methods, rankings, n) in store.items():
        for r in rankings:
            shares = r.rank_shares()
            tau = r.tau[np.isfinite(r.tau)]
            tq = np.percentile(tau, [25, 50, 75]) if tau.size else (np.nan,) * 3
            for i, method in enumerate(methods):
                lo, mid, hi = np.percentile(r.boot_ranks[:, i], [2.5, 50, 97.5])
                rec = {**_head(study, group, metric), "scheme": r.scheme, "method": method,
                       "rank": int(r.rank[i]), "value": float(r.value[i]), "n": n,
                       "boot_rank_median": float(mid), "boot_rank_low": float(lo),
                       "boot_rank_high": float(hi)}
                rec.update({f"share_rank_{k + 1}": float(shares[i, k])
                            for k in range(len(methods))})
                rec.update(kendall_tau_median=float(tq[1]), kendall_tau_q1=float(tq[0]),
                           kendall_tau_q3=float(tq[2]))
                records.append(rec)
    return records


def _long(study: Study) -> pd.DataFrame:
    fixed = {c.name for c in (*HEAD_COLUMNS, *ROW_COLUMNS, *SETTING_COLUMNS)} - {"error"}
    keep = [c for c in study.frame.columns if c not in fixed and c not in METRICS
            and not c.startswith("_")]
    base = study.frame[keep + ["_ok"]]
    parts = []
    for metric in study.metrics:
        part = base.assign(metric=metric, direction=study.direction(metric),
                           unit=METRICS[metric].unit, value=study.frame[metric].astype(float))
        part.loc[~part["_ok"], "value"] = np.nan
        parts.append(part.drop(columns="_ok").assign(
            status=study.frame.get("status", pd.Series("ok", study.frame.index))))
    return pd.concat(parts, ignore_index=True)


def compare(
    results: Study | list[str | os.PathLike[str]],
    *,
    by: str = "method",
    subject: str = "subject_id",
    metrics: list[str] | None = None,
    baseline: Any = None,
    group: str | None = None,
    test: str = "wilcoxon",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
    allow_different_settings: bool = False,
) -> Comparison:
    """Descriptives, paired comparisons and rankings of the methods in result tables.

    Parameters
    ----------
    results : Study or list of paths
        Tables of ``volqa score`` (see :func:`volqa.analysis.load_results` for ``by``,
        ``subject``, ``metrics``, ``group`` and ``allow_different_settings``).
    baseline : optional
        Compare every method with this one (default: every pair of methods).
    test : {"wilcoxon", "t"}
        Paired test: Wilcoxon signed-rank (effect: matched-pairs rank-biserial) or paired t
        (effect: Cohen's d_z); also the one-sided test of test-then-rank.
    n_boot : int, default 1000
        Bootstrap replicates for every interval and the ranking stability.
    seed : int, default 0
        Seed of every bootstrap (the same inputs and options give the same numbers).
    alpha : float, default 0.05
        Significance level of test-then-rank (challengeR's default, unadjusted).

    Raises
    ------
    InputError, SettingsError
        As :func:`~volqa.analysis.load_results`; an unknown test, a baseline that is not a
        method, ``n_boot`` < 100.
    """
    if test not in TESTS:
        raise InputError(f"unknown test {test!r}; choose {' or '.join(TESTS)}.")
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise InputError(f"n_boot must be an integer of at least 100 (1000 or more is usual "
                         f"for BCa intervals); got {n_boot!r}.")
    study = results if isinstance(results, Study) else load_results(
        results, by=by, subject=subject, metrics=metrics, group=group,
        allow_different_settings=allow_different_settings)
    if baseline is not None:
        names = {str(m): m for m in study.methods}
        if str(baseline) not in names:
            raise InputError(f"baseline {baseline!r} is not a method in column {study.by!r} "
                             f"(methods: {', '.join(map(str, study.methods))}).")
        baseline = names[str(baseline)]
    options = {"by": study.by, "subject": study.subject, "group": study.group,
               "metrics": list(study.metrics), "baseline": baseline, "test": test,
               "n_boot": n_boot, "seed": seed, "alpha": alpha, "confidence": 0.95,
               "bootstrap": "BCa", "ties": "min", "schemes": list(SCHEMES)}
    summary, pairs, notes, cases = [], [], [], {}
    common = {"by": study.by, "subject": study.subject, "methods": study.methods,
              "n_boot": None}
    for group_value, rows in study.groups():
        for metric in study.metrics:
            head = _head(study, group_value, metric)
            summary += [{**head, **r} for r in describe(rows, metric, **common)]
            pairs += [{**head, **r} for r in pairwise(
                rows, metric, higher_is_better=METRICS[metric].higher_is_better,
                baseline=baseline, test=test, **common)]
            found = _complete_cases(study, group_value, metric, rows, notes)
            if found is not None:
                cases[(group_value, metric)] = found
    notes[:0] = _left_out_notes(study, summary, pairs)
    add_intervals(summary, "_values", {"mean": "mean"}, n_boot, seed)
    add_intervals(pairs, "_diffs", DIFF_INTERVALS, n_boot, seed)
    store = _rankings(study, cases, options)
    return Comparison(study, _frame(summary, "_values"), _frame(pairs, "_diffs"),
                      pd.DataFrame(_ranking_records(study, store)), _long(study), store,
                      options, notes)


def _left_out_notes(study: Study, summary: list[dict], pairs: list[dict]) -> list[str]:
    """One line per method and per pair that left subjects out, naming them."""
    def where(r: dict) -> str:
        return r["metric"] + (f" ({study.group} {r[study.group]})" if study.group else "")

    notes = [f"{where(r)}, {r['method']}: {r['n_rows'] - r['n']} row(s) without a value left "
             f"out ({r['n_failed']} failed, {r['n_missing']} empty, {r['n_infinite']} "
             f"infinite): {r['left_out']}." for r in summary if r["n"] < r["n_rows"]]
    notes += [f"{where(r)}, {r['method']} vs {r['versus']}: {r['n_left_out']} subject(s) "
              f"without a value for both left out: {r['left_out']}."
              for r in pairs if r["n_left_out"]]
    return notes


def _frame(records: list[dict[str, Any]], private: str) -> pd.DataFrame:
    return pd.DataFrame([{k: v for k, v in r.items() if k != private} for r in records])
