"""Shards and ``volqa merge``: N shards then merge equal one run; each shard is a complete,
resumable output folder; merge refuses other settings, another manifest, missing rows and
duplicated rows with exit code 2 and a message that says what to do."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from executor_helpers import Slow, comparable
from pipeline_data import degrade, make_batch, phantom, write_manifest, write_nii
from typer.testing import CliRunner

import volqa
from volqa.cli import app
from volqa.errors import SettingsError
from volqa.io.manifest import read_manifest
from volqa.pipeline.shards import select_shard, shard_indices

cli = CliRunner()


def score(*args) -> object:
    return cli.invoke(app, ["score", *map(str, args), "--no-progress"])


def merge(*args) -> object:
    return cli.invoke(app, ["merge", *map(str, args)])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """Seven rows (masks on some; row 5's test is broken, so it fails) and one run of them."""
    root = tmp_path_factory.mktemp("study")
    manifest = make_batch(root, n=7, mask=True)
    (root / "data/s5_test.nii.gz").write_bytes(b"not a volume")
    single = root / "single"
    assert score(manifest, "--out", single).exit_code == 1
    return manifest, single


def _shards(manifest: Path, root: Path, n: int, *extra) -> list[Path]:
    parts = []
    for i in range(n):
        out = root / f"part-{i}"
        result = score(manifest, "--out", out, "--shard", f"{i}/{n}", *extra)
        assert result.exit_code in (0, 1), result.output
        parts.append(out)
    return parts


@pytest.mark.parametrize("total", [1, 5, 7, 12])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_partition_the_rows(total, n) -> None:
    shards = [list(shard_indices(total, (i, n))) for i in range(n)]
    assert sorted(i for s in shards for i in s) == list(range(total))  # each row once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    assert shards[0][:2] == list(range(0, total, n))[:2]  # every n-th row, as nnU-Net


def test_n_shards_then_merge_equal_one_run(study, tmp_path) -> None:
    manifest, single = study
    parts = _shards(manifest, tmp_path, 3)
    for i, part in enumerate(parts):  # each shard holds its rows only, and says so
        settings = json.loads((part / "settings.json").read_text())
        assert settings["shard"] == {"index": i, "count": 3} and settings["manifest_rows"] == 7
        rows = pd.read_csv(part / "results.csv")["subject_id"].tolist()
        assert rows == [f"sub-{k:02d}" for k in range(i, 7, 3)]
    merged = tmp_path / "merged"
    result = merge(parts[2], parts[0], parts[1], "--out", merged)  # any order
    assert result.exit_code == 1, result.output  # row 5 failed, as in the single run
    assert "7 of 7 row(s) done: 6 ok, 1 failed" in result.stdout
    want = comparable(pd.read_parquet(single / "results.parquet"))
    got = comparable(pd.read_parquet(merged / "results.parquet"))
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(comparable(pd.read_csv(merged / "results.csv")),
                                  comparable(pd.read_csv(single / "results.csv")))
    meta = json.loads(pq.read_schema(merged / "results.parquet").metadata[b"volqa"])
    assert meta["row_index"] == list(range(7)) and meta["rows_ok"] == 6
    # the merged folder is complete: --resume there recomputes nothing that was ok
    again = volqa.score_manifest(manifest, out=merged, resume=True)
    assert again.attrs["volqa"]["resume"]["reused"] == 6  # only the failed row is tried again
    assert again.attrs["volqa"]["resume"]["reasons"] == {"failed before": 1}


def test_a_shard_resumes_on_its_own(study, tmp_path) -> None:
    manifest, _ = study
    out = tmp_path / "part-1"
    assert score(manifest, "--out", out, "--shard", "1/3").exit_code == 0
    log = tmp_path / "calls.log"
    again = volqa.score_manifest(manifest, out=out, resume=True, scorer=Slow(0, log))  # no --shard
    assert not log.exists() and again["subject_id"].tolist() == ["sub-01", "sub-04"]
    with pytest.raises(SettingsError, match=r"holds the results of shard 1/3, but --shard 0/3"):
        volqa.score_manifest(manifest, out=out, resume=True, shard="0/3")
    result = score(manifest, "--out", out, "--resume", "--shard", "2/3")
    assert result.exit_code == 2 and "omit --shard" in result.stderr


def test_an_interrupted_shard_prints_a_resume_command_with_its_shard(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=4)
    broken = tmp_path / "data/s0_ref.nii.gz"  # the first row of shard 0/2 (rows 0 and 2)
    broken.write_bytes(b"")
    out = tmp_path / "part-0"
    result = score(manifest, "--out", out, "--shard", "0/2", "--fail-fast")
    assert result.exit_code == 1
    argv = shlex.split(result.stderr.strip().splitlines()[-1])
    assert argv == ["volqa", "score", str(manifest), "--out", str(out), "--resume",
                    "--shard", "0/2"]


def test_select_shard_keeps_manifest_indices(tmp_path) -> None:
    manifest = read_manifest(make_batch(tmp_path, n=5))
    part = select_shard(manifest, (1, 2))
    assert [r.index for r in part.rows] == [1, 3] and len(part) == 2


# ----------------------------------------------------------------------------- refusals


def test_merge_refuses_other_settings(study, tmp_path) -> None:
    manifest, _ = study
    a = _shards(manifest, tmp_path / "a", 2)
    b = _shards(manifest, tmp_path / "b", 2, "--win-size", "7")
    result = merge(a[0], b[1], "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert "the parts differ in their settings" in result.stderr
    assert "win_size 11 -> 7" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()  # nothing written


def test_merge_refuses_another_manifest(study, tmp_path) -> None:
    manifest, _ = study
    a = _shards(manifest, tmp_path / "a", 2)
    other = tmp_path / "other.csv"
    other.write_text(manifest.read_text().replace(",A,", ",site-A,"))
    b = _shards(other, tmp_path / "b", 2)
    result = merge(a[0], b[1], "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert "the parts differ in their manifest" in result.stderr
    assert "other.csv" in result.stderr and "manifest.csv" in result.stderr


def test_merge_lists_missing_rows_and_the_commands_that_produce_them(study, tmp_path) -> None:
    manifest, _ = study
    parts = _shards(manifest, tmp_path, 3)
    result = merge(parts[0], parts[2], "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert ("2 of the manifest's 7 row(s) are in no part: row 2 (subject 'sub-01'), row 5 "
            "(subject 'sub-04')") in result.stderr
    command = f"volqa score {manifest} --out {tmp_path / 'part-1'} --shard 1/3"
    assert command in result.stderr
    # a shard whose run stopped early (its table lacks a row) is to be resumed instead
    short = tmp_path / "short"
    assert score(manifest, "--out", short, "--shard", "1/3").exit_code == 0
    _drop_last_row(short)
    result = merge(parts[0], short, parts[2], "--out", tmp_path / "m")
    assert result.exit_code == 2 and "row 5 (subject 'sub-04')" in result.stderr
    assert f"volqa score {manifest} --out {short} --resume" in result.stderr


def _drop_last_row(part: Path) -> None:
    """Rewrite a part's tables without its last row, as a run stopped by --fail-fast would."""
    from volqa.io.tables import write_tables

    table = pq.read_table(part / "results.parquet")
    meta = json.loads(table.schema.metadata[b"volqa"])
    meta["row_index"] = meta["row_index"][:-1]
    table = table.slice(0, table.num_rows - 1).replace_schema_metadata(
        {b"volqa": json.dumps(meta).encode()})
    write_tables(table, part)


def test_merge_refuses_duplicated_rows(study, tmp_path) -> None:
    manifest, _ = study
    halves = _shards(manifest, tmp_path / "two", 2)
    thirds = _shards(manifest, tmp_path / "three", 3)
    result = merge(halves[0], halves[1], thirds[0], "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert "3 row(s) are in more than one part" in result.stderr
    assert "row 1 (subject 'sub-00'): in" in result.stderr
    result = merge(halves[0], halves[0], "--out", tmp_path / "m")
    assert result.exit_code == 2 and "is given twice" in result.stderr


def test_merge_help_reads_right() -> None:
    text = cli.invoke(app, ["merge", "--help"], terminal_width=100).stdout
    assert "merge [OPTIONS] DIR..." in text and "{" not in text
    assert "Exit status: 0 merged" in text and "2 the parts cannot be merged" in text


def test_merge_refuses_a_folder_that_is_not_a_part(study, tmp_path) -> None:
    manifest, _ = study
    empty = tmp_path / "empty"
    empty.mkdir()
    result = merge(empty, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "is not a volqa output folder" in result.stderr
    part = _shards(manifest, tmp_path, 1)[0]
    (part / "results.parquet").unlink()
    result = merge(part, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "has no results.parquet" in result.stderr
    assert "--resume" in result.stderr


FAKE_SBATCH = '''#!/usr/bin/env python3
"""sbatch for the test: runs the job at once (an array's tasks one after the other, as the
dependency afterany would let the next job wait for), logs its options, prints a job id."""
import os, subprocess, sys
args, opts = sys.argv[1:], {}
while args and args[0].startswith("--"):
    key, _, value = args.pop(0)[2:].partition("=")
    opts[key] = value
with open(os.environ["FAKE_SBATCH_LOG"], "a") as fh:
    fh.write(repr(sorted(opts.items())) + "\\n")
lo, _, hi = opts.get("array", "0-0").partition("-")
for task in range(int(lo), int(hi or lo) + 1):
    env = dict(os.environ, SLURM_CPUS_PER_TASK="1")
    if "array" in opts:
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    with open(opts["output"].replace("%a", str(task)), "w") as log:
        subprocess.run(["bash", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
print("1001" if "array" in opts else "1002;cluster")
'''


@pytest.mark.slow
def test_slurm_array_script_scores_shards_then_merges(study, tmp_path) -> None:
    import os
    import subprocess
    import sys

    from executor_helpers import ROOT

    manifest, single = study
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "VOLQA": f"{sys.executable} -m volqa.cli",
           "FAKE_SBATCH_LOG": str(tmp_path / "sbatch.log"), "VOLQA_SBATCH": "--partition=cpu"}
    out = tmp_path / "run"
    done = subprocess.run(["bash", str(ROOT / "scripts/slurm_array.sh"), "submit",
                           str(manifest), str(out), "2"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "submitted array job 1001 (2 shards) and merge job 1002" in done.stdout
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert "('array', '0-1')" in calls[0] and "('partition', 'cpu')" in calls[0]
    assert "('dependency', 'afterany:1001')" in calls[1]
    assert sorted(p.name for p in out.iterdir()) == ["logs", "merged", "part-0", "part-1"]
    merged = pd.read_parquet(out / "merged/results.parquet")
    pd.testing.assert_frame_equal(comparable(merged),
                                  comparable(pd.read_parquet(single / "results.parquet")))
    assert json.loads((out / "part-1/settings.json").read_text())["shard"] == {
        "index": 1, "count": 2}


def test_merge_joins_the_region_tables_in_manifest_order(tmp_path) -> None:
    """With a labels column each shard writes regions.csv/.parquet; merged, they equal one run's
    (rows in manifest order, each row's regions in label order)."""
    rows = []
    for i in range(5):
        ref = phantom(i)
        write_nii(tmp_path / f"r{i}.nii.gz", ref)
        write_nii(tmp_path / f"t{i}.nii.gz", degrade(ref, i))
        lab = np.zeros(ref.shape, np.int16)
        lab[2:9, 3:12, 3:12], lab[9:17, 4:15, 4:13] = 1, 2 + i % 2  # labels differ by row
        write_nii(tmp_path / f"l{i}.nii.gz", lab)
        rows.append({"subject_id": f"s{i}", "reference": f"r{i}.nii.gz",
                     "test": f"t{i}.nii.gz", "labels": f"l{i}.nii.gz"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    single = tmp_path / "single"
    assert score(manifest, "--out", single, "--metrics", "ssim,mae").exit_code == 0
    parts = _shards(manifest, tmp_path, 2, "--metrics", "ssim,mae")
    result = merge(parts[1], parts[0], "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    want = pd.read_parquet(single / "regions.parquet")
    got = pd.read_parquet(tmp_path / "merged/regions.parquet")
    assert got["subject_id"].tolist() == [f"s{i}" for i in range(5) for _ in range(2)]
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "merged/regions.csv"),
                                  pd.read_csv(single / "regions.csv"))
