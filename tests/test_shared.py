"""SharedReads: which rows of a distributed batch share one read of a file, within a budget
(the Dask side is in test_distributed.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_data import write_nii

from volqa.io.volume import Volume
from volqa.pipeline import RowJob
from volqa.pipeline.memory import header_bytes
from volqa.pipeline.shared import SharedReads


def jobs_of(refs: str, masks: str = "") -> list[RowJob]:
    """One job per letter of ``refs`` (its reference file), with mask ``masks[i]`` if given."""
    return [RowJob(i, f"sub-{r}", f"{r}.nii.gz", f"t{i}.nii.gz",
                   mask=f"m{masks[i]}.nii.gz" if masks and masks[i] != "." else None)
            for i, r in enumerate(refs)]


def run(jobs: list[RowJob], budget: int, sizes: dict[str, int | None] | None = None):
    """Hand every job out in order: (the reads started, what each job got)."""
    started: list[str] = []

    def submit(path: str) -> str:
        started.append(path)
        return f"read-{len(started)}:{path}"

    shared = SharedReads(jobs, budget, submit, size=lambda p: (sizes or {}).get(p[0], 10))
    got = [shared.for_job(pos, job) for pos, job in enumerate(jobs)]
    assert shared.held_bytes == 0  # the last row of every file let go of it
    assert shared.reads == len(started)
    return started, got


def test_a_file_listed_once_is_not_shared():
    started, got = run(jobs_of("abc"), budget=100)
    assert started == [] and got == [{}, {}, {}]


def test_consecutive_rows_share_one_read_of_reference_and_mask():
    started, got = run(jobs_of("aaabb", masks="xxx.."), budget=100)
    assert started == ["a.nii.gz", "mx.nii.gz", "b.nii.gz"]
    assert [sorted(g) for g in got] == [["mask", "reference"]] * 3 + [["reference"]] * 2
    assert got[0] == got[1] == got[2]
    assert got[3]["reference"] == got[4]["reference"] == "read-3:b.nii.gz"


def test_the_file_needed_last_is_let_go_first():
    # budget for two volumes; a b c interleaved: when c comes, b is needed again before a
    started, got = run(jobs_of("abcbca"), budget=20)
    assert started == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert [g.get("reference") for g in got] == [
        "read-1:a.nii.gz", "read-2:b.nii.gz", "read-3:c.nii.gz", "read-2:b.nii.gz",
        "read-3:c.nii.gz", None]  # a was let go for c; its last row reads it itself


def test_a_file_let_go_and_listed_again_is_read_again():
    started, got = run(jobs_of("abcbcaa"), budget=20)
    assert started == ["a.nii.gz", "b.nii.gz", "c.nii.gz", "a.nii.gz"]
    assert got[5] == got[6] == {"reference": "read-4:a.nii.gz"}


def test_a_file_is_not_shared_when_everything_kept_is_needed_sooner():
    started, got = run(jobs_of("abcabc"), budget=20, sizes={"a": 10, "b": 10, "c": 15})
    # c (15) does not fit beside a and b, both needed again before c: c is read by its rows
    assert started == ["a.nii.gz", "b.nii.gz"]
    assert got[2] == got[5] == {}
    assert got[3] == {"reference": "read-1:a.nii.gz"} and got[4] == {"reference": "read-2:b.nii.gz"}


def test_too_large_or_unreadable_headers_are_not_shared():
    started, got = run(jobs_of("aabb"), budget=20, sizes={"a": 21, "b": None})
    assert started == [] and got == [{}] * 4


def test_header_bytes_from_the_header_alone(tmp_path: Path):
    path = tmp_path / "v.nii.gz"
    write_nii(path, np.zeros((5, 6, 7), np.float32))
    assert header_bytes(str(path)) == 4 * 5 * 6 * 7
    assert header_bytes(str(tmp_path / "missing.nii.gz")) is None


def test_a_volume_reports_its_voxels_to_dask():
    """Dask weighs what a task returns with sys.getsizeof: a Volume counts its voxels, so a
    worker's memory limit and the cost of moving one to another worker see its real size."""
    volume = Volume(np.zeros((40, 50, 60), np.float32), np.eye(4), "v")
    assert sys.getsizeof(volume) > 4 * 40 * 50 * 60
    sizeof = pytest.importorskip("dask.sizeof").sizeof
    assert sizeof(volume) >= 4 * 40 * 50 * 60
