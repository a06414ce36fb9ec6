#!/usr/bin/env python
"""Benchmark 3-D SSIM and MS-SSIM: volqa against the tools people use, on the same pair, in one run.

Gaussian window 11, sigma 1.5, data_range 1 (the setting in which volqa's default, skimage with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, MONAI and pytorch-msssim
agree; torchmetrics reflect-pads, so its value differs by design). Every implementation that is
installed runs; on CPU each runs in its own subprocess so its peak extra RSS is its own.

    python scripts/bench_ssim.py                      # 128^3 and 256^3 on CPU
    python scripts/bench_ssim.py --size 512           # adds the 512^3 memory-budget check
    python scripts/bench_ssim.py --device cuda --loss # GPU, with loss forward+backward
    python scripts/bench_ssim.py --ms-ssim --size 256 # 3-D MS-SSIM (5 scales) vs pytorch-msssim

Columns: seconds (median of --repeat runs after one warm-up, stopping once 20 s are spent),
peak extra memory over the inputs (CPU: VmHWM after resetting it, in a second run with large
freed buffers returned to the system; CUDA: max_memory_allocated),
the value, and time / volqa's time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

# measure the volqa of this checkout (also in the per-implementation subprocesses)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMPLS = ["volqa", "pytorch_msssim", "skimage", "monai", "torchmetrics"]
LOSS_IMPLS = ["volqa", "pytorch_msssim", "monai"]
MS_IMPLS = ["volqa", "pytorch_msssim", "monai"]  # 3-D MS-SSIM, Gaussian 11, Wang's 5 weights
MS_MIN_SIZE = 161  # (11 - 1) * 2**4 + 1: five scales of an 11-voxel window


def make_pair(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random volume in [0, 1] and a noisy copy (float32), deterministic."""
    g = torch.Generator().manual_seed(n)
    x = torch.rand(1, 1, n, n, n, generator=g)
    k = torch.ones(1, 1, 5, 5, 5) / 125
    x = torch.nn.functional.conv3d(x, k, padding=2)[0, 0]
    x = (x - x.min()) / (x.max() - x.min())
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x.numpy(), y.numpy()


def ssim_fn(name: str, device: str, max_memory: int | None = None):
    """A function f(x, y) -> float of already-placed inputs, or None if not installed."""
    try:
        if name == "volqa":
            import volqa

            return lambda x, y: float(volqa.ssim(x, y, data_range=1.0, max_memory=max_memory))
        if name == "pytorch_msssim":
            import pytorch_msssim

            return lambda x, y: float(
                pytorch_msssim.ssim(x[None, None], y[None, None], data_range=1.0, win_size=11))
        if name == "skimage":
            if device != "cpu":
                return None
            from skimage.metrics import structural_similarity

            return lambda x, y: float(structural_similarity(
                x.numpy(), y.numpy(), gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1.0))
        if name == "monai":
            from monai.metrics import SSIMMetric

            metric = SSIMMetric(spatial_dims=3, data_range=1.0)
            return lambda x, y: float(metric(x[None, None], y[None, None]).mean())
        if name == "torchmetrics":
            from torchmetrics.functional.image import structural_similarity_index_measure as tm

            return lambda x, y: float(tm(x[None, None], y[None, None], data_range=1.0))
    except ImportError:
        return None
    raise ValueError(name)


def ms_ssim_fn(name: str, max_memory: int | None = None):
    """3-D MS-SSIM f(x, y) -> float (5 scales, Wang et al. 2003), or None if not installed.
    At 2^k sizes every tool pools the same voxels, so the values agree."""
    try:
        if name == "volqa":
            import volqa

            return lambda x, y: float(volqa.ms_ssim(x, y, data_range=1.0,
                                                    max_memory=max_memory))
        if name == "pytorch_msssim":
            import pytorch_msssim

            return lambda x, y: float(pytorch_msssim.ms_ssim(
                x[None, None], y[None, None], data_range=1.0, win_size=11))
        if name == "monai":
            from monai.metrics import MultiScaleSSIMMetric

            metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=11)
            return lambda x, y: float(metric(x[None, None], y[None, None]).mean())
    except ImportError:
        return None
    return None


def loss_fn(name: str):
    """A function f(x, y) that runs forward and backward of 1 - SSIM w.r.t. x."""
    try:
        if name == "volqa":
            import volqa

            loss = volqa.SSIMLoss(3, data_range=1.0)
        elif name == "pytorch_msssim":
            import pytorch_msssim

            loss = lambda a, b: 1 - pytorch_msssim.ssim(a, b, data_range=1.0, win_size=11)  # noqa: E731
        elif name == "monai":
            from monai.losses import SSIMLoss

            loss = SSIMLoss(spatial_dims=3, data_range=1.0)
        else:
            raise ValueError(name)
    except ImportError:
        return None

    def run(x, y):
        a = x[None, None].clone().requires_grad_()
        value = loss(a, y[None, None])
        value.backward()
        return float(value.detach())

    return run


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def measure(name: str, n: int, device: str, repeat: int, loss: bool,
            max_memory: int | None, ms: bool = False) -> dict:
    """Time one implementation on the n^3 pair; returns seconds, peak extra bytes, value."""
    if ms:
        fn = ms_ssim_fn(name, max_memory)
    else:
        fn = loss_fn(name) if loss else ssim_fn(name, device, max_memory)
    if fn is None:
        return {"name": name, "skipped": "not installed / not on this device"}
    xs, ys = make_pair(n)
    x, y = torch.from_numpy(xs).to(device), torch.from_numpy(ys).to(device)
    del xs, ys
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # pytorch-msssim/MONAI use convolutions
        torch.backends.cudnn.allow_tf32 = False
        fn(x, y)  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        if name == "volqa" and os.environ.get("VOLQA_COMPILE") == "1":
            fn(x, y)  # the one-time compile is for the full-size slabs
        else:
            # a tiny warm-up: a larger one would leave freed buffers in the process that the
            # timed run reuses, hiding its peak memory (MS-SSIM: MONAI's minimum, 11 * 16)
            w = min(n, 176 if ms else 16)
            fn(x[:w, :w, :w].contiguous(), y[:w, :w, :w].contiguous())
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        base = _rss("VmRSS")
    times, value = [], None
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn(x, y)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if sum(times) > 20:
            break
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss("VmHWM")) - base
    if name == "volqa" and os.environ.get("VOLQA_COMPILE") == "1":
        name = "volqa compiled"
    return {"name": name, "seconds": statistics.median(times), "peak_bytes": peak,
            "value": value}


def run_isolated(name, n, device, repeat, loss, max_memory, ms=False) -> dict:
    """Run ``measure`` in fresh interpreters: the time with the default allocator, the peak
    memory in a second run with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB, so that
    freed buffers go back to the system and VmHWM is the peak of live memory (with the default
    the heap's fragmentation adds 0 to 100 MiB at random)."""
    def child(repeat: int, env: dict[str, str]) -> dict:
        cmd = [sys.executable, __file__, "--child", json.dumps(
            [name, n, device, repeat, loss, max_memory, ms])]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        if out.returncode != 0:
            return {"name": name, "skipped": f"failed: {out.stderr.strip().splitlines()[-1:]}"}
        return json.loads(out.stdout.strip().splitlines()[-1])

    row = child(repeat, {})
    if "skipped" not in row:
        row["peak_bytes"] = child(1, {"MALLOC_MMAP_THRESHOLD_": "65536"})["peak_bytes"]
    return row


def report(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'implementation':<16}{'seconds':>11}{'peak extra MiB':>16}{'value':>12}"
          f"{'x volqa time':>14}")
    ref = next((r["seconds"] for r in rows if r["name"].startswith("volqa") and "seconds" in r),
               None)
    for r in rows:
        if "skipped" in r:
            print(f"{r['name']:<16}  skipped: {r['skipped']}")
            continue
        ratio = f"{r['seconds'] / ref:.1f}" if ref else "-"
        print(f"{r['name']:<16}{r['seconds']:>11.4f}{r['peak_bytes'] / 2**20:>16.0f}"
              f"{r['value']:>12.6f}{ratio:>14}")


def check_512(device: str, budget: int | None) -> None:
    """512^3 under a byte budget, and chunked == unchunked on a 512x512x40 crop."""
    import volqa
    from volqa.engine import default_max_memory

    row = run_isolated("volqa", 512, device, 1, False, budget) if device == "cpu" else \
        measure("volqa", 512, device, 1, False, budget)
    budget = budget or default_max_memory(device)
    report(f"512^3 with max_memory = {budget / 2**20:.0f} MiB", [row])
    x, y = make_pair(512)
    xs, ys = torch.from_numpy(x[:, :, :40].copy()), torch.from_numpy(y[:, :, :40].copy())
    del x, y
    a, ma = volqa.ssim(xs, ys, data_range=1.0, max_memory=2**40, return_map=True)
    b, mb = volqa.ssim(xs, ys, data_range=1.0, max_memory=4 << 20, return_map=True)  # tiled
    print(f"crop 512x512x40: one pass {float(a):.9f}, 4 MiB tiles {float(b):.9f}, "
          f"|diff| {abs(float(a) - float(b)):.1e}, maps identical: {torch.equal(ma, mb)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, nargs="*", default=[128, 256],
                   help="cube sizes; 512 adds the memory-budget check")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--impls", nargs="*", default=IMPLS)
    p.add_argument("--loss", action="store_true", help="also time loss forward+backward")
    p.add_argument("--ms-ssim", action="store_true",
                   help=f"also time 3-D MS-SSIM (sizes >= {MS_MIN_SIZE}) against "
                   "pytorch-msssim and MONAI")
    p.add_argument("--budget", type=int, default=None,
                   help="max_memory for the 512^3 check (default: the engine's default)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(*json.loads(a.child))))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {a.device}"
          + (f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else ""))
    run = run_isolated if a.device == "cpu" else measure
    for n in [s for s in a.size if s != 512]:
        rows = [run(name, n, a.device, a.repeat, False, None) for name in a.impls]
        report(f"SSIM of one {n}^3 float32 pair", rows)
        if a.loss:
            rows = [run(name, n, a.device, a.repeat, True, None)
                    for name in LOSS_IMPLS if name in a.impls]
            report(f"loss forward+backward, {n}^3", rows)
        if a.ms_ssim and n >= MS_MIN_SIZE:
            rows = [run(name, n, a.device, a.repeat, False, None, True)
                    for name in MS_IMPLS if name in a.impls or name == "volqa"]
            report(f"MS-SSIM (5 scales, Gaussian 11) of one {n}^3 float32 pair", rows)
        elif a.ms_ssim:
            print(f"\nMS-SSIM skipped at {n}^3: five scales of an 11-voxel window need "
                  f"{MS_MIN_SIZE} voxels per axis")
    if 512 in a.size:
        check_512(a.device, a.budget)


if __name__ == "__main__":
    main()
