#!/usr/bin/env python
"""How long ``volqa compare`` takes on a large study, against the loops it replaces.

    python scripts/bench_compare.py                      # 10,000 subjects x 5 methods
    python scripts/bench_compare.py --subjects 2000 --methods 3 --n-boot 2000

Writes a synthetic result table (``--subjects`` x ``--methods`` rows, the five default
metrics, volqa's own table writer) into a temporary folder and times, in one run:

1. ``volqa.analysis.compare`` on it: descriptives with BCa intervals of every method x metric,
   every pair of methods (mean and median differences with BCa intervals, Wilcoxon, Holm),
   the three rankings with ``--n-boot`` bootstrap replicates each: everything the command
   computes, tables loaded from Parquet included;
2. a naive per-replicate loop computing the same bootstrap statistics one replicate at a time
   (numpy means and medians, scipy ``rankdata`` and one-sided ``wilcoxon`` per pair), timed
   on ``--naive-replicates`` replicates and scaled to ``--n-boot``;
3. ``scipy.stats.bootstrap(method="BCa", vectorized=True)`` for one interval, times the number
   of intervals compare computes (it has no rankings; its BCa jackknife is O(n²)).

Numbers depend on the machine and its load: run it on a quiet machine (``uptime``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METRICS = ("ssim", "psnr", "nrmse", "mae", "mse")


def write_table(folder: Path, n: int, m: int, seed: int) -> Path:
    """A results.parquet of ``n`` subjects x ``m`` methods, as volqa score writes it."""
    from volqa import __version__
    from volqa.io.tables import build_table, write_tables
    from volqa.schema import output_columns
    from volqa.settings import Settings

    rng = np.random.default_rng(seed)
    settings = Settings.from_options(metrics=",".join(METRICS))
    columns = output_columns({"subject_id": "string", "reference": "string", "test": "string",
                              "method": "string"}, METRICS)
    base = rng.normal(0.7, 0.05, n)
    rows = []
    for k in range(m):
        ssim = base + 0.002 * k + rng.normal(0, 0.01, n)
        for i in range(n):
            s = float(ssim[i])
            rows.append({"subject_id": f"sub-{i:05d}", "reference": f"gt/{i}.nii.gz",
                         "test": f"m{k}/{i}.nii.gz", "method": f"method{k}", "status": "ok",
                         "ssim": s, "psnr": 20 + 10 * s, "nrmse": 0.2 - 0.1 * s,
                         "mae": 0.1 - 0.05 * s, "mse": (0.1 - 0.05 * s) ** 2,
                         "volqa_version": __version__, **settings.columns()})
    table = build_table(rows, columns, {"settings": settings.as_dict()})
    return write_tables(table, folder)[1]


def naive_replicates(values: np.ndarray, replicates: int, seed: int) -> float:
    """Seconds for ``replicates`` bootstrap replicates computed one at a time.

    ``values``: (metrics, n, m). Per replicate and metric: the mean of each method, the mean
    and median of each pair's differences, the three rankings (per-subject ranks, one-sided
    Wilcoxon per ordered pair)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    n, m = values.shape[1], values.shape[2]
    t0 = time.perf_counter()
    for _ in range(replicates):
        index = rng.integers(0, n, n)
        for v in values:
            sample = v[index]
            means = sample.mean(axis=0)
            for a, b in combinations(range(m), 2):
                d = sample[:, a] - sample[:, b]
                d.mean(), np.median(d)
            stats.rankdata(-means, method="min")
            stats.rankdata(stats.rankdata(-sample, method="min", axis=1).mean(axis=0))
            wins = np.zeros(m)
            for a in range(m):
                for b in range(m):
                    if a != b:
                        p = stats.wilcoxon(sample[:, a], sample[:, b], alternative="greater",
                                           method="asymptotic", correction=True).pvalue
                        wins[a] += p <= 0.05
            stats.rankdata(-wins, method="min")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--methods", type=int, default=5)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--naive-replicates", type=int, default=5)
    args = parser.parse_args(argv)

    import pandas as pd
    from scipy import stats

    from volqa.analysis import compare

    n, m, n_boot = args.subjects, args.methods, args.n_boot
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = write_table(Path(tmp), n, m, seed=0)
        print(f"wrote {n} subjects x {m} methods x {len(METRICS)} metrics "
              f"({time.perf_counter() - t0:.1f} s)")
        compare([path], by="method", n_boot=100)  # warm-up: imports, first-call overheads
        t0 = time.perf_counter()
        result = compare([path], by="method", n_boot=n_boot)
        t_volqa = time.perf_counter() - t0
        frame = pd.read_parquet(path)

    values = np.stack([frame.pivot(index="subject_id", columns="method", values=metric)
                       .to_numpy() for metric in METRICS])
    k = args.naive_replicates
    t_naive = naive_replicates(values, k, seed=1) * n_boot / k
    intervals = len(result.summary) + 2 * len(result.pairwise)
    t0 = time.perf_counter()
    stats.bootstrap((values[0, :, 0],), np.mean, n_resamples=n_boot, method="BCa",
                    vectorized=True, batch=max(1, (1 << 22) // n), rng=np.random.default_rng(0))
    t_scipy = (time.perf_counter() - t0) * intervals

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"n_boot {n_boot}; {len(result.summary)} descriptive cells, {len(result.pairwise)} "
          f"pairs of methods, {len(result.ranking) // m} rankings (metrics x 3 schemes); "
          f"{os.cpu_count()} CPUs, load average {load:.2f}")
    print(f"{'':52}{'seconds':>10}{'x volqa':>10}")
    print(f"{'volqa compare (everything, from Parquet)':52}{t_volqa:>10.1f}{1:>10.1f}")
    print(f"{f'naive per-replicate loop ({k} timed, scaled)':52}{t_naive:>10.1f}"
          f"{t_naive / t_volqa:>10.1f}")
    print(f"{f'scipy.stats.bootstrap BCa x {intervals} intervals (no ranks)':52}"
          f"{t_scipy:>10.1f}{t_scipy / t_volqa:>10.1f}")


if __name__ == "__main__":
    main()
