"""Terminal and spreadsheet safety (issue 9, class 6): subject ids and paths with escape
sequences never reach the terminal raw (progress bar, summary, failed-row lines, warnings,
resume messages), and the result tables keep every value exactly as given."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pipeline_data import degrade, phantom, write_manifest, write_nii

from volqa.pipeline.progress import printable

ROOT = Path(__file__).resolve().parents[1]

HOSTILE = {
    "clear": "sub-01\x1b[2J\x1b[H",  # CSI: clear the screen, cursor home
    "title": "sub-02\x1b]0;owned\x07",  # OSC: retitle the window
    "c1": "sub-03\x9b31m",  # C1 CSI in one character
    "bidi": "sub-04\u202egnp.exe",  # right-to-left override
}
# raw control characters that must not appear (\n and the progress bar's \r aside)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_printable_escapes_every_control_character() -> None:
    for text in HOSTILE.values():
        shown = printable(text)
        assert not CONTROL.search(shown), repr(shown)
        assert shown.startswith(text[:6])
    assert printable("a\nb", keep_newlines=True) == "a\nb"
    assert printable("a\nb") == "a\\nb"
    assert printable("Zoë – réf ü") == "Zoë – réf ü"  # printable text is left alone


@pytest.mark.slow
def test_hostile_subject_ids_are_escaped_everywhere_volqa_prints(tmp_path) -> None:
    rows = []
    for i, sid in enumerate(HOSTILE.values()):
        ref = phantom(i)
        write_nii(tmp_path / f"r{i}.nii.gz", ref)
        write_nii(tmp_path / f"t{i}.nii.gz", degrade(ref, i))
        rows.append({"subject_id": sid, "reference": f"r{i}.nii.gz",
                     "test": f"t{i}.nii.gz" if i else "gone\x1b[2J.nii.gz",
                     "note": "=HYPERLINK(\"http://x\",\"click\")" if i == 1 else "+1-2@x"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "volqa.cli", "score", str(manifest), "--out", str(out)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8",
                           timeout=300)
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                             encoding="utf-8", timeout=300)
    for proc in (first, resumed):
        assert proc.returncode == 1, proc.stderr
        for stream in (proc.stdout, proc.stderr):
            assert not CONTROL.search(stream), repr(CONTROL.search(stream).group())
    # the failed row, the missing-file warning and the progress bar name the subject escaped
    assert "failed: subject 'sub-01\\x1b[2J\\x1b[H'" in first.stderr
    assert "gone\\x1b[2J.nii.gz" in first.stderr
    assert "sub-02\\x1b]0;owned\\x07" in first.stderr  # the progress bar's label
    assert "volqa: resuming in" in resumed.stderr
    # the tables keep the values exactly (no escaping, no spreadsheet prefixes)
    csv = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    parquet = pd.read_parquet(out / "results.parquet")
    for table in (csv, parquet):
        assert table["subject_id"].tolist() == list(HOSTILE.values())
        assert table["note"].tolist() == [r["note"] for r in rows]
