"""Analysis-ready result tables: typed covariates, every setting in columns, CSV == Parquet,
the end-of-run summary per group."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pipeline_data import make_batch, write_manifest
from typer.testing import CliRunner

from volqa.cli import app
from volqa.errors import ManifestError
from volqa.io.covariates import infer_type, parse_cell, split_declaration
from volqa.io.manifest import read_manifest
from volqa.pipeline.summary import failures, number_format, summarize
from volqa.schema import SETTING_COLUMNS
from volqa.settings import Settings

cli = CliRunner()


@pytest.mark.parametrize(("cells", "kind"), [
    (["4", "8", "", "-2", "0"], "integer"),
    (["0.03", "1", "1e-3", "-2.5", ""], "float"),
    (["True", "false", "TRUE", ""], "boolean"),
    (["01", "02"], "text"),  # zero-padded codes keep their zeros
    (["4", "x"], "text"),  # all or nothing
    (["1", " 2"], "text"),  # spaces are part of the text
    ([".5", "1"], "text"),
    (["inf", "1.0"], "text"),
    (["9223372036854775808"], "float"),  # beyond int64
    (["", ""], "text"),
])
def test_covariate_type_inference(cells, kind) -> None:
    assert infer_type(cells) == kind


def test_declarations_and_parsing() -> None:
    assert split_declaration("acc:integer") == ("acc", "integer")
    assert split_declaration("site:str") == ("site", "text")
    assert split_declaration("time:12") == ("time:12", None)  # not a type: part of the name
    assert parse_cell("", "integer") is None and parse_cell("FALSE", "boolean") is False
    assert parse_cell("-2", "integer") == -2 and parse_cell("1e-3", "float") == 0.001


def test_a_declared_type_is_checked(tmp_path) -> None:
    rows = [{"subject_id": "a", "reference": "r.nii", "test": "t.nii", "acc:integer": "4"},
            {"subject_id": "b", "reference": "r.nii", "test": "u.nii", "acc:integer": "x4"}]
    with pytest.raises(ManifestError, match=r"'acc' is declared integer but 1 cell\(s\) are "
                                            r"not: 'x4'"):
        read_manifest(write_manifest(tmp_path / "m.csv", rows))
    rows[1]["acc:integer"] = "8"
    rows[0]["site:text"] = rows[1]["site:text"] = "1"
    man = read_manifest(write_manifest(tmp_path / "m.csv", rows))
    assert man.columns[-2:] == ("acc", "site")
    assert man.types == {"acc": "integer", "site": "text"}
    assert man.typed(man.rows[0])["site"] == "1" and man.typed(man.rows[1])["acc"] == 8


def _typed_batch(tmp_path):
    manifest = make_batch(tmp_path, n=3, mask=True)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df["count"] = ["4", "", "8"]
    df["dose"] = ["0.5", "1", ""]
    df["contrast"] = ["true", "False", ""]
    df["note"] = ["", "x", ""]
    df.to_csv(manifest, index=False)
    return manifest


def test_csv_and_parquet_read_back_the_same(tmp_path) -> None:
    manifest = _typed_batch(tmp_path)
    out = tmp_path / "o"
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    schema = pq.read_schema(out / "results.parquet")
    types = {c: str(schema.field(c).type) for c in
             ("site", "acceleration", "count", "dose", "contrast", "note", "mask")}
    assert types == {"site": "string", "acceleration": "string", "count": "int64",
                     "dose": "double", "contrast": "bool", "note": "string", "mask": "string"}
    a = pd.read_parquet(out / "results.parquet")
    b = pd.read_csv(out / "results.csv")
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        missing = a[col].isna()
        assert missing.tolist() == b[col].isna().tolist(), col  # missing is missing in both
        if missing.all():
            continue  # a CSV cannot tell the type of an empty column
        if col == "acceleration":  # zero-padded codes: text in Parquet, numbers to pandas
            assert a[col].tolist() == ["01", "02", "03"] and b[col].tolist() == [1, 2, 3]
            continue
        assert a[col].dtype == b[col].dtype, col
        assert a[col][~missing].tolist() == b[col][~missing].tolist(), col
    assert a["count"].tolist()[0] == 4 and math.isnan(a["count"][1])
    assert a["mask"].isna().tolist() == [False, True, False]  # the empty mask cell is missing
    text = (out / "results.csv").read_text().splitlines()
    assert text[1].split(",")[list(a.columns).index("count")] == "4"  # not 4.0


def test_every_setting_is_a_column(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=1)
    out = tmp_path / "o"
    args = ["score", str(manifest), "--out", str(out), "--no-progress", "--normalize",
            "percentile", "--percentiles", "1,99", "--preset", "skimage", "--ssim-2d", "1"]
    assert cli.invoke(app, args).exit_code == 0
    row = pd.read_parquet(out / "results.parquet").iloc[0]
    assert (row["percentile_low"], row["percentile_high"]) == (1.0, 99.0)
    assert (row["ssim_preset"], row["ssim_window"], row["ssim_win_size"]) == (
        "skimage", "uniform", 7)
    assert row["ssim_2d_axis"] == 1 and not row["resample"]
    assert pd.isna(row["intensity_window_level"]) and pd.isna(row["data_range_fixed"])
    ref = np.asarray(nib.load(tmp_path / "data/s0_ref.nii.gz").dataobj, dtype=np.float64)
    lo, hi = np.percentile(ref, [1, 99])
    assert row["norm_clip_low"] == pytest.approx(lo, rel=1e-6)
    assert row["norm_clip_high"] == pytest.approx(hi, rel=1e-6)
    assert row["norm_offset"] == row["norm_clip_low"]
    assert row["norm_scale"] == pytest.approx(1 / (hi - lo), rel=1e-6)
    # every Settings field is in a column or decides one (metrics: the metric columns;
    # save_maps: the ssim_map column)
    s = Settings.from_options(normalize="window", intensity_window=(40, 400))
    cols = s.columns()
    assert (cols["intensity_window_level"], cols["intensity_window_width"]) == (40.0, 400.0)
    assert {c.name for c in SETTING_COLUMNS} == set(cols)
    meta = json.loads(pq.read_schema(out / "results.parquet").metadata[b"volqa"])
    assert meta["command"] == (f"volqa score {manifest} --out {out} --normalize percentile "
                               "--percentiles 1,99 --preset skimage --ssim-2d 1 --no-progress")


def test_number_format_is_one_per_column() -> None:
    fmt = number_format([0.9947, 0.4785, np.nan])
    assert (fmt(0.9947), fmt(0.4785), fmt(0.05)) == ("0.9947", "0.4785", "0.0500")
    fmt = number_format([24.55, 18.87, math.inf])
    assert (fmt(24.5519), fmt(math.inf)) == ("24.55", "inf")
    fmt = number_format([0.013, 0.00079])
    assert (fmt(0.013), fmt(0.00079)) == ("0.01300", "0.00079")
    assert number_format([2.5e6])(2.5e6) == "2.500e+06"


def test_summary_per_group() -> None:
    rows = [{"status": "ok", "method": m, "ssim": v, "psnr": p}
            for m, v, p in (("a", 0.5, 20.0), ("b", 0.9, 30.0), ("a", 0.7, 22.0),
                            ("b", 0.8, math.inf))]
    rows.append({"status": "error", "method": "a", "error": "subject 'x': broken"})
    text = summarize(rows, ["ssim", "psnr"], total=5, group_by="method")
    lines = text.splitlines()
    assert lines[0] == "5 of 5 row(s) done: 4 ok, 1 failed"
    assert lines[1].split() == ["metric", "method", "mean", "±", "sd", "median", "min", "max",
                                "n"]
    assert lines[2].split() == ["ssim", "a", "0.6000", "±", "0.1414", "0.6000", "0.5000",
                                "0.7000", "2"]
    assert lines[3].split() == ["b", "0.8500", "±", "0.0707", "0.8500", "0.8000", "0.9000", "2"]
    assert lines[5].split()[:3] == ["b", "30.00", "±"] and "(1 inf left out)" in lines[5]
    assert not any(line.startswith("failed:") for line in lines)  # those go to stderr:
    assert failures(rows) == ["failed: subject 'x': broken"]


def test_group_by_in_the_cli(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=4)
    result = cli.invoke(app, ["score", str(manifest), "--out", str(tmp_path / "o"),
                              "--no-progress", "--group-by", "site"])
    assert result.exit_code == 0, result.output
    ssim_lines = [ln for ln in result.stdout.splitlines() if ln.split()[:1] in (["ssim"], ["B"])]
    assert ssim_lines[0].split()[:2] == ["ssim", "A"] and ssim_lines[0].split()[-1] == "2"
    bad = cli.invoke(app, ["score", str(manifest), "--out", str(tmp_path / "p"),
                           "--no-progress", "--group-by", "methd"])
    assert bad.exit_code == 2 and "--group-by 'methd' is not a column" in bad.stderr
    assert not (tmp_path / "p").exists()
