"""``volqa compare`` end to end: inputs (Parquet, CSV, several tables), outputs, the paper
table, and every bad input as a clear message with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from analysis_data import study_rows, write_results
from scipy import stats
from typer.testing import CliRunner

from volqa.analysis import compare, load_results
from volqa.analysis.tables import paper_table
from volqa.errors import InputError, SettingsError
from volqa.settings import Settings

cli = CliRunner()


def run(*args) -> object:
    return cli.invoke(app_(), ["compare", *map(str, args)])


def app_():
    from volqa.cli import app

    return app


@pytest.fixture
def study(tmp_path):
    """Three methods on 10 subjects; one failed row, one missing value."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.6, 0.05, 10)
    values = {"zf": list(base), "cs": list(base + 0.03 + rng.normal(0, 0.01, 10)),
              "dl": list(base + 0.06 + rng.normal(0, 0.01, 10))}
    psnr = {m: [20 + 10 * v for v in vals] for m, vals in values.items()}
    mae = {m: [0.2 - 0.1 * v for v in vals] for m, vals in values.items()}
    rows = study_rows(values, psnr=psnr, mae=mae)
    for r in rows:
        r["site"] = "A" if int(r["subject_id"][1:]) < 5 else "B"
    rows[3]["status"] = "error"  # zf s03 failed
    rows[12]["mae"] = None  # cs s02 has no mae
    csv, parquet = write_results(tmp_path / "res", rows, covariates={"site": "string"})
    return csv, parquet, values


def test_outputs_and_directions(tmp_path, study) -> None:
    _, parquet, values = study
    out = tmp_path / "cmp"
    result = run(parquet, "--by", "method", "--baseline", "zf", "--out", out, "--n-boot", "200")
    assert result.exit_code == 0, result.output
    for name in ("summary", "pairwise", "ranking"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.parquet").is_file()
    summary = pd.read_parquet(out / "summary.parquet")
    assert dict(zip(summary["metric"], summary["direction"], strict=False)) == {
        "ssim": "higher", "psnr": "higher", "mae": "lower"}
    zf = summary[(summary["metric"] == "ssim") & (summary["method"] == "zf")].iloc[0]
    assert (zf["n"], zf["n_failed"], zf["left_out"]) == (9, 1, "s03")
    assert zf["mean"] == pytest.approx(np.mean([v for i, v in enumerate(values["zf"]) if i != 3]))
    pairs = pd.read_parquet(out / "pairwise.parquet")
    assert set(zip(pairs["method"], pairs["versus"], strict=True)) == {("cs", "zf"), ("dl", "zf")}
    cs_mae = pairs[(pairs["metric"] == "mae") & (pairs["method"] == "cs")].iloc[0]
    assert cs_mae["n"] == 8 and cs_mae["left_out"] == "s02, s03"
    ranking = pd.read_parquet(out / "ranking.parquet")
    best = ranking[(ranking["rank"] == 1) & (ranking["scheme"] == "aggregate-then-rank")]
    assert set(best["method"]) == {"dl"}  # best for ssim and psnr (higher) and mae (lower)
    assert {"share_rank_1", "share_rank_3", "kendall_tau_median"} <= set(ranking.columns)
    long = pd.read_parquet(out / "long.parquet")
    assert len(long) == 30 * 3 and {"subject_id", "method", "site", "metric", "value",
                                    "direction", "status", "error"} <= set(long.columns)
    failed = long[(long["method"] == "zf") & (long["subject_id"] == "s03")]
    assert failed["value"].isna().all() and set(failed["status"]) == {"error"}
    meta = json.loads(pq.read_schema(out / "pairwise.parquet").metadata[b"volqa"])
    assert meta["options"]["baseline"] == "zf" and meta["options"]["n_boot"] == 200
    assert meta["options"]["command"].startswith("volqa compare ")
    assert meta["inputs"][0]["command"] == "volqa score manifest.csv"
    # the printed paper table: best marked, significance against the baseline marked
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["metric", "zf", "cs", "dl"]
    ssim = next(ln for ln in lines if ln.startswith("ssim"))
    assert ssim.rstrip().endswith("*†") and "mean ± sd" in ssim
    assert "†: p < 0.05 against zf (Wilcoxon signed-rank, Holm-adjusted" in result.stdout
    # and what was left out, and why
    assert ("note: ssim, zf: 1 row(s) without a value left out (1 failed, 0 empty, 0 "
            "infinite): s03.") in result.stdout
    assert "note: mae, cs vs zf: 2 subject(s) without a value for both left out: s02, s03." \
        in result.stdout


def test_csv_and_parquet_inputs_give_the_same_comparison(study) -> None:
    csv, parquet, _ = study
    a = compare([parquet], by="method", n_boot=200)
    b = compare([csv], by="method", n_boot=200)
    for name in ("summary", "pairwise", "ranking"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def test_one_table_per_method_and_groups(tmp_path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for k, method in enumerate(("a", "b")):
        rows = study_rows({method: list(rng.normal(0.5 + 0.1 * k, 0.02, 6))})
        for r in rows:
            r["site"] = "X" if r["subject_id"] < "s03" else "Y"
        paths.append(write_results(tmp_path / method, rows, covariates={"site": "string"})[1])
    comp = compare(paths, by="method", group="site", n_boot=200, baseline="a")
    assert comp.study.metrics == ("ssim",)  # the only metric with values
    assert comp.summary["site"].tolist() == ["X", "X", "Y", "Y"]
    assert (comp.pairwise["n"] == 3).all()
    x = comp.pairwise[(comp.pairwise["site"] == "X") & (comp.pairwise["metric"] == "ssim")]
    table = comp.study.frame
    a = table[(table["method"] == "a") & (table["site"] == "X")]["ssim"].to_numpy()
    b = table[(table["method"] == "b") & (table["site"] == "X")]["ssim"].to_numpy()
    assert x["p"].iloc[0] == pytest.approx(stats.wilcoxon(b, a).pvalue)
    text = paper_table(comp)
    assert "site = X" in text and "site = Y" in text


def test_a_per_region_table_with_group(tmp_path) -> None:
    """A long table with one row per subject, method and region (as a per-region table of
    ``volqa score`` has): each region is compared on its own; without --group the repeated
    subjects are refused with the way out."""
    rng = np.random.default_rng(3)
    rows = []
    for region in ("brain", "skull"):
        part = study_rows({"a": list(rng.normal(0.6, 0.02, 6)),
                           "b": list(rng.normal(0.7, 0.02, 6))})
        rows += [{**r, "region": region} for r in part]
    path = write_results(tmp_path / "regions", rows, covariates={"region": "string"})[1]
    comp = compare([path], by="method", group="region", baseline="a", n_boot=100)
    assert comp.pairwise["region"].tolist() == ["brain", "skull"]
    assert (comp.pairwise["n"] == 6).all() and (comp.pairwise["wins"] == 6).all()
    with pytest.raises(InputError, match="has 2 rows for method 'a'.*--group for a column"):
        load_results([path], by="method")


def test_paper_table_formats(study) -> None:
    comp = compare([study[1]], by="method", baseline="zf", n_boot=200)
    md = paper_table(comp, "markdown")
    assert md.startswith("| metric |  | zf | cs | dl |") and "**" in md and "†" in md
    tex = paper_table(comp, "latex")
    assert r"\begin{tabular}{llrrr}" in tex and r"\textbf{" in tex and r"$^\dagger$" in tex
    assert r"$\pm$" in tex and "ssim $\\uparrow$" in tex


def _settings_table(tmp_path, name, settings):
    rows = study_rows({name: [0.5, 0.6, 0.7]})
    return write_results(tmp_path / name, rows, settings=settings)[1]


def test_different_settings_are_refused_unless_allowed(tmp_path) -> None:
    a = _settings_table(tmp_path, "a", Settings())
    b = _settings_table(tmp_path, "b", Settings.from_options(win_size=7))
    with pytest.raises(SettingsError,
                       match=r"ssim_win_size: 11 in a/results.parquet, 7 in b/results.parquet"):
        load_results([a, b], by="method")
    result = run(a, b, "--by", "method", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "different settings" in result.stderr
    assert "--allow-different-settings" in result.stderr and "Traceback" not in result.output
    allowed = run(a, b, "--by", "method", "--out", tmp_path / "o", "--allow-different-settings",
                  "--n-boot", "100")
    assert allowed.exit_code == 0, allowed.output
    assert "Tables scored with different settings: ssim_win_size" in allowed.stdout
    summary = pd.read_csv(tmp_path / "o/summary.csv")
    assert summary["settings_override"].str.contains("ssim_win_size").all()
    meta = json.loads((tmp_path / "o/compare.json").read_text())
    assert any("ssim_win_size" in d for d in meta["settings_override"])


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda p: p / "res/results.parquet", ["--by", "methd"],
     "--by column 'methd' is not in"),
    (lambda p: p / "res/results.parquet", ["--metrics", "ssim,foo"], "unknown metric(s) 'foo'"),
    (lambda p: p / "res/results.parquet", ["--metrics", "ssim,hfen"], "'hfen' not in"),
    (lambda p: p / "res/results.parquet", ["--metrics", "nrmse"],
     "metric(s) 'nrmse' not in"),
    (lambda p: p / "res/results.parquet", ["--subject", "site"], "has 5 rows for method"),
    (lambda p: p / "res/results.parquet", ["--baseline", "unet"], "baseline 'unet' is not a"),
    (lambda p: p / "res/results.parquet", ["--group", "centre"], "--group column 'centre'"),
])
def test_bad_options_exit_2(tmp_path, study, make, args, message) -> None:
    result = run(make(tmp_path), "--out", tmp_path / "o", "--n-boot", "100", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_bad_tables_exit_2(tmp_path) -> None:
    other = tmp_path / "other.csv"
    pd.DataFrame({"subject_id": ["a"], "method": ["x"], "ssim": [0.5]}).to_csv(other)
    result = run(other, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "is not a volqa result table" in result.stderr
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    result = run(broken, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "cannot read" in result.stderr and "Parquet" in result.stderr
    made = run(write_results(tmp_path / "ok", study_rows({"a": [0.5], "b": [0.6]}))[1],
               "--out", tmp_path / "made", "--n-boot", "100")
    assert made.exit_code == 0, made.output
    result = run(tmp_path / "made/summary.parquet", "--out", tmp_path / "o")  # not a score table
    assert result.exit_code == 2 and "is not a volqa result table" in result.stderr
    result = run(tmp_path / "missing.parquet", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "missing.parquet" in result.stderr

    one = write_results(tmp_path / "one", study_rows({"unet": [0.5, 0.6]}))[1]
    result = run(one, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "only one method in column 'method' ('unet')" in result.stderr

    rows = study_rows({"a": [0.5, 0.6]}) + [
        {"subject_id": f"t{i}", "method": "b", "ssim": 0.7} for i in range(2)]
    apart = write_results(tmp_path / "apart", rows)[1]
    result = run(apart, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "no subject in" in result.stderr
    assert "scored ok for two methods" in result.stderr


def test_help_and_no_traceback_for_an_unwritable_out(tmp_path, study) -> None:
    text = cli.invoke(app_(), ["compare", "--help"], terminal_width=100).stdout
    for flag in ("--by", "--subject", "--metrics", "--baseline", "--group", "--test",
                 "--n-boot", "--out", "--format", "--allow-different-settings"):
        assert flag in text
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(study[1], "--out", blocker / "sub", "--n-boot", "100")
    assert result.exit_code == 2 and "cannot create output folder" in result.stderr
