"""Manifest reading and validation (volqa.io.manifest)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from volqa.errors import ManifestError
from volqa.io.manifest import missing_files, read_manifest, reference_as_test
from volqa.io.paths import split_series


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("ref.nii.gz", "t 1.nii.gz", "t2.nii.gz", "mask.nii.gz", "Ünïcode ref.nii"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dicom").mkdir()
    return tmp_path


def test_valid_manifest_resolves_paths_and_keeps_cells(files: Path) -> None:
    m = write(
        files / "m.csv",
        "subject_id,reference,test,mask,site,acc\n"
        "s1,ref.nii.gz,t 1.nii.gz,mask.nii.gz,A,04\n"
        'sub 2,Ünïcode ref.nii,"t2.nii.gz",, B ,\n'
        f"s3,dicom#1.2.840.10008.9,{files / 't2.nii.gz'},,C,8\n",
    )
    man = read_manifest(m)
    assert man.columns == ("subject_id", "reference", "test", "mask", "site", "acc")
    assert len(man) == 3 and man.has_mask
    r1, r2, r3 = man.rows
    assert r1.reference == str(files / "ref.nii.gz")
    assert r1.test == str(files / "t 1.nii.gz")
    assert r1.mask == str(files / "mask.nii.gz")
    assert r2.mask is None  # empty mask cell: no mask for this row
    assert r2.reference == str(files / "Ünïcode ref.nii")
    # passthrough cells unchanged, as text (leading zero, spaces, empty)
    assert r1.values["acc"] == "04" and r2.values["site"] == " B " and r2.values["acc"] == ""
    assert r3.reference == f"{files / 'dicom'}#1.2.840.10008.9"
    assert r3.test == str(files / "t2.nii.gz")  # absolute paths stay absolute
    assert (r1.line, r2.line, r3.line) == (2, 3, 4)
    assert r2.where() == "row 2 (line 3, subject 'sub 2')"


def test_relative_paths_resolve_against_manifest_folder_not_cwd(
    files: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = write(files / "m.csv", "subject_id,reference,test\ns1,ref.nii.gz,t2.nii.gz\n")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert read_manifest(m).rows[0].reference == str(files / "ref.nii.gz")


def test_utf8_bom_and_blank_lines_accepted(files: Path) -> None:
    m = write(files / "m.csv", "\ufeffsubject_id,reference,test\n\ns1,ref.nii.gz,t2.nii.gz\n\n")
    man = read_manifest(m)
    assert man.columns[0] == "subject_id" and len(man) == 1


def test_missing_columns_listed_with_found_columns(files: Path) -> None:
    m = write(files / "m.csv", "subject,Reference,test\ns1,ref.nii.gz,t2.nii.gz\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) subject_id, reference") as e:
        read_manifest(m)
    assert "found: 'subject', 'Reference', 'test'" in str(e.value)
    assert "case-sensitive" in str(e.value)


@pytest.mark.parametrize("text", ["", "\n\n", "subject_id,reference,test\n"])
def test_empty_manifest(files: Path, text: str) -> None:
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(write(files / "m.csv", text))


def test_duplicate_subject_test_pairs(files: Path) -> None:
    m = write(
        files / "m.csv",
        "subject_id,reference,test\n"
        "s1,ref.nii.gz,t2.nii.gz\n"
        "s1,ref.nii.gz,./t2.nii.gz\n"  # same file written differently
        "s2,ref.nii.gz,t2.nii.gz\n",  # another subject: fine
    )
    with pytest.raises(ManifestError, match=r"row 2 \(line 3, subject 's1'\): duplicate of row 1"):
        read_manifest(m)


def test_a_test_that_is_the_reference_file_is_listed_and_refused_when_strict(
        files: Path) -> None:
    os.symlink(files / "ref.nii.gz", files / "link.nii.gz")
    m = write(
        files / "m.csv",
        "subject_id,reference,test\n"
        "s1,ref.nii.gz,ref.nii.gz\n"
        "s2,ref.nii.gz,dicom/../ref.nii.gz\n"  # the same path written differently
        "s3,ref.nii.gz,link.nii.gz\n"  # another name of the same file
        "s4,ref.nii.gz,t2.nii.gz\n"  # fine
        "s5,dicom#1.2.3,dicom#1.2.4\n",  # two series of one folder: fine
    )
    listed = reference_as_test(read_manifest(m))  # not an error by default
    with pytest.raises(ManifestError) as info:
        read_manifest(m, strict=True)
    expected = [f"row {row} (line {row + 1}, subject {sid!r}): test {cell!r} is the reference "
                "file itself, so it scores as a perfect reconstruction"
                for row, (sid, cell) in enumerate([("s1", "ref.nii.gz"),
                                                   ("s2", "dicom/../ref.nii.gz"),
                                                   ("s3", "link.nii.gz")], 1)]
    assert [line.split(";")[0] for line in listed] == expected
    assert "has 3 problem(s)" in str(info.value)
    assert all(e in str(info.value) for e in expected)


def test_non_utf8(files: Path) -> None:
    m = write(files / "m.csv", "subject_id,reference,test\nsé,ref.nii.gz,t2.nii.gz\n", "latin-1")
    with pytest.raises(ManifestError, match=r"not UTF-8: byte 0xe9 at line 2.*Save the file"):
        read_manifest(m)


def test_binary_file_is_not_csv(files: Path) -> None:
    m = files / "m.csv"
    m.write_bytes(gzip.compress(b"\x00" * 400))
    with pytest.raises(ManifestError, match="not"):
        read_manifest(m)
    m.write_bytes(b"\x5c\x01\x00\x00" + b"\x00" * 344)  # a NIfTI header given as manifest
    with pytest.raises(ManifestError, match="not a CSV text file"):
        read_manifest(m)


def test_semicolon_separated_is_explained(files: Path) -> None:
    m = write(files / "m.csv", "subject_id;reference;test\ns1;ref.nii.gz;t2.nii.gz\n")
    with pytest.raises(ManifestError, match="needs commas as separators"):
        read_manifest(m)


def test_text_that_is_not_a_table(files: Path) -> None:
    m = write(files / "m.csv", '{"subjects": ["a", "b"]}\n')
    with pytest.raises(ManifestError, match="is this a CSV manifest"):
        read_manifest(m)


def test_every_problem_in_one_message(files: Path) -> None:
    m = write(
        files / "m.csv",
        "subject_id,reference,test,status\n"
        "s1,ref.nii.gz,t2.nii.gz,x\n"
        ",ref.nii.gz,t2.nii.gz,x\n"
        "s3,ref.nii.gz\n"
        "s1,ref.nii.gz,t2.nii.gz,y\n",
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    msg = str(e.value)
    assert "has 4 problem(s); nothing was scored" in msg
    assert "'status' clash with volqa's output columns" in msg
    assert "row 2 (line 3): empty subject_id" in msg
    assert "row 3 (line 4, subject 's3'): 2 fields but the header has 4" in msg
    assert "row 4 (line 5, subject 's1'): duplicate of row 1" in msg


def test_missing_files_are_row_errors_unless_strict(files: Path) -> None:
    m = write(
        files / "m.csv",
        "subject_id,reference,test,mask\n"
        "s1,ref.nii.gz,gone.nii.gz,\n"
        "s2,ref.nii.gz,t2.nii.gz,nomask.nii.gz\n"
        "s3,ref.nii.gz,t2.nii.gz,\n",
    )
    man = read_manifest(m)  # default: readable, the rows fail when scored
    assert len(man) == 3
    assert missing_files(man) == [
        f"row 1 (line 2, subject 's1'): test file not found: {files / 'gone.nii.gz'}",
        f"row 2 (line 3, subject 's2'): mask file not found: {files / 'nomask.nii.gz'}",
    ]
    with pytest.raises(ManifestError, match="has 2 problem") as e:
        read_manifest(m, strict=True)
    assert "gone.nii.gz" in str(e.value) and "nomask.nii.gz" in str(e.value)


def test_manifest_path_problems(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="is a folder"):
        read_manifest(tmp_path)


def test_split_series(tmp_path: Path) -> None:
    assert split_series("/d/ser#1.2.3") == ("/d/ser", "1.2.3")
    assert split_series("/d/file#1.nii") == ("/d/file#1.nii", None)  # not a UID
    hashed = tmp_path / "a#12"
    hashed.write_bytes(b"")
    assert split_series(str(hashed)) == (str(hashed), None)  # an existing file keeps its name
    assert split_series("plain.nii") == ("plain.nii", None)


def test_permission_denied_manifest(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    m = write(tmp_path / "m.csv", "subject_id,reference,test\n")
    m.chmod(0)
    with pytest.raises(ManifestError, match="cannot be read"):
        read_manifest(m)
