"""The read cache: a reference listed for several rows is read once, within a byte budget,
by one thread at a time; a changed file is read again; errors are not kept."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pipeline_data import make_study, phantom, write_nii

import volqa
import volqa.io.readers as readers
from volqa.errors import InputError
from volqa.io.volume import Volume
from volqa.pipeline.cache import ReadCache


@pytest.fixture
def counted_reads(monkeypatch) -> Counter:
    reads: Counter = Counter()
    real = readers.read_volume

    def counting(path, **kwargs):
        reads[Path(os.fspath(path)).name] += 1
        return real(path, **kwargs)

    monkeypatch.setattr(readers, "read_volume", counting)
    return reads


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shared_reference_is_read_once(tmp_path, counted_reads, workers) -> None:
    manifest = make_study(tmp_path)
    got = volqa.score_manifest(manifest, workers=workers)
    assert counted_reads["ref0.nii.gz"] == 1 and counted_reads["ref1.nii.gz"] == 1
    assert all(counted_reads[f"s{s}_m{m}.nii.gz"] == 1 for s in range(2) for m in range(3))
    for row in got.itertuples():  # the same numbers as each pair scored alone
        alone = volqa.score_pair(tmp_path / row.reference, tmp_path / row.test)
        assert row.ssim == alone["ssim"] and row.psnr == alone["psnr"]


def _volume(n: int = 8, source: str = "v") -> Volume:
    return Volume(np.zeros((n, n, n), np.float32), np.eye(4), source)


def test_budget_keeps_the_most_recent_volumes(tmp_path) -> None:
    size = _volume().array.nbytes
    cache = ReadCache(max_bytes=2 * size)
    paths = []
    for name in "abc":
        paths.append(tmp_path / name)
        paths[-1].write_bytes(b"x")
    reads = Counter()

    def read(name):
        def inner():
            reads[name] += 1
            return _volume(source=name)
        return inner

    for p in paths:  # a, b, c: a is dropped to keep the budget
        cache.get(p, read(p.name))
    assert len(cache) == 2
    cache.get(paths[2], read("c"))
    cache.get(paths[0], read("a"))
    assert reads == Counter(a=2, b=1, c=1) and cache.hits == 1
    tiny = ReadCache(max_bytes=size - 1)  # a volume over the budget is not kept
    tiny.get(paths[0], read("a"))
    assert len(tiny) == 0


def test_a_changed_file_is_read_again_and_arrays_are_read_only(tmp_path) -> None:
    path = write_nii(tmp_path / "r.nii.gz", phantom(0))
    cache = ReadCache()
    first = cache.get(path, lambda: readers.read_volume(path))
    assert cache.get(path, lambda: readers.read_volume(path)) is first
    with pytest.raises(ValueError, match="read-only"):
        first.array[0, 0, 0] = 1.0
    write_nii(path, phantom(1))
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock
    again = cache.get(path, lambda: readers.read_volume(path))
    assert again is not first and not np.array_equal(again.array, first.array)


def test_errors_are_not_kept(tmp_path) -> None:
    path = tmp_path / "r.nii.gz"
    path.write_bytes(b"")
    cache = ReadCache()
    with pytest.raises(InputError, match="empty"):
        cache.get(path, lambda: readers.read_volume(path))
    write_nii(path, phantom(0))
    assert cache.get(path, lambda: readers.read_volume(path)).shape == phantom(0).shape


def test_threads_asking_for_one_file_wait_for_one_read(tmp_path) -> None:
    path = tmp_path / "r"
    path.write_bytes(b"x")
    cache = ReadCache()
    started, release = threading.Event(), threading.Event()
    reads = []

    def slow_read():
        reads.append(1)
        started.set()
        release.wait(10)
        return _volume()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(path, slow_read)))
               for _ in range(4)]
    threads[0].start()
    started.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert len(reads) == 1 and len(got) == 4 and all(v is got[0] for v in got)
    assert cache.reads == 1 and cache.hits == 3


def test_normalize_none_on_a_cached_reference_equals_uncached(tmp_path) -> None:
    """With --normalize none the normalised reference is the cached (read-only) array."""
    manifest = make_study(tmp_path, subjects=1, methods=2)
    cached = volqa.score_manifest(manifest, normalize="none", workers=1)
    alone = [volqa.score_pair(tmp_path / r, tmp_path / t, normalize="none")
             for r, t in zip(cached["reference"], cached["test"], strict=True)]
    assert cached["ssim"].tolist() == [a["ssim"] for a in alone]
    assert isinstance(cached, pd.DataFrame)
