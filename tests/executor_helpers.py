"""Row scorers and cluster helpers for the executor tests (not collected).

The scorers are imported by worker processes (spawned by the processes executor, or Dask
workers started with the repository root and tests/ on PYTHONPATH), so they live in a module
of their own rather than in a test file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from pipeline_data import results_in

from volqa.pipeline import RowScorer

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # the Dask tests are skipped then
    WorkerPlugin = object  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parents[1]
#: Columns that differ between runs of the same manifest (timing, machine).
VARYING = ["seconds", "host"]


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in VARYING if c in frame.columns])


class KillOn(RowScorer):
    """Kills the process scoring ``subject`` (SIGKILL), as an out-of-memory kill would; never
    the process that made the scorer (the test)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.owner = os.getpid()

    def engine_metrics(self, p, *args, **kwargs):
        if p.job.subject_id == self.subject and os.getpid() != self.owner:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().engine_metrics(p, *args, **kwargs)


class Slow(RowScorer):
    """Sleeps ``delay`` seconds before each engine computation and logs the call to ``log``."""

    def __init__(self, delay: float, log: str | os.PathLike[str] | None = None) -> None:
        self.delay = delay
        self.log = None if log is None else str(log)

    def engine_metrics(self, p, *args, **kwargs):
        if self.log is not None:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(f"{p.job.index} {os.getpid()}\n")
        time.sleep(self.delay)
        return super().engine_metrics(p, *args, **kwargs)


class ReadSpy(WorkerPlugin):
    """A Dask worker plugin, on every worker present and future (a restarted one too): logs
    each ``read_volume`` call as ``"<file name> <pid>"`` to ``log``, and kills (SIGKILL) the
    process that reads a file named ``kill``, as an out-of-memory kill would."""

    name = "volqa-read-spy"

    def __init__(self, log: str | os.PathLike[str], kill: str | None = None) -> None:
        self.log = str(log)
        self.kill = kill

    def setup(self, worker=None) -> None:
        import volqa.io.readers as readers

        real = self._real = readers.read_volume

        def spy(path, *args, **kwargs):
            name = Path(os.fspath(path)).name
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(f"{name} {os.getpid()}\n")
            if name == self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, *args, **kwargs)

        readers.read_volume = spy

    def teardown(self, worker=None) -> None:
        import volqa.io.readers as readers

        readers.read_volume = self._real

    def reads(self) -> dict[str, int]:
        """File name -> times read so far."""
        names = [line.split()[0] for line in Path(self.log).read_text().splitlines()]
        return {n: names.count(n) for n in names}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def journal_rows(out: Path) -> int:
    """Result records in ``out``'s journal (attempt and stop records are not rows)."""
    return results_in(out / "journal.jsonl")


class DaskCluster:
    """A real ``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes on
    127.0.0.1, each in a process group of its own so that :meth:`stop` kills every process
    it started (nannies and the worker processes under them), also after a failed test."""

    def __init__(self, tmp: Path, workers: int = 2, allowed_failures: int = 1) -> None:
        self.tmp = tmp
        self.file = tmp / "scheduler.json"
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
        self.env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(self.file)])
        wait_for(self.file.exists, 60, "the scheduler file")
        wait_for(lambda: "address" in self._scheduler_info(), 30, "the scheduler address")
        self.address = self._scheduler_info()["address"]
        for k in range(workers):
            self._start(f"worker-{k}", ["worker", self.address, "--host", "127.0.0.1",
                                        "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                        "--name", f"w{k}", "--local-directory",
                                        str(tmp / f"w{k}")])

    def _scheduler_info(self) -> dict:
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        self.procs.append(subprocess.Popen([sys.executable, "-m", "dask", *args], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=60)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers first, then the scheduler
            _kill_group(proc, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc, signal.SIGKILL)  # and anything left in its group
            proc.wait(timeout=15)
        for log in self.logs:
            log.close()


def _kill_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
