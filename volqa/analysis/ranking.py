"""Rankings of methods in challengeR's three schemes, and their stability under the bootstrap.

For one metric and the subjects scored for every method (complete cases), with values
oriented so that larger is better (a lower-is-better metric is negated):

``aggregate-then-rank``
    Mean per method, ranked (challengeR ``aggregateThenRank(FUN = mean)``).
``rank-then-aggregate``
    The methods ranked within each subject, the mean rank per method, ranked
    (``rankThenAggregate(FUN = mean)``).
``test-then-rank``
    For every ordered pair of methods a one-sided paired test "A better than B" at
    ``alpha`` (0.05, no adjustment), the share of the other methods a method beats
    significantly, ranked (``testThenRank``; its test is R's ``wilcox.test(paired = TRUE,
    exact = FALSE)``: the normal approximation with tie and continuity correction, zero
    differences dropped, which equals ``scipy.stats.wilcoxon(method="asymptotic",
    correction=True)``; with ``test="t"`` a one-sided paired t-test).

Ties get the smallest rank (R's ``ties.method = "min"``, challengeR's default); rank 1 is the
best. Every replicate of :class:`~.bootstrap.Resampler` (subjects drawn with replacement) is
ranked the same way from its counts, all replicates at once: means and mean ranks are one
matrix product, the signed-rank statistic of a resample comes from the cumulative counts over
the absolute differences sorted once (a subject drawn c times is a tie group of c). The
observed ranking is the same computation with every count 1. Stability: each method's rank
distribution over the replicates and Kendall's tau-b between each replicate's ranking and the
observed one (``scipy.stats.kendalltau``'s default variant).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from .bootstrap import Resampler

__all__ = ["SCHEMES", "Ranking", "rank_methods", "signed_rank_pvalues", "t_pvalues",
           "kendall_tau_b"]

SCHEMES = ("aggregate-then-rank", "rank-then-aggregate", "test-then-rank")


def _min_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = largest score, ties share the smallest rank."""
    from scipy.stats import rankdata

    return rankdata(-scores, method="min", axis=-1)


def _tie_terms(counts: np.ndarray) -> np.ndarray:
    """Sum of c³ - c over the columns of ``counts`` (the tie term of subjects drawn c times)."""
    c = counts.astype(np.float64)
    return (c * c * c - c).sum(axis=1)


def signed_rank_pvalues(d: np.ndarray, counts: np.ndarray, ties: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p of "d > 0" and of "d < 0" for each resample (rows of ``counts``) of ``d``.

    The Wilcoxon signed-rank statistic of the resample (zero differences dropped, average
    ranks for ties), the normal approximation with tie correction and a continuity
    correction of 0.5: ``scipy.stats.wilcoxon(resample, alternative="greater" / "less",
    method="asymptotic", correction=True)``. NaN when no difference is non-zero. ``ties``
    may give :func:`_tie_terms` of ``counts`` (shared by every pair of a batch).
    """
    from scipy.special import ndtr

    keep = d != 0
    if not keep.any():
        nan = np.full(counts.shape[0], np.nan)
        return nan, nan.copy()
    if ties is None or not keep.all():
        ties = _tie_terms(counts[:, keep])
    d, counts = d[keep], counts[:, keep]
    order = np.argsort(np.abs(d), kind="stable")
    a = np.abs(d)[order]
    positive = d[order] > 0
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])  # tie groups of equal |d|
    wide = np.int64 if d.size > 20000 else np.int32  # 2 * c * cum must not overflow
    c = np.take(counts, order, axis=1).astype(wide, copy=False)
    if starts.size < a.size:  # ties among subjects: ranks and counts per group
        pos = np.add.reduceat(c * positive, starts, axis=1)
        c = np.add.reduceat(c, starts, axis=1)
        ties = _tie_terms(c)
    else:
        pos = None
    # 2 * c * midrank = c * (2 * cum - c + 1), cum the cumulative count: integers
    w = np.cumsum(c, axis=1, dtype=wide)
    n = w[:, -1].astype(np.float64)
    w *= 2
    w -= c
    w += 1
    if pos is None:
        w *= c
        r_plus = (w @ positive.astype(wide)) / 2
    else:
        r_plus = (pos * w).sum(axis=1) / 2
    r_minus = n * (n + 1) / 2 - r_plus
    se = np.sqrt((n * (n + 1) * (2 * n + 1) - ties / 2) / 24)
    mn = n * (n + 1) / 4
    with np.errstate(divide="ignore", invalid="ignore"):
        greater = 1 - ndtr((r_plus - mn - 0.5) / se)
        less = 1 - ndtr((r_minus - mn - 0.5) / se)
    return np.where(se > 0, greater, np.nan), np.where(se > 0, less, np.nan)


def t_pvalues(d: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p of "mean(d) > 0" and "< 0" for each resample: ``scipy.stats.ttest_1samp(
    resample, 0, alternative="greater" / "less")`` (the paired t-test on the differences)."""
    from scipy.stats import t as student

    c = counts.astype(np.float64)
    n = c.sum(axis=1)
    mean = c @ d / n
    var = (c * (d[None, :] - mean[:, None]) ** 2).sum(axis=1) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(var / n)
    ok = var > 0
    return (np.where(ok, student.sf(t, n - 1), np.nan),
            np.where(ok, student.sf(-t, n - 1), np.nan))


def kendall_tau_b(ranks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between each row of ``ranks`` (b, m) and ``reference`` (m,)."""
    pairs = list(combinations(range(reference.size), 2))
    if not pairs:
        return np.full(ranks.shape[0], np.nan)
    i, j = np.array(pairs).T
    s_ref = np.sign(reference[i] - reference[j])
    s = np.sign(ranks[:, i] - ranks[:, j])
    n0 = len(pairs)
    n1 = np.count_nonzero(s_ref == 0)
    n2 = np.count_nonzero(s == 0, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (s * s_ref).sum(axis=1) / np.sqrt((n0 - n1) * (n0 - n2))


@dataclass(frozen=True)
class Ranking:
    """One scheme's ranking of ``m`` methods on ``n`` complete subjects.

    Attributes
    ----------
    scheme : str
    value : (m,) array
        What is ranked: the mean (in the metric's own direction), the mean per-subject rank,
        or the share of other methods beaten significantly.
    rank : (m,) array
        Observed ranks (1 = best).
    boot_ranks : (B, m) array
        The ranks in every bootstrap replicate.
    tau : (B,) array
        Kendall's tau-b of each replicate's ranking with the observed one.
    """

    scheme: str
    value: np.ndarray
    rank: np.ndarray
    boot_ranks: np.ndarray
    tau: np.ndarray

    def rank_shares(self) -> np.ndarray:
        """(m, m) array: share of replicates in which method i has rank r + 1."""
        m = self.rank.size
        return np.stack([(self.boot_ranks == r + 1).mean(axis=0) for r in range(m)], axis=1)


def _scores(values: np.ndarray, subject_ranks: np.ndarray, test: str, alpha: float
            ) -> list:
    """Per scheme: counts (b, n) -> (b, m) scores where larger is better."""
    m = values.shape[1]
    n = values.shape[0]
    pvalue = signed_rank_pvalues if test == "wilcoxon" else t_pvalues

    def tested(counts: np.ndarray) -> np.ndarray:
        wins = np.zeros((counts.shape[0], m))
        extra = {"ties": _tie_terms(counts)} if test == "wilcoxon" else {}
        for a, b in combinations(range(m), 2):
            a_better, b_better = pvalue(values[:, a] - values[:, b], counts, **extra)
            wins[:, a] += a_better <= alpha
            wins[:, b] += b_better <= alpha
        return wins / max(m - 1, 1)

    return [
        lambda counts: counts.astype(np.float64) @ values / n,
        lambda counts: -(counts.astype(np.float64) @ subject_ranks / n),
        tested,
    ]


def rank_methods(values: np.ndarray, *, higher_is_better: bool, n_boot: int, seed: int,
                 test: str = "wilcoxon", alpha: float = 0.05) -> list[Ranking]:
    """The three rankings of the methods (columns of ``values``) and their bootstrap.

    Parameters
    ----------
    values : (n, m) float64 array
        Finite metric values, one row per subject scored for every method.
    higher_is_better : bool
        The metric's direction (from :data:`volqa.schema.METRICS`).
    n_boot, seed : int
        Bootstrap replicates and seed (:class:`~.bootstrap.Resampler`).
    test : {"wilcoxon", "t"}
        The one-sided paired test of test-then-rank.
    alpha : float
        Its significance level (challengeR's default 0.05, unadjusted).

    Returns
    -------
    list of Ranking, one per scheme of :data:`SCHEMES`
    """
    oriented = np.asarray(values, dtype=np.float64) * (1.0 if higher_is_better else -1.0)
    subject_ranks = _min_ranks(oriented).astype(np.float64)
    fns = _scores(oriented, subject_ranks, test, alpha)
    ones = np.ones((1, oriented.shape[0]), dtype=np.int32)
    observed = [fn(ones)[0] for fn in fns]
    boot = Resampler(oriented.shape[0], n_boot, seed).replicates(*fns)
    out = []
    for scheme, obs, scores in zip(SCHEMES, observed, boot, strict=True):
        rank = _min_ranks(obs)
        boot_ranks = _min_ranks(scores)
        value = obs.copy()
        if scheme == "aggregate-then-rank":
            value = value * (1.0 if higher_is_better else -1.0)
        elif scheme == "rank-then-aggregate":
            value = -value
        out.append(Ranking(scheme, value, rank, boot_ranks, kendall_tau_b(boot_ranks, rank)))
    return out
