"""Parity bugs found by re-running peers' own test suites through volqa (issue 12): each case
against the peer computed directly here (scikit-image, torchmetrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity as sk_ssim

import volqa
from volqa import InputError, SettingsError
from volqa.engine import PRESET_NOTES, resolve_settings

SK_GAUSS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 1.0)
    return (x - x.min()) / (x.max() - x.min()), rng


# ------------------------------------------------------- sample covariance: the voxel count


def test_sample_covariance_with_a_1_by_7_window_equals_skimage_1d():
    """skimage's 1-D tests: a signal of N samples, win_size 7, sample covariance. volqa holds
    it as a (1, N) image with a (1, 7) window: 7 voxels, N/(N-1) = 7/6."""
    x, rng = smooth((64,), seed=1)
    y = x + 0.1 * rng.standard_normal(64)
    want = sk_ssim(x, y, win_size=7, data_range=1.0)
    got = volqa.ssim(x[None], y[None], data_range=1.0, preset="skimage", win_size=(1, 7))
    assert float(got) == pytest.approx(want, abs=1e-12)


def test_a_one_voxel_window_is_still_refused_for_sample_covariance():
    with pytest.raises(SettingsError, match="holds one voxel"):
        resolve_settings("skimage", win_size=(1, 1))
    with pytest.raises(SettingsError, match="holds one voxel"):
        resolve_settings("skimage", win_size=1)


# ---------------------------------------------------------------- integers in float64


@pytest.mark.parametrize("dtype,high", [(np.uint8, 255), (np.int32, 40_000), (np.uint16, 65535)])
def test_integer_images_equal_skimage_float64(dtype, high):
    x, rng = smooth((40, 44), seed=2)
    xi = np.round(x * high).astype(dtype)
    yi = np.clip(xi.astype(np.int64) + rng.integers(-high // 10, high // 10, xi.shape), 0,
                 high).astype(dtype)
    want = sk_ssim(xi, yi, data_range=float(high))  # skimage computes integers in float64
    got = volqa.ssim(xi, yi, data_range=float(high), preset="skimage")
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(want, abs=1e-12)  # float32 was 1.9e-6 off


def test_int64_full_range_is_finite_and_exact():
    info = np.iinfo(np.int64)
    rng = np.random.default_rng(3)
    x = rng.integers(info.min, info.max, (18, 18, 18), dtype=np.int64)
    y = x // 2
    L = float(info.max) - float(info.min)  # 1.8e19: C1, C2 and the variances overflow float32
    want = sk_ssim(x.astype(np.float64), y.astype(np.float64), data_range=L, **SK_GAUSS)
    got = volqa.ssim(x, y, data_range=L)
    assert np.isfinite(float(got)) and float(got) == pytest.approx(want, rel=1e-12)


def test_float32_beyond_its_square_range_is_computed_in_float64():
    x, rng = smooth((20, 21, 22), seed=4)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    scale = 3e19
    want = sk_ssim(x, y, data_range=1.0, **SK_GAUSS)  # SSIM is scale-invariant with L
    got = volqa.ssim((x * scale).astype(np.float32), (y * scale).astype(np.float32),
                     data_range=scale)
    assert float(got) == pytest.approx(want, abs=1e-6)
    with pytest.raises(InputError, match="rescale"):
        volqa.ssim(x * 1e200, y * 1e200, data_range=1e200)


# ------------------------------------------------------------------ the torchmetrics preset


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.3])
def test_torchmetrics_preset_matches_for_every_sigma_in_2d(sigma):
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, rng = smooth((36, 41), seed=5)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    X, Y = (torch.from_numpy(a)[None, None] for a in (x, y))
    want = tm.structural_similarity_index_measure(X, Y, data_range=1.0, sigma=sigma)
    got = volqa.ssim(x, y, data_range=1.0, preset="torchmetrics", sigma=sigma)
    assert float(got) == pytest.approx(float(want), abs=1e-12)
    assert resolve_settings("torchmetrics", sigma=sigma).win_size == int(3.5 * sigma + 0.5) * 2 + 1


def test_torchmetrics_preset_states_its_3d_limit():
    note = PRESET_NOTES["torchmetrics"]
    assert "int(3.5 sigma + 0.5) * 2 + 1" in note and "3-D" in note and "pads the last" in note


def test_synthrad2023_preset_note_points_to_the_protocol():
    assert "--protocol synthrad2023" in PRESET_NOTES["synthrad2023"]
