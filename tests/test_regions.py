"""Per-region scores (a ``labels`` column -> regions.csv/parquet) and the new registry metrics
in a batch, against scikit-image and numpy computed here."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pipeline_data import AFFINE, SHAPE, degrade, phantom, write_manifest, write_nii
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

import volqa
from volqa.cli import app
from volqa.errors import ManifestError

cli = CliRunner()
SK_GAUSS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def label_map() -> np.ndarray:
    lab = np.zeros(SHAPE, np.int16)
    lab[3:10, 3:12, 3:12] = 1
    lab[10:17, 4:15, 4:13] = 5
    lab[0:2, 0:2, 0:2] = 9  # in the corner: outside the 11-voxel window's valid map
    return lab


def make(tmp_path, n=2, labels=True, extra=None):
    rows = []
    for i in range(n):
        ref = phantom(i)
        write_nii(tmp_path / f"r{i}.nii.gz", ref)
        write_nii(tmp_path / f"t{i}.nii.gz", degrade(ref, i))
        row = {"subject_id": f"s{i}", "reference": f"r{i}.nii.gz", "test": f"t{i}.nii.gz"}
        if labels:
            write_nii(tmp_path / f"l{i}.nii.gz", label_map())
            row["labels"] = f"l{i}.nii.gz"
        row.update(extra or {})
        rows.append(row)
    return write_manifest(tmp_path / "m.csv", rows)


def normalised(i):
    ref, test = phantom(i).astype(np.float64), degrade(phantom(i), i).astype(np.float64)
    lo, hi = ref.min(), ref.max()
    return (ref - lo) / (hi - lo), (test - lo) / (hi - lo)


def test_region_table_values_and_types(tmp_path):
    manifest = make(tmp_path)
    out = tmp_path / "out"
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--no-progress",
                              "--metrics", "ssim,psnr,mae,ssim_2d", "--ssim-2d", "0"])
    assert result.exit_code == 0, result.output
    assert "6 region rows" in result.stdout
    regions = pd.read_csv(out / "regions.csv")
    schema = pq.read_schema(out / "regions.parquet")
    assert str(schema.field("region").type) == "int64"
    assert str(schema.field("n_voxels").type) == "int64"
    assert list(regions.columns) == ["subject_id", "reference", "test", "labels", "region",
                                     "n_voxels", "status", "note", "ssim", "psnr", "mae"]
    assert list(regions["region"]) == [1, 5, 9, 1, 5, 9]
    lab = label_map()
    for _, r in regions.iterrows():
        i = int(r["subject_id"][1:])
        x, y = normalised(i)
        region = lab == r["region"]
        assert r["n_voxels"] == region.sum()
        assert r["psnr"] == pytest.approx(peak_signal_noise_ratio(x[region], y[region],
                                                                  data_range=1.0), rel=1e-5)
        assert r["mae"] == pytest.approx(np.abs(x - y)[region].mean(), rel=1e-5)
        if r["region"] == 9:  # too small for the valid map: said so, not a bare NaN
            assert r["status"] == "undefined" and np.isnan(r["ssim"])
            assert "ssim: no mask voxel lies inside the region the SSIM map covers" in r["note"]
            continue
        _, smap = structural_similarity(x, y, data_range=1.0, full=True, **SK_GAUSS)
        inner = (slice(5, -5),) * 3
        assert r["status"] == "ok" and pd.isna(r["note"])
        assert r["ssim"] == pytest.approx(smap[inner][region[inner]].mean(), abs=1e-6)
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 and "region" not in results.columns  # whole volumes stay apart


def test_resume_reuses_region_rows_and_overwrite_removes_them(tmp_path):
    manifest = make(tmp_path)
    out = tmp_path / "out"
    first = volqa.score_manifest(manifest, out=out, metrics="ssim,mae")
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    results = [rec for rec in journal if rec["type"] == "result"]
    assert len(results) == 2 and all(len(rec["regions"]) == 3 for rec in results)
    again = volqa.score_manifest(manifest, out=out, resume=True)
    assert again.attrs["volqa"]["resume"]["reused"] == 2
    pd.testing.assert_frame_equal(again.attrs["regions"], first.attrs["regions"])
    assert (out / "regions.parquet").exists()
    volqa.score_manifest(make(tmp_path, labels=False), out=out, overwrite=True)
    assert not (out / "regions.csv").exists() and not (out / "regions.parquet").exists()


REGION_FORGERIES = {  # region rows re-signed with a valid checksum, but not what volqa writes
    "value-as-text": (lambda rows: [{**rows[0], "ssim": "0.99"}, *rows[1:]],
                      r"field 'ssim' = '0\.99' in region 1 is not a float64 value"),
    "unknown-column": (lambda rows: [{**rows[0], "bonus": 1.0}, *rows[1:]],
                       r"unknown field 'bonus' in region 1"),
    "bad-status": (lambda rows: [{**rows[0], "status": "great"}, *rows[1:]],
                   r"status 'great' in region 1 is neither 'ok' nor 'undefined'"),
    "no-label": (lambda rows: [{k: v for k, v in rows[0].items() if k != "region"}, *rows[1:]],
                 r"a region row without an integer 'region' \(None\)"),
    "not-a-list": (lambda rows: {"1": rows[0]}, r"field 'regions' is not a list of region rows"),
}


@pytest.mark.parametrize("forgery", list(REGION_FORGERIES))
def test_forged_region_rows_in_the_journal_are_recomputed(tmp_path, forgery):
    from volqa.io.journal import record_check

    change, reason = REGION_FORGERIES[forgery]
    manifest = make(tmp_path)
    out = tmp_path / "out"
    first = volqa.score_manifest(manifest, out=out, metrics="ssim,mae")
    journal = out / "journal.jsonl"
    lines = journal.read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec["type"] == "result" and rec["subject_id"] == "s1":
            body = {k: v for k, v in rec.items() if k != "check"}
            body["regions"] = change(body["regions"])
            lines[i] = json.dumps({**body, "check": record_check(body)}, sort_keys=True)
    journal.write_text("\n".join(lines) + "\n")
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--resume",
                              "--no-progress"])
    assert result.exit_code == 0, result.output
    assert re.search(rf"journal\.jsonl: .*{reason}; the line is ignored", result.stderr), \
        result.stderr
    assert "1 row(s) reused, 1 to compute" in result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out / "regions.parquet"),
                                  first.attrs["regions"], check_dtype=False)


def test_score_pair_regions_and_flipped_label_map(tmp_path):
    ref = phantom(0)
    write_nii(tmp_path / "r.nii.gz", ref)
    write_nii(tmp_path / "t.nii.gz", degrade(ref, 0))
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = SHAPE[0] - 1
    nib.save(nib.Nifti1Image(label_map()[::-1].copy(), AFFINE @ flip),
             str(tmp_path / "l.nii.gz"))
    row = volqa.score_pair(tmp_path / "r.nii.gz", tmp_path / "t.nii.gz",
                           labels=tmp_path / "l.nii.gz", metrics="psnr,nmse,hfen")
    assert "labels" in row["reoriented"]
    x, y = normalised(0)
    for r in row["regions"]:
        region = label_map() == r["region"]
        assert r["nmse"] == pytest.approx(np.sum((y - x)[region] ** 2) / np.sum(x[region] ** 2),
                                          rel=1e-5)
        assert r["hfen"] == pytest.approx(volqa.hfen(x, y, mask=region), rel=1e-5)


def test_fractional_labels_fail_only_their_row(tmp_path):
    manifest = make(tmp_path)
    write_nii(tmp_path / "l1.nii.gz", label_map() * 0.5)
    frame = volqa.score_manifest(manifest, metrics="ssim")
    assert list(frame["status"]) == ["ok", "error"]
    assert "fractional values" in frame["error"][1] and "l1.nii.gz" in frame["error"][1]
    assert list(frame.attrs["regions"]["subject_id"]) == ["s0"] * 3


def test_region_columns_are_reserved_only_with_labels(tmp_path):
    with pytest.raises(ManifestError, match="'region'"):
        volqa.score_manifest(make(tmp_path, extra={"region": "liver"}))
    frame = volqa.score_manifest(make(tmp_path / "b", labels=False, extra={"region": "liver"}),
                                 metrics="ssim")
    assert list(frame["region"]) == ["liver", "liver"]


# ------------------------------------------------------------- new metrics in a batch


def test_new_metrics_in_a_batch_with_their_settings(tmp_path):
    manifest = make(tmp_path, labels=False)
    out = tmp_path / "out"
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--no-progress",
                              "--metrics", "ms_ssim,hfen,nmse", "--ms-ssim-scales", "1"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "results.csv")
    assert list(table["ms_ssim_scales"]) == [1, 1] and "eval_protocol" not in table.columns
    for i, r in table.iterrows():
        x, y = normalised(i)
        # one scale: MS-SSIM is SSIM (Wang et al. 2003, eq. 7 with M = 1)
        ssim = structural_similarity(x, y, data_range=1.0, **SK_GAUSS)
        assert r["ms_ssim"] == pytest.approx(ssim, abs=1e-6)
        assert r["nmse"] == pytest.approx(np.sum((y - x) ** 2) / np.sum(x * x), rel=1e-5)
        assert r["hfen"] == pytest.approx(volqa.hfen(x, y), rel=1e-5)
    stored = json.loads((out / "settings.json").read_text())["settings"]
    assert stored["ms_ssim_scales"] == 1


def test_ms_ssim_too_small_is_a_note_not_a_failed_row(tmp_path):
    manifest = make(tmp_path, n=1, labels=False)
    frame = volqa.score_manifest(manifest, metrics="ssim,ms_ssim")
    assert frame["status"][0] == "ok" and pd.isna(frame["ms_ssim"][0])
    assert "needs at least 161 voxels" in frame["notes"][0]


def test_ms_ssim_with_a_slice_convention_is_a_usage_error(tmp_path):
    with pytest.raises(volqa.SettingsError, match="no slice form"):
        volqa.Settings.from_options(protocol="fastmri", metrics="ssim,ms_ssim")
