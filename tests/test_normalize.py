"""Intensity normalisation (volqa.pipeline.normalize)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import volqa
from volqa.engine.voxelwise import error_stats
from volqa.errors import InputError, SettingsError
from volqa.pipeline.normalize import normalize_pair, percentiles, range_note


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    ref = rng.normal(100.0, 30.0, (18, 17, 16)).astype(np.float32)
    test = (ref * 1.1 + rng.normal(0, 5, ref.shape) - 3).astype(np.float32)
    return ref, test


def test_none_keeps_values_and_uses_reference_range(pair) -> None:
    ref, test = pair
    n = normalize_pair(ref, test, mode="none")
    assert n.mode == "none"
    np.testing.assert_array_equal(n.reference, ref)
    np.testing.assert_array_equal(n.test, test)
    assert n.data_range == pytest.approx(float(ref.max()) - float(ref.min()))
    assert normalize_pair(ref, test, mode="none", data_range=4024.0).data_range == 4024.0


def test_minmax_maps_reference_to_unit_range_and_does_not_clip_test(pair) -> None:
    ref, test = pair
    n = normalize_pair(ref, test, mode="minmax")
    lo, hi = float(ref.min()), float(ref.max())
    assert n.data_range == 1.0
    assert n.reference.min() == pytest.approx(0.0, abs=1e-7)
    assert n.reference.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(n.test, (test.astype(np.float64) - lo) / (hi - lo), atol=1e-6)
    assert n.test.max() > 1.0 and n.test.min() < 0.0  # the same map, no clipping


def test_percentile_clips_both_to_reference_percentiles(pair) -> None:
    ref, test = pair
    n = normalize_pair(ref, test, mode="percentile", percentile_range=(1, 99))
    lo, hi = np.percentile(ref.astype(np.float64), [1, 99])
    assert n.clip == pytest.approx((lo, hi))
    expect = (np.clip(test.astype(np.float64), lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(n.test, expect, atol=1e-6)
    assert n.reference.min() == pytest.approx(0) and n.reference.max() == pytest.approx(1)
    assert n.data_range == 1.0


def test_zscore_uses_reference_mean_and_std(pair) -> None:
    ref, test = pair
    n = normalize_pair(ref, test, mode="zscore")
    mean, std = ref.astype(np.float64).mean(), ref.astype(np.float64).std()
    np.testing.assert_allclose(n.test, (test - mean) / std, atol=1e-5)
    assert n.data_range == pytest.approx((float(ref.max()) - float(ref.min())) / std)


def test_window_level_width() -> None:
    ref = np.array([[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]] * 2, dtype=np.float32)
    n = normalize_pair(ref, ref + 100, mode="window", intensity_window=(40, 400))
    np.testing.assert_allclose(n.reference[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(n.test[0, 0], [0.0, 0.25, 0.75, 1.0, 1.0])
    assert n.data_range == 1.0 and n.clip == (-160.0, 240.0)


@pytest.mark.parametrize("q", [(0.5, 99.5), (0, 100), (25, 75), (10, 10.5)])
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 4097])
def test_percentiles_equal_numpy(q, size) -> None:
    a = np.random.default_rng(size).normal(size=size).astype(np.float32)
    np.testing.assert_allclose(percentiles(a, q), np.percentile(a.astype(np.float64), q),
                               rtol=0, atol=1e-12)


def test_percentiles_beyond_torch_quantile_limit() -> None:
    a = np.random.default_rng(0).random(2**24 + 3, dtype=np.float32)
    # torch.quantile raises RuntimeError above 2**24 elements (not called here: it takes ~2 s
    # to get there on 2 cores); percentiles() has no such limit.
    got = percentiles(a, (0.5, 99.5))
    np.testing.assert_allclose(got, np.percentile(a, (0.5, 99.5)), rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["none", "minmax", "zscore", "percentile"])
def test_constant_reference_is_a_clear_error(mode) -> None:
    ref = np.full((8, 8, 8), 7.0, np.float32)
    with pytest.raises(InputError, match="constant|percentiles are equal"):
        normalize_pair(ref, ref + 1, mode=mode)


def test_constant_reference_with_explicit_range_and_window_is_fine() -> None:
    ref = np.full((8, 8, 8), 7.0, np.float32)
    assert normalize_pair(ref, ref + 1, mode="none", data_range=10.0).data_range == 10.0
    n = normalize_pair(ref, ref + 1, mode="window", intensity_window=(0, 20))
    assert np.all(np.isfinite(n.reference)) and np.all(np.isfinite(n.test))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "robust"}, "normalize must be one of"),
        ({"mode": "minmax", "data_range": 2.0}, "applies only to normalize='none'"),
        ({"mode": "none", "data_range": 0.0}, "finite number > 0"),
        ({"mode": "none", "data_range": float("nan")}, "finite number > 0"),
        ({"data_range": 4024.0}, "add --normalize none"),
        ({"mode": "percentile", "percentile_range": (99, 1)}, "0 <= LOW < HIGH <= 100"),
        ({"mode": "percentile", "percentile_range": (1, 101)}, "0 <= LOW < HIGH <= 100"),
        ({"mode": "window"}, "needs the window as LEVEL,WIDTH"),
        ({"mode": "window", "intensity_window": (40, 0)}, "WIDTH > 0"),
        ({"mode": "minmax", "intensity_window": (40, 400)}, "applies only to"),
    ],
)
def test_settings_errors(pair, kwargs, match) -> None:
    ref, test = pair
    with pytest.raises(SettingsError, match=match):
        normalize_pair(ref, test, **kwargs)


def test_minmax_is_the_default(pair) -> None:
    ref, test = pair
    assert normalize_pair(ref, test).mode == "minmax"


def test_psnr_nrmse_equal_under_none_and_minmax(pair) -> None:
    """PSNR and range-NRMSE are invariant to a common affine map when L follows it."""
    ref, test = pair
    a = normalize_pair(ref, test, mode="none")
    b = normalize_pair(ref, test, mode="minmax")
    ea, eb = error_stats(a.reference, a.test), error_stats(b.reference, b.test)
    assert ea.psnr(a.data_range) == pytest.approx(eb.psnr(b.data_range), abs=1e-4)
    assert ea.nrmse() == pytest.approx(eb.nrmse(), rel=1e-5)
    assert ea.mae != pytest.approx(eb.mae)  # MAE stays in input units under "none"


def test_minmax_ssim_ignores_an_intensity_offset_raw_ssim_does_not(pair) -> None:
    """Why minmax is the default: SSIM's luminance term depends on where zero is."""
    ref, test = pair
    shifted = (ref + 1024.0, test + 1024.0)  # e.g. CT stored as HU + 1024
    def score(r, t, mode):
        n = normalize_pair(r, t, mode=mode)
        return float(volqa.ssim(n.reference, n.test, data_range=n.data_range, win_size=7))
    assert score(*pair, "minmax") == pytest.approx(score(*shifted, "minmax"), abs=1e-5)
    assert abs(score(*pair, "none") - score(*shifted, "none")) > 1e-3


@pytest.mark.parametrize(("make_test", "expected"), [
    (lambda r: r * 1.5 + 0.2, None),  # a reconstruction's intensity error: no note
    (lambda r: r * 0.2, None),  # 0.2 x the width: still within a factor of 10
    (lambda r: r * 255.0, r"span \[0, 255\], 255 x the width of the reference's \[0, 1\]: "
                          r"other units or scaling"),
    (lambda r: r * 0.05, r"span \[0, 0\.05\], 0\.05 x the width"),
    (lambda r: r + 3.0, r"span \[3, 4\], 1 x the width of the reference's \[0, 1\] and apart"),
    (lambda r: np.full_like(r, 0.5), r"the test is constant \(every voxel is 0\.5\), against "
                                     r"the reference's \[0, 1\]"),
])
def test_range_note_names_a_test_in_other_units(make_test, expected) -> None:
    ref = np.linspace(0.0, 1.0, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    note = range_note(ref, make_test(ref).astype(np.float32))
    if expected is None:
        assert note is None
    else:
        assert note is not None and re.search(expected, note), note


def test_range_note_in_a_row_and_not_under_a_per_image_protocol(tmp_path) -> None:
    from pipeline_data import phantom, write_nii

    ref = phantom(3, (16, 16, 16))
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    r = write_nii(tmp_path / "r.nii.gz", ref)
    t = write_nii(tmp_path / "t.nii.gz", np.round(ref * 255))  # saved as 8-bit values
    row = volqa.score_pair(r, t)
    assert "x the width of the reference's" in (row["notes"] or "")
    assert row["ssim"] < 0.1  # scored as given: the map of the reference applies to both
    per_image = volqa.score_pair(r, t, protocol="cmrxrecon")  # each slice / its own maximum
    assert "x the width" not in (per_image["notes"] or "")
    assert per_image["ssim_2d"] > 0.9
    assert range_note(ref, ref * 255) is not None  # the same arrays do get the note
