"""MS-SSIM and its loss against pytorch-msssim, an independent numpy re-computation (masks),
and invariants; gradients by gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import volqa
from volqa import InputError, SettingsError
from volqa.engine.multiscale import MS_SSIM_WEIGHTS, ms_ssim_min_size, ms_ssim_weights

pm = pytest.importorskip("pytorch_msssim")


def pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 1.0)
    x = (x - x.min()) / (x.max() - x.min())
    return x, np.clip(x + noise * rng.standard_normal(shape), 0, 1)


def gauss(size: int, sigma: float = 1.5) -> np.ndarray:
    """Normalised Gaussian taps in float64, built here (not volqa's)."""
    d = np.arange(size) - (size - 1) / 2
    g = np.exp(-d * d / (2 * sigma * sigma))
    return g / g.sum()


def pm_window(size: int, ndim: int) -> torch.Tensor:
    """pytorch-msssim's window argument, in float64 (its own is built in float32)."""
    return torch.from_numpy(gauss(size))[None, None].repeat([1] + [1] * (ndim + 1))


CASES = [((165, 170), 11), ((35, 34, 33), 3), ((40, 36, 38), 3)]  # odd and even axes


@pytest.mark.parametrize("shape,win", CASES)
def test_equals_pytorch_msssim_float64(shape, win):
    x, y = pair(shape)
    X, Y = (torch.from_numpy(a)[None, None] for a in (x, y))
    ref = pm.ms_ssim(X, Y, data_range=1.0, win=pm_window(win, len(shape)), size_average=False)
    got = volqa.ms_ssim(x, y, data_range=1.0, win_size=win)
    assert float(got) == pytest.approx(float(ref), abs=1e-10)


@pytest.mark.parametrize("shape,win", CASES[1:])
def test_float32_within_1e6_of_float64_reference(shape, win):
    x, y = pair(shape, seed=1)
    X, Y = (torch.from_numpy(a)[None, None] for a in (x, y))
    ref = pm.ms_ssim(X, Y, data_range=1.0, win=pm_window(win, len(shape)), size_average=False)
    got = volqa.ms_ssim(x.astype(np.float32), y.astype(np.float32), data_range=1.0, win_size=win)
    assert float(got) == pytest.approx(float(ref), abs=1e-6)


def test_custom_weights_and_batches_equal_pytorch_msssim():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(ndimage.gaussian_filter(rng.random((2, 3, 100, 97)), (0, 0, 1, 1)))
    y = (x + 0.1 * torch.from_numpy(rng.standard_normal(x.shape))).clamp(0, 1)
    weights = [0.1, 0.2, 0.3, 0.2, 0.2]  # pytorch-msssim needs 97+ voxels for 7 taps anyway
    ref = pm.ms_ssim(x, y, data_range=1.0, win=pm_window(7, 2).repeat(3, 1, 1, 1),
                     weights=weights, size_average=False)
    got = volqa.ms_ssim(x, y, data_range=1.0, win_size=7, weights=weights)
    assert got.shape == (2,)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
    assert volqa.ms_ssim(x, y, data_range=1.0, win_size=7, weights=weights,
                         reduction="none").shape == (2, 3)


def _pool(a: np.ndarray) -> np.ndarray:
    """2x average pooling, odd axes zero-padded at both ends (pytorch-msssim), in numpy."""
    for ax in range(a.ndim):
        if a.shape[ax] % 2:
            a = np.pad(a, [(1, 1) if i == ax else (0, 0) for i in range(a.ndim)])
        n = a.shape[ax] // 2
        a = np.take(a, np.arange(2 * n), axis=ax)
        a = 0.5 * (np.take(a, np.arange(0, 2 * n, 2), axis=ax)
                   + np.take(a, np.arange(1, 2 * n, 2), axis=ax))
    return a


def _reference_ms_ssim(x, y, mask, weights, win, L=1.0):
    """Masked MS-SSIM written out: scipy local means, valid crop, each scale's (c)s map averaged
    over its mask, the mask pooled like the images and kept where >= 1/2."""
    g = gauss(win)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    r = (win - 1) // 2
    terms = []
    for j, w in enumerate(weights):
        def mean(a):
            for ax in range(a.ndim):
                a = ndimage.correlate1d(a, g, axis=ax, mode="constant")
            return a[tuple(slice(r, n - r) for n in a.shape)]
        mx, my = mean(x), mean(y)
        vx, vy, vxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
        cs = (2 * vxy + c2) / (vx + vy + c2)
        s = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
        m = mask[tuple(slice(r, n - r) for n in mask.shape)]
        value = (s if j == len(weights) - 1 else cs)[m].mean()
        terms.append(max(value, 0.0) ** w)
        x, y, mask = _pool(x), _pool(y), _pool(mask.astype(float)) >= 0.5
    return float(np.prod(terms))


@pytest.mark.parametrize("shape", [(36, 31, 33), (70, 65)])
def test_masked_equals_numpy_reference(shape):
    x, y = pair(shape, seed=3)
    mask = np.zeros(shape, bool)
    mask[tuple(slice(n // 5, n - n // 6) for n in shape)] = True
    weights = ms_ssim_weights(3)
    want = _reference_ms_ssim(x, y, mask, weights, 5)
    got = volqa.ms_ssim(x, y, data_range=1.0, win_size=5, scales=3, mask=mask)
    assert float(got) == pytest.approx(want, abs=1e-10)
    unmasked = _reference_ms_ssim(x, y, np.ones(shape, bool), weights, 5)
    assert float(volqa.ms_ssim(x, y, data_range=1.0, win_size=5, scales=3)) == pytest.approx(
        unmasked, abs=1e-10)


def test_tiles_equal_one_pass_and_identity_is_one():
    x, y = pair((40, 37, 34), seed=4)
    whole = volqa.ms_ssim(x, y, data_range=1.0, win_size=3, max_memory=1 << 30)
    tiled = volqa.ms_ssim(x, y, data_range=1.0, win_size=3, max_memory=20_000)
    assert float(whole) == pytest.approx(float(tiled), abs=1e-14)
    assert float(volqa.ms_ssim(x, x, data_range=1.0, win_size=3)) == pytest.approx(1.0, abs=1e-12)


def test_scales_and_weights():
    assert ms_ssim_weights(5) == MS_SSIM_WEIGHTS  # Wang et al. 2003, as published
    assert sum(ms_ssim_weights(2)) == pytest.approx(1.0)
    assert ms_ssim_weights(2)[1] / ms_ssim_weights(2)[0] == pytest.approx(0.2856 / 0.0448)
    assert ms_ssim_min_size(11, 5) == 161 and ms_ssim_min_size(7, 5) == 97
    x, y = pair((30, 30), seed=5)
    with pytest.raises(SettingsError, match="not both"):
        volqa.ms_ssim(x, y, data_range=1.0, weights=[1.0], scales=1)
    with pytest.raises(SettingsError, match="1 to 5"):
        volqa.ms_ssim(x, y, data_range=1.0, scales=6)


def test_too_small_names_the_minimum_and_a_way_out():
    x, y = pair((48, 60, 200), seed=6)
    with pytest.raises(InputError, match=r"at least 161 .* axis 0 has 48.*scales=3"):
        volqa.ms_ssim(x, y, data_range=1.0)


def test_mask_vanishing_at_a_coarse_scale_names_it():
    x, y = pair((60, 60), seed=7)
    mask = np.zeros((60, 60), bool)
    mask[29, 29] = True  # one voxel: a quarter of its coarse voxel at scale 2, so outside
    with pytest.raises(InputError, match="scale 2"):
        volqa.ms_ssim(x, y, data_range=1.0, win_size=3, scales=3, mask=mask)


def test_slice_convention_is_refused():
    x, y = pair((10, 40, 40), seed=8)
    with pytest.raises(SettingsError, match="slice"):
        volqa.ms_ssim(x, y, data_range=1.0, preset="fastmri")


def test_loss_is_one_minus_ms_ssim_and_gradchecks():
    x, y = (torch.from_numpy(a)[None, None] for a in pair((34, 37), seed=9))
    loss = volqa.MSSSIMLoss(spatial_dims=2, data_range=1.0, win_size=5, scales=3)
    want = 1 - volqa.ms_ssim(x, y, data_range=1.0, win_size=5, scales=3)
    assert float(loss(x, y)) == pytest.approx(float(want), abs=1e-14)
    xs = x[..., :9, :10].clone().requires_grad_()
    ys = y[..., :9, :10].clone().requires_grad_()
    small = volqa.MSSSIMLoss(spatial_dims=2, data_range=1.0, win_size=3, scales=3)
    assert torch.autograd.gradcheck(small, (xs, ys), eps=1e-6, atol=1e-6)


def test_loss_gradchecks_in_3d_with_tiles():
    x, y = (torch.from_numpy(a)[None, None] for a in pair((8, 9, 7), seed=10))
    x.requires_grad_()
    loss = volqa.MSSSIMLoss(spatial_dims=3, data_range=1.0, win_size=3, scales=2,
                            max_memory=3_000)  # several tiles, recomputed in backward
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def test_loss_trains_a_tiny_network():
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a).float()[None, None] for a in pair((40, 40), seed=11, noise=0.3))
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():  # start near the identity, where MS-SSIM's relu terms are positive
        net.weight.copy_(torch.full((1, 1, 3, 3), 0.02) + torch.eye(3)[1].diag()[None, None])
        net.bias.zero_()
    loss_fn = volqa.MSSSIMLoss(spatial_dims=2, data_range=1.0, win_size=5, scales=3)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    first = float(loss_fn(net(y), x).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(net(y), x)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_cuda_equals_pytorch_msssim_and_cpu():
    x, y = pair((36, 40, 34), seed=12)
    X, Y = (torch.from_numpy(a)[None, None] for a in (x, y))
    ref = pm.ms_ssim(X, Y, data_range=1.0, win=pm_window(3, 3), size_average=False)
    got = volqa.ms_ssim(X.float().cuda(), Y.float().cuda(), data_range=1.0, win_size=3,
                        max_memory=100_000)
    assert got.device.type == "cuda"
    assert float(got) == pytest.approx(float(ref), abs=1e-6)
    m = np.ones(x.shape, bool)
    m[:5] = False
    cpu = volqa.ms_ssim(x, y, data_range=1.0, win_size=3, mask=m)
    gpu = volqa.ms_ssim(X.cuda()[0, 0], Y.cuda()[0, 0], data_range=1.0, win_size=3,
                        mask=torch.from_numpy(m).cuda())
    assert float(gpu) == pytest.approx(float(cpu), abs=1e-12)
