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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from .bootstrap import Resampler

__all__ = ["SCHEMES", "Ranking", "rank_methods", "SignedRank", "PairedT",
           "signed_rank_pvalues", "t_pvalues", "kendall_tau_b"]

SCHEMES = ("aggregate-then-rank", "rank-then-aggregate", "test-then-rank")


def _min_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = largest score, ties share the smallest rank."""
    from scipy.stats import rankdata

    return rankdata(-scores, method="min", axis=-1)


def _tie_terms(counts: np.ndarray) -> np.ndarray:
    """Sum of c³ - c over the columns of ``counts`` (the tie term of subjects drawn c times)."""
    c = counts.astype(np.float64)
    return (c * c * c - c).sum(axis=1)


class SignedRank:
    """One-sided Wilcoxon signed-rank p values of differences ``d`` in every resample.

    The statistic of a resample (zero differences dropped, average ranks for ties), its normal
    approximation with tie correction and a continuity correction of 0.5:
    ``scipy.stats.wilcoxon(resample, alternative="greater" / "less", method="asymptotic",
    correction=True)``. What does not depend on the resample (which differences are zero,
    the order of |d|, its tie groups) is worked out once here.
    """

    def __init__(self, d: np.ndarray) -> None:
        self.keep = d != 0
        self.all_kept = bool(self.keep.all())
        kept = d[self.keep]
        self.order = np.argsort(np.abs(kept), kind="stable")
        a = np.abs(kept)[self.order]
        self.positive = kept[self.order] > 0
        self.starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if a.size else a
        self.tied = self.starts.size < a.size
        self.wide = np.int64 if kept.size > 20000 else np.int32  # 2 c cum must not overflow

    def __call__(self, counts: np.ndarray, ties: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(p of "d > 0", p of "d < 0") per row of ``counts``; NaN when no difference is
        non-zero. ``ties`` may give :func:`_tie_terms` of ``counts`` (shared by the pairs of
        a batch; used when no difference is zero and no |d| is tied)."""
        from scipy.special import ndtr

        if not self.order.size:
            nan = np.full(counts.shape[0], np.nan)
            return nan, nan.copy()
        kept = counts if self.all_kept else counts[:, self.keep]
        c = np.take(kept, self.order, axis=1).astype(self.wide, copy=False)
        pos = None
        if self.tied:  # ties among subjects: ranks and counts per group of equal |d|
            pos = np.add.reduceat(c * self.positive, self.starts, axis=1)
            c = np.add.reduceat(c, self.starts, axis=1)
            ties = _tie_terms(c)
        elif ties is None or not self.all_kept:
            ties = _tie_terms(c)
        # 2 * c * midrank = c * (2 * cum - c + 1), cum the cumulative count: integers
        w = np.cumsum(c, axis=1, dtype=self.wide)
        n = w[:, -1].astype(np.float64)
        w *= 2
        w -= c
        w += 1
        if pos is None:
            w *= c
            r_plus = (w @ self.positive.astype(self.wide)) / 2
        else:
            r_plus = (pos * w).sum(axis=1) / 2
        r_minus = n * (n + 1) / 2 - r_plus
        se = np.sqrt((n * (n + 1) * (2 * n + 1) - ties / 2) / 24)
        mn = n * (n + 1) / 4
        with np.errstate(divide="ignore", invalid="ignore"):
            greater = 1 - ndtr((r_plus - mn - 0.5) / se)
            less = 1 - ndtr((r_minus - mn - 0.5) / se)
        return np.where(se > 0, greater, np.nan), np.where(se > 0, less, np.nan)


class PairedT:
    """One-sided paired t-test p values of differences ``d`` in every resample:
    ``scipy.stats.ttest_1samp(resample, 0, alternative="greater" / "less")``."""

    def __init__(self, d: np.ndarray) -> None:
        self.d = d

    def __call__(self, counts: np.ndarray, ties: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        from scipy.stats import t as student

        c = counts.astype(np.float64)
        n = c.sum(axis=1)
        mean = c @ self.d / n
        var = (c * (self.d[None, :] - mean[:, None]) ** 2).sum(axis=1) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = mean / np.sqrt(var / n)
        ok = var > 0
        return (np.where(ok, student.sf(t, n - 1), np.nan),
                np.where(ok, student.sf(-t, n - 1), np.nan))


def signed_rank_pvalues(d: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:class:`SignedRank` of ``d`` on ``counts``."""
    return SignedRank(d)(counts)


def t_pvalues(d: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:class:`PairedT` of ``d`` on ``counts``."""
    return PairedT(d)(counts)


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
            ) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Per scheme: counts (b, n) -> (b, m) scores where larger is better."""
    m, n = values.shape[1], values.shape[0]
    kind = SignedRank if test == "wilcoxon" else PairedT
    pairs = [(a, b, kind(values[:, a] - values[:, b])) for a, b in combinations(range(m), 2)]

    def tested(counts: np.ndarray) -> np.ndarray:
        wins = np.zeros((counts.shape[0], m))
        ties = _tie_terms(counts) if test == "wilcoxon" else None
        for a, b, pvalue in pairs:
            a_better, b_better = pvalue(counts, ties)
            wins[:, a] += a_better <= alpha
            wins[:, b] += b_better <= alpha
        return wins / max(m - 1, 1)

    return [
        lambda counts: counts.astype(np.float64) @ values / n,
        lambda counts: -(counts.astype(np.float64) @ subject_ranks / n),
        tested,
    ]


def rank_methods(values: np.ndarray | Sequence[np.ndarray], *,
                 higher_is_better: bool | Sequence[bool], n_boot: int, seed: int,
                 test: str = "wilcoxon", alpha: float = 0.05) -> list[Ranking] | list[list]:
    """The three rankings of the methods (columns of ``values``) and their bootstrap.

    Parameters
    ----------
    values : (n, m) float64 array, or a sequence of them with one n
        Finite metric values, one row per subject scored for every method. Several arrays
        (metrics, say) share one pass of bootstrap replicates.
    higher_is_better : bool, or one per array
        The metric's direction (from :data:`volqa.schema.METRICS`).
    n_boot, seed : int
        Bootstrap replicates and seed (:class:`~.bootstrap.Resampler`).
    test : {"wilcoxon", "t"}
        The one-sided paired test of test-then-rank.
    alpha : float
        Its significance level (challengeR's default 0.05, unadjusted).

    Returns
    -------
    list of Ranking, one per scheme of :data:`SCHEMES` (a list of such lists for a sequence)
    """
    single = isinstance(values, np.ndarray)
    arrays = [values] if single else list(values)
    highs = [higher_is_better] if single else list(higher_is_better)  # type: ignore[arg-type]
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError("every array must have the same number of subjects")
    signs = [1.0 if h else -1.0 for h in highs]
    oriented = [np.asarray(a, dtype=np.float64) * s for a, s in zip(arrays, signs, strict=True)]
    fns = [fn for o in oriented for fn in _scores(o, _min_ranks(o).astype(np.float64),
                                                    test, alpha)]
    ones = np.ones((1, arrays[0].shape[0]), dtype=np.int32)
    observed = [fn(ones)[0] for fn in fns]
    boot = Resampler(arrays[0].shape[0], n_boot, seed).replicates(*fns)
    out = []
    for k, sign in enumerate(signs):
        rankings = []
        for i, scheme in enumerate(SCHEMES):
            obs, scores = observed[3 * k + i], boot[3 * k + i]
            rank, boot_ranks = _min_ranks(obs), _min_ranks(scores)
            value = {"aggregate-then-rank": obs * sign, "rank-then-aggregate": -obs}.get(
                scheme, obs)
            rankings.append(Ranking(scheme, value, rank, boot_ranks,
                                    kendall_tau_b(boot_ranks, rank)))
        out.append(rankings)
    return out[0] if single else out
