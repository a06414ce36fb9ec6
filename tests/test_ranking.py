"""Rankings in challengeR's three schemes on hand-made cases whose answer is known, and the
vectorised bootstrap against a plain per-replicate computation and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from volqa.analysis.bootstrap import Resampler
from volqa.analysis.ranking import (
    SCHEMES,
    kendall_tau_b,
    rank_methods,
    signed_rank_pvalues,
    t_pvalues,
)


def ranks(values, higher=True, n_boot=200, **kw):
    out = rank_methods(np.asarray(values, dtype=float), higher_is_better=higher,
                       n_boot=n_boot, seed=0, **kw)
    return {r.scheme: r for r in out}


def test_aggregate_and_rank_then_aggregate_disagree() -> None:
    # columns A, B, C; rows are subjects. A wins one subject by far, C is second everywhere
    # else: A has the best mean, C the best mean rank; A and B share rank 2 by mean rank.
    values = [[10, 1, 2],
              [0, 1, 2],
              [0, 1, 2]]
    r = ranks(values)
    agg, rta = r["aggregate-then-rank"], r["rank-then-aggregate"]
    np.testing.assert_allclose(agg.value, [10 / 3, 1, 2])
    assert agg.rank.tolist() == [1, 3, 2]
    np.testing.assert_allclose(rta.value, [7 / 3, 7 / 3, 4 / 3])  # mean rank, 1 = best
    assert rta.rank.tolist() == [2, 2, 1]  # ties share the smallest rank (R's "min")


def test_lower_is_better_reverses_the_order() -> None:
    values = [[0.1, 0.2, 0.3], [0.2, 0.3, 0.1], [0.1, 0.3, 0.2]]
    high, low = ranks(values), ranks(values, higher=False)
    assert high["aggregate-then-rank"].rank.tolist() == [3, 1, 2]
    assert low["aggregate-then-rank"].rank.tolist() == [1, 3, 2]
    np.testing.assert_allclose(low["aggregate-then-rank"].value, [0.4 / 3, 0.8 / 3, 0.6 / 3])
    assert low["rank-then-aggregate"].rank.tolist() == [1, 3, 2]


def test_test_then_rank_counts_significant_wins() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.05, 30)
    a = base + 0.05 + rng.normal(0, 0.005, 30)  # clearly best
    b = base + rng.normal(0, 0.005, 30)
    c = b.copy()  # identical to b: every difference zero, never significant
    r = ranks(np.stack([a, b, c], axis=1))["test-then-rank"]
    np.testing.assert_allclose(r.value, [1.0, 0.0, 0.0])  # share of the others beaten
    assert r.rank.tolist() == [1, 2, 2]
    d = ranks(np.stack([a, b, b - 0.05 + rng.normal(0, 0.005, 30)], axis=1))["test-then-rank"]
    np.testing.assert_allclose(d.value, [1.0, 0.5, 0.0])
    assert d.rank.tolist() == [1, 2, 3]
    # the same with a one-sided paired t-test
    t = ranks(np.stack([a, b, c], axis=1), test="t")["test-then-rank"]
    assert t.rank.tolist() == [1, 2, 2]


def test_a_dominant_method_is_stable_and_a_coin_toss_is_not() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.1, 25)
    clear = ranks(np.stack([base + 0.1, base, base - 0.1], axis=1))
    for scheme in SCHEMES:
        r = clear[scheme]
        assert r.rank.tolist() == [1, 2, 3]
        np.testing.assert_array_equal(r.rank_shares(), np.eye(3))  # every replicate agrees
        assert (r.tau == 1).all()
    noise = ranks(rng.normal(0.5, 0.1, (25, 3)), n_boot=500)["aggregate-then-rank"]
    shares = noise.rank_shares()
    np.testing.assert_allclose(shares.sum(axis=0), 1)
    np.testing.assert_allclose(shares.sum(axis=1), 1)
    assert shares.max() < 1 and (noise.tau < 1).mean() > 0.2


def test_bootstrap_ranks_equal_a_per_replicate_loop() -> None:
    """The count-based computation against resamples drawn one by one (scipy's draws)."""
    rng = np.random.default_rng(2)
    # multiples of 1/64: ties within and across subjects, and every sum exact in float64, so
    # tied means are tied in both computations
    values = np.round(rng.normal(0.6, 0.05, (12, 4)) * 64) / 64
    n_boot = 60
    got = {r.scheme: r for r in rank_methods(values, higher_is_better=True, n_boot=n_boot,
                                             seed=9)}
    batch = Resampler(12, n_boot, 9).batch
    draw = np.random.default_rng(9)
    index = np.concatenate([draw.integers(0, 12, (min(batch, n_boot - s), 12))
                            for s in range(0, n_boot, batch)])
    for k, idx in enumerate(index):
        sample = values[idx]
        by_mean = stats.rankdata(-sample.mean(axis=0), method="min")
        per_subject = stats.rankdata(-sample, method="min", axis=1)
        by_rank = stats.rankdata(per_subject.mean(axis=0), method="min")
        wins = np.zeros(4)
        for i in range(4):
            for j in range(4):
                if i != j and np.any(sample[:, i] != sample[:, j]):
                    p = stats.wilcoxon(sample[:, i], sample[:, j], alternative="greater",
                                       method="asymptotic", correction=True).pvalue
                    wins[i] += p <= 0.05
        by_test = stats.rankdata(-wins / 3, method="min")
        for scheme, want in zip(SCHEMES, (by_mean, by_rank, by_test), strict=True):
            np.testing.assert_array_equal(got[scheme].boot_ranks[k], want, err_msg=scheme)
            tau = stats.kendalltau(want, got[scheme].rank).statistic
            np.testing.assert_allclose(got[scheme].tau[k], tau, equal_nan=True)


@pytest.mark.parametrize("kind", ["ties and zeros", "continuous"])
def test_signed_rank_and_t_pvalues_equal_scipy_on_each_resample(kind) -> None:
    rng = np.random.default_rng(3)
    d = np.round(rng.normal(0.2, 1, 25), 1) if kind == "ties and zeros" else rng.normal(0.2, 1, 25)
    if kind == "ties and zeros":
        d[:4] = 0
    counts = next(Resampler(25, 8, 5).counts())
    index = np.random.default_rng(5).integers(0, 25, (8, 25))
    greater, less = signed_rank_pvalues(d, counts)
    t_greater, t_less = t_pvalues(d, counts)
    for k in range(8):
        x = d[index[k]]
        for got, alt in ((greater[k], "greater"), (less[k], "less")):
            want = stats.wilcoxon(x, alternative=alt, method="asymptotic", correction=True)
            assert got == pytest.approx(want.pvalue, rel=1e-12, abs=1e-15)
        assert t_greater[k] == pytest.approx(stats.ttest_1samp(x, 0, alternative="greater")
                                             .pvalue, rel=1e-10)
        assert t_less[k] == pytest.approx(stats.ttest_1samp(x, 0, alternative="less").pvalue,
                                          rel=1e-10)


def test_kendall_tau_b_equals_scipy() -> None:
    rng = np.random.default_rng(4)
    boot = rng.integers(1, 4, (20, 5))
    reference = np.array([1, 2, 2, 4, 5])
    got = kendall_tau_b(boot, reference)
    for k in range(20):
        want = stats.kendalltau(boot[k], reference).statistic
        np.testing.assert_allclose(got[k], want, equal_nan=True)
