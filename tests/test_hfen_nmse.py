"""HFEN and NMSE against independent computations: a dense Laplacian-of-Gaussian kernel built
from MATLAB's ``fspecial('log')`` formula with scipy, and fastMRI's / CMRxRecon's NMSE written
with numpy as they write it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import volqa
from volqa import InputError, SettingsError
from volqa.engine import highfreq as hfen_module
from volqa.engine.highfreq import log_kernel


def pair(shape, seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return x, x + noise * rng.standard_normal(shape)


def matlab_log(ndim: int, size: int = 15, sigma: float = 1.5) -> np.ndarray:
    """MATLAB fspecial('log', size, sigma) (R2013+), generalised to ``ndim`` axes:
    h = exp(-r²/2σ²) normalised; h1 = h (r² - nσ²)/σ⁴; h = h1 - sum(h1)/numel."""
    r = (size - 1) // 2
    grids = np.meshgrid(*[np.arange(-r, r + 1)] * ndim, indexing="ij")
    rr = sum(g * g for g in grids)
    h = np.exp(-rr / (2 * sigma * sigma))
    h /= h.sum()
    h1 = h * (rr - ndim * sigma * sigma) / sigma**4
    return h1 - h1.sum() / h1.size


def dense_hfen(x, y, ndim, mask=None, valid=False):
    h = matlab_log(ndim)
    # scipy's "reflect" is MATLAB's and numpy's "symmetric" (d c b a | a b c d)
    a, b = ndimage.correlate(x, h, mode="reflect"), ndimage.correlate(y, h, mode="reflect")
    if valid:
        crop = tuple(slice(7, n - 7) for n in x.shape)
        a, b = a[crop], b[crop]
        mask = mask[crop] if mask is not None else None
    if mask is not None:
        a, b = a[mask], b[mask]
    return np.linalg.norm(b - a) / np.linalg.norm(a)


def box_mask(shape):
    m = np.zeros(shape, bool)
    m[tuple(slice(n // 4, n - n // 5) for n in shape)] = True
    return m


def test_kernel_is_matlab_fspecial_log():
    for nd in (2, 3):
        np.testing.assert_allclose(log_kernel(ndim=nd), matlab_log(nd), atol=1e-15, rtol=0)
    assert abs(log_kernel(ndim=2).sum()) < 1e-15  # zero-sum: a constant image has no HFEN


@pytest.mark.parametrize("shape", [(20, 22, 19), (31, 29)])
@pytest.mark.parametrize("masked", [False, True])
def test_equals_dense_kernel(shape, masked):
    x, y = pair(shape)
    mask = box_mask(shape) if masked else None
    want = dense_hfen(x, y, len(shape), mask)
    assert volqa.hfen(x, y, mask=mask) == pytest.approx(want, rel=1e-12)
    got32 = volqa.hfen(x.astype(np.float32), y.astype(np.float32), mask=mask)
    assert got32 == pytest.approx(dense_hfen(x.astype(np.float32).astype(float),
                                             y.astype(np.float32).astype(float),
                                             len(shape), mask), rel=1e-10)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_per_slice_is_mean_of_2d_values(axis, masked):
    x, y = pair((12, 17, 15), seed=1)
    mask = box_mask(x.shape) if masked else None
    values = []
    for k in range(x.shape[axis]):
        m = np.take(mask, k, axis) if masked else None
        if m is not None and not m.any():
            continue
        values.append(dense_hfen(np.take(x, k, axis), np.take(y, k, axis), 2, m))
    assert volqa.hfen(x, y, axis=axis, mask=mask) == pytest.approx(np.mean(values), rel=1e-12)
    per = volqa.hfen(x, y, axis=axis, mask=mask, reduction="none")
    assert per.shape == (x.shape[axis],)
    np.testing.assert_allclose(per[~np.isnan(per)], values, rtol=1e-12)


def test_valid_border_scores_only_voxels_the_kernel_covers():
    x, y = pair((24, 26, 25), seed=2)
    mask = box_mask(x.shape)
    assert volqa.hfen(x, y, border="valid") == pytest.approx(
        dense_hfen(x, y, 3, valid=True), rel=1e-12)
    assert volqa.hfen(x, y, border="valid", mask=mask) == pytest.approx(
        dense_hfen(x, y, 3, mask, valid=True), rel=1e-12)
    with pytest.raises(InputError, match="fewer than the 15-voxel"):
        volqa.hfen(x[:10], y[:10], border="valid")


def test_slabs_equal_one_pass(monkeypatch):
    x, y = pair((19, 16, 15), seed=3)
    mask = box_mask(x.shape)
    whole = [volqa.hfen(x, y, mask=mask), volqa.hfen(x, y, border="valid", mask=None)]
    monkeypatch.setattr(hfen_module, "SLAB_VOXELS", 16 * 15 * 2)  # two output slices a slab
    assert volqa.hfen(x, y, mask=mask) == pytest.approx(whole[0], rel=1e-13)
    assert volqa.hfen(x, y, border="valid") == pytest.approx(whole[1], rel=1e-13)


def test_invariants_and_errors():
    x, y = pair((16, 16, 16), seed=4)
    assert volqa.hfen(x, x) == 0.0
    assert volqa.hfen(x, y) == pytest.approx(volqa.hfen(torch.from_numpy(x),
                                                        torch.from_numpy(y)), rel=1e-15)
    with pytest.raises(InputError, match="constant image"):
        volqa.hfen(np.full((16, 16, 16), 3.0), y)
    flat = x.copy()
    flat[:, 5] = 1.0
    with pytest.raises(InputError, match="1 slice.*slice 5"):
        volqa.hfen(flat, y, axis=1)
    with pytest.raises(SettingsError, match="odd integer"):
        volqa.hfen(x, y, win_size=14)
    with pytest.raises(SettingsError, match="axis"):
        volqa.hfen(x[0], y[0], axis=0)
    with pytest.raises(InputError, match="empty"):
        volqa.hfen(x, y, mask=np.zeros(x.shape, bool))


# ------------------------------------------------------------------------------------ NMSE


def fastmri_nmse(gt, pred):
    """fastmri/evaluate.py (facebookresearch/fastMRI @ 91f2df4), verbatim formula."""
    return np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2


def test_nmse_equals_fastmri():
    x, y = pair((9, 20, 21), seed=5, noise=0.1)
    assert volqa.nmse(x, y) == pytest.approx(fastmri_nmse(x, y), rel=1e-12)
    assert volqa.nmse(x[4], y[4]) == pytest.approx(fastmri_nmse(x[4], y[4]), rel=1e-12)  # 2-D
    m = box_mask(x.shape)
    assert volqa.nmse(x, y, mask=m) == pytest.approx(fastmri_nmse(x[m], y[m]), rel=1e-12)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert volqa.nmse(x32, y32) == pytest.approx(
        fastmri_nmse(x32.astype(float), y32.astype(float)), rel=1e-12)


@pytest.mark.parametrize("axis", [0, 2])
def test_nmse_per_slice_is_the_mean_of_slice_values(axis):
    x, y = pair((6, 14, 9), seed=6, noise=0.1)
    want = np.mean([fastmri_nmse(np.take(x, k, axis), np.take(y, k, axis))
                    for k in range(x.shape[axis])])
    assert volqa.nmse(x, y, axis=axis) == pytest.approx(want, rel=1e-12)


def test_nmse_of_a_zero_reference_is_an_error():
    with pytest.raises(InputError, match="NMSE is undefined"):
        volqa.nmse(np.zeros((4, 4, 4)), np.ones((4, 4, 4)))
