"""The processes executor: the same table as threads, a worker process that dies, signals and
resume through the real CLI, the scheduling of rows that share a reference, GPU assignment."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from executor_helpers import ROOT, KillOn, comparable, journal_rows, wait_for
from pipeline_data import degrade, make_batch, phantom, write_manifest, write_nii
from typer.testing import CliRunner

import volqa
from volqa.cli import app
from volqa.errors import SettingsError
from volqa.execution import Execution
from volqa.pipeline import RowJob, RowScorer
from volqa.pipeline.processes import _Dispatch, death_reason, default_jobs, gpu_assignment

cli = CliRunner()


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("batch")
    manifest = make_batch(root, n=6, mask=True)
    return manifest, volqa.score_manifest(manifest, workers=1)


def test_processes_table_equals_the_threads_executors(batch, tmp_path) -> None:
    manifest, expected = batch
    out = tmp_path / "o"
    got = volqa.score_manifest(manifest, out=out, executor="processes", jobs=2)
    pd.testing.assert_frame_equal(comparable(got), comparable(expected))
    assert journal_rows(out) == 6
    pd.testing.assert_frame_equal(comparable(pd.read_parquet(out / "results.parquet")),
                                  comparable(expected))


def test_a_row_that_kills_its_worker_fails_alone_and_the_batch_goes_on(batch, tmp_path) -> None:
    manifest, expected = batch
    got = volqa.score_manifest(manifest, out=tmp_path / "o", executor="processes", jobs=2,
                               scorer=KillOn("sub-02"))
    assert got["status"].tolist() == ["ok", "ok", "error", "ok", "ok", "ok"]
    error = got.loc[2, "error"]
    assert error.startswith("subject 'sub-02' (reference '") and "s2_ref.nii.gz" in error
    assert "was killed by SIGKILL" in error and "out-of-memory killer" in error
    assert "the batch went on with a new worker" in error
    keep = [0, 1, 3, 4, 5]
    pd.testing.assert_frame_equal(comparable(got).loc[keep], comparable(expected).loc[keep],
                                  check_dtype=False)  # the error row's nulls make object columns


def test_fail_fast_finishes_the_running_rows_then_resume_completes(batch, tmp_path) -> None:
    manifest, expected = batch
    root = tmp_path / "copy"
    broken = make_batch(root, n=6, mask=True)
    (root / "data/s1_ref.nii.gz").write_bytes(b"")
    out = tmp_path / "o"
    got = volqa.score_manifest(broken, out=out, executor="processes", jobs=2, fail_fast=True)
    assert "error" in set(got["status"]) and len(got) < 6  # stopped early
    assert journal_rows(out) == len(got)  # every row that ran was recorded
    write_nii(root / "data/s1_ref.nii.gz", phantom(1))
    final = volqa.score_manifest(broken, out=out, resume=True, executor="processes", jobs=2)
    assert final["status"].tolist() == ["ok"] * 6
    pd.testing.assert_frame_equal(comparable(final), comparable(expected))


def test_torch_threads_never_change_a_number(tmp_path) -> None:
    """Every executor picks its own torch threads; the values must not follow them (volumes
    large enough for torch to split its sums among threads)."""
    ref = phantom(3, (64, 64, 48))
    rows = [{"subject_id": f"s{i}", "reference": "ref.nii.gz", "test": f"t{i}.nii.gz"}
            for i in range(2)]
    write_nii(tmp_path / "ref.nii.gz", ref)
    for i in range(2):
        write_nii(tmp_path / f"t{i}.nii.gz", degrade(ref, i, 10.0))
    manifest = write_manifest(tmp_path / "m.csv", rows)
    one, two = (volqa.score_manifest(manifest, workers=0, threads=t) for t in (1, 2))
    pd.testing.assert_frame_equal(comparable(one), comparable(two), check_exact=True)


def test_a_scorer_that_cannot_reach_the_workers_is_a_settings_error(batch) -> None:
    class Local(RowScorer):  # a class inside a function cannot be pickled
        pass

    with pytest.raises(SettingsError, match="cannot be sent to worker processes.*--executor "
                                            "threads"):
        volqa.score_manifest(batch[0], executor="processes", jobs=1, scorer=Local())


def test_death_reasons() -> None:
    assert "killed by SIGSEGV" in death_reason(-signal.SIGSEGV, 7)
    assert "exited with status 3" in death_reason(3, 7)
    assert "(pid 7)" in death_reason(-9, 7)


# ----------------------------------------------------------------------------- the CLI

def _start(tmp_path: Path, manifest: Path, out: Path, *extra: str, delay: float = 0.5):
    """``volqa score --executor processes --jobs 2`` in a session of its own, every row
    slowed down by ``delay`` s (a sitecustomize hook, imported by the workers too)."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('VOLQA_TEST_DELAY'):\n"
        "    import time\n"
        "    from volqa.pipeline import RowScorer\n"
        "    _real = RowScorer.engine_metrics\n"
        "    def _slow(self, p, *args, **kwargs):\n"
        "        with open(os.environ['VOLQA_TEST_CALLS'], 'a') as fh:\n"
        "            fh.write(f'{p.job.index} {os.getpid()}\\n')\n"
        "        time.sleep(float(os.environ['VOLQA_TEST_DELAY']))\n"
        "        return _real(self, p, *args, **kwargs)\n"
        "    RowScorer.engine_metrics = _slow\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), str(ROOT), str(ROOT / "tests")])
    env["VOLQA_TEST_DELAY"] = str(delay)
    env["VOLQA_TEST_CALLS"] = str(tmp_path / f"calls-{time.monotonic_ns()}.log")
    cmd = [sys.executable, "-m", "volqa.cli", "score", str(manifest), "--out", str(out),
           "--no-progress", "--executor", "processes", "--jobs", "2", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", start_new_session=True)
    return proc, Path(env["VOLQA_TEST_CALLS"])


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The worker processes: children of the fork server, or spawned children of volqa."""
    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.ppid() != proc.pid or "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _calls(path: Path) -> list[int]:
    return [int(line.split()[0]) for line in path.read_text().splitlines()] \
        if path.exists() else []


@pytest.mark.slow
def test_a_killed_worker_process_fails_its_row_then_resume_completes(batch, tmp_path) -> None:
    manifest, expected = batch
    out = tmp_path / "o"
    proc, calls = _start(tmp_path, manifest, out)
    try:
        wait_for(lambda: journal_rows(out) >= 1 and len(_workers(proc)) == 2, 120,
                 "a first row and two workers")
        victim = _workers(proc)[0]
        victim.kill()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, stderr  # one row failed, the others are in the tables
    done = pd.read_csv(out / "results.csv")
    assert len(done) == 6
    failed = done[done["status"] == "error"]
    assert len(failed) == 1
    assert f"(pid {victim.pid}) was killed by SIGKILL" in failed["error"].iloc[0]
    assert "Traceback" not in stderr

    proc, calls = _start(tmp_path, manifest, out, "--resume", delay=0.0)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert len(_calls(calls)) == 1  # only the failed row again
    final = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(comparable(final), comparable(expected))


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_the_process_group_finishes_running_rows_then_resume(batch, tmp_path, signum,
                                                                       code) -> None:
    """As Ctrl-C in a terminal (or a scheduler's SIGTERM) reaches every process of the group:
    the workers ignore it, the main process starts no new row, waits for the running ones,
    writes the tables and prints the resume command."""
    manifest, expected = batch
    out = tmp_path / "o"
    proc, calls = _start(tmp_path, manifest, out, "--win-size", "7", delay=1.0)
    try:
        wait_for(lambda: journal_rows(out) >= 1, 120, "a first row")
        os.killpg(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    done = pd.read_csv(out / "results.csv")
    assert 1 <= len(done) < 6 and set(done["status"]) == {"ok"}
    assert journal_rows(out) == len(done) == len(_calls(calls))  # every started row finished
    argv = shlex.split(stderr.strip().splitlines()[-1].strip())
    assert argv == ["volqa", "score", str(manifest), "--out", str(out), "--resume",
                    "--executor", "processes", "--jobs", "2"]
    result = cli.invoke(app, argv[1:] + ["--no-progress"])
    assert result.exit_code == 0, result.output
    final = pd.read_parquet(out / "results.parquet")
    assert len(final) == 6 and set(final["ssim_win_size"]) == {7}
    resumed = volqa.score_manifest(manifest, win_size=7, workers=0)
    pd.testing.assert_frame_equal(comparable(final), comparable(resumed))


# ----------------------------------------------------------------------------- scheduling

def _jobs(refs: str) -> list[RowJob]:
    """One job per letter; equal letters share a reference."""
    return [RowJob(i, f"s{i}", f"/{r}.nii", f"/t{i}.nii") for i, r in enumerate(refs)]


def test_rows_sharing_a_reference_go_to_one_worker() -> None:
    d = _Dispatch(_jobs("aaabbbcc"))
    order = [(slot, d.take(slot).index) for slot in (0, 1, 0, 1, 0, 1)]
    assert order == [(0, 0), (1, 3), (0, 1), (1, 4), (0, 2), (1, 5)]
    assert [d.take(0).index, d.take(0).index] == [6, 7]  # worker 0 takes the next group
    assert d.take(1) is None and not d


def test_an_idle_worker_takes_the_second_half_of_the_longest_queue() -> None:
    d = _Dispatch(_jobs("aaaaaaa"))
    assert d.take(0).index == 0  # worker 0 owns the group: 1..6 queued
    assert d.take(1).index == 4  # worker 1 steals 4, 5, 6
    assert [d.take(1).index, d.take(1).index] == [5, 6]
    assert [d.take(0).index for _ in range(3)] == [1, 2, 3]
    assert d.take(0) is None and d.take(1) is None


def test_a_dead_workers_queue_goes_back_to_the_others() -> None:
    d = _Dispatch(_jobs("aaab"))
    assert d.take(0).index == 0
    d.put_back(0)  # worker 0 died computing row 0; its queue (1, 2) goes back, first in line
    assert [d.take(1).index for _ in range(3)] == [1, 2, 3]
    d.put_back(1, _jobs("x")[0])  # a job that was never started goes back too
    assert d.take(0).index == 0 and d.take(0) is None


@pytest.mark.parametrize(("workers", "gpus", "expected"), [
    (2, 2, [0, 1]), (4, 2, [0, 1, 0, 1]), (3, 0, [None, None, None]), (1, 4, [0])])
def test_gpu_assignment(workers, gpus, expected) -> None:
    assert gpu_assignment(workers, gpus) == expected


def test_default_jobs_one_per_gpu_or_core() -> None:
    assert default_jobs("cuda", gpus=4) == 4
    assert default_jobs("cpu", cores=6) == 6


@pytest.mark.parametrize(("threads", "workers", "cores", "expected"), [
    (None, 2, 2, 1), (None, 1, 2, 2), (None, 3, 8, 2), (None, 16, 4, 1), (3, 2, 2, 3)])
def test_torch_threads_never_oversubscribe_unless_asked(threads, workers, cores,
                                                        expected) -> None:
    ex = Execution(threads=threads)
    assert ex.torch_threads(workers, cores=cores) == expected
    if threads is None:
        assert ex.torch_threads(workers, cores=cores) * workers <= max(cores, workers)


@pytest.mark.parametrize(("options", "message"), [
    ({"jobs": 2}, "jobs=2 sets the worker processes of --executor processes"),
    ({"executor": "dask"}, "--executor dask needs --scheduler"),
    ({"scheduler": "local:2"}, "applies only to --executor dask"),
    ({"executor": "dask", "scheduler": "local:0"}, "local:N needs N >= 1"),
    ({"executor": "pool"}, "executor must be one of threads, processes, dask"),
    ({"executor": "processes", "jobs": 0}, "jobs must be an integer >= 1"),
    ({"threads": -1}, "threads must be an integer >= 1"),
    ({"shard": "4/4"}, "0 <= I < N"),
    ({"shard": "1"}, "shard must be I/N"),
    ({"shard": "a/b"}, "shard must be I/N"),
])
def test_execution_options_are_checked(options, message) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Execution.from_options(**options)


def test_cli_execution_option_errors_are_exit_2(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=1)
    result = cli.invoke(app, ["score", str(manifest), "--out", str(tmp_path / "o"),
                              "--jobs", "2", "--no-progress"])
    assert result.exit_code == 2
    assert "add --executor processes" in result.stderr and "Traceback" not in result.output
