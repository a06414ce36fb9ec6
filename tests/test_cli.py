"""`volqa score` end to end through Typer's CliRunner: files, columns, types, exit codes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pipeline_data import make_batch, phantom, write_manifest, write_nii
from typer.testing import CliRunner

import volqa
from volqa.cli import app
from volqa.io import read_volume
from volqa.pipeline.normalize import normalize_pair

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data_manifest.csv"
DEGRADATIONS = ROOT / "data/example/degradations.csv"
cli = CliRunner()


def run(*args: str):
    return cli.invoke(app, ["score", *map(str, args), "--no-progress"])


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.mark.skipif(not BUNDLED.exists(), reason="bundled example data not present")
def test_bundled_manifest_end_to_end(tmp_path: Path) -> None:
    """The README's first command: the example study, 8 subjects x 3 methods."""
    out = tmp_path / "res"
    result = run(BUNDLED, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "24 ok, 0 failed" in result.stdout
    assert (out / "results.csv").exists() and (out / "results.parquet").exists()

    table = pq.read_table(out / "results.parquet")
    df = table.to_pandas()
    with open(BUNDLED, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    manifest_cols = list(rows[0])
    assert manifest_cols == ["subject_id", "reference", "test", "mask", "method", "site",
                             "acceleration"]
    assert list(df.columns[: len(manifest_cols)]) == manifest_cols
    for col in ("subject_id", "reference", "test", "mask", "method", "site"):
        assert df[col].tolist() == [r[col] for r in rows]  # text columns unchanged
    assert df["acceleration"].tolist() == [4] * 24  # an integer covariate
    expected = manifest_cols + [
        "status", "error", "ssim", "ssim_masked", "psnr", "nrmse", "mae", "mse", "shape",
        "spacing", "data_range", "norm_offset", "norm_scale", "norm_clip_low", "norm_clip_high",
        "normalize", "data_range_fixed", "percentile_low", "percentile_high",
        "intensity_window_level", "intensity_window_width", "ssim_preset", "ssim_window",
        "ssim_win_size", "ssim_sigma", "ssim_covariance", "ssim_border", "ssim_k1", "ssim_k2",
        "ssim_slices", "ssim_2d_axis", "resample", "min_coverage", "reoriented", "resampled",
        "coverage", "device", "host",
        "seconds", "notes", "volqa_version",
    ]  # fmt: skip
    assert list(df.columns) == expected
    schema = table.schema
    for col in ("ssim", "ssim_masked", "psnr", "nrmse", "mae", "mse", "data_range",
                "ssim_sigma", "ssim_k1", "ssim_k2", "seconds", "norm_offset", "norm_scale"):
        assert str(schema.field(col).type) == "double", col
    assert str(schema.field("ssim_win_size").type) == "int64"
    assert str(schema.field("acceleration").type) == "int64"
    assert str(schema.field("resampled").type) == "bool"
    for col in ("status", "error", "shape", "device", "subject_id", "method", "site"):
        assert str(schema.field(col).type) == "string", col

    # values equal volqa.ssim on the loaded (normalised) arrays
    for r, got in zip(rows, df.itertuples(), strict=True):
        ref = read_volume(BUNDLED.parent / r["reference"])
        test = read_volume(BUNDLED.parent / r["test"])
        n = normalize_pair(ref.array, test.array)
        assert got.ssim == float(volqa.ssim(n.reference, n.test, data_range=n.data_range))
        mask = read_volume(BUNDLED.parent / r["mask"]).array != 0
        want = float(volqa.ssim(n.reference, n.test, data_range=1.0, mask=mask))
        assert got.ssim_masked == pytest.approx(want, abs=1e-12)

    # the CSV holds the same values as the Parquet file
    text = read_csv(out / "results.csv")
    assert list(text.columns) == expected
    np.testing.assert_array_equal(text["ssim"].astype(float), df["ssim"])
    assert text["status"].tolist() == ["ok"] * 24


def test_bundled_degradations_nifti_equals_dicom(tmp_path: Path) -> None:
    """The single-phantom set: the same volume as NIfTI and as a DICOM series scores the
    same, and a masked row gets ssim_masked."""
    result = run(DEGRADATIONS, "--out", tmp_path / "res")
    assert result.exit_code == 0, result.stderr
    assert "8 ok, 0 failed" in result.stdout
    by_id = pd.read_parquet(tmp_path / "res/results.parquet").set_index("subject_id")
    assert by_id.loc["phantom-zf4-dicom", "ssim"] == by_id.loc["phantom-zf4", "ssim"]
    assert by_id["ssim_masked"].notna().tolist() == [
        s == "phantom-zf8-masked" for s in by_id.index]
    assert by_id["noise_sigma"].tolist()[4:6] == [0.03, 0.05]  # a float covariate


def test_parquet_metadata_holds_the_settings(tmp_path: Path) -> None:
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "res"
    result = run(manifest, "--out", out, "--preset", "skimage", "--normalize", "percentile",
                 "--percentiles", "1,99", "--ssim-2d", "2")
    assert result.exit_code == 0, result.stderr
    meta = json.loads(pq.read_schema(out / "results.parquet").metadata[b"volqa"])
    s = meta["settings"]
    assert s["normalize"] == "percentile" and s["percentiles"] == [1.0, 99.0]
    assert s["ssim"]["preset"] == "skimage" and s["ssim"]["win_size"] == 7
    assert s["ssim_2d_axis"] == 2 and "ssim_2d" in s["metrics"]
    assert meta["volqa_version"] == volqa.__version__ and meta["rows_ok"] == 2
    df = pd.read_parquet(out / "results.parquet")
    assert df["ssim_2d"].notna().all() and set(df["ssim_preset"]) == {"skimage"}


def test_identical_pair_writes_inf(tmp_path: Path) -> None:
    ref = write_nii(tmp_path / "r.nii.gz", phantom(0))
    manifest = write_manifest(tmp_path / "m.csv", [
        {"subject_id": "same", "reference": "r.nii.gz", "test": "r.nii.gz"}])
    result = run(manifest, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    assert read_csv(tmp_path / "o/results.csv").loc[0, "psnr"] == "inf"
    assert pd.read_parquet(tmp_path / "o/results.parquet").loc[0, "psnr"] == math.inf
    assert ref.exists()


def test_failed_row_exit_1_and_batch_goes_on(tmp_path: Path) -> None:
    manifest = make_batch(tmp_path, n=3)
    (tmp_path / "data/s1_test.nii.gz").unlink()
    result = run(manifest, "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    df = read_csv(tmp_path / "o/results.csv")
    assert df["status"].tolist() == ["ok", "error", "ok"]
    err = df.loc[1, "error"]
    assert "sub-01" in err and "s1_test.nii.gz" in err and "no such file" in err
    assert df.loc[1, "ssim"] == "" and df.loc[0, "ssim"] != ""
    assert "2 ok, 1 failed" in result.stdout and "failed: subject 'sub-01'" in result.stderr
    assert "failed:" not in result.stdout  # messages go to stderr, as the README says


def test_strict_makes_missing_files_a_manifest_error(tmp_path: Path) -> None:
    manifest = make_batch(tmp_path, n=3)
    (tmp_path / "data/s1_test.nii.gz").unlink()
    result = run(manifest, "--out", tmp_path / "o", "--strict")
    assert result.exit_code == 2
    assert "test file not found" in result.stderr and "subject 'sub-01'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_fail_fast(tmp_path: Path) -> None:
    manifest = make_batch(tmp_path, n=4)
    (tmp_path / "data/s1_ref.nii.gz").write_bytes(b"")
    result = run(manifest, "--out", tmp_path / "o", "--fail-fast", "--workers", "0")
    assert result.exit_code == 1
    df = read_csv(tmp_path / "o/results.csv")
    assert df["subject_id"].tolist() == ["sub-00", "sub-01"]
    assert df["status"].tolist() == ["ok", "error"]
    assert "--fail-fast" in result.stderr and "--resume" in result.stderr


@pytest.mark.parametrize(
    ("manifest_text", "match"),
    [
        ("subject,reference,test\n", "missing column"),
        ("subject_id,reference,test\n", "empty"),
        ("subject_id,reference,test\na,r.nii,t.nii\na,r.nii,t.nii\n", "duplicate of row 1"),
    ],
)
def test_manifest_errors_exit_2_and_write_nothing(tmp_path, manifest_text, match) -> None:
    m = tmp_path / "m.csv"
    m.write_text(manifest_text)
    result = run(m, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert match in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_non_utf8_manifest_exit_2(tmp_path) -> None:
    m = tmp_path / "m.csv"
    m.write_bytes("subject_id,reference,test\nJosé,a,b\n".encode("latin-1"))
    result = run(m, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "not UTF-8" in result.stderr


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--normalize", "robust"], "robust"),
        (["--window", "40"], "LEVEL,WIDTH"),
        (["--percentiles", "a,b"], "LOW,HIGH"),
        (["--metrics", "ssim,foo"], "unknown metric"),
        (["--data-range", "4024"], "add --normalize none"),
        (["--normalize", "window"], "LEVEL,WIDTH"),
        (["--ssim-2d", "3"], "less than or equal to 2"),
        (["--win-size", "8"], "odd"),
        (["--max-memory", "lots"], "512M"),
        (["--resume", "--overwrite"], "exclude each other"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, match) -> None:
    manifest = make_batch(tmp_path, n=1)
    result = run(manifest, "--out", tmp_path / "o", *args)
    assert result.exit_code == 2, result.output
    assert match in result.stderr
    assert "Traceback" not in result.output


def test_missing_manifest_path_exit_2(tmp_path) -> None:
    result = run(tmp_path / "nope.csv")
    assert result.exit_code == 2 and "nope.csv" in result.stderr


def test_non_empty_out_needs_resume_or_overwrite(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "o"
    assert run(manifest, "--out", out).exit_code == 0
    result = run(manifest, "--out", out)
    assert result.exit_code == 2
    assert "--resume" in result.stderr and "--overwrite" in result.stderr
    assert run(manifest, "--out", out, "--overwrite").exit_code == 0
    assert run(manifest, "--out", out, "--resume").exit_code == 0


def test_help_lists_score_and_options() -> None:
    result = cli.invoke(app, ["--help"])
    assert result.exit_code == 0 and "score" in result.stdout
    result = cli.invoke(app, ["score", "--help"])
    for flag in ("--normalize", "--resume", "--overwrite", "--fail-fast", "--save-maps",
                 "--ssim-2d", "--device", "--max-memory", "--workers", "--preset"):
        assert flag in result.stdout


def test_unusable_out_folder_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run(BUNDLED, "--out", blocker / "out")
    assert result.exit_code == 2
    assert "cannot create output folder" in result.stderr and "Traceback" not in result.stderr
