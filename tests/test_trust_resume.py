"""``--resume`` reuses only what is still true (issue 9, classes 2 and 4): fingerprints cover
every file that feeds a row and its contents, resumed rows keep the version that computed
them, and journal lines that volqa did not write (or that were edited) are skipped and
reported instead of raising or being trusted."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from pipeline_data import (
    UID_ROOT,
    CountCalls,
    degrade,
    make_batch,
    phantom,
    save_dicom_series,
    write_manifest,
    write_nii,
)
from typer.testing import CliRunner

import volqa
import volqa.pipeline.row as row_module
from volqa.cli import app
from volqa.io.journal import read_journal, record_check
from volqa.pipeline.resume import fingerprint

cli = CliRunner()



def same_size_same_mtime(path: Path, new_bytes: bytes) -> None:
    """Replace ``path``'s content keeping its size and modification time (``cp -p``)."""
    st = path.stat()
    assert len(new_bytes) == st.st_size
    path.write_bytes(new_bytes)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


# ----------------------------------------------------------------------- fingerprints


def test_same_size_same_mtime_replacement_is_recomputed(tmp_path) -> None:
    """The attack: a test volume replaced by another of the same size and mtime (uncompressed
    NIfTI, so the sizes match exactly) used to be reused."""
    data = tmp_path / "data"
    ref = phantom(0)
    write_nii(data / "r.nii", ref)
    write_nii(data / "t.nii", degrade(ref, 0, 2.0))
    write_nii(data / "other.nii", degrade(ref, 1, 9.0))
    manifest = write_manifest(tmp_path / "m.csv", [
        {"subject_id": "s", "reference": "data/r.nii", "test": "data/t.nii"}])
    first = volqa.score_manifest(manifest, out=tmp_path / "o")
    same_size_same_mtime(data / "t.nii", (data / "other.nii").read_bytes())
    calls = CountCalls()
    again = volqa.score_manifest(manifest, out=tmp_path / "o", resume=True, scorer=calls)
    assert calls.subjects == ["s"]
    assert again.loc[0, "ssim"] != first.loc[0, "ssim"]
    assert again.loc[0, "ssim"] == volqa.score_manifest(manifest).loc[0, "ssim"]


def test_mhd_data_file_and_dicom_slice_changes_are_noticed(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ref = phantom(2)
    image = sitk.GetImageFromArray(np.ascontiguousarray(ref.transpose(2, 1, 0)))
    sitk.WriteImage(image, str(data / "r.mhd"))  # r.mhd + r.raw
    for name, seed in (("t", 2), ("other", 5)):
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(
            degrade(ref, seed, 3.0).transpose(2, 1, 0))), str(data / f"{name}.mhd"))
    save_dicom_series(data / "dcm_r", np.round(8 * ref).astype(np.int16),
                      uid=f"{UID_ROOT}.51", description="r")
    save_dicom_series(data / "dcm_t", np.round(8 * degrade(ref, 3, 3.0)).astype(np.int16),
                      uid=f"{UID_ROOT}.52", description="t")
    manifest = write_manifest(tmp_path / "m.csv", [
        {"subject_id": "mhd", "reference": "data/r.mhd", "test": "data/t.mhd"},
        {"subject_id": "dicom", "reference": "data/dcm_r", "test": "data/dcm_t"}])
    volqa.score_manifest(manifest, out=tmp_path / "o")
    # the header t.mhd is untouched; only its data file changes
    same_size_same_mtime(data / "t.raw", (data / "other.raw").read_bytes())
    changed = sorted((data / "dcm_t").iterdir())[7]
    pixels = bytearray(changed.read_bytes())
    pixels[-10:] = bytes(b ^ 0x01 for b in pixels[-10:])  # five voxels of one slice
    same_size_same_mtime(changed, bytes(pixels))
    calls = CountCalls()
    volqa.score_manifest(manifest, out=tmp_path / "o", resume=True, scorer=calls)
    assert calls.subjects == ["mhd", "dicom"]


def test_fingerprint_is_the_content_of_every_file(tmp_path) -> None:
    write_nii(tmp_path / "a.nii", phantom(4))
    before = fingerprint(str(tmp_path / "a.nii"))
    os.utime(tmp_path / "a.nii", (0, 0))  # touch: same content, same fingerprint
    assert fingerprint(str(tmp_path / "a.nii")) == before
    assert fingerprint(str(tmp_path / "gone.nii")) == {"path": str(tmp_path / "gone.nii"),
                                                       "missing": True}


# ----------------------------------------------------------------------- versions


def test_resumed_rows_keep_the_version_that_computed_them(tmp_path, monkeypatch) -> None:
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    monkeypatch.setattr(row_module, "__version__", "0.0.9")
    volqa.score_manifest(manifest, out=out)
    monkeypatch.undo()
    write_nii(tmp_path / "data/s1_test.nii.gz", degrade(phantom(1), 77))
    df = volqa.score_manifest(manifest, out=out, resume=True)
    assert df["volqa_version"].tolist() == ["0.0.9", volqa.__version__, "0.0.9"]
    assert pd.read_parquet(out / "results.parquet")["volqa_version"].tolist() == \
        ["0.0.9", volqa.__version__, "0.0.9"]


# ----------------------------------------------------------------------- forged journal lines


def _resign(record: dict) -> str:
    """A record re-signed, as something that knows the checksum rule would write it."""
    body = {k: v for k, v in record.items() if k != "check"}
    return json.dumps({**body, "check": record_check(body)}, sort_keys=True)


def _edit(out: Path, change) -> None:
    journal = out / "journal.jsonl"
    lines = journal.read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec["type"] == "result" and rec["subject_id"] == "sub-01":
            lines[i] = change(rec)
    journal.write_text("\n".join(lines) + "\n")


def _forge_value(rec: dict) -> str:  # a hand edit of the SSIM, checksum left as it was
    rec["fields"]["ssim"] = 0.999
    return json.dumps(rec, sort_keys=True)


FORGERIES = {
    "edited-ok-value": (_forge_value, r"checksum mismatch \(edited after it was written\?\)"),
    "metric-as-text": (lambda r: _resign({**r, "fields": {**r["fields"], "ssim": "0.95"}}),
                       r"field 'ssim' = '0\.95' is not a float64 value"),
    "missing-fields": (lambda r: _resign({k: v for k, v in r.items() if k != "fields"}),
                       r"field 'fields' is None, not a dict"),
    "wrong-type": (lambda r: _resign({**r, "index": "1"}), r"field 'index' is '1', not a int"),
    "not-volqa": (lambda r: json.dumps({"key": r["key"], "fields": {"status": "ok"}}),
                  r"no volqa checksum \(not written by this volqa version\)"),
    "unknown-status": (lambda r: _resign({**r, "fields": {**r["fields"], "status": "great"}}),
                       r"status 'great' is neither 'ok' nor 'error'"),
    "unknown-field": (lambda r: _resign({**r, "fields": {**r["fields"], "bonus": 1.0}}),
                      r"unknown field 'bonus'"),
    "not-an-object": (lambda r: "[1, 2, 3]",
                      r"no volqa checksum \(not written by this volqa version\)"),
    "torn": (lambda r: json.dumps(r)[:40], r"not JSON \(torn by a killed run\?\)"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_journal_lines_volqa_did_not_write_are_skipped_and_reported(tmp_path, forgery) -> None:
    change, reason = FORGERIES[forgery]
    manifest = make_batch(tmp_path, n=3)
    out = tmp_path / "o"
    clean = volqa.score_manifest(manifest, out=out)
    _edit(out, change)
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert re.search(rf"volqa: warning: journal\.jsonl: .*{reason}; the line is ignored",
                     result.stderr), result.stderr
    assert "2 row(s) reused, 1 to compute" in result.stderr
    df = pd.read_parquet(out / "results.parquet")
    assert df.loc[1, "ssim"] == clean.loc[1, "ssim"] != 0.999  # recomputed, not the forgery


def test_journal_from_an_older_volqa_is_recomputed_not_trusted(tmp_path) -> None:
    """Records without checksums (volqa before this format) are all recomputed."""
    manifest = make_batch(tmp_path, n=2)
    out = tmp_path / "o"
    volqa.score_manifest(manifest, out=out)
    journal = out / "journal.jsonl"
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "check"}) + "\n"
                               for r in lines))
    calls = CountCalls()
    volqa.score_manifest(manifest, out=out, resume=True, scorer=calls)
    assert calls.subjects == ["sub-00", "sub-01"]
    after = read_journal(journal)
    assert len(after.skipped) == 5 and all("no volqa checksum" in s for s in after.skipped)
    assert sorted(r["type"] for r in after.records) == ["attempt"] * 2 + ["result"] * 2 + \
        ["stop"]


def test_copied_folder_still_resumes(tmp_path) -> None:
    """Fingerprints hold no absolute inode or mtime: a copied output folder with the same
    inputs resumes without recomputing."""
    manifest = make_batch(tmp_path, n=2)
    volqa.score_manifest(manifest, out=tmp_path / "o")
    shutil.copytree(tmp_path / "o", tmp_path / "o2")
    calls = CountCalls()
    volqa.score_manifest(manifest, out=tmp_path / "o2", resume=True, scorer=calls)
    assert calls.subjects == []
