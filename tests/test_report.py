"""``volqa report``: a real (small) study scored by volqa, its HTML report, the worst-subject
slices read and normalised as scored, and the page opened in headless chromium."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from browser import find_browser, open_page
from pipeline_data import degrade, phantom, write_manifest, write_nii
from typer.testing import CliRunner

import volqa
from volqa.analysis import compare
from volqa.analysis.panels import _volumes, worst_rows
from volqa.cli import app
from volqa.io import read_volume

cli = CliRunner()
NETWORK = ("http:", "https:", "ws:", "wss:", "ftp:")


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict[str, Path]:
    """Two methods on four subjects, scored in two runs: ``a`` with --save-maps, ``b``
    without and with one test file missing (a failed row)."""
    root = tmp_path_factory.mktemp("study")
    tables = {}
    for k, method in enumerate("ab"):
        rows = []
        for i in range(4):
            ref = write_nii(root / f"data/s{i}_ref.nii.gz", phantom(i))
            test = root / f"data/s{i}_{method}.nii.gz"
            if not (method == "b" and i == 3):
                write_nii(test, degrade(phantom(i), 10 * i + k, noise=3.0 + 3 * k))
            rows.append({"subject_id": f"sub-{i}", "reference": f"data/{ref.name}",
                         "test": f"data/{test.name}", "method": method})
        manifest = write_manifest(root / f"manifest_{method}.csv", rows)
        args = ["score", str(manifest), "--out", str(root / method), "--no-progress",
                "--metrics", "ssim,psnr"] + (["--save-maps"] if method == "a" else [])
        result = cli.invoke(app, args)
        assert result.exit_code == (0 if method == "a" else 1), result.output
        tables[method] = root / method / "results.parquet"
    return tables


@pytest.fixture(scope="module")
def report(scored, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("report")
    result = cli.invoke(app, ["report", str(scored["a"]), str(scored["b"]), "--by", "method",
                              "--out", str(out / "report.html"), "--figures",
                              str(out / "figs"), "--worst", "1", "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    return out / "report.html", out / "figs"


def test_the_page_has_every_section_and_nothing_external(report) -> None:
    page = report[0].read_text(encoding="utf-8")
    for heading in ("Provenance", "Paper table and pairwise tests", "Pairwise comparisons",
                    "ssim (higher is better)", "psnr (higher is better)",
                    "Rankings and their stability", "Failed rows", "Worst subjects"):
        assert f">{heading}<" in page, heading
    assert "volqa score" in page and "manifest_a.csv" in page  # the scoring command lines
    assert "ssim.win_size" in page and "normalize" in page  # every scoring setting
    assert "sub-3" in page and "s3_b.nii.gz" in page  # the failed row and its error
    images = re.findall(r'<img src="([^"]*)"', page)
    # per metric: distribution, difference, rank blobs; one worst subject per method
    assert len(images) == 2 * 3 + 2
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # only inline data and anchors
    assert "<script" not in page and "@import" not in page


def test_figures_are_also_written_as_png_and_svg(report) -> None:
    names = sorted(p.name for p in report[1].iterdir())
    assert "distribution_ssim.png" in names and "distribution_ssim.svg" in names
    assert "ranks_psnr.svg" in names and any(n.startswith("worst_a_sub-") for n in names)
    assert len(names) == 2 * 8


def test_worst_subject_volumes_are_prepared_as_scored(scored) -> None:
    comp = compare([scored["a"], scored["b"]], by="method", n_boot=100)
    rows = worst_rows(comp, "ssim", 1)
    frame = comp.study.frame
    for method, subject, value, _ in rows:  # the lowest SSIM of each method's ok rows
        mine = frame[(frame["method"] == method) & (frame["status"] == "ok")]
        assert value == mine["ssim"].min()
        assert subject == mine.loc[mine["ssim"].idxmin(), "subject_id"]
    assert [m for m, *_ in rows] == ["a", "b"]
    root = scored["a"].parent.parent
    for method, subject, value, idx in rows:
        ref, test, smap, mask, spacing = _volumes(comp, idx)
        i = subject[-1]
        raw_ref = read_volume(root / f"data/s{i}_ref.nii.gz").array.astype(np.float64)
        raw_test = read_volume(root / f"data/s{i}_{method}.nii.gz").array.astype(np.float64)
        lo, hi = raw_ref.min(), raw_ref.max()  # the default minmax, from the reference
        np.testing.assert_allclose(ref, (raw_ref - lo) / (hi - lo), atol=1e-6)
        np.testing.assert_allclose(test, (raw_test - lo) / (hi - lo), atol=1e-6)
        assert mask is None and tuple(spacing) == (1.0, 1.0, 1.5)
        value_from_map = float(np.nanmean(smap.astype(np.float64)))
        assert value_from_map == pytest.approx(value, abs=1e-6)
        _, want = volqa.ssim(ref, test, data_range=1.0, return_map=True)
        np.testing.assert_allclose(smap[5:-5, 5:-5, 5:-5], want.numpy(), atol=1e-6)
        if method == "a":  # the map --save-maps wrote is used (NaN outside the valid map)
            saved = scored["a"].parent / comp.study.frame.loc[idx, "ssim_map"]
            np.testing.assert_array_equal(smap, np.asarray(nib.load(saved).dataobj))


def test_a_volume_that_cannot_be_read_again_says_why(scored, tmp_path) -> None:
    root = scored["a"].parent.parent
    comp = compare([scored["a"], scored["b"]], by="method", metrics=["ssim"], n_boot=100)
    (_, subject, _, _), _ = worst_rows(comp, "ssim", 1)
    moved = root / f"data/s{subject[-1]}_a.nii.gz"
    moved.rename(tmp_path / "away.nii.gz")
    try:
        out = tmp_path / "r.html"
        result = cli.invoke(app, ["report", str(scored["a"]), str(scored["b"]), "--out",
                                  str(out), "--worst", "1", "--n-boot", "100", "--metrics",
                                  "ssim", "--no-progress"])
    finally:
        (tmp_path / "away.nii.gz").rename(moved)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert f"No slices: subject &#39;{subject}&#39;" in page and moved.name in page


def test_report_usage_errors(scored, tmp_path) -> None:
    result = cli.invoke(app, ["report", str(scored["a"]), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "only one method" in result.stderr
    result = cli.invoke(app, ["report", str(scored["a"]), str(scored["b"]), "--out",
                              str(tmp_path / "no/such/folder/r.html"), "--n-boot", "100"])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert "Traceback" not in result.output


BROWSER = find_browser()


@pytest.mark.skipif(BROWSER is None, reason="no chromium and chromedriver on PATH (.ci/run "
                    "installs Debian's chromium and chromium-driver)")
def test_the_report_renders_in_headless_chromium(report, tmp_path) -> None:
    from PIL import Image

    page = open_page(report[0], width=1200, height=1600)
    assert page.ready == "complete" and page.title.startswith("volqa report")
    assert len(page.images) == 8
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in page.images)
    assert [u for u in page.requests if u.startswith(NETWORK)] == []
    assert any(u.startswith("file:") for u in page.requests)  # the log does record requests
    shot = tmp_path / "shot.png"
    shot.write_bytes(page.screenshot)
    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert image.shape[0] > 1000 and image.std() > 20  # text, tables and figures, not blank
    assert len(np.unique(image)) > 50

    # the check can fail: a page that loads an image over HTTP is caught
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    requests = open_page(control, width=400, height=300).requests
    assert "http://127.0.0.1:9/x.png" in requests
