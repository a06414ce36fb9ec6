"""One file must not take a batch down (issue 9, class 1): volumes whose headers declare more
than ``--max-volume-memory`` fail their row before any voxel is read, read-ahead is bounded by
a memory budget, and a row that kills the process (the out-of-memory killer, or anything
that sends SIGKILL) is recorded as failed after two kills instead of killing every resume.
The memory cases use headers that declare huge sizes, not huge files."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_data import make_batch, write_huge_dicom, write_huge_nii

import volqa
import volqa.io.nifti
import volqa.pipeline.memory as memory
from volqa.errors import InputError
from volqa.execution import Execution
from volqa.io import read_volume
from volqa.io.journal import read_journal
from volqa.io.readers import volume_shape
from volqa.pipeline import RowScorer

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


# ----------------------------------------------------------------------- header estimates


def test_a_nifti_declaring_4_gib_is_refused_without_decompressing(tmp_path, monkeypatch):
    path = write_huge_nii(tmp_path / "bomb.nii.gz", (1024, 1024, 1024))
    assert path.stat().st_size < 10_000
    assert volume_shape(path) == (1024, 1024, 1024)

    def no_full_read(*args, **kwargs):
        raise AssertionError("the whole stream was decompressed")

    monkeypatch.setattr(volqa.io.nifti.gzip, "decompress", no_full_read)
    with pytest.raises(InputError, match=r"bomb\.nii\.gz': the header declares 1024x1024x1024 "
                                         r"voxels: 4 GiB as float32 in memory, more than the "
                                         r"limit of 1 GiB per volume \(--max-volume-memory\)"):
        read_volume(path, max_bytes=GIB)


def test_a_2_5_kb_dicom_declaring_4096x4096x200_is_refused(tmp_path) -> None:
    path = write_huge_dicom(tmp_path / "frames.dcm")
    assert path.stat().st_size < 3000
    assert volume_shape(path) == (4096, 4096, 200)
    with pytest.raises(InputError, match=r"declares 4096x4096x200 voxels: 12\.5 GiB"):
        read_volume(path, max_bytes=GIB)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_headers_are_checked_before_reading(tmp_path, suffix) -> None:
    import SimpleITK as sitk

    path = tmp_path / f"v{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30, 40), np.float32)), str(path))
    assert volume_shape(path) == (40, 30, 20)
    with pytest.raises(InputError, match=r"declares 40x30x20 voxels: 93\.75 KiB"):
        read_volume(path, max_bytes=90 * 1024)
    assert read_volume(path, max_bytes=96 * 1024).shape == (40, 30, 20)


def test_a_dicom_series_is_estimated_from_one_file_times_the_files(tmp_path) -> None:
    from pipeline_data import UID_ROOT, save_dicom_series

    folder = tmp_path / "series"
    save_dicom_series(folder, np.zeros((20, 18, 16), np.int16), uid=f"{UID_ROOT}.77",
                      description="s")
    assert volume_shape(folder) == (20, 18, 16)
    with pytest.raises(InputError, match=r"the series declares 20x18x16 voxels"):
        read_volume(folder, max_bytes=20 * 18 * 16 * 4 - 1)


def test_a_huge_row_fails_alone_and_the_batch_goes_on(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=3)
    write_huge_nii(tmp_path / "data/s1_test.nii.gz", (32767, 32767, 32767))  # 128 TiB
    df = volqa.score_manifest(manifest, out=tmp_path / "o")  # the default limit
    assert df["status"].tolist() == ["ok", "error", "ok"]
    assert "the header declares 32767x32767x32767 voxels: 128 TiB" in df.loc[1, "error"]


# ----------------------------------------------------------------------- the default limit


def test_usable_memory_takes_the_smallest_limit(tmp_path, monkeypatch) -> None:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (str(v2), str(v1)))
    v2.write_text("max\n")  # cgroup v2 without a limit
    v1.write_text(f"{2**63 - 4096}\n")  # cgroup v1 without a limit
    assert memory.usable_memory() == min(physical, resource.getrlimit(resource.RLIMIT_AS)[0]
                                         if resource.getrlimit(resource.RLIMIT_AS)[0] > 0
                                         else physical)
    v2.write_text(f"{6 * GIB}\n")  # a 6 GiB container / Slurm job
    assert memory.usable_memory() == min(physical, 6 * GIB)
    assert memory.volume_limit(Execution()) == min(physical, 6 * GIB) // 8
    assert memory.volume_limit(Execution(max_volume_memory="300M")) == 300 * 2**20
    assert memory.read_ahead_budget(Execution(max_volume_memory="300M")) == 1200 * 2**20


@pytest.mark.slow
def test_usable_memory_sees_an_address_space_limit() -> None:
    """``ulimit -v 3G`` in a real process."""
    code = "from volqa.pipeline.memory import usable_memory; print(usable_memory())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 * GIB, 3 * GIB)))
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert int(out.stdout) == min(3 * GIB, physical)


# ----------------------------------------------------------------------- read-ahead


class InFlight(RowScorer):
    """Records how many rows are being prepared or waiting at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def prepare(self, job, settings, cache=None):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        try:
            return super().prepare(job, settings, cache)
        finally:
            with self.lock:
                self.active -= 1


@pytest.mark.parametrize(("limit", "peak"), [("1G", 3), ("30K", 1)])
def test_read_ahead_is_bounded_by_memory_not_only_by_count(tmp_path, limit, peak) -> None:
    """Each row holds 2 x (reference + test) = 2 x 2 x 22.5 KiB = 90 KiB by its headers.
    With --max-volume-memory 30K the read-ahead budget is 4 x 30 = 120 KiB: the row being
    scored fits, never beside another, so rows are prepared one at a time; with 1G the three
    threads prepare three rows at once."""
    manifest = make_batch(tmp_path, n=8)
    scorer = InFlight()
    df = volqa.score_manifest(manifest, workers=3, max_volume_memory=limit, scorer=scorer)
    assert (df["status"] == "ok").all()
    assert scorer.peak == peak


# ----------------------------------------------------------------------- killed rows

KILL_HOOK = textwrap.dedent(
    """
    import os
    if os.environ.get("VOLQA_TEST_KILL"):
        import signal
        from volqa.pipeline import RowScorer
        _real = RowScorer.prepare
        def _deadly(self, job, settings, cache=None):
            if job.subject_id == os.environ["VOLQA_TEST_KILL"]:
                os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
            return _real(self, job, settings, cache)
        RowScorer.prepare = _deadly
    """
)


def _volqa(tmp_path: Path, *args: str, kill: str = "") -> subprocess.CompletedProcess:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]),
           "VOLQA_TEST_KILL": kill}
    return subprocess.run([sys.executable, "-m", "volqa.cli", "score", *args, "--no-progress"],
                          env=env, capture_output=True, text=True, encoding="utf-8",
                          timeout=300)


@pytest.mark.slow
def test_a_row_that_kills_the_process_twice_is_recorded_as_failed(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=5)
    out = tmp_path / "o"
    args = (str(manifest), "--out", str(out), "--workers", "2")
    first = _volqa(tmp_path, *args, kill="sub-02")
    assert first.returncode == -signal.SIGKILL
    journal = read_journal(out / "journal.jsonl")
    assert not journal.skipped
    attempts = [r["subject_id"] for r in journal.records if r["type"] == "attempt"]
    assert attempts == ["sub-00", "sub-01", "sub-02"]  # the current row and two read ahead
    assert "stop" not in [r["type"] for r in journal.records]  # killed: no orderly end
    # the second run: the rows in flight at the kill run alone; sub-02 kills it again, alone
    second = _volqa(tmp_path, *args, "--resume", kill="sub-02")
    assert second.returncode == -signal.SIGKILL
    solo = [r for r in read_journal(out / "journal.jsonl").records
            if r["type"] == "attempt" and r["solo"]]
    assert solo and solo[-1]["subject_id"] == "sub-02"
    # the third run records it as failed without trying it, and scores the others
    third = _volqa(tmp_path, *args, "--resume", kill="sub-02")
    assert third.returncode == 1, third.stderr
    assert "Traceback" not in third.stderr
    df = pd.read_parquet(out / "results.parquet")
    assert df["status"].tolist() == ["ok", "ok", "error", "ok", "ok"]
    assert ("the process was killed 2 times while scoring this row, the last time with no "
            "other row in flight (out of memory?") in df.loc[2, "error"]
    assert "failed: subject 'sub-02'" in third.stderr
    # an innocent row that was only in flight beside it was scored normally
    clean = volqa.score_manifest(manifest)
    for i in (0, 1, 3, 4):
        assert df.loc[i, "ssim"] == clean.loc[i, "ssim"]


def test_attempts_and_results_pair_up_in_the_journal(tmp_path) -> None:
    """An attempt before each row, its result after it, and ``stop`` when the run ends in
    order (what it left unfinished then was not killed)."""
    manifest = make_batch(tmp_path, n=3)
    volqa.score_manifest(manifest, out=tmp_path / "o", workers=0)
    lines = (tmp_path / "o/journal.jsonl").read_text().splitlines()
    kinds = [(json.loads(x)["type"], json.loads(x).get("index")) for x in lines]
    assert kinds == [("attempt", 0), ("result", 0), ("attempt", 1), ("result", 1),
                     ("attempt", 2), ("result", 2), ("stop", None)]


def test_an_interrupted_row_is_not_counted_as_a_kill(tmp_path) -> None:
    """Rows left unfinished by a run that ended in order (Ctrl-C twice, a failed write) are
    recomputed normally: only a run that ends without its ``stop`` record was killed."""
    from volqa.io.journal import Journal
    from volqa.io.manifest import read_manifest
    from volqa.pipeline.resume import plan_resume, row_inputs, row_key

    manifest = read_manifest(make_batch(tmp_path, n=2))
    row = manifest.rows[0]
    key = row_key(row, row_inputs(row), "h")
    attempt = {"type": "attempt", "key": key, "index": 0, "subject_id": row.subject_id}
    with Journal(tmp_path / "j.jsonl") as j:
        for solo in (False, True):
            j.append({**attempt, "solo": solo})
            j.append({"type": "stop"})
    records = read_journal(tmp_path / "j.jsonl").records
    interrupted = plan_resume(manifest.rows, records, "h")
    assert not interrupted.killed and not interrupted.solo and len(interrupted.todo) == 2
    killed = plan_resume(manifest.rows, [r for r in records if r["type"] != "stop"], "h")
    assert killed.killed == {0: 2} and [r.index for r in killed.todo] == [1]


# ----------------------------------------------------------------------- out of memory


class CpuAllocationFailure(RowScorer):
    """A real failure of torch's CPU allocator while the slab budget is above 4 MiB."""

    def __init__(self, always: bool = False) -> None:
        self.budgets: list[int | None] = []
        self.always = always

    def engine_metrics(self, p, settings, device, max_memory, keep_map):
        self.budgets.append(max_memory)
        if self.always:
            raise MemoryError()  # numpy's and Python's: an empty message
        if max_memory > 4 << 20:
            torch.empty(2**50)  # RuntimeError: [enforce fail at alloc_cpu.cpp:...] ...
        return super().engine_metrics(p, settings, device, max_memory, keep_map)


def test_cpu_allocation_failure_is_retried_with_half_the_budget(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=1)
    scorer = CpuAllocationFailure()
    df = volqa.score_manifest(manifest, device="cpu", max_memory="8M", scorer=scorer)
    assert scorer.budgets == [8 << 20, 4 << 20]
    assert df.loc[0, "status"] == "ok" and df.loc[0, "device"] == "cpu"
    assert "cpu out of memory with 8 MiB slabs; retried on cpu with half the slab budget" \
        in df.loc[0, "notes"]
    assert df.loc[0, "ssim"] == volqa.score_manifest(manifest).loc[0, "ssim"]


def test_an_empty_memory_error_is_named(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=2)
    df = volqa.score_manifest(manifest, device="cpu", scorer=CpuAllocationFailure(always=True))
    assert df["status"].tolist() == ["error", "error"]
    assert df.loc[0, "error"].startswith("subject 'sub-00' (reference ")
    assert "out of memory (MemoryError); free memory, use fewer --workers, or lower " \
           "--max-volume-memory" in df.loc[0, "error"]
