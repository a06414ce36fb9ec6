"""The SSIM engine against independent references: scikit-image, pytorch-msssim, a dense
zero-padded convolution, a float64 scipy filter, and invariants."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.metrics import structural_similarity as sk_ssim

import volqa
from volqa import InputError, SettingsError
from volqa.engine import window_taps

SK_GAUSS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def pair(shape, seed=0, noise=0.15):
    rng = np.random.default_rng(seed)
    # smooth structure plus noise: a realistic, non-trivial SSIM (not ~0, not ~1)
    x = ndimage.gaussian_filter(rng.random(shape), 1.0)
    x = (x - x.min()) / (x.max() - x.min())
    y = np.clip(x + noise * rng.standard_normal(shape), 0, 1)
    return x, y


SHAPES_3D = [(16, 16, 16), (13, 21, 17), (11, 30, 12)]
SHAPES_2D = [(40, 40), (23, 37), (11, 64)]


@pytest.mark.parametrize("shape", SHAPES_3D + SHAPES_2D)
def test_gaussian_valid_population_equals_skimage_float64(shape):
    x, y = pair(shape)
    ref = sk_ssim(x, y, data_range=1.0, **SK_GAUSS)
    assert float(volqa.ssim(x, y, data_range=1.0)) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("shape", SHAPES_3D + SHAPES_2D)
def test_gaussian_valid_population_equals_skimage_float32(shape):
    x, y = pair(shape, seed=1)
    ref = sk_ssim(x, y, data_range=1.0, **SK_GAUSS)
    got = volqa.ssim(x.astype(np.float32), y.astype(np.float32), data_range=1.0)
    assert float(got) == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("shape", [(15, 18, 20), (30, 26)])
def test_preset_skimage_equals_skimage_defaults(shape):
    x, y = pair(shape, seed=2)
    ref = sk_ssim(x, y, data_range=1.0)  # uniform 7, sample covariance
    assert float(volqa.ssim(x, y, data_range=1.0, preset="skimage")) == pytest.approx(ref, abs=1e-9)


def test_data_range_enters_c1_c2_like_skimage():
    x, y = pair((14, 15, 16), seed=3)
    x, y = 1000 * x - 200, 1000 * y - 200  # CT-like offset and scale
    ref = sk_ssim(x, y, data_range=4024.0)
    got = volqa.ssim(x, y, data_range=4024.0, preset="synthrad2023")
    assert float(got) == pytest.approx(ref, abs=1e-9)


def test_fastmri_preset_is_mean_of_skimage_2d_slices():
    x, y = pair((5, 24, 20), seed=4)
    # fastmri/evaluate.py: mean over slices of skimage 2-D SSIM with defaults, L = gt.max()
    ref = np.mean([sk_ssim(x[i], y[i], data_range=x.max()) for i in range(x.shape[0])])
    got = volqa.ssim(x, y, data_range=x.max(), preset="fastmri")
    assert float(got) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ssim_slices_along_each_axis(axis):
    x, y = pair((12, 14, 16), seed=5)
    xs, ys = np.moveaxis(x, axis, 0), np.moveaxis(y, axis, 0)
    ref = np.mean([sk_ssim(a, b, data_range=1.0, **SK_GAUSS) for a, b in zip(xs, ys)])
    assert float(volqa.ssim_slices(x, y, axis=axis, data_range=1.0)) == pytest.approx(ref, abs=1e-9)


def test_masked_ssim_slices_skips_slices_without_mask_voxels():
    x, y = pair((6, 20, 22), seed=26)
    mask = np.zeros(x.shape, bool)
    mask[1:4, 5:16, 4:18] = True
    ref = []
    for i in range(x.shape[0]):
        _, full = sk_ssim(x[i], y[i], data_range=1.0, full=True)  # skimage defaults, crop 3
        inner = mask[i, 3:-3, 3:-3]
        if inner.any():
            ref.append(full[3:-3, 3:-3][inner].mean())
    got = volqa.ssim_slices(x, y, axis=0, data_range=1.0, preset="skimage", mask=mask)
    assert len(ref) == 3
    assert float(got) == pytest.approx(np.mean(ref), abs=1e-9)


@pytest.mark.parametrize("shape", [(1, 1, 20, 24, 18), (2, 3, 30, 30)])
def test_preset_pytorch_msssim_matches_pytorch_msssim(shape):
    pm = pytest.importorskip("pytorch_msssim")
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.random(shape)).float()
    y = (x + 0.2 * torch.from_numpy(rng.standard_normal(shape)).float()).clamp(0, 1)
    ref = pm.ssim(x, y, data_range=1.0, win_size=11, size_average=False)  # per image (N,)
    got = volqa.ssim(x, y, data_range=1.0, preset="pytorch_msssim")
    assert got.shape == (shape[0],)
    torch.testing.assert_close(got.float(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(20, 22, 18), (30, 27)])
def test_preset_monai_matches_monai(shape):
    monai = pytest.importorskip("monai.metrics")
    x, y = pair(shape, seed=7)
    X, Y = (torch.from_numpy(a)[None, None] for a in (x, y))
    ref = monai.SSIMMetric(spatial_dims=len(shape), data_range=1.0)(X, Y)
    assert float(volqa.ssim(x, y, data_range=1.0, preset="monai")) == pytest.approx(
        float(ref.mean()), abs=1e-5)


@pytest.mark.parametrize("shape", [(24, 26), (16, 19, 17)])
def test_preset_torchmetrics_matches_torchmetrics(shape):
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, y = pair(shape, seed=8)
    X, Y = (torch.from_numpy(a)[None, None] for a in (x, y))
    ref = tm.structural_similarity_index_measure(X, Y, data_range=1.0)
    assert float(volqa.ssim(x, y, data_range=1.0, preset="torchmetrics")) == pytest.approx(
        float(ref), abs=1e-5)


def _dense_zero_padded_ssim(x: torch.Tensor, y: torch.Tensor, L: float) -> float:
    """Independent pytorch-ssim/ssim3D-style reference: dense Gaussian kernel, zero padding."""
    nd = x.ndim
    g = torch.tensor(window_taps("gaussian", 11, 1.5), dtype=torch.float64)
    k = g
    for _ in range(nd - 1):
        k = k[..., None] * g  # outer product -> dense 11^nd kernel
    k = k[None, None]
    conv = F.conv2d if nd == 2 else F.conv3d
    X, Y = x[None, None], y[None, None]
    mu_x, mu_y = conv(X, k, padding=5), conv(Y, k, padding=5)
    sxx = conv(X * X, k, padding=5) - mu_x**2
    syy = conv(Y * Y, k, padding=5) - mu_y**2
    sxy = conv(X * Y, k, padding=5) - mu_x * mu_y
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    m = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(m.mean())


@pytest.mark.parametrize("shape", [(17, 19, 13), (9, 12, 14), (26, 31)])
def test_preset_pytorch_ssim_matches_dense_zero_padded_conv(shape):
    x, y = pair(shape, seed=9)
    ref = _dense_zero_padded_ssim(torch.from_numpy(x), torch.from_numpy(y), 1.0)
    got, smap = volqa.ssim(x, y, data_range=1.0, preset="pytorch_ssim", return_map=True)
    assert smap.shape == shape  # input-sized map
    assert float(got) == pytest.approx(ref, abs=1e-9)


def _scipy_ssim_map(x, y, L, sizes, sigmas, pad_mode=None):
    """float64 reference with scipy.ndimage.correlate1d per axis, cropped to the valid region."""
    if pad_mode:
        r = [(w - 1) // 2 for w in sizes]
        x, y = np.pad(x, [(a, a) for a in r], mode=pad_mode), np.pad(y, [(a, a) for a in r],
                                                                      mode=pad_mode)

    def filt(a):
        for ax, (w, s) in enumerate(zip(sizes, sigmas)):
            a = ndimage.correlate1d(a, np.array(window_taps("gaussian", w, s)), axis=ax,
                                    mode="constant")
        sl = tuple(slice((w - 1) // 2, n - (w - 1) // 2) for n, w in zip(a.shape, sizes))
        return a[sl]

    mx, my = filt(x), filt(y)
    vx, vy, vxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    return ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_anisotropic_window_matches_float64_scipy_reference():
    x, y = pair((12, 20, 22), seed=10)
    sizes, sigmas = (5, 11, 9), (0.8, 1.5, 1.2)
    ref = _scipy_ssim_map(x, y, 1.0, sizes, sigmas)
    val, smap = volqa.ssim(x, y, data_range=1.0, win_size=sizes, sigma=sigmas, return_map=True)
    np.testing.assert_allclose(smap.numpy(), ref, atol=1e-12)
    assert float(val) == pytest.approx(ref.mean(), abs=1e-12)


def test_reflect_border_matches_reflect_padded_reference():
    x, y = pair((14, 16, 15), seed=11)
    ref = _scipy_ssim_map(x, y, 1.0, (11,) * 3, (1.5,) * 3, pad_mode="reflect")
    val, smap = volqa.ssim(x, y, data_range=1.0, border="reflect", return_map=True)
    assert smap.shape == x.shape
    np.testing.assert_allclose(smap.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("border", ["valid", "same-zero", "reflect"])
@pytest.mark.parametrize("max_memory", [1, 50_000, 400_000])
def test_chunked_equals_unchunked(border, max_memory):
    x, y = pair((23, 18, 21), seed=12)
    x, y = x.astype(np.float32), y.astype(np.float32)
    v0, m0 = volqa.ssim(x, y, data_range=1.0, border=border, return_map=True,
                        max_memory=10**12)
    v1, m1 = volqa.ssim(x, y, data_range=1.0, border=border, return_map=True,
                        max_memory=max_memory)
    assert torch.equal(m0, m1)  # every map voxel identical, budgets down to one slice a slab
    assert abs(float(v0) - float(v1)) <= 1e-6


@pytest.mark.parametrize("preset,crop", [(None, 5), ("skimage", 3), ("synthrad2023", 3)])
def test_masked_mean_equals_mean_of_skimage_map_over_cropped_mask(preset, crop):
    x, y = pair((20, 22, 24), seed=13)
    zz, yy, xx = np.mgrid[:20, :22, :24]
    mask = (zz - 10) ** 2 + (yy - 11) ** 2 + (xx - 12) ** 2 < 8**2
    opts = SK_GAUSS if preset is None else {}
    _, full = sk_ssim(x, y, data_range=1.0, full=True, **opts)
    inner = (slice(crop, -crop),) * 3
    ref = full[inner][mask[inner]].mean()
    got = volqa.ssim(x, y, data_range=1.0, preset=preset, mask=mask)
    assert float(got) == pytest.approx(ref, abs=1e-9)


def test_tiles_along_two_axes_when_slabs_would_be_thin():
    from volqa.engine.tiling import MIN_SLAB_SLICES, plan_tiles

    shape, sizes = (1, 1, 64, 300, 300), (11, 11, 11)
    map_shape = (54, 290, 290)
    s0, s1 = plan_tiles(shape, sizes, map_shape, 4, 16 << 20)
    assert s0 == MIN_SLAB_SLICES and 1 < s1 < 290  # tiled along the second axis too
    assert plan_tiles(shape, sizes, map_shape, 4, 1 << 30) == (54, 290)  # one tile
    assert plan_tiles(shape, sizes, map_shape, 4, 1) == (1, 1)  # smallest: one voxel row
    x, y = pair((20, 40, 16), seed=28)
    a, ma = volqa.ssim(x, y, data_range=1.0, return_map=True)
    b, mb = volqa.ssim(x, y, data_range=1.0, return_map=True, max_memory=60_000)
    assert torch.equal(ma, mb) and abs(float(a) - float(b)) < 1e-12


def test_image_mean_in_slabs_equals_float64_mean(monkeypatch):
    from volqa.engine import tiling

    monkeypatch.setattr(tiling, "MEAN_SLAB_ELEMENTS", 50)  # slabs of one and of several rows
    rng = np.random.default_rng(40)
    for shape in [(2, 3, 7, 5, 4), (1, 1, 9, 4), (1, 2, 5, 30, 2)]:
        a = rng.normal(1000, 10, shape).astype(np.float32)
        got = tiling.image_mean(torch.from_numpy(a))
        want = a.astype(np.float64).mean(axis=tuple(range(2, a.ndim)), keepdims=True)
        assert got.dtype == torch.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("grad", [False, True])
def test_sum64_accumulates_in_float64(dtype, grad):
    """Every path of sum64 (numpy on the CPU, torch under autograd or for half floats)
    equals a float64 sum, on a strided view, and keeps the gradient when one is needed."""
    from volqa.engine.tiling import sum64

    base = torch.from_numpy(np.random.default_rng(41).normal(100, 30, (2, 3, 9, 8, 6)))
    t = base.to(dtype)[:, :, 1:8, ::2].requires_grad_(grad)
    got = sum64(t, (2, 3, 4))
    want = t.detach().double().numpy().sum(axis=(2, 3, 4))
    assert got.dtype == torch.float64 and got.requires_grad == grad
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-14)
    kept = sum64(t, (2, 3), keepdim=True)
    assert kept.shape == (2, 3, 1, 1, 6)
    if grad:
        got.sum().backward()
        assert t.grad is not None and bool((t.grad == 1).all())


MEMORY_PROBE = """
import numpy as np, torch, volqa
x = np.random.default_rng(0).random((256, 256, 256), dtype=np.float32)
y = (x + 0.01).astype(np.float32)
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := current RSS
status = lambda key: int(next(l.split()[1] for l in open("/proc/self/status")
                              if l.startswith(key)))
base = status("VmRSS")
volqa.ssim(x, y, data_range=1.0, max_memory=16 << 20)
print((status("VmHWM") - base) // 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_memory_stays_bounded_by_the_tile_budget():
    # A 256^3 float32 pair is 128 MiB; with 16 MiB tiles (and the image means' 32 MiB float64
    # slabs) SSIM must not copy a volume whole (a float32 copy is 64 MiB; the float64 image mean
    # it once took copied 128 MiB). glibc's fixed mmap threshold returns freed buffers at once,
    # so VmHWM is the peak of live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True,
                         check=True, env=env)
    extra_mib = int(out.stdout.split()[-1])
    assert extra_mib < 48, f"SSIM of a 256^3 pair with 16 MiB tiles took {extra_mib} MiB extra"


def test_masked_mean_works_with_chunking():
    x, y = pair((20, 16, 16), seed=14)
    mask = np.zeros(x.shape, bool)
    mask[4:15, 3:12, 6:13] = True
    a = volqa.ssim(x, y, data_range=1.0, mask=mask)
    b = volqa.ssim(x, y, data_range=1.0, mask=mask, max_memory=1)
    assert float(a) == pytest.approx(float(b), abs=1e-12)


def test_identical_images_give_one_and_ssim_is_symmetric():
    x, y = pair((15, 15, 15), seed=15)
    assert float(volqa.ssim(x, x, data_range=1.0)) == pytest.approx(1.0, abs=1e-12)
    assert float(volqa.ssim(x, y, data_range=1.0)) == pytest.approx(
        float(volqa.ssim(y, x, data_range=1.0)), abs=1e-12)


def test_2d_image_repeated_along_depth_matches_2d_value():
    x, y = pair((30, 28), seed=16)
    v2 = volqa.ssim(x, y, data_range=1.0)
    v3 = volqa.ssim(np.repeat(x[None], 13, 0), np.repeat(y[None], 13, 0), data_range=1.0)
    assert float(v3) == pytest.approx(float(v2), abs=1e-12)


def test_constant_offset_data_keeps_float32_precision():
    # CT-like values around 1000: variances from centred data keep float32 close to float64
    x, y = pair((16, 18, 20), seed=17)
    x, y = 1000 + 200 * x, 1000 + 200 * y
    ref = sk_ssim(x, y, data_range=200.0, **SK_GAUSS)
    got = volqa.ssim(x.astype(np.float32), y.astype(np.float32), data_range=200.0)
    assert float(got) == pytest.approx(ref, abs=1e-5)


def test_batch_gives_one_value_per_item_and_none_per_channel():
    rng = np.random.default_rng(18)
    x = torch.from_numpy(rng.random((3, 2, 14, 15, 16)))
    y = (x + 0.1 * torch.from_numpy(rng.standard_normal(x.shape))).clamp(0, 1)
    per_item = volqa.ssim(x, y, data_range=1.0)
    per_channel = volqa.ssim(x, y, data_range=1.0, reduction="none")
    assert per_item.shape == (3,) and per_channel.shape == (3, 2)
    for n in range(3):
        for c in range(2):
            single = volqa.ssim(x[n, c], y[n, c], data_range=1.0)
            assert single.ndim == 0
            assert float(per_channel[n, c]) == pytest.approx(float(single), abs=1e-12)
        assert float(per_item[n]) == pytest.approx(float(per_channel[n].mean()), abs=1e-12)


def test_big_endian_and_integer_arrays_are_accepted():
    x, y = pair((14, 14, 14), seed=27)
    xi, yi = (np.round(a * 1000).astype(">i2") for a in (x, y))  # big-endian int16
    ref = sk_ssim(xi.astype(np.float64), yi.astype(np.float64), data_range=1000.0, **SK_GAUSS)
    assert float(volqa.ssim(xi, yi, data_range=1000.0)) == pytest.approx(ref, abs=1e-5)


def test_float16_is_computed_in_float32():
    x, y = pair((14, 14, 14), seed=19)
    got = volqa.ssim(torch.from_numpy(x).half(), torch.from_numpy(y).half(), data_range=1.0)
    ref = sk_ssim(x.astype(np.float16).astype(np.float64), y.astype(np.float16).astype(np.float64),
                  data_range=1.0, **SK_GAUSS)
    assert float(got) == pytest.approx(ref, abs=1e-5)


def test_valid_map_shape_and_centre_convention():
    x, y = pair((15, 16, 17), seed=20)
    _, smap = volqa.ssim(x, y, data_range=1.0, return_map=True)
    assert tuple(smap.shape) == (5, 6, 7)
    _, full = sk_ssim(x, y, data_range=1.0, full=True, **SK_GAUSS)
    np.testing.assert_allclose(smap.numpy(), full[5:-5, 5:-5, 5:-5], atol=1e-12)


@pytest.mark.parametrize("max_memory", [None, 100_000])  # 100 kB: 3 tiles, checkpointed
def test_gradcheck_float64(max_memory):
    x, y = pair((9, 10, 11), seed=21)
    X = torch.from_numpy(x).requires_grad_()
    Y = torch.from_numpy(y).requires_grad_()

    def f(a, b):
        return volqa.ssim(a, b, data_range=1.0, win_size=5, max_memory=max_memory)

    assert torch.autograd.gradcheck(f, (X, Y))


def test_gradcheck_2d_sample_covariance_reflect():
    x, y = pair((12, 13), seed=22)
    X = torch.from_numpy(x).requires_grad_()
    Y = torch.from_numpy(y).requires_grad_()

    def f(a, b):
        return volqa.ssim(a, b, data_range=1.0, win_size=5, covariance="sample", border="reflect")

    assert torch.autograd.gradcheck(f, (X, Y))


# ----------------------------------------------------------------------------- errors


def test_data_range_is_required():
    x, y = pair((12, 12, 12))
    with pytest.raises(SettingsError, match="data_range is required"):
        volqa.ssim(x, y)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_data_range_must_be_positive(bad):
    x, y = pair((12, 12, 12))
    with pytest.raises(SettingsError, match="data_range must be > 0"):
        volqa.ssim(x, y, data_range=bad)


def test_shapes_must_match():
    with pytest.raises(InputError, match=r"same shape, got \(12, 12, 12\) and \(12, 12, 13\)"):
        volqa.ssim(np.zeros((12, 12, 12)), np.zeros((12, 12, 13)), data_range=1.0)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_inputs_are_rejected(value):
    x, y = pair((12, 12, 12))
    y[3, 4, 5] = value
    with pytest.raises(InputError, match="y holds 1 NaN or Inf"):
        volqa.ssim(x, y, data_range=1.0)


def test_axis_shorter_than_window_names_the_axis():
    x, y = pair((12, 8, 12))
    with pytest.raises(InputError, match=r"spatial axis 1 has 8 voxels, fewer than the 11-voxel "
                                         r"window.*ssim_slices"):
        volqa.ssim(x, y, data_range=1.0)


def test_mask_errors():
    x, y = pair((14, 14, 14))
    with pytest.raises(InputError, match="mask shape"):
        volqa.ssim(x, y, data_range=1.0, mask=np.ones((14, 14, 13), bool))
    with pytest.raises(InputError, match="mask is empty"):
        volqa.ssim(x, y, data_range=1.0, mask=np.zeros(x.shape, bool))
    border_only = np.zeros(x.shape, bool)
    border_only[:2] = True
    with pytest.raises(InputError, match="no voxel inside the region the SSIM map covers"):
        volqa.ssim(x, y, data_range=1.0, mask=border_only)
    with pytest.raises(InputError, match="only 0 and 1"):
        volqa.ssim(x, y, data_range=1.0, mask=np.full(x.shape, 2, np.uint8))


@pytest.mark.parametrize("kwargs,match", [
    (dict(preset="matlab"), "unknown preset 'matlab'"),
    (dict(window="box"), "unknown window 'box'"),
    (dict(border="same"), "unknown border 'same'"),
    (dict(covariance="unbiased"), "unknown covariance"),
    (dict(win_size=10), "win_size must be odd"),
    (dict(sigma=0), "sigma must be > 0"),
    (dict(win_size=(5, 5)), "win_size has 2 values but the images have 3 spatial axes"),
    (dict(reduction="sum"), "unknown reduction"),
])
def test_unknown_or_invalid_options(kwargs, match):
    x, y = pair((12, 12, 12))
    with pytest.raises(SettingsError, match=match):
        volqa.ssim(x, y, data_range=1.0, **kwargs)


def test_explicit_options_override_a_preset():
    x, y = pair((14, 14, 14), seed=23)
    ref = sk_ssim(x, y, data_range=1.0, win_size=5)
    assert float(volqa.ssim(x, y, data_range=1.0, preset="skimage", win_size=5)) == pytest.approx(
        ref, abs=1e-9)


# ----------------------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("max_memory", [None, 200_000])
def test_cuda_equals_cpu_float64_reference_with_tf32_enabled(max_memory):
    x, y = pair((40, 44, 36), seed=24)
    ref = sk_ssim(x, y, data_range=1.0, **SK_GAUSS)
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        X, Y = (torch.from_numpy(a).float().cuda() for a in (x, y))
        got = volqa.ssim(X, Y, data_range=1.0, max_memory=max_memory)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    assert got.device.type == "cuda"
    assert float(got) == pytest.approx(ref, abs=1e-5)


@cuda
@pytest.mark.cuda
def test_cuda_gradients_match_cpu():
    x, y = pair((16, 18, 20), seed=25)
    grads = []
    for dev in ("cpu", "cuda"):
        X = torch.from_numpy(x).to(dev).requires_grad_()
        volqa.ssim(X, torch.from_numpy(y).to(dev), data_range=1.0, max_memory=50_000).backward()
        grads.append(X.grad.cpu())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=1e-7)
