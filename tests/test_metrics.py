"""Voxel-wise metrics and masks, checked against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import mean_squared_error, normalized_root_mse, peak_signal_noise_ratio

import volqa
import volqa.engine.voxelwise as metrics_mod
from volqa.engine.voxelwise import error_stats, mae, masked_mean, mse, nrmse, psnr
from volqa.errors import InputError
from volqa.pipeline.masks import binarize_mask


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    ref = rng.normal(50.0, 20.0, (16, 15, 14)).astype(np.float32)
    test = (ref + rng.normal(0, 3.0, ref.shape)).astype(np.float32)
    return ref, test


def test_against_skimage(pair) -> None:
    ref, test = pair
    r64, t64 = ref.astype(np.float64), test.astype(np.float64)
    assert mse(ref, test) == pytest.approx(mean_squared_error(r64, t64), rel=1e-12)
    assert mae(ref, test) == pytest.approx(np.mean(np.abs(t64 - r64)), rel=1e-12)
    assert psnr(ref, test, data_range=120.0) == pytest.approx(
        peak_signal_noise_ratio(r64, t64, data_range=120.0), rel=1e-12
    )
    assert nrmse(ref, test) == pytest.approx(
        normalized_root_mse(r64, t64, normalization="min-max"), rel=1e-12
    )


def test_identical_images_give_infinite_psnr(pair) -> None:
    ref, _ = pair
    assert psnr(ref, ref.copy(), data_range=1.0) == math.inf
    assert mse(ref, ref) == 0.0 and nrmse(ref, ref) == 0.0


def test_float64_accumulation_with_large_offset() -> None:
    ref = np.full((64, 64, 64), 1e6, np.float32)
    test = ref + np.float32(0.0625)  # exactly representable difference
    assert mae(ref, test) == 0.0625 and mse(ref, test) == 0.0625**2


def test_slab_loop_equals_one_pass(pair, monkeypatch) -> None:
    ref, test = pair
    whole = error_stats(ref, test)
    monkeypatch.setattr(metrics_mod, "SLAB_VOXELS", 7)  # one slice per slab
    chunked = error_stats(ref, test)
    assert chunked.n == whole.n
    assert (chunked.ref_min, chunked.ref_max) == (whole.ref_min, whole.ref_max)
    assert (chunked.mae, chunked.mse) == pytest.approx((whole.mae, whole.mse), rel=1e-13)


def test_masked_metrics(pair) -> None:
    ref, test = pair
    m = np.zeros(ref.shape, bool)
    m[3:10, 2:12, 4:9] = True
    r, t = ref[m].astype(np.float64), test[m].astype(np.float64)
    assert mse(ref, test, mask=m) == pytest.approx(mean_squared_error(r, t), rel=1e-12)
    assert mae(ref, test, mask=m) == pytest.approx(np.abs(t - r).mean(), rel=1e-12)
    assert nrmse(ref, test, mask=m) == pytest.approx(
        normalized_root_mse(r, t, normalization="min-max"), rel=1e-12
    )
    assert psnr(ref, test, data_range=100.0, mask=m) == pytest.approx(
        peak_signal_noise_ratio(r, t, data_range=100.0), rel=1e-12
    )


def test_errors(pair) -> None:
    ref, test = pair
    with pytest.raises(InputError, match="shape"):
        mse(ref, test[1:])
    with pytest.raises(InputError, match="selects no voxel"):
        mse(ref, test, mask=np.zeros(ref.shape, bool))
    with pytest.raises(InputError, match="NRMSE is undefined: the reference is constant"):
        nrmse(np.ones((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="data_range"):
        psnr(ref, test, data_range=0.0)


def test_binarize_mask_rules() -> None:
    a = np.zeros((6, 6, 6), np.float32)
    a[1:3, 1:3, 1:3] = 1
    m, note = binarize_mask(a)
    assert m.dtype == bool and m.sum() == 8 and note == ""
    a[4, 4, 4] = 2  # label map: every non-zero label is inside
    m, note = binarize_mask(a)
    assert m.sum() == 9 and "mask has values 1, 2" in note
    a[0, 0, 0] = 0.4
    with pytest.raises(InputError, match=r"fractional values \(e\.g\. 0\.4\).*Threshold it"):
        binarize_mask(a, source="p.nii")
    with pytest.raises(InputError, match="empty mask"):
        binarize_mask(np.zeros((3, 3, 3)))


def test_masked_mean_of_valid_map_equals_engine(pair) -> None:
    ref, test = pair
    m = np.zeros(ref.shape, bool)
    m[2:13, 5:12, 1:8] = True
    value, smap = volqa.ssim(ref, test, data_range=100.0, win_size=7, return_map=True)
    engine = float(volqa.ssim(ref, test, data_range=100.0, win_size=7, mask=m))
    assert masked_mean(smap.numpy(), m) == pytest.approx(engine, abs=1e-12)
    assert float(value) == pytest.approx(float(np.mean(smap.numpy(), dtype=np.float64)), abs=1e-12)


def test_masked_mean_outside_valid_region() -> None:
    m = np.zeros((10, 10, 10), bool)
    m[0, 0, 0] = True
    with pytest.raises(InputError, match="only touches the border"):
        masked_mean(np.ones((4, 4, 4), np.float32), m)
