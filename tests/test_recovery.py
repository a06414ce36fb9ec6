"""No lost work: journal and --resume, atomic writes, signals (the bad-input catalogue is in
test_catalogue.py). The subprocess tests kill or interrupt a real `python -m volqa.cli`."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from pipeline_data import (
    CountCalls,
    degrade,
    make_batch,
    phantom,
    results_in,
    wait_for,
    write_nii,
)
from typer.testing import CliRunner

import volqa
import volqa.io.atomic as atomic_mod
from volqa.cli import app
from volqa.errors import OutputError, SettingsError
from volqa.io.atomic import atomic_write
from volqa.io.journal import Journal, load_journal

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner()


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)



def test_resume_skips_finished_rows_and_recomputes_changed_ones(tmp_path, monkeypatch) -> None:
    manifest = make_batch(tmp_path, n=4)
    out = tmp_path / "o"
    calls = CountCalls()
    first = volqa.score_manifest(manifest, out=out, scorer=calls)
    assert calls.n == 4 and len(load_journal(out / "journal.jsonl")) == 4

    calls.n = 0
    again = volqa.score_manifest(manifest, out=out, scorer=calls, resume=True)
    assert calls.n == 0
    pd.testing.assert_frame_equal(first, again)

    # a changed input file: only that row again
    write_nii(tmp_path / "data/s2_test.nii.gz", degrade(phantom(2), 99))
    calls.n = 0
    changed = volqa.score_manifest(manifest, out=out, scorer=calls, resume=True)
    assert calls.n == 1
    assert changed.loc[2, "ssim"] != first.loc[2, "ssim"]
    assert changed.drop(index=2).equals(first.drop(index=2))

    # changed settings: every row again
    calls.n = 0
    volqa.score_manifest(manifest, out=out, scorer=calls, resume=True, win_size=7)
    assert calls.n == 4


def test_resume_retries_failed_rows_and_takes_new_passthrough(tmp_path, monkeypatch) -> None:
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    broken = tmp_path / "data/s1_ref.nii.gz"
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"")
    df = volqa.score_manifest(manifest, out=out)
    assert df["status"].tolist() == ["ok", "error", "ok"]
    broken.write_bytes(good_bytes)
    text = manifest.read_text().replace(",A,", ",site-A,")
    manifest.write_text(text)
    calls = CountCalls()
    df = volqa.score_manifest(manifest, out=out, scorer=calls, resume=True)
    assert calls.n == 1 and df["status"].tolist() == ["ok"] * 3
    assert df["site"].tolist() == ["site-A", "B", "site-A"]


def test_torn_journal_line_is_ignored(tmp_path, monkeypatch) -> None:
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    volqa.score_manifest(manifest, out=out, workers=0)  # no read-ahead: records in row order
    journal = out / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    assert [json.loads(x)["type"] for x in lines] == ["attempt", "result"] * 3 + ["stop"]
    # killed while writing the third row's result: its attempt stays, the result is torn
    journal.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    calls = CountCalls()
    df = volqa.score_manifest(manifest, out=out, scorer=calls, resume=True)
    assert calls.n == 1 and df["status"].tolist() == ["ok"] * 3
    for line in journal.read_text().splitlines()[6:]:
        json.loads(line)  # the next record starts on its own line


def test_journal_append_is_fsynced(tmp_path, monkeypatch) -> None:
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with Journal(tmp_path / "j.jsonl") as j:
        j.append({"type": "result", "key": "a", "fields": {"x": float("inf")}})
        j.append({"type": "attempt", "key": "b"})
    assert len(synced) == 2
    assert load_journal(tmp_path / "j.jsonl")["a"]["fields"]["x"] == float("inf")


def test_overwrite_starts_a_new_journal_and_keeps_other_files(tmp_path, monkeypatch) -> None:
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "o"
    volqa.score_manifest(manifest, out=out)
    (out / "my_notes.txt").write_text("keep me")
    with pytest.raises(SettingsError, match="--resume.*--overwrite"):
        volqa.score_manifest(manifest, out=out)
    calls = CountCalls()
    volqa.score_manifest(manifest, out=out, scorer=calls, overwrite=True)
    assert calls.n == 2 and len(load_journal(out / "journal.jsonl")) == 2
    assert (out / "my_notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_old_file_on_failure(tmp_path) -> None:
    target = tmp_path / "results.csv"
    target.write_text("old complete table\n")

    def half(tmp: Path) -> None:
        tmp.write_text("new, half writ")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "old complete table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temp file left


def test_failed_table_write_leaves_previous_tables(tmp_path, monkeypatch) -> None:
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "o"
    volqa.score_manifest(manifest, out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("results")}

    def broken_to_csv(self, path, **kwargs):
        Path(path).write_text("partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OutputError, match="no space"):
        volqa.score_manifest(manifest, out=out, resume=True, win_size=7)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("results")}
    assert after == before  # neither table replaced: the pair stays consistent
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    # the journal of the failed run is complete, so --resume finishes without recomputing
    monkeypatch.undo()
    calls = CountCalls()
    df = volqa.score_manifest(manifest, out=out, scorer=calls, resume=True, win_size=7)
    assert calls.n == 0 and len(df) == 2 and set(df["ssim_win_size"]) == {7}


def test_atomic_write_many_replaces_all_or_nothing(tmp_path) -> None:
    a, b = tmp_path / "results.parquet", tmp_path / "results.csv"
    a.write_text("old a")
    b.write_text("old b")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_mod.atomic_write_many({a: lambda t: t.write_text("new a"), b: fail})
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.parquet"]
    atomic_mod.atomic_write_many({a: lambda t: t.write_text("new a"),
                                   b: lambda t: t.write_text("new b")})
    assert (a.read_text(), b.read_text()) == ("new a", "new b")


# ----------------------------------------------------------------------------- subprocesses

SLOW_HOOK = textwrap.dedent(
    """
    import os
    if os.environ.get("VOLQA_TEST_DELAY"):
        import time
        from volqa.pipeline import RowScorer
        _real = RowScorer.engine_metrics
        def _slow(*args, **kwargs):
            with open(os.environ["VOLQA_TEST_CALLS"], "a") as fh:
                fh.write("call\\n")
            time.sleep(float(os.environ["VOLQA_TEST_DELAY"]))
            return _real(*args, **kwargs)
        RowScorer.engine_metrics = _slow
    """
)


def _start(tmp_path: Path, manifest: Path, out: Path, *extra: str, delay: float = 0.4):
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SLOW_HOOK)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), str(ROOT), env.get("PYTHONPATH", "")])
    env["VOLQA_TEST_DELAY"] = str(delay)
    env["VOLQA_TEST_CALLS"] = str(tmp_path / f"calls-{time.monotonic_ns()}.log")
    cmd = [sys.executable, "-m", "volqa.cli", "score", str(manifest), "--out", str(out),
           "--no-progress", "--workers", "1", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8")
    return proc, Path(env["VOLQA_TEST_CALLS"])


def _wait_for_rows(journal: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    wait_for(lambda: results_in(journal) >= n, proc, timeout)


def _calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=10, mask=True)
    out = tmp_path / "killed"
    proc, _ = _start(tmp_path, manifest, out)
    _wait_for_rows(out / "journal.jsonl", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.csv").exists()  # killed before any table was written
    finished = {k for k, r in load_journal(out / "journal.jsonl").items()
                if r["fields"]["status"] == "ok"}
    assert 3 <= len(finished) < 10

    proc, calls = _start(tmp_path, manifest, out, "--resume", delay=0.0)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert _calls(calls) == 10 - len(finished)  # finished rows were not recomputed

    clean = tmp_path / "clean"
    result = cli.invoke(app, ["score", str(manifest), "--out", str(clean), "--no-progress"])
    assert result.exit_code == 0, result.output
    a = read_csv(out / "results.csv").drop(columns="seconds")
    b = read_csv(clean / "results.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)
    pa_ = pd.read_parquet(out / "results.parquet").drop(columns="seconds")
    pb_ = pd.read_parquet(clean / "results.parquet").drop(columns="seconds")
    pd.testing.assert_frame_equal(pa_, pb_)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_row_writes_tables_and_prints_resume(tmp_path, signum, code) -> None:
    manifest = make_batch(tmp_path, n=8)
    out = tmp_path / "o"
    proc, _ = _start(tmp_path, manifest, out, "--win-size", "7")
    _wait_for_rows(out / "journal.jsonl", 2, proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    done = read_csv(out / "results.csv")
    assert 2 <= len(done) == results_in(out / "journal.jsonl") < 8  # the current row finished
    assert done["subject_id"].tolist() == [f"sub-{i:02d}" for i in range(len(done))]
    assert f"{len(done)} of 8 row(s) done" in stdout
    command = stderr.strip().splitlines()[-1].strip()
    argv = shlex.split(command)
    # the settings are carried over by OUT/settings.json, not by repeating options
    assert argv == ["volqa", "score", str(manifest), "--out", str(out), "--resume"]
    result = cli.invoke(app, argv[1:] + ["--no-progress"])
    assert result.exit_code == 0, result.output
    final = read_csv(out / "results.csv")
    assert len(final) == 8 and set(final["ssim_win_size"]) == {"7"}
