"""volqa.SSIMLoss as a training loss: value, gradients, dtypes, batches, chunking, devices."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

import volqa
from volqa import SettingsError, SSIMLoss

SSIM_MODULE = importlib.import_module("volqa.engine.structural")

SHAPES = {2: (3, 2, 24, 20), 3: (2, 2, 14, 16, 15)}


def _pair(dims: int, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A target with structure and a noisy version of it, values in about [0, 1]."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[dims]
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[2:]], indexing="ij")
    blob = np.exp(-sum(g**2 for g in grids) / 0.3)
    y = np.broadcast_to(blob, shape) * rng.uniform(0.5, 1.0, shape[:2] + (1,) * dims)
    x = y + 0.2 * rng.standard_normal(shape)
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_is_one_minus_ssim(dims: int, reduction: str) -> None:
    x, y = _pair(dims)
    loss = SSIMLoss(dims, data_range=1.0, reduction=reduction)(x, y)
    per_item = 1.0 - volqa.ssim(x, y, data_range=1.0)  # (N,): channels averaged per item
    expected = {"mean": per_item.mean(), "sum": per_item.sum(), "none": per_item}[reduction]
    assert loss.dtype == torch.float32
    assert loss.shape == expected.shape
    torch.testing.assert_close(loss.double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("options", [dict(preset="skimage"), dict(window="uniform", win_size=5,
                                     covariance="sample"), dict(border="same-zero")])
def test_loss_passes_engine_options(options: dict) -> None:
    x, y = _pair(2)
    loss = SSIMLoss(2, data_range=2.0, reduction="none", **options)(x, y)
    expected = 1.0 - volqa.ssim(x, y, data_range=2.0, **options)
    torch.testing.assert_close(loss.double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_batch_items_are_independent_and_channels_averaged(dims: int) -> None:
    x, y = _pair(dims)
    batch = SSIMLoss(dims, data_range=1.0, reduction="none")(x, y)
    for n in range(x.shape[0]):
        per_channel = [SSIMLoss(dims, data_range=1.0)(x[n:n + 1, c:c + 1], y[n:n + 1, c:c + 1])
                       for c in range(x.shape[1])]
        torch.testing.assert_close(batch[n], torch.stack(per_channel).mean(), rtol=0, atol=1e-6)


def test_identical_inputs_give_zero_loss() -> None:
    _, y = _pair(3)
    assert float(SSIMLoss(3, data_range=1.0)(y, y)) == pytest.approx(0.0, abs=1e-6)


def test_float64_inputs_give_float64_loss() -> None:
    x, y = _pair(2, torch.float64)
    loss = SSIMLoss(2, data_range=1.0)(x, y)
    assert loss.dtype == torch.float64
    assert float(loss) == pytest.approx(1.0 - float(volqa.ssim(x, y, data_range=1.0).mean()),
                                        abs=1e-12)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(("dims", "shape", "options"), [
    (2, (1, 1, 13, 12), dict(win_size=5)),
    (2, (2, 1, 9, 10), dict(win_size=5, border="same-zero")),
    (2, (1, 1, 9, 10), dict(win_size=5, border="reflect")),
    (2, (1, 2, 9, 10), dict(window="uniform", win_size=5, covariance="sample")),
    (3, (1, 1, 7, 8, 9), dict(win_size=5)),
])
def test_gradcheck_both_inputs(dims: int, shape: tuple, options: dict) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = SSIMLoss(dims, data_range=1.0, **options)
    assert torch.autograd.gradcheck(loss, (x, y), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("index", [(0, 0, 4, 5, 6), (0, 0, 0, 0, 0), (0, 0, 8, 9, 9)])
def test_gradient_entry_matches_central_difference(which: int, index: tuple) -> None:
    """One entry of d loss / d input by a hand-written central difference (float64)."""
    gen = torch.Generator().manual_seed(2)
    shape = (1, 1, 9, 10, 10)
    inputs = [torch.rand(shape, generator=gen, dtype=torch.float64) for _ in range(2)]
    loss_fn = SSIMLoss(3, data_range=1.0, win_size=5)
    leaf = inputs[which].clone().requires_grad_(True)
    args = [leaf if i == which else inputs[i] for i in range(2)]
    (grad,) = torch.autograd.grad(loss_fn(*args), leaf)

    h = 1e-5
    values = []
    for sign in (1.0, -1.0):
        bumped = [t.clone() for t in inputs]
        bumped[which][index] += sign * h
        values.append(float(loss_fn(*bumped)))
    numeric = (values[0] - values[1]) / (2 * h)
    assert float(grad[index]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert numeric != 0.0


def test_chunked_loss_and_gradients_equal_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A volume over the memory budget is computed in slabs with the same loss and gradient."""
    x, y = _pair(3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    whole = SSIMLoss(3, data_range=1.0)(x, y)
    g_whole = torch.autograd.grad(whole, (x, y))

    slabs = []
    original = SSIM_MODULE.checkpoint

    def counting_checkpoint(*args, **kwargs):
        slabs.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(SSIM_MODULE, "checkpoint", counting_checkpoint)
    chunked = SSIMLoss(3, data_range=1.0, max_memory=1)(x, y)  # 1 byte: one voxel row a tile
    g_chunked = torch.autograd.grad(chunked, (x, y))

    map_depth, map_height = x.shape[2] - 11 + 1, x.shape[3] - 11 + 1
    assert len(slabs) == map_depth * map_height  # really chunked: one tile per output row
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    for a, b in zip(g_chunked, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- dtypes, devices


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_low_precision_inputs(dtype: torch.dtype) -> None:
    """Under autocast a conv layer gives low-precision output; the loss is float32 and
    equals the loss of the same values upcast, and gradients reach the layer."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, padding=1)
    x, y = _pair(2)
    x, y = x[:, :1], y[:, :1]
    loss_fn = SSIMLoss(2, data_range=1.0)
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = conv(x)
            loss = loss_fn(out, y)
    except RuntimeError as e:  # an older torch without CPU autocast for this dtype
        pytest.skip(f"CPU autocast with {dtype} unsupported here: {e}")
    assert out.dtype == dtype
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_fn(out.detach().float(), y), rtol=0, atol=0)
    loss.backward()
    assert conv.weight.grad is not None
    assert conv.weight.grad.dtype == torch.float32
    assert bool(torch.isfinite(conv.weight.grad).all()) and float(conv.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_tensors_computed_in_float32(dtype: torch.dtype) -> None:
    x, y = _pair(3)
    xl, yl = x.to(dtype), y.to(dtype)
    loss = SSIMLoss(3, data_range=1.0)(xl, yl)
    assert loss.dtype == torch.float32
    assert float(loss) == float(SSIMLoss(3, data_range=1.0)(xl.float(), yl.float()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dims", [2, 3])
def test_cuda_matches_cpu_with_autocast_and_backward(dims: int) -> None:
    x, y = _pair(dims)
    loss_fn = SSIMLoss(dims, data_range=1.0)
    cpu = loss_fn(x, y)
    xc = x.cuda().requires_grad_(True)
    gpu = loss_fn(xc, y.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    gpu.backward()
    xr = x.clone().requires_grad_(True)
    loss_fn(xr, y).backward()
    torch.testing.assert_close(xc.grad.cpu(), xr.grad, rtol=1e-4, atol=1e-7)
    # chunked on the GPU as well
    chunked = SSIMLoss(dims, data_range=1.0, max_memory=1)(x.cuda(), y.cuda())
    torch.testing.assert_close(chunked.cpu(), cpu, rtol=0, atol=1e-5)

    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(2, 2, 3, padding=1).cuda()
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype):
            out = conv(x.cuda())
            loss = loss_fn(out, y.cuda())
        assert out.dtype == dtype and loss.dtype == torch.float32
        conv.zero_grad()
        loss.backward()
        assert bool(torch.isfinite(conv.weight.grad).all())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("dims", "shape"), [
    (3, (1, 1, 16, 16)), (2, (1, 1, 16, 16, 16)), (2, (16, 16)), (3, (16, 16, 16)),
])
def test_wrong_rank_raises(dims: int, shape: tuple) -> None:
    x = torch.rand(shape)
    with pytest.raises(SettingsError, match=rf"spatial_dims={dims}\) expects .* got shape"):
        SSIMLoss(dims, data_range=1.0)(x, x)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(spatial_dims=1, data_range=1.0), "spatial_dims must be 2 or 3"),
    (dict(spatial_dims=2), "data_range is required"),
    (dict(spatial_dims=2, data_range=0.0), "data_range must be > 0"),
    (dict(spatial_dims=2, data_range=1.0, reduction="max"), "unknown reduction"),
    (dict(spatial_dims=2, data_range=1.0, preset="nope"), "unknown preset"),
])
def test_bad_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        SSIMLoss(**kwargs)


# --------------------------------------------------------------------------- training


def test_short_training_loop_lowers_the_loss() -> None:
    """A tiny conv net trained with SSIMLoss to denoise: the loss falls."""
    torch.manual_seed(0)
    x, y = _pair(2, seed=3)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    loss_fn = SSIMLoss(2, data_range=1.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
    assert all(np.isfinite(losses))
