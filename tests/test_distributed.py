"""The Dask executor against a real ``dask scheduler`` and two real ``dask worker`` processes
on 127.0.0.1, started and stopped by a fixture: the same table as the threads executor, a
worker killed with SIGKILL in the middle of a batch, a row that kills every worker it runs on,
and the pre-flight check of the workers."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from executor_helpers import (DaskCluster, KillOn, ReadSpy, Slow, comparable, journal_rows,
                              wait_for)
from pipeline_data import make_batch, make_study

import volqa
from volqa.errors import SettingsError
from volqa.execution import Execution
from volqa.pipeline import RowJob
from volqa.pipeline.cluster import _check_workers

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        with c.client() as client:
            client.wait_for_workers(2, timeout=120)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Eight rows (half with a mask) and their table from the threads executor."""
    root = tmp_path_factory.mktemp("batch")
    manifest = make_batch(root, n=8, mask=True)
    return manifest, volqa.score_manifest(manifest, executor="threads", workers=1)


def test_dask_table_equals_the_threads_executors(cluster, batch, tmp_path) -> None:
    manifest, expected = batch
    out = tmp_path / "o"
    got = volqa.score_manifest(manifest, out=out, executor="dask", scheduler=cluster.address)
    pd.testing.assert_frame_equal(comparable(got), comparable(expected))
    assert journal_rows(out) == 8
    written = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(comparable(written), comparable(expected))


def test_a_worker_killed_mid_batch_still_ends_with_the_full_table(cluster, batch,
                                                                  tmp_path) -> None:
    manifest, expected = batch
    out = tmp_path / "o"
    with cluster.client() as client:
        pids = client.run(os.getpid)
    log = tmp_path / "calls.log"
    result: list = []
    run = threading.Thread(target=lambda: result.append(volqa.score_manifest(
        manifest, out=out, executor="dask", scheduler=cluster.address, scorer=Slow(0.5, log))))
    run.start()
    try:
        wait_for(lambda: journal_rows(out) >= 2, 120, "two rows in the journal")
        victim = pids[sorted(pids)[0]]
        done_before = journal_rows(out)
        os.kill(victim, signal.SIGKILL)
    finally:
        run.join(timeout=300)
    assert not run.is_alive() and result, "the batch did not end"
    assert done_before < 8  # killed in the middle of the batch
    calls = [line.split() for line in log.read_text().splitlines()]
    indices = [i for i, _ in calls]
    retried = {i for i in indices if indices.count(i) > 1}  # started twice
    assert retried, f"the killed worker's row was not retried: {calls}"
    assert all(int(next(pid for i, pid in calls if i == r)) == victim for r in retried)
    got = result[0]
    assert got["status"].tolist() == ["ok"] * 8
    pd.testing.assert_frame_equal(comparable(got), comparable(expected))
    with cluster.client() as client:  # the nanny replaced the worker; the fixture goes on
        client.wait_for_workers(2, timeout=120)


def test_a_row_that_kills_its_workers_fails_alone(cluster, batch, tmp_path) -> None:
    manifest, expected = batch
    got = volqa.score_manifest(manifest, out=tmp_path / "o", executor="dask",
                               scheduler=cluster.address, scorer=KillOn("sub-03"))
    assert got["status"].tolist() == ["ok"] * 3 + ["error"] + ["ok"] * 4
    error = got.loc[3, "error"]
    assert error.startswith("subject 'sub-03'") and "KilledWorker" in error
    assert "s3_ref.nii.gz" in error and "died every time it was tried" in error
    keep = [i for i in range(8) if i != 3]
    # (the error row's nulls make 'resampled' an object column)
    pd.testing.assert_frame_equal(comparable(got).loc[keep], comparable(expected).loc[keep],
                                  check_dtype=False)
    with cluster.client() as client:
        client.wait_for_workers(2, timeout=120)


@contextmanager
def spying(cluster: DaskCluster, spy: ReadSpy):
    """``spy`` on every worker of ``cluster`` while the block runs."""
    with cluster.client() as client:
        client.register_plugin(spy)
        try:
            yield spy
        finally:
            client.unregister_worker_plugin(spy.name)


def test_a_reference_listed_by_several_rows_is_read_once_on_the_cluster(cluster, tmp_path):
    """Three subjects x three methods, each reference and mask listed three times: Dask reads
    each once for its rows (the threads executor's table); a reference that cannot be read
    fails its rows with the threads executor's error."""
    manifest = make_study(tmp_path, subjects=3, methods=3, mask=True)
    cut = tmp_path / "ref2.nii.gz"  # its header reads, its data does not
    cut.write_bytes(cut.read_bytes()[:-300])
    expected = volqa.score_manifest(manifest, executor="threads", workers=1)
    with spying(cluster, ReadSpy(tmp_path / "reads.log")) as spy:
        got = volqa.score_manifest(manifest, executor="dask", scheduler=cluster.address)
    pd.testing.assert_frame_equal(comparable(got), comparable(expected))
    assert got["status"].tolist() == ["ok"] * 6 + ["error"] * 3
    assert "ref2.nii.gz" in got.loc[6, "error"]
    reads = spy.reads()
    assert {n: reads.get(n) for n in ("ref0.nii.gz", "ref1.nii.gz", "mask0.nii.gz",
                                     "mask1.nii.gz", "mask2.nii.gz")} == dict.fromkeys(
        ("ref0.nii.gz", "ref1.nii.gz", "mask0.nii.gz", "mask1.nii.gz", "mask2.nii.gz"), 1)
    assert all(reads.get(f"s{s}_m{m}.nii.gz") == 1 for s in range(2) for m in range(3))
    assert reads["ref2.nii.gz"] == 1 + 3  # the shared read failed: each row read it itself


def test_a_shared_reference_whose_read_kills_workers_fails_only_its_rows(cluster, tmp_path):
    manifest = make_study(tmp_path, subjects=3, methods=2)
    expected = volqa.score_manifest(manifest, executor="threads", workers=1)
    with spying(cluster, ReadSpy(tmp_path / "reads.log", kill="ref1.nii.gz")):
        got = volqa.score_manifest(manifest, executor="dask", scheduler=cluster.address)
    assert got["status"].tolist() == ["ok", "ok", "error", "error", "ok", "ok"]
    for i in (2, 3):
        error = got.loc[i, "error"]
        assert error.startswith("subject 'sub-1'") and "KilledWorker" in error
        assert "ref1.nii.gz" in error and "died every time it was tried" in error
    keep = [0, 1, 4, 5]
    pd.testing.assert_frame_equal(comparable(got).loc[keep], comparable(expected).loc[keep],
                                  check_dtype=False)
    with cluster.client() as client:
        client.wait_for_workers(2, timeout=120)


def test_local_cluster_through_the_cli(batch, tmp_path) -> None:
    import subprocess
    import sys

    from executor_helpers import ROOT

    manifest, expected = batch
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.run([sys.executable, "-m", "volqa.cli", "score", str(manifest), "--out",
                           str(out), "--executor", "dask", "--scheduler", "local:2",
                           "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(comparable(got), comparable(expected))


class HidingClient:
    """Runs the real worker check in this process, with ``hidden`` invisible to it: a worker
    whose file system lacks that file."""

    def __init__(self, hidden: str) -> None:
        self.hidden = hidden

    def run(self, fn, *args):
        with pytest.MonkeyPatch.context() as mp:
            real = os.path.exists
            mp.setattr(os.path, "exists", lambda p: p != self.hidden and real(p))
            return {"tcp://10.0.0.7:40000": fn(*args)}


def test_a_worker_that_cannot_see_an_input_stops_the_run_before_it_starts(tmp_path) -> None:
    make_batch(tmp_path, n=2)
    data = tmp_path / "data"
    jobs = [RowJob(i, f"sub-0{i}", str(data / f"s{i}_ref.nii.gz"), str(data / f"s{i}_test.nii.gz"))
            for i in range(2)]
    hidden = str(data / "s1_test.nii.gz")
    execution = Execution(executor="dask", scheduler="local:1")
    _check_workers(HidingClient("/nowhere"), jobs, execution)  # sees everything: passes
    with pytest.raises(SettingsError, match=r"Dask worker tcp://10.0.0.7:40000 \(host .*\) "
                                            r"cannot see '.*s1_test.nii.gz'.*same files on "
                                            r"every worker"):
        _check_workers(HidingClient(hidden), jobs, execution)
