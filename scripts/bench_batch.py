#!/usr/bin/env python
"""Benchmark a batch: where one row's time goes, and how close ``volqa score`` gets to the
rate at which the same files can merely be read, per executor, for 1 and 2 workers.

    python scripts/bench_batch.py                        # 8 pairs of 256^3 .nii.gz
    python scripts/bench_batch.py --pairs 16 --size 128 --methods 3
    python scripts/bench_batch.py --workers 1,2,4 --executors threads,processes
    python scripts/bench_batch.py --device cuda --skip threads --workers 1,2,4   # SSIM on a GPU

1. One row (the first pair), stage by stage, median of --repeat runs: read (reference and
   test), geometry check, normalisation, the CPU metrics (PSNR, NRMSE, MAE, MSE), SSIM, the
   journal record (fsync), and the whole ``score_pair``; wall and CPU seconds (CPU time is
   less disturbed by other load), and the share of the row beyond reading and SSIM.
2. The batch: K pairs (``--pairs`` subjects x ``--methods`` tests per reference), read only
   (a pool of W processes each reading whole pairs: the same files, the same parallelism)
   against ``volqa.score_manifest`` with each executor and W workers (threads: W read-ahead
   threads; processes: W worker processes; dask: ``local:W``), as pairs/s and as a ratio to
   the read rate. The rate is the marginal one, (K - 1) / (T_K - T_1) with T_1 the time of a
   one-row run, so the start-up a long batch pays once (worker processes, a Dask cluster) is
   left out; the one-row times are printed too.
3. Torch threads: the default against every other setting for the threads executor (W = 2
   read-ahead threads) and the processes executor (W = 2 jobs); the default should be within
   10 % of the best.

The data is generated once into --data (smooth phantom plus noise, gzip level 1 as nibabel
writes it) and reused. Run it on an otherwise idle machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# ----------------------------------------------------------------------------- data

def make_data(root: Path, size: int, pairs: int, methods: int) -> Path:
    """``pairs`` references, ``methods`` noisy tests of each, and their manifest."""
    import nibabel as nib

    manifest = root / "manifest.csv"
    if manifest.exists():
        return manifest
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    i, j, k = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    rows = []
    for s in range(pairs):
        ref = 800 * np.exp(-3 * (i * i + j * j + k * k)) + 100 * i + 200
        ref = (ref + rng.normal(0, 5, ref.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(ref, np.eye(4)), str(root / f"ref{s}.nii.gz"))
        for m in range(methods):
            test = (ref + rng.normal(0, 20 * (m + 1), ref.shape)).astype(np.float32)
            nib.save(nib.Nifti1Image(test, np.eye(4)), str(root / f"s{s}_m{m}.nii.gz"))
            rows.append({"subject_id": f"sub-{s:03d}", "reference": f"ref{s}.nii.gz",
                         "test": f"s{s}_m{m}.nii.gz", "method": f"m{m}"})
        print(f"  wrote subject {s + 1}/{pairs}", file=sys.stderr, flush=True)
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


# ----------------------------------------------------------------------------- one row

def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of ``fn()`` over ``repeat`` runs (after one warm-up)."""
    out = fn()
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def breakdown(manifest: Path, repeat: int, device: str) -> None:
    import tempfile

    import torch

    import volqa
    from volqa.io import read_volume
    from volqa.io.journal import Journal
    from volqa.io.manifest import read_manifest
    from volqa.pipeline.context import PairContext
    from volqa.pipeline.geometry import align_to_reference
    from volqa.pipeline.normalize import normalize
    from volqa.schema import METRICS
    from volqa.settings import Settings

    row = read_manifest(manifest).rows[0]
    settings = Settings().for_manifest(False)
    cpu_metrics = [METRICS[m] for m in settings.metrics if not METRICS[m].engine]
    ssim_metrics = [METRICS[m] for m in settings.metrics if METRICS[m].engine]
    torch.set_num_threads(1)  # one row of a batch whose workers share the cores
    stages = {}
    stages["read"] = timed(lambda: (read_volume(row.reference), read_volume(row.test)), repeat)
    ref, test = stages["read"][2]
    stages["geometry"] = timed(lambda: align_to_reference(ref, test), repeat)
    stages["normalise"] = timed(lambda: normalize(ref.array, test.array, settings), repeat)
    norm = stages["normalise"][2]
    stages["CPU metrics"] = timed(lambda: PairContext(
        norm.reference, norm.test, None, norm.data_range, settings).compute(cpu_metrics), repeat)
    stages["SSIM"] = timed(lambda: PairContext(
        norm.reference, norm.test, None, norm.data_range, settings, device=device
    ).compute(ssim_metrics), repeat)
    fields = volqa.score_pair(row.reference, row.test, device=device)
    with tempfile.TemporaryDirectory() as tmp, Journal(Path(tmp) / "j.jsonl") as journal:
        record = {"key": "k" * 24, "index": 0, "fields": fields}
        stages["journal"] = timed(lambda: journal.append(record), repeat)
    stages["score_pair"] = timed(
        lambda: volqa.score_pair(row.reference, row.test, device=device), repeat)
    total = stages["score_pair"]
    print(f"\nOne row, {'x'.join(map(str, ref.shape))}, 1 torch thread (median of {repeat}):")
    print(f"{'stage':<14}{'wall s':>9}{'CPU s':>9}{'% of row':>10}")
    for name, (wall, cpu, _) in stages.items():
        print(f"{name:<14}{wall:9.3f}{cpu:9.3f}{100 * wall / total[0]:9.1f}%")
    parts = [name for name in stages if name != "score_pair"]
    extra = [name for name in parts if name not in ("read", "SSIM")]
    for k, unit in ((0, "wall"), (1, "CPU")):
        rest = sum(stages[name][k] for name in extra)
        whole = sum(stages[name][k] for name in parts)
        print(f"beyond reading and SSIM ({', '.join(extra)}): {rest:.3f} s {unit}, "
              f"{100 * rest / whole:.1f} % of the stages' sum; score_pair - the stages: "
              f"{total[k] - whole:+.3f} s")


# ----------------------------------------------------------------------------- the batch

def _read_pair(paths: tuple[str, str]) -> int:
    from volqa.io import read_volume

    return sum(read_volume(p).array.size for p in paths)


def _warm(_: int) -> int:
    import volqa.io  # noqa: F401 - imports nibabel/SimpleITK before the clock starts

    return 0


def read_rate(manifest: Path, workers: int) -> float:
    """Pairs/s of reading every pair's files in a pool of ``workers`` processes."""
    from volqa.io.manifest import read_manifest

    pairs = [(r.reference, r.test) for r in read_manifest(manifest).rows]
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
        list(pool.map(_warm, range(workers)))
        start = time.perf_counter()
        list(pool.map(_read_pair, pairs))
        return len(pairs) / (time.perf_counter() - start)


def run_seconds(manifest: Path, **options) -> float:
    import volqa

    start = time.perf_counter()
    frame = volqa.score_manifest(manifest, **options)
    elapsed = time.perf_counter() - start
    if (frame["status"] != "ok").any():
        raise SystemExit(f"rows failed: {frame['error'].dropna().tolist()[:3]}")
    return elapsed


def first_rows(manifest: Path, n: int) -> Path:
    """A manifest of the first ``n`` rows (absolute paths), beside the data."""
    lines = manifest.read_text().splitlines()
    out = manifest.with_name(f"first{n}.csv")
    out.write_text("\n".join(lines[: n + 1]) + "\n")
    return out


def score_rate(manifest: Path, **options) -> tuple[float, float]:
    """(pairs/s once running, seconds of a one-row run): the marginal rate (K - 1) / (T_K -
    T_1) leaves out the start-up (processes, a Dask cluster) that a long batch pays once. An
    untimed one-row run first pays what this process does once (imports, and with
    ``VOLQA_COMPILE=1`` the compile), which would otherwise fall in T_1 alone."""
    rows = sum(1 for _ in open(manifest)) - 1
    run_seconds(first_rows(manifest, 1), **options)
    one = run_seconds(first_rows(manifest, 1), **options)
    return (rows - 1) / max(1e-9, run_seconds(manifest, **options) - one), one


def executor_options(executor: str, workers: int) -> dict:
    if executor == "threads":
        return {"executor": "threads", "workers": workers}
    if executor == "processes":
        return {"executor": "processes", "jobs": workers}
    return {"executor": "dask", "scheduler": f"local:{workers}"}


def batch(manifest: Path, workers: list[int], executors: list[str], device: str) -> None:
    import volqa

    volqa.score_manifest(first_rows(manifest, 1), executor="processes", jobs=1)  # fork server
    rows = sum(1 for _ in open(manifest)) - 1
    print(f"\nBatch of {rows} pairs; pairs/s once running, (K - 1) / (T_K - T_1), and the "
          f"ratio to the read rate; load {load()}:")
    print(f"{'workers':<9}{'read only':>11}" + "".join(f"{e:>20}" for e in executors))
    firsts = {}
    for w in workers:
        read = read_rate(manifest, w)
        cells = []
        for e in executors:
            rate, firsts[e, w] = score_rate(manifest, device=device, **executor_options(e, w))
            cells.append(f"{rate:.2f} ({rate / read:.2f})")
        print(f"{w:<9}{read:11.2f}" + "".join(f"{c:>20}" for c in cells))
    print("a one-row run (start-up and one row), s: " + ", ".join(
        f"{e} {w}: {t:.1f}" for (e, w), t in firsts.items()))


def threads(manifest: Path, device: str) -> None:
    from volqa.execution import Execution, usable_cores

    cores = usable_cores()
    print(f"\nTorch threads ({cores} cores), pairs/s once running; the default marked *, load "
          f"{load()}:")
    for label, options, workers in (("threads, 2 read-ahead", {"workers": 2}, 3),
                                    ("processes, 2 jobs", {"executor": "processes",
                                                           "jobs": 2}, 2)):
        default = Execution().torch_threads(workers, cores)
        rates = {t: score_rate(manifest, threads=t, device=device, **options)[0]
                 for t in range(1, cores + 1)}
        best = max(rates.values())
        cells = ", ".join(f"{t}{'*' if t == default else ''}: {r:.2f}" for t, r in rates.items())
        print(f"  {label:<22} {cells}; default / best = {rates[default] / best:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=8, help="references (subjects)")
    parser.add_argument("--methods", type=int, default=1, help="tests per reference")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--executors", default="threads,processes,dask")
    parser.add_argument("--skip", default="", help="comma-separated: breakdown,batch,threads")
    parser.add_argument("--device", default="cpu", help="where SSIM runs: cpu, cuda")
    args = parser.parse_args()
    data = args.data or Path(f"/tmp/volqa-bench-{args.size}-{args.pairs}x{args.methods}")
    import torch

    print(f"volqa batch benchmark: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"SSIM on {args.device}, load {load()}")
    manifest = make_data(data, args.size, args.pairs, args.methods)
    skip = set(args.skip.split(","))
    if "breakdown" not in skip:
        breakdown(manifest, args.repeat, args.device)
    if "batch" not in skip:
        batch(manifest, [int(w) for w in args.workers.split(",")], args.executors.split(","),
              args.device)
    if "threads" not in skip:
        threads(manifest, args.device)
    print(f"\nload at the end {load()}")


if __name__ == "__main__":
    main()
