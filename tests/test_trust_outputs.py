"""One run never destroys another's output or an input, and failures while writing leave a
resumable batch (issue 9, classes 3 and 4). The lock, the full disk (``RLIMIT_FSIZE``: Python
ignores SIGXFSZ, so writes fail with EFBIG as on a full disk) and the signals are tested with
real ``python -m volqa.cli`` processes."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pipeline_data import (
    degrade,
    make_batch,
    phantom,
    results_in,
    sha256_tree,
    wait_for,
    write_manifest,
    write_nii,
)
from typer.testing import CliRunner

import volqa
from volqa.cli import app
from volqa.errors import SettingsError
from volqa.io.journal import read_journal

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner()

HOOK = textwrap.dedent(
    """
    import os, time
    if os.environ.get("VOLQA_TEST_DELAY") or os.environ.get("VOLQA_TEST_GATE"):
        from volqa.pipeline import RowScorer
        _engine = RowScorer.engine_metrics
        _calls = []
        def _slow(*args, **kwargs):
            time.sleep(float(os.environ.get("VOLQA_TEST_DELAY") or 0))
            _calls.append(1)
            gate = os.environ.get("VOLQA_TEST_GATE")
            while gate and len(_calls) > 1 and not os.path.exists(gate):
                time.sleep(0.05)  # after the first row: wait until the test opens the gate
            return _engine(*args, **kwargs)
        RowScorer.engine_metrics = _slow
    if os.environ.get("VOLQA_TEST_SLOW_WRITE"):
        import pyarrow.parquet as pq
        _write = pq.write_table
        def _slow_write(*args, **kwargs):
            _write(*args, **kwargs)
            open(os.environ["VOLQA_TEST_SLOW_WRITE"], "w").close()  # "the write has begun"
            time.sleep(5)
        pq.write_table = _slow_write
    """
)


def volqa_process(tmp_path: Path, *args: str, delay: float = 0.0, slow_write: Path | None = None,
                  fsize: int | None = None, gate: Path | None = None, **popen
                  ) -> subprocess.Popen:
    """``python -m volqa.cli score ARGS --no-progress`` with the test hooks: ``delay`` seconds
    per row, rows after the first held until ``gate`` exists, a slow Parquet write that
    touches ``slow_write`` when it begins, and a file size limit ``fsize``."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]),
           "VOLQA_TEST_DELAY": str(delay) if delay else "",
           "VOLQA_TEST_SLOW_WRITE": str(slow_write or ""), "VOLQA_TEST_GATE": str(gate or "")}
    limit = None if fsize is None else (
        lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize)))
    return subprocess.Popen([sys.executable, "-m", "volqa.cli", "score", *args, "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", preexec_fn=limit, **popen)


def run_volqa(tmp_path: Path, *args: str, **kw) -> tuple[int, str, str]:
    proc = volqa_process(tmp_path, *args, **kw)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp-" in p.name]


# ----------------------------------------------------------------------- map names


def test_map_names_are_unique_short_and_stable(tmp_path) -> None:
    """Subject ids that differ only in characters a file name drops, and a 300-character id,
    each get their own map; a row's ``ssim_map`` is its own (the map's mean over the valid
    region is the row's SSIM) and the names survive a resume that recomputes every row."""
    ids = ["sub 01", "sub_01", "a/b", "a_b", "x" * 300, "sub\x1b]0;pwned\x07"]
    rows = []
    for i, sid in enumerate(ids):
        ref = phantom(i)
        write_nii(tmp_path / f"r{i}.nii.gz", ref)
        write_nii(tmp_path / f"t{i}.nii.gz", degrade(ref, i, 2.0 + 3 * i))
        rows.append({"subject_id": sid, "reference": f"r{i}.nii.gz", "test": f"t{i}.nii.gz"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "o"
    df = volqa.score_manifest(manifest, out=out, save_maps=True)
    assert (df["status"] == "ok").all() and df["ssim"].nunique() == len(ids)
    maps = sorted(p.name for p in (out / "maps").iterdir())
    assert len(maps) == len(ids) and maps == sorted(Path(m).name for m in df["ssim_map"])
    assert max(len(m.encode()) for m in maps) <= 80
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", m) for m in maps)
    for _, row in df.iterrows():
        values = np.asarray(nib.load(out / row["ssim_map"]).dataobj)
        assert float(np.nanmean(values)) == pytest.approx(row["ssim"], abs=1e-5)
    again = volqa.score_manifest(manifest, out=out, resume=True, win_size=7)
    assert again["ssim_map"].tolist() == df["ssim_map"].tolist()
    assert sorted(p.name for p in (out / "maps").iterdir()) == maps


# ----------------------------------------------------------------------- inputs are outputs


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_manifest_named_like_an_output_is_never_deleted(tmp_path, flag) -> None:
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "o"
    out.mkdir()
    inside = out / "results.csv"
    inside.write_text(manifest.read_text().replace("data/", "../data/"))
    before = sha256_tree(tmp_path)
    result = cli.invoke(app, ["score", str(inside), "--out", str(out), flag, "--no-progress"])
    assert result.exit_code == 2, result.output
    assert re.search(r"the manifest '.*/o/results\.csv' is this run's output results\.csv "
                     r"\(--out '.*/o'\): the run would overwrite or change an input",
                     result.stderr), result.stderr
    assert sha256_tree(tmp_path) == before


@pytest.mark.parametrize("where", ["maps", "journal-link", "out-as-dicom"])
def test_a_volume_that_an_output_would_replace_is_refused(tmp_path, where) -> None:
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "o"
    (out / "maps").mkdir(parents=True)
    if where == "maps":
        moved = out / "maps" / "s1_test.nii.gz"
        (tmp_path / "data/s1_test.nii.gz").rename(moved)
        pattern = r"subject 'sub-01': test '.*/o/maps/s1_test\.nii\.gz' lies in this run's maps/"
    elif where == "journal-link":  # the output name is a link to an input: resolved first
        moved = tmp_path / "data/s1_test.nii.gz"
        (out / "journal.jsonl").symlink_to(moved)
        pattern = r"subject 'sub-01': test .* is this run's output journal\.jsonl"
    else:
        moved = out
        pattern = r"subject 'sub-01': test '.*/o' is this run's output folder"
    manifest.write_text(manifest.read_text().replace("data/s1_test.nii.gz", str(moved)))
    before = sha256_tree(tmp_path)
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--overwrite",
                              "--save-maps", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert re.search(pattern, result.stderr), result.stderr
    assert sha256_tree(tmp_path) == before


# ----------------------------------------------------------------------- the lock


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=6)
    out = tmp_path / "o"
    gate = tmp_path / "gate"
    first = volqa_process(tmp_path, str(manifest), "--out", str(out), "--workers", "0",
                          gate=gate)
    wait_for(lambda: results_in(out / "journal.jsonl") >= 1, first)
    journal_before = (out / "journal.jsonl").read_bytes()
    for flag in ("--overwrite", "--resume"):
        code, _, err = run_volqa(tmp_path, str(manifest), "--out", str(out), flag)
        assert code == 2, err
        assert "Traceback" not in err
        assert re.search(rf"output folder '.*/o' is in use by another volqa run \(pid "
                         rf"{first.pid} on host {re.escape(socket.gethostname())}, started "
                         r".*, command: .*volqa.* score .*\); wait for it to finish", err), err
    # the first run's journal was not deleted by the refused --overwrite, and it finishes
    assert (out / "journal.jsonl").read_bytes().startswith(journal_before)
    gate.touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert len(pd.read_csv(out / "results.csv")) == 6
    code, _, err = run_volqa(tmp_path, str(manifest), "--out", str(out), "--resume")
    assert code == 0, err  # released when the first run ended


@pytest.mark.slow
def test_the_lock_of_a_killed_run_does_not_block(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=4)
    out = tmp_path / "o"
    first = volqa_process(tmp_path, str(manifest), "--out", str(out), gate=tmp_path / "gate")
    wait_for(lambda: results_in(out / "journal.jsonl") >= 1, first)
    first.kill()
    first.wait()
    code, out_text, err = run_volqa(tmp_path, str(manifest), "--out", str(out), "--resume")
    assert code == 0, err
    assert "4 of 4 row(s) done: 4 ok" in out_text


def test_the_lock_in_process(tmp_path) -> None:
    """The same refusal through the Python API (a lock taken by this process itself)."""
    from volqa.io.lock import OutDirLock, OutputLockedError

    manifest = make_batch(tmp_path, n=1)
    out = tmp_path / "o"
    out.mkdir()
    with OutDirLock(out), pytest.raises(OutputLockedError, match=rf"pid {os.getpid()} on"):
        volqa.score_manifest(manifest, out=out)
    volqa.score_manifest(manifest, out=out, overwrite=True)  # released
    assert issubclass(OutputLockedError, SettingsError)


# ----------------------------------------------------------------------- full disk


def line_sizes(tmp_path: Path, n: int) -> tuple[list[int], int]:
    """Journal line sizes and settings.json size of a clean run of ``make_batch(n)``."""
    manifest = make_batch(tmp_path / "probe", n=n)
    volqa.score_manifest(manifest, out=tmp_path / "probe/o", workers=0)
    lines = (tmp_path / "probe/o/journal.jsonl").read_bytes().splitlines(keepends=True)
    return [len(x) for x in lines], (tmp_path / "probe/o/settings.json").stat().st_size


@pytest.mark.slow
def test_journal_write_failure_exits_2_keeps_the_journal_and_resumes(tmp_path) -> None:
    sizes, settings_size = line_sizes(tmp_path, 4)
    limit = sum(sizes[:4]) + sizes[4] // 2  # two rows fit, the third's attempt does not
    assert limit > settings_size
    manifest = make_batch(tmp_path, n=4)
    out = tmp_path / "o"
    code, _, err = run_volqa(tmp_path, str(manifest), "--out", str(out), "--workers", "0",
                             fsize=limit)
    assert code == 2, err
    assert "Traceback" not in err
    assert re.search(r"cannot write to output folder '.*/o' \(journal\.jsonl: File too "
                     r"large\); 2 of 4 rows are recorded in journal\.jsonl and the tables "
                     r"were not written\. Free space or fix the folder's permissions", err), err
    assert err.strip().splitlines()[-1].strip() == shlex.join(
        ["volqa", "score", str(manifest), "--out", str(out), "--resume"])
    journal = read_journal(out / "journal.jsonl")
    assert not journal.skipped  # whole, verified lines only: the partial one was cut off
    # the third attempt did not fit; the short stop record that ends the run did
    assert [r["type"] for r in journal.records] == ["attempt", "result"] * 2 + ["stop"]
    assert not (out / "results.csv").exists() and no_temp_files(out)
    code, text, err = run_volqa(tmp_path, str(manifest), "--out", str(out), "--resume")
    assert code == 0, err
    clean = volqa.score_manifest(manifest)
    resumed = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_series_equal(resumed["ssim"], clean["ssim"])


@pytest.mark.slow
def test_table_write_failure_exits_2_and_leaves_no_temp_file(tmp_path) -> None:
    sizes, _ = line_sizes(tmp_path, 2)
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "o"
    code, _, err = run_volqa(tmp_path, str(manifest), "--out", str(out), fsize=sum(sizes) + 64)
    assert code == 2, err
    assert "Traceback" not in err
    assert re.search(r"\(the tables: .*File too large.*\); 2 of 2 rows are recorded in "
                     r"journal\.jsonl and the tables were not written", err), err
    assert not (out / "results.csv").exists() and not (out / "results.parquet").exists()
    assert no_temp_files(out)
    code, _, err = run_volqa(tmp_path, str(manifest), "--out", str(out), "--resume")
    assert code == 0 and "2 row(s) reused, 0 to compute" in err, err  # nothing scored again
    assert len(pd.read_csv(out / "results.csv")) == 2


@pytest.mark.slow
def test_a_failed_map_write_keeps_the_metrics(tmp_path) -> None:
    shape = (48, 48, 48)
    rows = []
    for i in range(2):
        ref = phantom(i, shape)
        write_nii(tmp_path / f"r{i}.nii.gz", ref)
        write_nii(tmp_path / f"t{i}.nii.gz", degrade(ref, i, 5.0))
        rows.append({"subject_id": f"s{i}", "reference": f"r{i}.nii.gz", "test": f"t{i}.nii.gz"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "o"
    code, _, err = run_volqa(tmp_path, str(manifest), "--out", str(out), "--save-maps",
                             fsize=100_000)  # the tables fit, a 48^3 float32 map does not
    assert code == 0, err
    df = pd.read_parquet(out / "results.parquet")
    clean = volqa.score_manifest(manifest)
    assert (df["status"] == "ok").all()
    np.testing.assert_array_equal(df["ssim"], clean["ssim"])
    for note in df["notes"]:
        assert re.search(r"SSIM map not saved to .*/o/maps/s\d_\w+_ssim\.nii\.gz: File too "
                         r"large", note), note
    assert df["ssim_map"].isna().all() and not list((out / "maps").iterdir())


# ----------------------------------------------------------------------- signals in the write


@pytest.mark.slow
@pytest.mark.parametrize(("signals", "code", "written"), [
    ([signal.SIGTERM], 143, True), ([signal.SIGINT], 130, True),
    ([signal.SIGINT, signal.SIGINT], 130, False),
], ids=["sigterm-finishes", "sigint-finishes", "second-sigint-abandons"])
def test_signal_during_the_final_write(tmp_path, signals, code, written) -> None:
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    marker = tmp_path / "writing"
    proc = volqa_process(tmp_path, str(manifest), "--out", str(out), slow_write=marker)
    wait_for(marker.exists, proc)
    for s in signals:
        proc.send_signal(s)
        time.sleep(0.3)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert no_temp_files(out)
    assert (out / "results.csv").exists() == written
    assert (out / "results.parquet").exists() == written
    if written:
        assert len(pd.read_csv(out / "results.csv")) == 3
        assert "the finished rows are in" in err
    else:
        assert "while writing the tables, which were left as they were; the 3 finished rows " \
               "are in" in err
    assert err.strip().splitlines()[-1].strip() == shlex.join(
        ["volqa", "score", str(manifest), "--out", str(out), "--resume"])


def test_ctrl_c_while_importing_exits_130_quietly(tmp_path) -> None:
    """SIGINT delivered while the CLI's modules are being imported (a real signal, sent by
    the process to itself from an import hook, so the moment is certain)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(
        """
        import importlib.abc, os, signal, sys
        class Interrupt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "volqa.cli.root":
                    os.kill(os.getpid(), signal.SIGINT)
                return None
        sys.meta_path.insert(0, Interrupt())
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "volqa.cli", "--version"], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 130
    assert proc.stderr == "" and proc.stdout == ""


def test_inputs_are_never_written(tmp_path) -> None:
    """Every input hashed before and after a resumed run with maps (and nothing added)."""
    manifest = make_batch(tmp_path, n=3, mask=True)
    before = sha256_tree(tmp_path)
    volqa.score_manifest(manifest, out=tmp_path / "o", save_maps=True)
    volqa.score_manifest(manifest, out=tmp_path / "o", resume=True, win_size=7)
    after = {k: v for k, v in sha256_tree(tmp_path).items() if not k.startswith("o/")}
    assert after == before
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == before["manifest.csv"]
