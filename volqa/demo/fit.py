"""SSIM as a training loss, shown: fit uniform noise to a target image or volume.

The classic pytorch-ssim demonstration, in 2-D and 3-D on top of :class:`volqa.SSIMLoss`:
start from seeded uniform noise, maximise SSIM against the target with Adam, and keep every
k-th step as a frame (:mod:`.frames`) showing the fit beside the target; :mod:`.gif` writes
the frames as an animated GIF.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch
from PIL import Image

from ..engine.losses import SSIMLoss
from ..errors import InputError, SettingsError
from .frames import orthogonal_slices, render_frame
from .targets import check_dims

__all__ = ["WIN_SIZE", "FitResult", "fit"]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: SSIM window used by the demo (volqa's defaults: Gaussian, σ 1.5, valid border).
WIN_SIZE = 11


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    steps : int
        Adam updates made (0 if the noise already met the threshold).
    final_ssim : float
        SSIM of the final estimate against the scaled target.
    reached : bool
        ``final_ssim >= threshold``.
    threshold : float
    history : list of (int, float)
        (step, SSIM) for every step 0..steps; step 0 is the starting noise.
    frames : list of PIL.Image.Image
        Grayscale ("L") frames in step order.
    frame_history : list of (int, float)
        (step, SSIM) of each frame, same length and order as ``frames``.
    estimate : ndarray, float32
        The final estimate (target's shape, values in [0, 1]); its SSIM is ``final_ssim``.
    seconds : float
        Wall time of the optimisation loop, frame drawing included.
    device : str
    """

    steps: int
    final_ssim: float
    reached: bool
    threshold: float
    history: list[tuple[int, float]] = field(repr=False)
    frames: list[Image.Image] = field(repr=False)
    frame_history: list[tuple[int, float]] = field(repr=False)
    estimate: np.ndarray = field(repr=False)
    seconds: float = 0.0
    device: str = "cpu"


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingsError(f"unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:0'"
                            ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device {device!r} asked for, but this torch sees no CUDA device; "
                            "use --device cpu")
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise SettingsError(f"device {device!r} cannot be used ({e}); use --device cpu"
                            ) from None
    return dev


def fit(
    target: ArrayLike,
    *,
    dims: int,
    threshold: float = 0.95,
    lr: float = 0.01,
    max_steps: int = 1000,
    every: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_range: float | None = None,
    spacing: Sequence[float] | None = None,
    gray_levels: int = 32,
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Fit seeded uniform noise to ``target`` by maximising SSIM with Adam.

    Parameters
    ----------
    target : (H, W) or (i, j, k) array or tensor
        Finite values, not constant. Min–max scaled to [0, 1] before fitting. 3-D frames read
        the axes as RAS voxel order (see :func:`orthogonal_slices`); any order fits the same.
    dims : {2, 3}
        Must equal ``target.ndim``. Every axis needs at least 11 voxels (the SSIM window).
    threshold : float, default 0.95
        Stop once SSIM >= threshold (SSIM lies in [-1, 1]).
    lr : float, default 0.01
        Adam learning rate (other Adam settings: torch defaults).
    max_steps : int, default 1000
        Most Adam updates; reaching it without the threshold is a result, not an error.
    every : int, default 5
        Frame stride: steps 0, every, 2·every, ... become frames, and so does the final step.
    seed : int, default 0
        Seeds the ``torch.Generator`` (CPU) that draws the start, so it is the same on every
        device.
    device : str or torch.device, default "cpu"
    data_range : float, optional
        L of SSIM's constants; default 1.0, the range of the scaled target.
    spacing : sequence of float, optional
        Voxel spacing per axis, used only to draw panels with the true aspect ratio.
    gray_levels : int, default 32
        Gray levels of the frames' image part (fewer make smaller GIFs).
    callback : callable(step, ssim), optional
        Called after every step's SSIM is known (progress bars).

    Returns
    -------
    FitResult

    Raises
    ------
    SettingsError
        Bad ``dims``, ``threshold``, ``lr``, ``max_steps``, ``every``, ``gray_levels`` or device.
    InputError
        Target of the wrong rank, too small for the window, non-finite or constant.

    Notes
    -----
    The loss is ``volqa.SSIMLoss(dims, data_range=L)``: Gaussian window 11, σ 1.5, population
    covariance, K1 0.01, K2 0.03, "valid" border. The estimate is a raw tensor (as in the
    pytorch-ssim demo) projected back onto [0, 1] after every Adam update (``clamp_``), so
    every frame shows exactly the image that was scored. Under the "valid" border, voxels
    within 5 of the edge fall inside few windows and converge last; a 1–2 voxel rim can stay
    noisy when the threshold is met. Step ``t`` in ``history`` is the SSIM of the estimate
    after ``t`` updates, computed in the forward pass whose gradient makes update ``t + 1``.
    """
    check_dims(dims)
    if not (-1.0 <= threshold <= 1.0):
        raise SettingsError(f"threshold must lie in [-1, 1] (the range of SSIM), got {threshold}")
    if not (lr > 0 and math.isfinite(lr)):
        raise SettingsError(f"lr must be > 0 and finite, got {lr}")
    if int(max_steps) != max_steps or max_steps < 0:
        raise SettingsError(f"max_steps must be an integer >= 0, got {max_steps}")
    if int(every) != every or every < 1:
        raise SettingsError(f"every must be an integer >= 1, got {every}")
    if not (2 <= gray_levels <= 256):
        raise SettingsError(f"gray_levels must lie in 2..256, got {gray_levels}")
    dev = _device(device)

    t = (target if isinstance(target, torch.Tensor)
         else torch.from_numpy(np.ascontiguousarray(target)))
    t = t.detach().to("cpu", torch.float32)
    if t.ndim != dims:
        raise InputError(f"dims={dims} needs a {dims}-D target, got shape {tuple(t.shape)}; "
                         "for a volume's middle slice use load_target(..., dims=2)")
    if min(t.shape) < WIN_SIZE:
        raise InputError(f"target shape {tuple(t.shape)} is too small: every axis needs at "
                         f"least {WIN_SIZE} voxels (the SSIM window)")
    if not bool(torch.isfinite(t).all()):
        raise InputError("target holds NaN or Inf values")
    lo, hi = float(t.min()), float(t.max())
    if not hi > lo:
        raise InputError(f"target is constant ({lo}); SSIM against it cannot be maximised")
    t = (t - lo) / (hi - lo)
    L = 1.0 if data_range is None else data_range
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * dims
    if len(sp) != dims or not all(s > 0 for s in sp):
        raise SettingsError(f"spacing needs {dims} positive values, got {spacing!r}")
    goal = t.numpy()
    if dims == 2:  # one row: the fit beside the target
        pan_sp = [sp, sp]
        captions = [["fit", "target"]]
        layout = lambda a: [[a, goal]]  # noqa: E731
    else:  # two rows of axial, coronal, sagittal: the fit above the target
        pan_sp = [(sp[1], sp[0]), (sp[2], sp[0]), (sp[2], sp[1])]
        planes = ("axial", "coronal", "sagittal")
        captions = [[f"fit: {p}" for p in planes], [f"target: {p}" for p in planes]]
        goal_row = orthogonal_slices(goal)
        layout = lambda a: [orthogonal_slices(a), goal_row]  # noqa: E731

    def draw(x: torch.Tensor, step: int, value: float) -> Image.Image:
        a = x.detach().to("cpu", torch.float32).numpy()
        return render_frame(layout(a), pan_sp, step, value, captions=captions,
                            gray_levels=gray_levels)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    x = torch.rand(t.shape, generator=gen, dtype=torch.float32).to(dev).requires_grad_(True)
    tgt = t.to(dev)[None, None]
    loss_fn = SSIMLoss(dims, data_range=L)
    opt = torch.optim.Adam([x], lr=lr)
    history: list[tuple[int, float]] = []
    frames: list[Image.Image] = []
    frame_history: list[tuple[int, float]] = []
    start = time.perf_counter()
    step = 0
    while True:
        loss = loss_fn(x[None, None], tgt)
        value = 1.0 - float(loss.detach())
        history.append((step, value))
        done = value >= threshold or step >= max_steps
        if step % every == 0 or done:
            frames.append(draw(x, step, value))
            frame_history.append((step, value))
        if callback is not None:
            callback(step, value)
        if done:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        step += 1
    estimate = x.detach().to("cpu", torch.float32).numpy()  # waits for the device
    seconds = time.perf_counter() - start
    return FitResult(steps=step, final_ssim=value, reached=value >= threshold,
                     threshold=threshold, history=history, frames=frames,
                     frame_history=frame_history, estimate=estimate, seconds=seconds,
                     device=str(dev))
