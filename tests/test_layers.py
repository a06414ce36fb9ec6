"""The package's shape: one registry, one settings object, layers that import one way, a light
``import volqa``, a CLI whose help reads right, and a wheel that works outside the checkout."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from pipeline_data import CountCalls, make_batch, phantom, write_manifest, write_nii
from typer.testing import CliRunner

import volqa
from volqa.cli import app
from volqa.engine import SSIMSettings
from volqa.io import read_volume
from volqa.io.journal import load_journal
from volqa.pipeline.progress import printable, row_labels
from volqa.schema import METRICS, Metric
from volqa.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner()


def score(*args) -> object:
    return cli.invoke(app, ["score", *map(str, args), "--no-progress"])


# ----------------------------------------------------------------------------- the registry


@pytest.fixture
def max_error():
    """A metric added through the registry alone: the largest absolute voxel error."""
    metric = METRICS.register(Metric(
        "max_abs_error",
        lambda c: float(np.max(np.abs(c.test.astype(np.float64) - c.reference))),
        "largest absolute voxel error after normalisation", default=True,
        higher_is_better=False,
    ))
    yield metric
    METRICS.unregister(metric.name)


def test_a_registered_metric_reaches_every_output(tmp_path, max_error) -> None:
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    result = score(manifest, "--out", out)
    assert result.exit_code == 0, result.output
    # the summary, the CSV, the Parquet schema and the journal
    assert any(line.startswith("max_abs_error") for line in result.stdout.splitlines())
    csv = pd.read_csv(out / "results.csv")
    schema = pq.read_schema(out / "results.parquet")
    assert str(schema.field("max_abs_error").type) == "double"
    cols = list(csv.columns)
    assert cols.index("mse") + 1 == cols.index("max_abs_error")  # after the built-in metrics
    for rec in load_journal(out / "journal.jsonl").values():
        assert "max_abs_error" in rec["fields"]
    # the value, computed independently: min-max of the reference applied to both volumes
    for i, got in enumerate(csv["max_abs_error"]):
        ref = read_volume(tmp_path / f"data/s{i}_ref.nii.gz").array.astype(np.float64)
        test = read_volume(tmp_path / f"data/s{i}_test.nii.gz").array.astype(np.float64)
        lo, hi = ref.min(), ref.max()
        assert got == pytest.approx(np.abs((test - lo) / (hi - lo) - (ref - lo) / (hi - lo)).max(),
                                    rel=1e-5)
    # the CLI's help lists it, and --metrics selects it alone
    assert "max_abs_error" in cli.invoke(app, ["score", "--help"]).stdout
    only = score(manifest, "--out", tmp_path / "only", "--metrics", "max_abs_error")
    assert only.exit_code == 0, only.output
    assert [c for c in pd.read_csv(tmp_path / "only/results.csv").columns
            if c in METRICS] == ["max_abs_error"]


def test_registry_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already taken"):
        METRICS.register(Metric("ssim", lambda c: 0.0, "again"))
    with pytest.raises(ValueError, match="already taken"):
        METRICS.register(Metric("status", lambda c: 0.0, "a fixed column"))


# ----------------------------------------------------------------------------- settings


def test_settings_are_frozen_hashable_and_round_trip() -> None:
    s = Settings.from_options(preset="skimage", normalize="percentile", percentiles=(1, 99),
                              ssim_2d=2).for_manifest(has_mask=True)
    assert s.metrics == ("ssim", "ssim_masked", "ssim_2d", "psnr", "nrmse", "mae", "mse")
    assert Settings.from_dict(json.loads(json.dumps(s.as_dict()))) == s
    assert len({s, Settings.from_dict(s.as_dict())}) == 1
    with pytest.raises(AttributeError):
        s.normalize = "none"  # type: ignore[misc]
    # parameters of other modes do not change the hash
    a = Settings(normalize="minmax", percentiles=(1, 99))
    assert a.hash() == Settings().hash()
    assert Settings.from_options(a, win_size=7).differences(a) == ["win_size 11 -> 7"]


def test_unknown_option_is_a_type_error_naming_the_closest(tmp_path) -> None:
    ref = write_nii(tmp_path / "r.nii.gz", phantom(0))
    with pytest.raises(TypeError, match="'win_sise'.*did you mean 'win_size'"):
        volqa.score_pair(ref, ref, win_sise=7)


@pytest.mark.parametrize(("call", "error"), [
    (lambda: volqa.ssim(np.full((12, 12), np.nan), np.zeros((12, 12)), data_range=1), "NaN"),
    (lambda: volqa.ssim(np.zeros((12, 12)), np.zeros((12, 13)), data_range=1), "same shape"),
    (lambda: volqa.ssim(np.zeros((5, 12)), np.zeros((5, 12)), data_range=1), "fewer than"),
    (lambda: volqa.ssim(np.zeros((12, 12)), np.zeros((12, 12))), "data_range is required"),
])
def test_engine_errors_are_value_errors(call, error) -> None:
    with pytest.raises(ValueError, match=error):
        call()
    assert issubclass(volqa.GeometryError, ValueError)


# ----------------------------------------------------------------------------- resume



def test_resume_keeps_the_stored_settings_when_a_default_changes(tmp_path, monkeypatch) -> None:
    """A later volqa with another default (simulated: K2 0.03 -> 0.05) resumes a batch with the
    settings it started with: nothing is recomputed and the numbers stay."""
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    first = volqa.score_manifest(manifest, out=out)
    defaults = list(Settings.__init__.__defaults__)
    i = defaults.index(SSIMSettings())
    defaults[i] = SSIMSettings(k2=0.05)
    monkeypatch.setattr(Settings.__init__, "__defaults__", tuple(defaults))
    fresh = volqa.score_manifest(manifest)
    assert set(fresh["ssim_k2"]) == {0.05} and (fresh["ssim"] != first["ssim"]).all()  # in effect

    calls = CountCalls()
    again = volqa.score_manifest(manifest, out=out, resume=True, scorer=calls)
    assert calls.n == 0
    pd.testing.assert_frame_equal(again, first)
    assert again.attrs["volqa"]["resume"]["settings_changed"] == []
    stored = json.loads((out / "settings.json").read_text())
    assert stored["settings"]["ssim"]["k2"] == 0.03


def test_resume_with_a_changed_option_recomputes_and_says_why(tmp_path) -> None:
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    assert score(manifest, "--out", out).exit_code == 0
    changed = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--resume",
                               "--win-size", "7"])
    assert changed.exit_code == 0, changed.output
    assert ("0 row(s) reused, 3 to compute (3 settings changed); settings changed: "
            "win_size 11 -> 7") in changed.stderr
    assert set(pd.read_csv(out / "results.csv")["ssim_win_size"]) == {7}
    assert json.loads((out / "settings.json").read_text())["settings"]["ssim"]["win_size"] == 7

    write_nii(tmp_path / "data/s1_test.nii.gz", phantom(5))
    plain = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--resume"])
    assert plain.exit_code == 0, plain.output
    assert "2 row(s) reused, 1 to compute (1 input file changed)" in plain.stderr
    assert set(pd.read_csv(out / "results.csv")["ssim_win_size"]) == {7}  # from settings.json


# ----------------------------------------------------------------------------- the CLI


def test_version() -> None:
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"volqa {volqa.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"], ["demo", "fit", "--help"],
                                  ["compare", "--help"], ["report", "--help"]])
def test_help_reads_right(args) -> None:
    text = cli.invoke(app, args, terminal_width=100).stdout
    assert "<bool>" not in text and "{" not in text
    if args[0] in ("compare", "report"):
        assert f"{args[0]} [OPTIONS] RESULTS..." in text and "Exit status: 0" in text
    if args[0] == "score":
        assert "score [OPTIONS] MANIFEST" in text
        assert "--resample " in text and "--save-maps " in text
        assert "Exit status: 0" in text and "130/143" in text


def test_progress_names_rows_and_escapes_control_characters(tmp_path) -> None:
    from volqa.io.manifest import read_manifest

    rows = [{"subject_id": "sub-01", "reference": "r.nii", "test": f"{m}.nii", "method": m}
            for m in ("unet", "cs")]
    rows += [{"subject_id": "sub-02", "reference": "r.nii", "test": f"{m}/s2.nii", "method": "x"}
             for m in ("a", "b")]
    rows.append({"subject_id": "evil\x1b]0;owned\x07", "reference": "r.nii",
                 "test": "t.nii", "method": "unet"})
    labels = row_labels(read_manifest(write_manifest(tmp_path / "m.csv", rows)))
    assert labels[0] == "sub-01 method=unet" and labels[1] == "sub-01 method=cs"
    assert (labels[2], labels[3]) == ("sub-02 a/s2.nii", "sub-02 b/s2.nii")  # the paths differ
    assert labels[4] == "evil\\x1b]0;owned\\x07" and printable("a\nb") == "a\\nb"


# ----------------------------------------------------------------------------- layers

LAYERS = {  # a layer may import only from the layers listed (and itself)
    "engine": {"errors"},
    "io": {"errors", "schema"},
    "pipeline": {"errors", "schema", "settings", "execution", "engine", "io", "protocols"},
    "analysis": {"errors", "schema", "settings", "execution", "io", "pipeline", "protocols"},
    "demo": {"errors", "engine", "io"},
    "cli": {"errors", "schema", "settings", "execution", "engine", "io", "pipeline",
            "analysis", "demo", "protocols"},
}


def _volqa_imports(path: Path, package: str) -> set[str]:
    """First-level volqa modules imported by a file (absolute or relative)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(parts + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] if node.module or node.level == 0 else \
                [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "volqa" and len(parts) > 1 and not parts[1].startswith("_"):
                found.add(parts[1])  # (`__version__`, `_lazy`: the package's own base)
    return found


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_import_one_way(layer) -> None:
    for path in sorted((ROOT / "volqa" / layer).glob("*.py")):
        imported = _volqa_imports(path, f"volqa.{layer}")
        bad = imported - LAYERS[layer] - {layer}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_modules_stay_small() -> None:
    sizes = {p: len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "volqa").rglob("*.py")}
    assert max(sizes.values()) <= 420, max(sizes, key=sizes.get)


def test_import_volqa_is_light() -> None:
    code = ("import sys, volqa; heavy = ('PIL', 'typer', 'volqa.demo', 'torch', 'pandas'); "
            "print([m for m in heavy if m in sys.modules]); "
            "volqa.ssim; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         encoding="utf-8", cwd=ROOT, check=True).stdout.split()
    assert out == ["[]", "True"]


# ----------------------------------------------------------------------------- the wheel


@pytest.mark.slow
def test_wheel_runs_the_demo_and_a_manifest_outside_the_checkout(tmp_path) -> None:
    """``pip wheel`` of the checkout, installed (not editable) into a folder of its own, runs
    ``volqa demo fit`` with the packaged default target and ``volqa score`` on a manifest
    elsewhere, from a working directory outside the repository."""
    wheels, site, src = tmp_path / "wheels", tmp_path / "site", tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests", "docs"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True)
    (wheel,) = wheels.glob("volqa-*.whl")
    assert "volqa/analysis/templates/report.html.j2" in zipfile.ZipFile(wheel).namelist()
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    manifest = make_batch(work, n=2)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True,
                              text=True, encoding="utf-8", timeout=300)

    where = run("-c", "import volqa; print(volqa.__file__)")
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    demo = run("-m", "volqa.cli", "demo", "fit", "--max-steps", "3", "--out", "fit.gif")
    assert demo.returncode == 0, demo.stderr
    assert "phantom_gt.nii.gz" in demo.stdout and (work / "fit.gif").is_file()
    scored = run("-m", "volqa.cli", "score", str(manifest), "--out", "res", "--no-progress")
    assert scored.returncode == 0, scored.stderr
    assert "2 of 2 row(s) done: 2 ok" in scored.stdout
    assert torch.__version__  # the wheel uses the environment's torch
