"""Memory budgets, tile plans, and where a "valid" map lies in its image.

Volumes are processed in tiles that fit a byte budget: slabs along the first spatial axis,
cut along the second axis too when slices are large, each read with a halo of ``win_size - 1``
voxels, so every map voxel is computed from exactly the data of an unchunked run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

#: CPU tile budget when ``max_memory`` is not given. Small tiles stay in cache and are faster
#: than whole-volume passes (256^3: 0.26 s at 32 MiB, 0.37 s at 64 MiB, ~2 s at 1 GiB on a
#: 2-core machine, scripts/bench_ssim.py). ``VOLQA_CPU_MAX_MEMORY`` overrides it.
CPU_DEFAULT_MAX_MEMORY = 32 * 2**20
#: CUDA tile budget when ``max_memory`` is not given: this fraction of the free device memory,
#: capped at CUDA_DEFAULT_MAX_MEMORY for evaluation (few, large kernels and bounded extra memory:
#: ~0.3 GiB at 256^3). Under autograd there is no cap: several tiles would mean recomputing each
#: in backward (checkpointing), which costs more time than training can spare.
CUDA_FREE_FRACTION = 0.5
CUDA_DEFAULT_MAX_MEMORY = 512 * 2**20
#: Fewest output slices per slab before volumes are also tiled along their second spatial axis
#: (large slices: a slab of a few slices with its halo would not stay in cache).
MIN_SLAB_SLICES = 8

#: Elements per float64 slab of :func:`image_mean` (32 MiB, the CPU tile budget).
MEAN_SLAB_ELEMENTS = 2**22

T = TypeVar("T")


def default_max_memory(device: torch.device | str, *, grad: bool = False) -> int:
    """The tile budget in bytes that the engine uses when ``max_memory`` is not given."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * CUDA_FREE_FRACTION)
        return budget if grad else min(budget, CUDA_DEFAULT_MAX_MEMORY)
    return int(os.environ.get("VOLQA_CPU_MAX_MEMORY", CPU_DEFAULT_MAX_MEMORY))


def tile_bytes(s0: int, s1: int, sizes: Sequence[int], shape: Sequence[int], item: int) -> int:
    """Approximate peak bytes of one tile of s0 x s1 output rows: the 5 statistics over its
    input (halo included) and the filtered copies and map terms over its output."""
    rest = shape[0] * shape[1] * math.prod(shape[4:]) * item  # batch and axes after the 2nd
    return rest * (5 * (s0 + sizes[0] - 1) * (s1 + sizes[1] - 1) + 18 * s0 * s1)


def plan_tiles(shape: Sequence[int], sizes: Sequence[int], map_shape: Sequence[int], item: int,
               budget: int) -> tuple[int, int]:
    """Output rows per tile along the first two spatial axes so one tile fits ``budget``.

    ``shape`` is the (N, C, *spatial) input shape. Whole slabs along the first axis while
    they hold at least MIN_SLAB_SLICES slices; else that many slices, tiled along the second
    axis too. One output voxel row is the smallest tile.
    """
    def size(a: int, b: int) -> int:
        return tile_bytes(a, b, sizes, shape, item)

    m0, m1 = map_shape[0], map_shape[1]
    s0 = max(1, min(m0, (budget - size(0, m1)) // (size(1, m1) - size(0, m1))))
    if s0 >= min(m0, MIN_SLAB_SLICES):
        return s0, m1
    s0 = min(m0, MIN_SLAB_SLICES)
    s1 = max(1, min(m1, (budget - size(s0, 0)) // (size(s0, 1) - size(s0, 0))))
    if size(s0, s1) > budget:  # not even one row of 8 slices fits
        s0 = max(1, min(m0, (budget - size(0, 1)) // (size(1, 1) - size(0, 1))))
    return s0, s1


def map_region(full_shape: Sequence[int], map_shape: Sequence[int]) -> tuple[slice, ...]:
    """Slices that select, in an image of ``full_shape``, the voxels a centred map covers.

    A "valid" SSIM map lacks ``(win - 1) // 2`` voxels at each border, so it sits centred in
    its image with an offset of ``(full - map) // 2`` per axis (0 for input-sized maps). This
    is the one place that offset is computed: masks are cropped with it, and saved maps are
    padded back with it.
    """
    if len(full_shape) != len(map_shape) or any(
        m > f for m, f in zip(map_shape, full_shape, strict=True)
    ):
        raise ValueError(f"map shape {tuple(map_shape)} does not fit in {tuple(full_shape)}")
    return tuple(slice((f - m) // 2, (f - m) // 2 + m) for f, m in zip(full_shape, map_shape))


def crop_to_map(a: T, map_shape: Sequence[int], first_dim: int = 0) -> T:
    """Crop an array or tensor's axes ``first_dim..`` exactly like a centred map."""
    shape = tuple(a.shape)  # type: ignore[attr-defined]
    spatial = shape[first_dim:first_dim + len(map_shape)]
    lead = (slice(None),) * first_dim
    return a[lead + map_region(spatial, map_shape)]  # type: ignore[index]


def sum64(t: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """Sum over ``dims`` accumulated in float64, for ``t`` of any float dtype.

    On the CPU, without autograd, numpy's pairwise sum does it: torch's float64-accumulating
    sum of a float32 tensor converts element by element, 12x slower (32 ms against 2.7 ms for
    2^22 voxels; a quarter of a 256^3 SSIM). Elsewhere ``torch.sum(dtype=torch.float64)``."""
    if t.device.type == "cpu" and not t.requires_grad and t.dtype in (torch.float32, torch.float64):
        out = t.numpy().sum(axis=dims, dtype=np.float64, keepdims=keepdim)
        return torch.from_numpy(np.asarray(out))
    return t.sum(dims, keepdim=keepdim, dtype=torch.float64)


def image_mean(t: torch.Tensor) -> torch.Tensor:
    """Per-(N, C) mean over the spatial dims of an ``(N, C, ...)`` tensor, kept as ``(N, C, 1,
    ...)`` in ``t``'s dtype. Summed in float64 (:func:`sum64`, so it does not depend on how many
    threads torch sums with) in slabs along the first spatial axis of at most
    :data:`MEAN_SLAB_ELEMENTS` (``t.mean(dtype=torch.float64)`` would copy the whole volume to
    float64: 1 GiB for a 512³ float32 volume). The slabs do not depend on ``max_memory``, so
    neither does the result."""
    step = max(1, MEAN_SLAB_ELEMENTS // max(1, t[:, :, :1].numel()))
    dims = tuple(range(2, t.ndim))
    total = sum(sum64(t.narrow(2, i, min(step, t.shape[2] - i)), dims, keepdim=True)
                for i in range(0, t.shape[2], step))
    return (total / math.prod(t.shape[2:])).to(t.dtype)
