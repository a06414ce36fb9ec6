#!/usr/bin/env python
"""What ``--resume``'s content check costs, next to scoring the row, in one run.

For one reference/test pair (``.nii.gz``, gzip level 1 as most tools write, and ``.nii``), on
files in the page cache, it times:

- ``stat``: path, size and modification time (volqa before issue 9: blind to ``cp -p``);
- ``sampled``: SHA-256 of the first and last MiB and 64 blocks of 64 KiB spread over the file
  (the cheap alternative, blind to a change between the blocks);
- ``full``: SHA-256 of every byte, volqa's fingerprint (:func:`volqa.pipeline.resume.fingerprint`);
- ``score``: :func:`volqa.score_pair` of the pair with default settings on the CPU (reading,
  normalising, SSIM, the error metrics).

and prints each as seconds per row and as a fraction of ``score``. On a cold cache the hash
reads the file from disk once, and the scoring read that follows comes from the cache.

    python scripts/bench_fingerprint.py                 # 128^3 and 256^3
    python scripts/bench_fingerprint.py --size 512      # adds 512^3 (2 x 512 MiB on disk as .nii)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import volqa  # noqa: E402
from volqa.pipeline.resume import fingerprint  # noqa: E402


def make_pair(n: int, folder: Path, ext: str) -> tuple[Path, Path]:
    """A smooth volume and a noisy copy, float32, as ``.nii`` or ``.nii.gz`` (level 1)."""
    rng = np.random.default_rng(n)
    axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32)] * 3, indexing="ij",
                       sparse=True)
    ref = np.exp(-2.5 * (axes[0] ** 2 + axes[1] ** 2 + axes[2] ** 2)).astype(np.float32)
    test = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32)
    paths = []
    for name, data in (("ref", ref), ("test", test)):
        path = folder / f"{name}{n}{ext}"
        raw = nib.Nifti1Image(data, np.eye(4) * [1, 1, 1, 1] + np.diag([0, 0, 0.5, 0]))
        if ext == ".nii.gz":
            import gzip

            path.write_bytes(gzip.compress(raw.to_bytes(), compresslevel=1))
        else:
            nib.save(raw, str(path))
        paths.append(path)
    return paths[0], paths[1]


def sampled(path: Path, block: int = 1 << 16, count: int = 64, end: int = 1 << 20) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(end))
        for k in range(count):
            fh.seek(max(0, (size - block) * k // max(1, count - 1)))
            h.update(fh.read(block))
        fh.seek(max(0, size - end))
        h.update(fh.read(end))
    return h.hexdigest()


def timed(fn, repeat: int) -> float:
    fn()  # warm-up (and page cache)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="edge length (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = args.size or [128, 256]
    print(f"{'pair':<16}{'MiB on disk':>12}{'stat s':>10}{'sampled s':>11}{'full s':>9}"
          f"{'score s':>9}{'full/score':>12}{'sampled/score':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for ext in (".nii.gz", ".nii"):
                ref, test = make_pair(n, Path(tmp), ext)
                mib = (ref.stat().st_size + test.stat().st_size) / 2**20
                t_stat = timed(lambda: [os.stat(p) for p in (ref, test)], args.repeat)
                t_sampled = timed(lambda: [sampled(p) for p in (ref, test)], args.repeat)
                t_full = timed(lambda: [fingerprint(str(p)) for p in (ref, test)], args.repeat)
                t_score = timed(lambda: volqa.score_pair(ref, test, device="cpu"),
                                max(1, args.repeat // 2))
                print(f"{f'{n}^3 {ext}':<16}{mib:>12.1f}{t_stat:>10.2g}{t_sampled:>11.3f}"
                      f"{t_full:>9.3f}{t_score:>9.3f}{t_full / t_score:>12.1%}"
                      f"{t_sampled / t_score:>15.1%}")
                for p in (ref, test):
                    p.unlink()


if __name__ == "__main__":
    main()
