"""Vectorised bootstrap of subjects: one index matrix, every statistic, BCa intervals.

A :class:`Resampler` draws the bootstrap replicates of one set of ``n`` subjects exactly as
:func:`scipy.stats.bootstrap` does (``rng = numpy.random.default_rng(seed)``, then
``rng.integers(0, n, (rows, n))`` per batch of ``rows`` replicates), and turns each batch into a
matrix of counts (how often each subject is drawn in each replicate). Every statistic of every
column is then computed from the same replicates in one pass: means as one matrix product,
medians by a cumulative count over each column sorted once, rankings and rank tests in
:mod:`.ranking` likewise. Nothing loops over replicates.

:func:`bca_interval` is scipy's bias-corrected and accelerated interval (Efron & Tibshirani
1993, sections 14.3 and 15.4; the same formulas and quantile method as
``scipy.stats.bootstrap(method="BCa")``), with the jackknife of the mean and of the median in
closed form (O(n) instead of scipy's O(n²), which takes about a second per column at 10,000
subjects). The tests check both intervals against ``scipy.stats.bootstrap`` called on the
same data with the same seed and batch size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["Resampler", "STATISTICS", "mean_of", "median_of", "statistic", "jackknife",
           "bca_interval", "bootstrap_ci"]

#: Replicates per batch: the counts of one batch hold at most this many elements (4 MiB).
BATCH_ELEMENTS = 1 << 20

Statistic = Callable[[np.ndarray], np.ndarray]


class Resampler:
    """The bootstrap replicates of ``n`` subjects.

    Parameters
    ----------
    n : int
        Number of subjects (rows of the data).
    n_boot : int
        Number of bootstrap replicates.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same replicates.
    """

    def __init__(self, n: int, n_boot: int, seed: int) -> None:
        self.n, self.n_boot, self.seed = int(n), int(n_boot), int(seed)
        self.batch = max(1, min(self.n_boot, BATCH_ELEMENTS // max(self.n, 1)))

    def counts(self) -> Iterator[np.ndarray]:
        """Batches of counts: int32 arrays (rows, n), how often each subject is drawn in each
        replicate (each row sums to n)."""
        rng = np.random.default_rng(self.seed)
        n = self.n
        for start in range(0, self.n_boot, self.batch):
            rows = min(self.batch, self.n_boot - start)
            index = rng.integers(0, n, (rows, n))
            index += (np.arange(rows) * n)[:, None]
            yield np.bincount(index.ravel(), minlength=rows * n).reshape(rows, n).astype(
                np.int32)

    def replicates(self, *statistics: Statistic) -> list[np.ndarray]:
        """Each statistic (counts (rows, n) -> (rows, k)) on every replicate, in one pass.

        Batches are drawn in order (so the replicates never depend on timing) and their
        statistics computed in threads, one per CPU (numpy releases the GIL), with at most
        two batches per thread in flight."""
        def run(counts: np.ndarray) -> list[np.ndarray]:
            return [fn(counts) for fn in statistics]

        workers = max(1, min(os.cpu_count() or 1, 8))
        done: list[list[np.ndarray]] = []
        with ThreadPoolExecutor(workers) as pool:
            pending: deque = deque()
            for counts in self.counts():
                pending.append(pool.submit(run, counts))
                if len(pending) >= 2 * workers:
                    done.append(pending.popleft().result())
            done += [f.result() for f in pending]
        return [np.concatenate([d[i] for d in done], axis=0) for i in range(len(statistics))]


def mean_of(data: np.ndarray) -> Statistic:
    """The statistic "mean of each column of ``data`` (n, k)" on weighted replicates."""
    n = data.shape[0]
    return lambda counts: counts.astype(np.float64) @ data / n


def median_of(data: np.ndarray) -> Statistic:
    """The statistic "median of each column of ``data`` (n, k)" on weighted replicates: the
    middle value(s) are found from the cumulative counts over each column sorted once."""
    n = data.shape[0]
    orders = np.argsort(data, axis=0, kind="stable")
    values = np.take_along_axis(data, orders, axis=0)
    lo_rank, hi_rank = (n - 1) // 2, n // 2  # 0-based ranks of the middle value(s)

    def fn(counts: np.ndarray) -> np.ndarray:
        out = np.empty((counts.shape[0], data.shape[1]))
        for j in range(data.shape[1]):
            cum = np.cumsum(np.take(counts, orders[:, j], axis=1), axis=1, dtype=np.int64)
            lo = values[np.count_nonzero(cum <= lo_rank, axis=1), j]
            hi = values[np.count_nonzero(cum <= hi_rank, axis=1), j]
            out[:, j] = (lo + hi) * 0.5
        return out

    return fn


STATISTICS = {"mean": mean_of, "median": median_of}


def statistic(data: np.ndarray, kind: str) -> np.ndarray:
    """``kind`` of each column of the original data (n, k), computed as for a replicate
    (so a replicate that draws every subject once gives exactly this value)."""
    return STATISTICS[kind](data)(np.ones((1, data.shape[0]), dtype=np.int32))[0]


def jackknife(data: np.ndarray, kind: str) -> np.ndarray:
    """Leave-one-out values of ``kind`` for each column, (n, k), in closed form.

    The mean without subject i is (sum - x_i) / (n - 1). The median of the n - 1 values left
    depends only on where x_i lies among the sorted values (below, at or above the middle),
    so each column needs one sort; the order of the rows does not matter to BCa.
    """
    n = data.shape[0]
    if n < 2:
        return np.full((n, data.shape[1]), np.nan)
    if kind == "mean":
        return (data.sum(axis=0) - data) / (n - 1)
    s = np.sort(data, axis=0)
    i = np.arange(n)[:, None]
    if n % 2 == 0:  # n - 1 left, odd: the middle one is s[k] or s[k - 1], k = n / 2
        k = n // 2
        return np.where(i < k, s[k], s[k - 1])
    k = n // 2  # n - 1 left, even: the mean of two middle values
    below = (s[k] + s[k + 1]) * 0.5
    above = (s[k - 1] + s[k]) * 0.5 if k >= 1 else below
    at = (s[k - 1] + s[k + 1]) * 0.5 if k >= 1 else below
    return np.where(i < k, below, np.where(i > k, above, at))


def bca_interval(theta_hat: np.ndarray, theta_b: np.ndarray, jack: np.ndarray,
                 confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided BCa interval of each column, as ``scipy.stats.bootstrap(method="BCa")``.

    Parameters
    ----------
    theta_hat : (k,) array
        The statistic on the original data.
    theta_b : (B, k) array
        Its bootstrap distribution.
    jack : (n, k) array
        Its jackknife (leave-one-out) values.
    confidence : float
        Confidence level (0.95: the 2.5 % and 97.5 % BCa-adjusted quantiles).

    Returns
    -------
    (low, high) : two (k,) arrays
        NaN where BCa is undefined (fewer than two subjects, constant data: scipy warns
        "the distribution is degenerate" and returns NaN there too).
    """
    from scipy.special import ndtr, ndtri

    B = theta_b.shape[0]
    pct = ((theta_b < theta_hat).sum(axis=0) + (theta_b <= theta_hat).sum(axis=0)) / (2 * B)
    z0 = ndtri(pct)
    n = jack.shape[0]
    u = (n - 1) * (jack.mean(axis=0) - jack)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (u**3).sum(axis=0) / n**3 / ((u**2).sum(axis=0) / n**2) ** 1.5 / 6
        z = ndtri((1 - confidence) / 2)
        a1 = ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
        a2 = ndtr(z0 + (z0 - z) / (1 - a * (z0 - z)))
    low = np.full(theta_hat.shape, np.nan)
    high = np.full(theta_hat.shape, np.nan)
    for j in range(theta_hat.shape[0]):
        if np.isfinite(a1[j]) and np.isfinite(a2[j]):
            low[j], high[j] = np.quantile(theta_b[:, j], [a1[j], a2[j]])
    return low, high


def bootstrap_ci(data: np.ndarray, kind: str, n_boot: int, seed: int,
                 confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """BCa interval of ``kind`` ("mean" or "median") of each column of ``data`` (n, k)."""
    data = np.asarray(data, dtype=np.float64)
    if data.shape[0] < 2:
        nan = np.full(data.shape[1], np.nan)
        return nan, nan.copy()
    (theta_b,) = Resampler(data.shape[0], n_boot, seed).replicates(STATISTICS[kind](data))
    return bca_interval(statistic(data, kind), theta_b, jackknife(data, kind), confidence)
