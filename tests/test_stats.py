"""Every statistic of ``volqa compare`` against scipy/statsmodels called directly on the same
data: BCa intervals, Holm, descriptives, Wilcoxon (ties, zero differences) and paired t with
their effect sizes, a subject missing for one method, a single-subject group."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from volqa.analysis.bootstrap import Resampler, bootstrap_ci
from volqa.analysis.stats import describe, holm, pairwise

N_BOOT = 999


def scipy_bca(data: np.ndarray, fn, seed: int = 0, n_boot: int = N_BOOT, quiet: bool = True):
    """scipy's BCa interval with the batch size volqa draws in (the same replicates); its
    warnings where BCa is degenerate (NaN, as volqa's) are silenced unless ``quiet`` is
    False."""
    batch = Resampler(data.shape[0], n_boot, seed).batch
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        res = stats.bootstrap((data,), fn, axis=0, n_resamples=n_boot, method="BCa",
                              rng=np.random.default_rng(seed), batch=batch)
    return res.confidence_interval.low, res.confidence_interval.high


# Means: n >= 15, so that no replicate is a permutation of the data (for n = 8 about one in
# 400 is; its mean then equals the data's mean exactly, and whether scipy counts it below or
# at the estimate depends on its summation order).
@pytest.mark.parametrize("n", [15, 40, 333])
def test_bca_of_the_mean_equals_scipy(n) -> None:
    data = np.random.default_rng(n).gamma(2.0, size=(n, 3))  # skewed: acceleration matters
    low, high = bootstrap_ci(data, "mean", N_BOOT, 0)
    want_low, want_high = scipy_bca(data, np.mean)
    np.testing.assert_allclose(low, want_low, rtol=1e-10)
    np.testing.assert_allclose(high, want_high, rtol=1e-10)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 30])
def test_bca_of_the_median_equals_scipy_with_ties(n) -> None:
    data = np.round(np.random.default_rng(n).normal(size=(n, 4)), 1)  # many ties
    data[:, 3] = np.arange(n)  # and one column without
    low, high = bootstrap_ci(data, "median", N_BOOT, 3)
    want_low, want_high = scipy_bca(data, np.median, seed=3)
    np.testing.assert_allclose(low, want_low, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(high, want_high, rtol=1e-12, equal_nan=True)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_bca_is_nan_where_scipy_cannot_compute_it() -> None:
    low, high = bootstrap_ci(np.ones((1, 1)), "mean", N_BOOT, 0)
    assert math.isnan(low[0]) and math.isnan(high[0])
    with pytest.raises(ValueError, match="two or more"):
        stats.bootstrap((np.ones(1),), np.mean, method="BCa")
    constant = np.full((10, 1), 0.5)
    low, high = bootstrap_ci(constant, "mean", N_BOOT, 0)
    with pytest.warns(stats.DegenerateDataWarning):
        want = scipy_bca(constant, np.mean, quiet=False)
    assert math.isnan(low[0]) and math.isnan(want[0][0])


def test_resampler_draws_scipys_replicates_in_counts() -> None:
    r = Resampler(7, 50, 11)
    counts = np.concatenate(list(r.counts()))
    index = np.random.default_rng(11).integers(0, 7, (50, 7))
    want = np.stack([np.bincount(row, minlength=7) for row in index])
    np.testing.assert_array_equal(counts, want)


def test_holm_equals_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan, 0.005, 0.04])
    finite = np.isfinite(p)
    want = multipletests(p[finite], method="holm")[1]
    got = holm(p)
    np.testing.assert_allclose(got[finite], want, rtol=1e-15)
    assert math.isnan(got[4])


def _frame(values: dict[str, list[float | None]], status: dict[tuple[str, int], str] = {}
           ) -> pd.DataFrame:
    rows = []
    for method, vals in values.items():
        for i, v in enumerate(vals):
            ok = status.get((method, i), "ok") == "ok"
            rows.append({"subject_id": f"s{i:02d}", "method": method,
                         "ssim": v if ok else None, "_ok": ok})
    return pd.DataFrame(rows)


def test_describe_counts_and_values() -> None:
    rng = np.random.default_rng(5)
    a = list(rng.normal(0.8, 0.05, 18))
    a[3] = None  # ok row without a value (e.g. a masked metric of a row without a mask)
    a[4] = math.inf
    frame = _frame({"a": a, "b": list(rng.normal(0.7, 0.05, 18))}, {("a", 5): "error"})
    recs = describe(frame, "ssim", by="method", subject="subject_id", methods=["a", "b"],
                    n_boot=N_BOOT, seed=0)
    ra = recs[0]
    x = np.array([v for i, v in enumerate(a) if i not in (3, 4, 5)], dtype=float)
    assert (ra["n"], ra["n_rows"], ra["n_failed"], ra["n_missing"], ra["n_infinite"]) == (
        15, 18, 1, 1, 1)
    assert ra["left_out"] == "s03, s04, s05"
    assert ra["mean"] == pytest.approx(x.mean(), rel=1e-14)
    assert ra["sd"] == pytest.approx(stats.tstd(x), rel=1e-12)
    assert ra["median"] == np.median(x) and (ra["min"], ra["max"]) == (x.min(), x.max())
    q1, q3 = stats.scoreatpercentile(x, [25, 75])
    assert (ra["q1"], ra["q3"]) == pytest.approx((q1, q3)) and ra["iqr"] == pytest.approx(q3 - q1)
    low, high = scipy_bca(x[:, None], np.mean)
    assert (ra["mean_ci_low"], ra["mean_ci_high"]) == pytest.approx((low[0], high[0]), rel=1e-10)


def _pairs(frame, **kw):
    opts = dict(by="method", subject="subject_id", methods=["a", "b"], higher_is_better=True,
                n_boot=N_BOOT, seed=0)
    opts.update(kw)
    return pairwise(frame, "ssim", **opts)


def test_wilcoxon_with_ties_and_zero_differences() -> None:
    # differences with zeros and tied absolute values: scipy's default path for these
    b = np.round(np.random.default_rng(2).normal(0.7, 0.05, 20), 3)
    d = np.array([0, 0, 0.01, -0.01, 0.01, 0.02, 0.02, -0.02, 0.03, 0.01,
                  0.04, 0.05, -0.01, 0.02, 0.03, 0.0, 0.06, 0.01, 0.02, -0.03])
    a = b + d
    (rec,) = _pairs(_frame({"a": list(a), "b": list(b)}), baseline="b")
    want = stats.wilcoxon(a, b)
    assert (rec["method"], rec["versus"], rec["n"]) == ("a", "b", 20)
    assert rec["statistic"] == want.statistic and rec["p"] == pytest.approx(want.pvalue)
    dd = a - b
    nz = dd[dd != 0]
    r = stats.rankdata(np.abs(nz))
    assert rec["effect_size"] == pytest.approx((r[nz > 0].sum() - r[nz < 0].sum()) / r.sum())
    assert (rec["wins"], rec["ties"], rec["losses"]) == ((dd > 0).sum(), (dd == 0).sum(),
                                                          (dd < 0).sum())
    assert rec["mean_diff"] == pytest.approx(dd.mean()) and rec["median_diff"] == np.median(dd)
    for kind, fn in (("mean", np.mean), ("median", np.median)):
        low, high = scipy_bca(dd[:, None], fn)
        got = (rec[f"{kind}_diff_ci_low"], rec[f"{kind}_diff_ci_high"])
        np.testing.assert_allclose(got, (low[0], high[0]), rtol=1e-9, equal_nan=True)
    # lower is better: wins and losses swap, the test does not change
    (low_rec,) = _pairs(_frame({"a": list(a), "b": list(b)}), baseline="b",
                        higher_is_better=False)
    assert (low_rec["wins"], low_rec["losses"]) == (rec["losses"], rec["wins"])
    assert low_rec["p"] == rec["p"]


def test_paired_t_and_cohens_dz() -> None:
    rng = np.random.default_rng(4)
    b = rng.normal(0.7, 0.05, 12)
    a = b + rng.normal(0.01, 0.02, 12)
    (rec,) = _pairs(_frame({"a": list(a), "b": list(b)}), baseline="b", test="t")
    want = stats.ttest_rel(a, b)
    assert rec["statistic"] == pytest.approx(want.statistic, rel=1e-12)
    assert rec["p"] == pytest.approx(want.pvalue, rel=1e-12)
    d = a - b
    assert rec["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    assert rec["effect"] == "Cohen's d_z"


def test_a_subject_missing_for_one_method_is_left_out_of_that_pair_only() -> None:
    rng = np.random.default_rng(6)
    vals = {m: list(rng.normal(0.7 + 0.02 * k, 0.03, 10)) for k, m in enumerate("abc")}
    frame = _frame(vals, {("a", 2): "error"})
    frame = frame[~((frame["method"] == "c") & (frame["subject_id"] == "s07"))]  # no row
    recs = {(r["method"], r["versus"]): r for r in _pairs(frame, methods=["a", "b", "c"])}
    assert set(recs) == {("b", "a"), ("c", "a"), ("c", "b")}  # every pair, later vs earlier
    assert (recs[("b", "a")]["n"], recs[("b", "a")]["left_out"]) == (9, "s02")
    assert (recs[("c", "a")]["n"], recs[("c", "a")]["left_out"]) == (8, "s02, s07")
    assert (recs[("c", "b")]["n"], recs[("c", "b")]["left_out"]) == (9, "s07")
    keep = [i for i in range(10) if i != 7]
    a, c = np.array(vals["b"])[keep], np.array(vals["c"])[keep]
    assert recs[("c", "b")]["p"] == pytest.approx(stats.wilcoxon(c, a).pvalue)
    p = [recs[k]["p"] for k in (("b", "a"), ("c", "a"), ("c", "b"))]
    np.testing.assert_allclose([recs[k]["p_holm"] for k in (("b", "a"), ("c", "a"),
                                                            ("c", "b"))],
                               multipletests(p, method="holm")[1])


@pytest.mark.parametrize("test", ["wilcoxon", "t"])
def test_a_single_subject_group(test) -> None:
    frame = _frame({"a": [0.9], "b": [0.8]})
    (d,) = [r for r in describe(frame, "ssim", by="method", subject="subject_id",
                                methods=["a", "b"], n_boot=N_BOOT, seed=0) if r["method"] == "a"]
    assert (d["n"], d["mean"], d["median"], d["iqr"]) == (1, 0.9, 0.9, 0.0)
    assert math.isnan(d["sd"]) and math.isnan(d["mean_ci_low"])
    (rec,) = _pairs(frame, baseline="b", test=test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = (stats.wilcoxon([0.9], [0.8]) if test == "wilcoxon"
                else stats.ttest_rel([0.9], [0.8]))
    assert rec["n"] == 1 and rec["mean_diff"] == pytest.approx(0.1)
    np.testing.assert_equal(rec["p"], want.pvalue)  # 1.0 (exact Wilcoxon) or NaN (t)
    assert math.isnan(rec["mean_diff_ci_low"]) and rec["wins"] == 1
    assert rec["p_holm"] == pytest.approx(want.pvalue, nan_ok=True)


@pytest.mark.parametrize("test", ["wilcoxon", "t"])
def test_all_differences_zero(test) -> None:
    same = [0.5, 0.6, 0.7]
    (rec,) = _pairs(_frame({"a": same, "b": same}), baseline="b", test=test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = stats.wilcoxon(same, same) if test == "wilcoxon" else stats.ttest_rel(same, same)
    np.testing.assert_equal(rec["p"], want.pvalue)  # scipy: 1.0 (Wilcoxon), NaN (t)
    assert rec["ties"] == 3 and math.isnan(rec["effect_size"])
