"""Small synthetic volumes and manifests shared by the pipeline tests (not collected)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from volqa.pipeline import RowScorer

SHAPE = (20, 18, 16)
UID_ROOT = "1.2.826.0.1.3680043.8.498.7301"  # DICOM UIDs written by the tests
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def phantom(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A smooth, non-constant float32 volume in about [0, 100]."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g * g for g in grids)
    base = 80.0 * np.exp(-2.0 * r2) + 10.0 * grids[0]
    return (base + rng.normal(0, 1.0, shape)).astype(np.float32) + 20.0


def degrade(ref: np.ndarray, seed: int, noise: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return (ref + rng.normal(0, noise, ref.shape)).astype(np.float32)


def write_nii(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def write_manifest(path: Path, rows: Iterable[Mapping[str, str]], columns=None) -> Path:
    rows = list(rows)
    columns = columns or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def make_batch(root: Path, n: int = 4, *, mask: bool = False, noise: float = 4.0) -> Path:
    """``n`` subjects (ref + test .nii.gz, optional mask) and a manifest with covariates."""
    data = root / "data"
    rows = []
    for i in range(n):
        ref = phantom(i)
        write_nii(data / f"s{i}_ref.nii.gz", ref)
        write_nii(data / f"s{i}_test.nii.gz", degrade(ref, i, noise * (1 + i % 3)))
        row = {
            "subject_id": f"sub-{i:02d}",
            "reference": f"data/s{i}_ref.nii.gz",
            "test": f"data/s{i}_test.nii.gz",
        }
        if mask:
            m = np.zeros(SHAPE, np.uint8)
            m[4:16, 4:14, 3:13] = 1
            write_nii(data / f"s{i}_mask.nii.gz", m)
            row["mask"] = f"data/s{i}_mask.nii.gz" if i % 2 == 0 else ""
        row["site"] = ["A", "B"][i % 2]
        row["acceleration"] = f"{(i % 3) + 1:02d}"  # leading zero must survive as text
        rows.append(row)
    return write_manifest(root / "manifest.csv", rows)


def make_study(root: Path, subjects: int = 2, methods: int = 3, *, mask: bool = False) -> Path:
    """Each subject's reference (and mask) listed once per method, as a study lists them."""
    rows = []
    for s in range(subjects):
        ref = phantom(s)
        write_nii(root / f"ref{s}.nii.gz", ref)
        if mask:
            m = np.zeros(SHAPE, np.uint8)
            m[3:15, 4:14, 2:12 + s] = 1
            write_nii(root / f"mask{s}.nii.gz", m)
        for m in range(methods):
            write_nii(root / f"s{s}_m{m}.nii.gz", degrade(ref, 10 * s + m))
            rows.append({"subject_id": f"sub-{s}", "reference": f"ref{s}.nii.gz",
                         "test": f"s{s}_m{m}.nii.gz", "method": f"m{m}"}
                        | ({"mask": f"mask{s}.nii.gz"} if mask else {}))
    return write_manifest(root / "manifest.csv", rows)


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest; FIFOs and devices, which
    cannot be read without blocking, as "<special>")."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif not p.is_dir():
            out[str(p.relative_to(root))] = "<special>"
    return out


def rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix about x, then y, then z."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(matrix, spacing=(0.8, 0.9, 1.5), origin=(-20.0, 15.5, 30.25)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(matrix, dtype=float) * spacing
    affine[:3, 3] = origin
    return affine


def save_dicom_series(folder: Path, raw: np.ndarray, *, uid: str, description: str,
                      depths: np.ndarray | None = None, slope: float = 1.0,
                      intercept: float = 0.0, skip: tuple[int, ...] = (),
                      pixel_spacing: dict[int, float] | None = None) -> None:
    """Write an int16 (i, j, k) array as a CT series with pydicom, one file per k slice.

    Pixel (row r, column c) of slice k holds ``raw[c, r, k]``; ImagePositionPatient is
    ``(0, 0, depths[k])`` mm (LPS), orientation ``1\\0\\0\\0\\1\\0``, PixelSpacing 1 mm
    (``pixel_spacing`` gives other values for some slices). Slices listed in ``skip`` are not
    written (a series with missing slices).
    """
    folder.mkdir(parents=True, exist_ok=True)
    depths = np.arange(raw.shape[2]) * 1.5 if depths is None else np.asarray(depths)
    for k in range(raw.shape[2]):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = f"{uid}.{k + 1}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = f"{uid}.{k + 1}"
        ds.StudyInstanceUID = f"{UID_ROOT}.1"
        ds.SeriesInstanceUID = uid
        ds.FrameOfReferenceUID = f"{UID_ROOT}.2"
        ds.Modality = "CT"
        ds.PatientID = "volqa-catalogue"
        ds.SeriesDescription = description
        ds.SeriesNumber = int(uid.rsplit(".", 1)[1])
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(depths[k])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [(pixel_spacing or {}).get(k, 1.0)] * 2
        ds.SliceThickness = 1.5
        ds.Rows, ds.Columns = raw.shape[1], raw.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(raw[:, :, k].T).astype("<i2").tobytes()
        ds.save_as(folder / f"{description}_{k:03d}.dcm", enforce_file_format=True)


def write_damaged_nii(path: Path, array: np.ndarray, affine: np.ndarray | None = AFFINE,
                      dtype: type | None = None, **fields: object) -> Path:
    """A NIfTI-1 file whose stored header fields are then overwritten by ``fields`` in the
    file's bytes, as a damaged file holds them (nibabel would fix them when saving)."""
    raw = nib.Nifti1Image(array, affine, dtype=dtype).to_bytes()
    stored = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for key, value in fields.items():
        stored[key] = value
    raw = stored.binaryblock + raw[348:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def write_huge_nii(path: Path, shape: tuple[int, ...], dtype: type = np.float32,
                   body: int = 4096) -> Path:
    """A valid NIfTI header declaring ``shape`` followed by only ``body`` bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + bytes(body)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def write_huge_dicom(path: Path, rows: int = 4096, columns: int = 4096,
                     frames: int = 200) -> Path:
    """A 2.5 KB multi-frame DICOM file declaring rows x columns x frames 16-bit pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"  # multi-frame greyscale word
    meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}.99.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def results_in(journal: Path) -> int:
    """Result records in a journal (attempt and stop records left out)."""
    return journal.read_text().count('"type": "result"') if journal.exists() else 0


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll ``predicate`` until it holds; fail if ``proc`` exits first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"volqa exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")



class CountCalls(RowScorer):
    """A row scorer that counts engine computations (one per scored row): ``n``, and the
    subjects they were for, in order."""

    def __init__(self) -> None:
        self.n = 0
        self.subjects: list[str] = []

    def engine_metrics(self, p, *args, **kwargs):
        self.n += 1
        self.subjects.append(p.job.subject_id)
        return super().engine_metrics(p, *args, **kwargs)
