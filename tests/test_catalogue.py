"""Catalogue of bad inputs: one mixed batch, every case its own test id (issues 4 and 9).

One module-scoped run of ``volqa score`` (Typer's ``CliRunner``, ``--save-maps``) scores a
manifest that mixes every bad case with good rows; each case is then checked on its own row,
so the first failure hides none of the others. A failed row must say ``status="error"`` and
carry a message that names the subject, the file and the cause; good rows are scored; the
exit code is 1. Manifest-level problems stop the run before any row: exit 2, one message on
stderr, nothing written. Inputs are hashed (sha256) before and after the run and must be
unchanged, with no new file beside them.

Settings of the batch: ``--ssim-window uniform --win-size 7`` (population covariance, the
default), so that 16**3 volumes leave a 10**3 valid map and the integer cases can be checked
against ``skimage.metrics.structural_similarity(win_size=7, use_sample_covariance=False)`` in
float64; ``--max-volume-memory 64M``, so that the headers declaring huge volumes are refused
on any machine (the default limit depends on its memory).

Issue 9 added the inputs that used to give a confident wrong number, an obscure message or a
dead batch: non-finite or singular affines, a zero pixdim, a vox_offset inside the header,
complex, RGB and beyond-2**53 voxels, a lost header, DICOM slices with different pixel
spacings, FIFOs, and headers declaring 4 GiB (NIfTI) and 12.5 GiB (a 2.5 KB DICOM file).
"""

from __future__ import annotations

import builtins
import csv
import errno
import gzip
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pipeline_data import (
    UID_ROOT,
    save_dicom_series,
    sha256_tree,
    write_damaged_nii,
    write_huge_dicom,
    write_huge_nii,
)
from skimage.metrics import structural_similarity
from typer.testing import CliRunner

from volqa.cli import app

SHAPE = (16, 16, 16)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])  # RAS, 1 x 1 x 1.5 mm
WIN = 7
MAX_VOLUME = "64M"  # per-volume memory limit of the batch: every real input is far smaller
BATCH_OPTIONS = ("--ssim-window", "uniform", "--win-size", str(WIN), "--no-progress",
                 "--max-volume-memory", MAX_VOLUME)

# DICOM series written by this module: LPS identity orientation, 1 x 1 mm pixels, 1.5 mm
# slices (RAS affine diag(-1, -1, 1.5)); only DICOM is compared with DICOM.
UID_MULTI_A = f"{UID_ROOT}.11"
UID_MULTI_B = f"{UID_ROOT}.12"

# The file whose reads fail with EACCES through a patched open() (tests run as root, and root
# reads files whatever their mode bits say).
SIMULATED_LOCKED = "locked_simulated.nii.gz"

cli = CliRunner()


# --------------------------------------------------------------------------------- volumes


def phantom(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A smooth blob with a gradient and a little noise, float64, about 10..110."""
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    r2 = sum(a * a for a in axes)
    return 10.0 + 80.0 * np.exp(-2.5 * r2) + 12.0 * axes[0] + 12.0 + rng.normal(0, 1.0, shape)


def noisy(ref: np.ndarray, seed: int, sd: float) -> np.ndarray:
    return ref + np.random.default_rng(100 + seed).normal(0.0, sd, ref.shape)


REF = phantom(1)
TEST = noisy(REF, 1, 3.0)


def save_nii(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE, *,
             slope: float | None = None, inter: float | None = None) -> None:
    """NIfTI-1 file of ``array`` in its own dtype (float64 is stored as float32)."""
    data = np.asarray(array)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def rotated(affine: np.ndarray, degrees: float) -> np.ndarray:
    """``affine`` turned about the world z axis (an oblique grid, not a permutation/flip)."""
    t = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return rot @ affine


# Integer inputs whose naive arithmetic overflows: uint16 up to 65535, and int16 raw values
# up to 32767 stored with slope 2 / intercept -1024 (real values up to 64510). Both ranges
# straddle the int16 limit 32767, so a wrap-around cannot hide as a constant shift that the
# min-max normalisation would remove.
def _stored(volume: np.ndarray, low: float, high: float, dtype: type) -> np.ndarray:
    """``volume`` mapped linearly (REF's min -> low, REF's max -> high), clipped to dtype."""
    unit = (volume - REF.min()) / (REF.max() - REF.min())
    info = np.iinfo(dtype)
    return np.clip(np.round(low + (high - low) * unit), info.min, info.max).astype(dtype)


U16_REF, U16_TEST = (_stored(v, 20000, 66000, np.uint16) for v in (REF, TEST))
I16_REF, I16_TEST = (_stored(v, 8000, 33000, np.int16) for v in (REF, TEST))
DCM_REF = np.round(8.0 * REF).astype(np.int16)
DCM_TEST = np.round(8.0 * TEST).astype(np.int16)
SLOPE, INTER = 2.0, -1024.0


def build_inputs(d: Path) -> None:
    """Write every input file of the catalogue under ``d``."""
    save_nii(d / "ref.nii.gz", REF)
    save_nii(d / "test.nii.gz", TEST)
    save_nii(d / "test_b.nii.gz", noisy(REF, 2, 6.0))
    good_gz = (d / "test.nii.gz").read_bytes()
    good_raw = gzip.decompress(good_gz)

    (d / "zero.nii.gz").write_bytes(b"")
    damaged = bytearray(good_gz)
    damaged[60:260] = bytes(200)  # inside the deflate stream: bad codes or a CRC mismatch
    (d / "bad_stream.nii.gz").write_bytes(bytes(damaged))
    (d / "cut_stream.nii.gz").write_bytes(good_gz[: len(good_gz) // 2])
    (d / "truncated.nii").write_bytes(good_raw[:-1000])  # header intact, 1000 bytes short
    (d / "notes.nii").write_text("subject_id,comment\nsub-01,motion in slice 4\n" * 20)
    save_nii(d / "series4d.nii.gz", np.stack([TEST, TEST, TEST], axis=-1))
    save_nii(d / "single4d.nii.gz", TEST[..., None])
    save_nii(d / "slice2d.nii.gz", TEST[:, :, 8])
    save_nii(d / "slab1.nii.gz", TEST[:, :, 8:9])
    (d / "volume.raw").write_bytes(TEST.astype(np.float32).tobytes())
    (d / "empty_dir").mkdir()
    (d / "not_dicom").mkdir()
    (d / "not_dicom" / "readme.txt").write_text("scanner export failed\n")

    save_dicom_series(d / "multi", DCM_REF, uid=UID_MULTI_A, description="recon_a")
    save_dicom_series(d / "multi", DCM_TEST, uid=UID_MULTI_B, description="recon_b")
    save_dicom_series(d / "gap", DCM_REF, uid=f"{UID_ROOT}.21", description="gap", skip=(7,))
    uneven = np.arange(SHAPE[2]) * 1.5
    uneven[9:] += 0.4  # one step of 1.9 mm among steps of 1.5 mm (no gap: below 1.5 x median)
    save_dicom_series(d / "uneven", DCM_REF, uid=f"{UID_ROOT}.22", description="uneven",
                      depths=uneven)
    save_dicom_series(d / "ct_ref", I16_REF, uid=f"{UID_ROOT}.31", description="ct_ref",
                      slope=SLOPE, intercept=INTER)
    save_dicom_series(d / "ct_test", I16_TEST, uid=f"{UID_ROOT}.32", description="ct_test",
                      slope=SLOPE, intercept=INTER)

    save_nii(d / "short.nii.gz", TEST[:, :, :12])
    save_nii(d / "coarse.nii.gz", TEST, np.diag([1.0, 1.0, 3.0, 1.0]))
    save_nii(d / "oblique.nii.gz", TEST, rotated(AFFINE, 15.0))
    flipped = np.diag([-1.0, 1.0, 1.5, 1.0])
    flipped[0, 3] = SHAPE[0] - 1  # same world grid as AFFINE, i axis reversed (L->R)
    save_nii(d / "flipped.nii.gz", TEST[::-1], flipped)
    with_nan = TEST.copy()
    with_nan[3, 4, 5] = np.nan
    with_nan[6, 7, 8] = np.nan
    save_nii(d / "with_nan.nii.gz", with_nan)
    with_inf = REF.copy()
    with_inf[2, 2, 2] = np.inf
    save_nii(d / "with_inf.nii.gz", with_inf)
    save_nii(d / "constant.nii.gz", np.full(SHAPE, 7.0))
    save_nii(d / "flat_test.nii.gz", np.full(SHAPE, 50.0))  # a blank reconstruction
    save_nii(d / "tiny_ref.nii.gz", REF[:6])
    save_nii(d / "tiny_test.nii.gz", TEST[:6])

    save_nii(d / "mask_small.nii.gz", np.ones((12, 12, 12), np.uint8))
    save_nii(d / "mask_empty.nii.gz", np.zeros(SHAPE, np.uint8))
    prob = np.zeros(SHAPE, np.float32)
    prob[4:12, 4:12, 4:12] = 0.25
    prob[6:10, 6:10, 6:10] = 0.9
    save_nii(d / "mask_prob.nii.gz", prob)
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:8, 4:12, 4:12] = 1
    labels[8:12, 4:12, 4:12] = 3
    save_nii(d / "mask_labels.nii.gz", labels)
    rim = np.zeros(SHAPE, np.uint8)
    rim[:3] = 1  # within the (WIN - 1) // 2 = 3 voxels the valid SSIM map leaves out
    rim[:, :, -3:] = 1
    save_nii(d / "mask_rim.nii.gz", rim)
    good_mask = np.zeros(SHAPE, np.uint8)
    good_mask[4:12, 4:12, 4:12] = 1
    save_nii(d / "mask.nii.gz", good_mask)

    odd = d / "scans of Zoë" / "séance 2, répété #2"  # a comma (quoted cell) and a '#'
    save_nii(odd / "réf ü.nii.gz", REF)
    save_nii(odd / "tést ü.nii.gz", TEST)
    (d / "folder.nii.gz").mkdir()
    save_nii(d / "locked_chmod.nii.gz", TEST)
    save_nii(d / SIMULATED_LOCKED, TEST)

    save_nii(d / "u16_ref.nii.gz", U16_REF)
    save_nii(d / "u16_test.nii.gz", U16_TEST)
    save_nii(d / "i16_ref.nii.gz", I16_REF, slope=SLOPE, inter=INTER)
    save_nii(d / "i16_test.nii.gz", I16_TEST, slope=SLOPE, inter=INTER)

    # issue 9: inputs that gave a confident wrong number, an obscure message or a dead batch
    test32 = TEST.astype(np.float32)
    write_damaged_nii(d / "nan_sform.nii.gz", test32, AFFINE, srow_x=[1.0, 0, 0, np.nan])
    write_damaged_nii(d / "inf_sform.nii.gz", test32, AFFINE, srow_z=[0, 0, np.inf, 0])
    write_damaged_nii(d / "singular.nii.gz", test32, AFFINE, srow_y=[0.0, 0, 0, 0])
    write_damaged_nii(d / "zero_pixdim.nii", test32, AFFINE, sform_code=0, qform_code=1,
                      pixdim=[1.0, 1.0, 0.0, 1.5, 0, 0, 0, 0])
    write_damaged_nii(d / "vox_offset_0.nii", test32, AFFINE, vox_offset=0.0)
    save_nii(d / "complex.nii.gz", TEST.astype(np.complex64))
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, AFFINE), str(d / "rgb.nii.gz"))
    huge_ints = (2**60 + np.round(TEST * 1000)).astype(np.int64)
    nib.save(nib.Nifti1Image(huge_ints, AFFINE, dtype=np.int64), str(d / "int64_huge.nii.gz"))
    save_nii(d / "identity.nii.gz", TEST, np.eye(4))
    save_dicom_series(d / "mixed_pixels", DCM_REF, uid=f"{UID_ROOT}.41", description="mixed",
                      pixel_spacing={4: 0.9})
    save_dicom_series(d / "with_fifo", DCM_REF, uid=f"{UID_ROOT}.42", description="fifo")
    os.mkfifo(d / "with_fifo" / "zz_pipe.dcm")
    os.mkfifo(d / "fifo.nii.gz")
    write_huge_nii(d / "bomb.nii.gz", (1024, 1024, 1024))
    write_huge_dicom(d / "frames.dcm")


# --------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One manifest row and what its output row must say.

    ``culprit`` is the input (relative to the input folder) the error must name, ``cause`` a
    regex for the cause (for an ok row: a regex the notes must match, or None).
    """

    reference: str
    test: str
    mask: str = ""
    status: str = "error"
    culprit: str | None = None
    cause: str | None = None


R, T = "ref.nii.gz", "test.nii.gz"
CASES: dict[str, Case] = {
    "good-first": Case(R, T, status="ok"),
    "missing-file": Case(R, "gone.nii.gz", culprit="gone.nii.gz",
                         cause=r"no such file or directory"),
    "missing-reference": Case("gone_ref.nii.gz", T, culprit="gone_ref.nii.gz",
                              cause=r"no such file or directory"),
    "zero-byte": Case(R, "zero.nii.gz", culprit="zero.nii.gz", cause=r"empty \(0 bytes\)"),
    "corrupt-gzip": Case(R, "bad_stream.nii.gz", culprit="bad_stream.nii.gz",
                         cause=r"corrupt gzip stream"),
    "cut-gzip": Case(R, "cut_stream.nii.gz", culprit="cut_stream.nii.gz",
                     cause=r"corrupt gzip stream"),
    "truncated-nifti": Case(R, "truncated.nii", culprit="truncated.nii",
                            cause=r"truncated NIfTI: the header says \(16, 16, 16\) voxels"),
    "text-as-nifti": Case(R, "notes.nii", culprit="notes.nii", cause=r"not a NIfTI image"),
    "4d-several-volumes": Case(R, "series4d.nii.gz", culprit="series4d.nii.gz",
                               cause=r"4-D image of shape \(16, 16, 16, 3\) \(3 volumes\)"),
    "4d-single-volume": Case(R, "single4d.nii.gz", status="ok"),
    "2d-image": Case(R, "slice2d.nii.gz", culprit="slice2d.nii.gz",
                     cause=r"2-D image of shape \(16, 16\); volqa needs a 3-D volume"),
    "2d-singleton-axis": Case(R, "slab1.nii.gz", culprit="slab1.nii.gz",
                              cause=r"2-D image of shape \(16, 16, 1\)"),
    "unknown-format": Case(R, "volume.raw", culprit="volume.raw",
                           cause=r"unknown extension '\.raw' and not a DICOM file"),
    "empty-folder": Case("empty_dir", T, culprit="empty_dir", cause=r"empty folder"),
    "folder-without-dicom": Case("not_dicom", T, culprit="not_dicom",
                                 cause=r"no DICOM series in this folder"),
    "several-series": Case(
        "multi", f"multi#{UID_MULTI_B}", culprit="multi",
        cause=(rf"holds 2 DICOM series: .*{re.escape(UID_MULTI_A)} \('recon_a', 16 files\)"
               rf".*{re.escape(UID_MULTI_B)} \('recon_b', 16 files\).*#<SeriesInstanceUID>")),
    "series-named": Case(f"multi#{UID_MULTI_A}", f"multi#{UID_MULTI_B}", status="ok"),
    "good-middle": Case(R, "test_b.nii.gz", status="ok"),
    "dicom-missing-slice": Case("gap", "gap", status="ok",
                                cause=r"reference: .*possible missing slices: 1 gap"),
    "dicom-non-uniform": Case("uneven", "uneven", status="ok",
                              cause=r"reference: non-uniform slice spacing"),
    "shape-mismatch": Case(R, "short.nii.gz", culprit="short.nii.gz",
                           cause=r"not on the voxel grid.*shape \(16, 16, 12\) vs \(16, 16, 16\)"
                                 r".*--resample"),
    "spacing-mismatch": Case(R, "coarse.nii.gz", culprit="coarse.nii.gz",
                             cause=r"not on the voxel grid.*spacing \(1, 1, 3\) vs \(1, 1, 1\.5\)"
                                   r".*--resample"),
    "direction-oblique": Case(R, "oblique.nii.gz", culprit="oblique.nii.gz",
                              cause=r"not on the voxel grid.*direction.*--resample"),
    "direction-flip": Case(R, "flipped.nii.gz", status="ok"),
    "nan-voxels": Case(R, "with_nan.nii.gz", culprit="with_nan.nii.gz",
                       cause=r"2 NaN and 0 Inf voxels"),
    "inf-voxels": Case("with_inf.nii.gz", T, culprit="with_inf.nii.gz",
                       cause=r"0 NaN and 1 Inf voxels"),
    "constant-reference": Case("constant.nii.gz", T, culprit="constant.nii.gz",
                               cause=r"reference is constant \(every voxel is 7\).*"
                                     r"--normalize none --data-range"),
    "constant-test": Case(R, "flat_test.nii.gz", status="ok", cause=r"the test is constant"),
    "smaller-than-window": Case("tiny_ref.nii.gz", "tiny_test.nii.gz",
                                culprit="tiny_test.nii.gz",
                                cause=r"6 voxels, fewer than the 7-voxel window"),
    "mask-other-shape": Case(R, T, "mask_small.nii.gz", culprit="mask_small.nii.gz",
                             cause=r"not on the voxel grid.*shape \(12, 12, 12\) vs "
                                   r"\(16, 16, 16\)"),
    "mask-empty": Case(R, T, "mask_empty.nii.gz", culprit="mask_empty.nii.gz",
                       cause=r"no voxel is non-zero \(empty mask\)"),
    "mask-fractional": Case(R, T, "mask_prob.nii.gz", culprit="mask_prob.nii.gz",
                            cause=r"fractional values.*binary or label mask"),
    "mask-labels": Case(R, T, "mask_labels.nii.gz", status="ok",
                        cause=r"mask has values 1, 3: every non-zero voxel is inside"),
    "mask-outside-valid-region": Case(R, T, "mask_rim.nii.gz", culprit="mask_rim.nii.gz",
                                      cause=r"no mask voxel lies inside the region the SSIM "
                                            r"map covers"),
    "mask-good": Case(R, T, "mask.nii.gz", status="ok"),
    "same-file": Case(R, R, status="ok", cause=r"test: voxel for voxel the reference itself"),
    "spaces-non-ascii": Case("scans of Zoë/séance 2, répété #2/réf ü.nii.gz",
                             "scans of Zoë/séance 2, répété #2/tést ü.nii.gz", status="ok"),
    "directory-for-file": Case(R, "folder.nii.gz", culprit="folder.nii.gz",
                               cause=r"is a directory, but a \.nii\.gz file was expected"),
    "unreadable-chmod": Case(R, "locked_chmod.nii.gz", culprit="locked_chmod.nii.gz",
                             cause=r"permission denied"),
    "unreadable-simulated": Case(R, SIMULATED_LOCKED, culprit=SIMULATED_LOCKED,
                                 cause=r"permission denied"),
    "uint16": Case("u16_ref.nii.gz", "u16_test.nii.gz", status="ok"),
    "int16-rescaled-nifti": Case("i16_ref.nii.gz", "i16_test.nii.gz", status="ok"),
    "int16-rescaled-dicom": Case("ct_ref", "ct_test", status="ok"),
    # issue 9
    "nan-affine": Case(R, "nan_sform.nii.gz", culprit="nan_sform.nii.gz",
                       cause=r"the header's srow_x = \[1\.0, 0\.0, 0\.0, nan\] has non-finite "
                             r"entries, so the volume's position in space cannot be known"),
    "inf-affine": Case(R, "inf_sform.nii.gz", culprit="inf_sform.nii.gz",
                       cause=r"the header's srow_z = \[0\.0, 0\.0, inf, 0\.0\] has non-finite"),
    "singular-affine": Case(R, "singular.nii.gz", culprit="singular.nii.gz",
                            cause=r"the sform \(voxel-to-world matrix\) is singular: voxel "
                                  r"sizes \(1\.0, 0\.0, 1\.5\) mm"),
    "zero-pixdim": Case(R, "zero_pixdim.nii", culprit="zero_pixdim.nii",
                        cause=r"zero voxel size in the header: pixdim\[1:4\] = \[1\.0, 0\.0, "
                              r"1\.5\] \(the qform/pixdim decides the geometry\)"),
    "vox-offset-in-header": Case(R, "vox_offset_0.nii", culprit="vox_offset_0.nii",
                                 cause=r"vox_offset = 0 in the header, but the voxel data of a "
                                       r"single-file NIfTI \(n\+1\) starts at byte 352 or "
                                       r"later: the header itself would be read as voxels"),
    "complex-nifti": Case(R, "complex.nii.gz", culprit="complex.nii.gz",
                          cause=r"complex-valued voxels \(complex64\): volqa scores real-valued "
                                r"volumes and will not drop the imaginary part silently"),
    "rgb-nifti": Case(R, "rgb.nii.gz", culprit="rgb.nii.gz",
                      cause=r"colour voxels \(R, G, B channels\): volqa needs a scalar"),
    "int64-beyond-2**53": Case("int64_huge.nii.gz", T, culprit="int64_huge.nii.gz",
                               cause=r"int64 voxel values up to \d+ exceed 2\*\*53 = "
                                     r"9007199254740992, beyond which integers are not exact"),
    "lost-header": Case(R, "identity.nii.gz", culprit="identity.nii.gz",
                        cause=r"has a default affine \(\(1, 0, 0, 0\), \(0, 1, 0, 0\), \(0, 0, "
                              r"1, 0\)\), what a file gets when its geometry was not saved.*"
                              r"header looks lost.*copy the header of"),
    "dicom-pixel-spacing": Case("mixed_pixels", "mixed_pixels", culprit="mixed_pixels",
                                cause=r"the 16 slices of series .* have different PixelSpacing "
                                      r"values \(\(0\.9, 0\.9\), \(1\.0, 1\.0\) mm\)"),
    "fifo-in-dicom-folder": Case("with_fifo", "with_fifo", culprit="with_fifo",
                                 cause=r"with_fifo/zz_pipe\.dcm' is a FIFO \(named pipe\), not "
                                       r"a file: reading it could block or never end"),
    "fifo-as-volume": Case(R, "fifo.nii.gz", culprit="fifo.nii.gz",
                           cause=r"is a FIFO \(named pipe\), not a regular file"),
    "huge-nifti-header": Case(R, "bomb.nii.gz", culprit="bomb.nii.gz",
                              cause=r"the header declares 1024x1024x1024 voxels: 4 GiB as "
                                    r"float32 in memory, more than the limit of 64 MiB per "
                                    r"volume \(--max-volume-memory\)"),
    "huge-dicom-header": Case(R, "frames.dcm", culprit="frames.dcm",
                              cause=r"the header declares 4096x4096x200 voxels: 12\.5 GiB as "
                                    r"float32 in memory, more than the limit of 64 MiB"),
    # subject ids that a file name would merge, and one with escape sequences: all ok rows,
    # each with its own map (test_inputs_never_written counts them), nothing raw printed
    "sub 01": Case(R, T, status="ok"),
    "sub_01": Case(R, "test_b.nii.gz", status="ok"),
    "esc\x1b[2J\x1b]0;title\x07": Case(R, T, status="ok"),
    "good-last": Case(R, T, status="ok"),
}
ROOT_IGNORES_MODE = hasattr(os, "geteuid") and os.geteuid() == 0


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A UTF-8 CSV file written by :mod:`csv` (cells with commas are quoted)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _deny(real_open: Callable[..., Any]) -> Callable[..., Any]:
    """An ``open`` that fails with EACCES for the simulated unreadable file, like the OS."""

    def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike) and os.fspath(file).endswith(SIMULATED_LOCKED):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real_open(file, *args, **kwargs)

    return guarded


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the inputs, run the mixed manifest once with --save-maps, collect the evidence.

    The run happens in an empty working directory (``root/cwd``), with ``open`` patched so
    that one file fails with EACCES, and with another file at mode 000 (a real permission
    error unless the tests run as root).
    """
    root = tmp_path_factory.mktemp("catalogue")
    inputs = root / "in"
    cwd = root / "cwd"
    cwd.mkdir()
    build_inputs(inputs)
    manifest = write_csv(
        inputs / "manifest.csv", ["subject_id", "reference", "test", "mask", "site"],
        [[sid, c.reference, c.test, c.mask, "site-A"] for sid, c in CASES.items()],
    )
    before = sha256_tree(inputs)
    stats_before = {p: p.stat().st_mtime_ns for p in inputs.rglob("*") if p.is_file()}
    locked = inputs / "locked_chmod.nii.gz"
    locked.chmod(0)
    out = root / "out"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(cwd)
            mp.setattr(builtins, "open", _deny(builtins.open))
            mp.setattr(io, "open", _deny(io.open))
            result = cli.invoke(app, ["score", str(manifest), "--out", str(out),
                                      "--save-maps", *BATCH_OPTIONS])
    finally:
        locked.chmod(0o644)
    after = sha256_tree(inputs)
    stats_after = {p: p.stat().st_mtime_ns for p in inputs.rglob("*") if p.is_file()}
    table = pd.read_parquet(out / "results.parquet") if (out / "results.parquet").exists() \
        else None
    return {
        "root": root, "inputs": inputs, "out": out, "cwd": cwd, "result": result,
        "table": table,
        "rows": None if table is None else table.set_index("subject_id", drop=False),
        "before": before, "after": after, "mtime_before": stats_before,
        "mtime_after": stats_after,
    }


# --------------------------------------------------------------------------------- the batch


def test_batch_exit_code_1_and_every_row_present(batch: dict[str, Any]) -> None:
    result = batch["result"]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert batch["table"] is not None, "no results.parquet written"
    assert batch["table"]["subject_id"].tolist() == list(CASES)  # manifest order, no row lost
    assert (batch["table"]["site"] == "site-A").all()  # covariates carried through
    n_err = int((batch["table"]["status"] == "error").sum())
    assert f"{len(CASES) - n_err} ok, {n_err} failed" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr  # escaped: shown as "\\x1b"
    assert result.stderr.count("failed: subject ") == n_err  # failed rows: stderr, one each
    # a test that is its reference file: a warning before the batch, one per row
    same = [s for s, c in CASES.items() if c.reference == c.test]
    assert "same-file" in same
    assert result.stderr.count("is the reference file itself") == len(same)


@pytest.mark.parametrize("subject", [s for s, c in CASES.items() if c.status == "error"])
def test_bad_row_names_subject_file_and_cause(batch: dict[str, Any], subject: str) -> None:
    if subject == "unreadable-chmod" and ROOT_IGNORES_MODE:
        pytest.skip("running as root: mode 000 does not stop reads (see unreadable-simulated)")
    case = CASES[subject]
    row = batch["rows"].loc[subject]
    assert row["status"] == "error", f"expected an error row, got notes={row['notes']!r}"
    assert math.isnan(row["ssim"]) and math.isnan(row["psnr"])  # no number for a failed row
    path = re.escape(str(batch["inputs"] / case.culprit))
    pattern = rf"^subject '{re.escape(subject)}'.*'?{path}'?.*{case.cause}"
    assert re.search(pattern, row["error"], re.S), row["error"]


@pytest.mark.parametrize("subject", [s for s, c in CASES.items() if c.status == "ok"])
def test_good_row_is_scored(batch: dict[str, Any], subject: str) -> None:
    case = CASES[subject]
    row = batch["rows"].loc[subject]
    assert row["status"] == "ok", row["error"]
    assert pd.isna(row["error"])
    for metric in ("ssim", "nrmse", "mae", "mse"):  # no NaN, no missing value
        assert math.isfinite(row[metric]), (metric, row[metric])
    assert row["psnr"] > 0 and not math.isnan(row["psnr"])  # +inf for identical volumes
    assert -1.0 <= row["ssim"] <= 1.0
    if case.cause is not None:
        assert re.search(case.cause, row["notes"] or ""), row["notes"]
    assert (batch["out"] / row["ssim_map"]).is_file()


def test_unreadable_file_with_real_permissions(batch: dict[str, Any]) -> None:
    """As a normal user, mode 000 makes the row fail; root reads it, so the row is scored."""
    row = batch["rows"].loc["unreadable-chmod"]
    if ROOT_IGNORES_MODE:
        assert row["status"] == "ok", row["error"]
    else:
        assert row["status"] == "error" and "permission denied" in row["error"]


def test_same_file_scores_ssim_1(batch: dict[str, Any]) -> None:
    row = batch["rows"].loc["same-file"]
    assert row["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert row["mse"] == 0.0 and row["psnr"] == math.inf


def test_flipped_test_is_reoriented_not_resampled(batch: dict[str, Any]) -> None:
    row = batch["rows"].loc["direction-flip"]
    assert row["reoriented"] == "test LAS->RAS" and not row["resampled"]
    same = batch["rows"].loc["good-first"]
    assert row["ssim"] == pytest.approx(same["ssim"], abs=1e-6)


# --------------------------------------------------------------------------------- integers


def expected_scores(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """The batch's numbers computed in float64: minmax by the reference, uniform 7 SSIM."""
    ref = np.asarray(ref, np.float64)
    test = np.asarray(test, np.float64)
    lo, hi = ref.min(), ref.max()
    r, t = (ref - lo) / (hi - lo), (test - lo) / (hi - lo)
    mse = float(np.mean((t - r) ** 2))
    return {
        "ssim": float(structural_similarity(r, t, win_size=WIN, data_range=1.0,
                                            use_sample_covariance=False)),
        "psnr": 10.0 * math.log10(1.0 / mse),
        "mse": mse,
        "mae": float(np.mean(np.abs(t - r))),
        "nrmse": math.sqrt(mse),
    }


INTEGER_CASES = {
    "uint16": (U16_REF, U16_TEST),
    "int16-rescaled-nifti": (I16_REF * SLOPE + INTER, I16_TEST * SLOPE + INTER),
    "int16-rescaled-dicom": (I16_REF * SLOPE + INTER, I16_TEST * SLOPE + INTER),
}


@pytest.mark.parametrize("subject", list(INTEGER_CASES))
@pytest.mark.parametrize("metric", ["ssim", "psnr", "mse", "mae", "nrmse"])
def test_integer_inputs_equal_float64_computation(
    batch: dict[str, Any], subject: str, metric: str
) -> None:
    ref, test = INTEGER_CASES[subject]
    assert np.min(ref) < 32767 < np.max(ref)  # the case really straddles the int16 limit
    assert np.max(ref) in (65535, SLOPE * 32767 + INTER)  # ... and reaches the dtype's limit
    want = expected_scores(ref, test)[metric]
    got = batch["rows"].loc[subject, metric]
    assert got == pytest.approx(want, rel=1e-6), (subject, metric)


# --------------------------------------------------------------------------------- inputs


def test_inputs_never_written(batch: dict[str, Any]) -> None:
    """sha256 of every input identical after the run (failing rows and --save-maps included),
    no file added or removed beside the inputs, no modification time changed."""
    assert batch["after"] == batch["before"]
    assert batch["mtime_after"] == batch["mtime_before"]
    assert sorted(p.name for p in batch["root"].iterdir()) == ["cwd", "in", "out"]
    assert list(batch["cwd"].iterdir()) == []  # nothing dropped in the working directory
    maps = sorted(p.name for p in (batch["out"] / "maps").iterdir())
    ok = batch["table"][batch["table"]["status"] == "ok"]
    assert maps == sorted(Path(m).name for m in ok["ssim_map"])
    assert batch["table"].loc[batch["table"]["status"] == "error", "ssim_map"].isna().all()


# --------------------------------------------------------------------------------- constant


def test_constant_reference_with_explicit_range_is_scored_without_nan(tmp_path: Path) -> None:
    """Documented: minmax fails on a constant reference (checked in the batch); with
    ``--normalize none --data-range L`` SSIM and PSNR are defined, NRMSE is not: the row is
    ok, NRMSE is empty and the notes say why (never a silent NaN)."""
    save_nii(tmp_path / "constant.nii.gz", np.full(SHAPE, 7.0))
    save_nii(tmp_path / "test.nii.gz", np.full(SHAPE, 7.0) + noisy(np.zeros(SHAPE), 3, 0.5))
    manifest = write_csv(tmp_path / "m.csv", ["subject_id", "reference", "test"],
                         [["flat", "constant.nii.gz", "test.nii.gz"]])
    result = cli.invoke(app, ["score", str(manifest), "--out", str(tmp_path / "o"),
                              "--normalize", "none", "--data-range", "100", *BATCH_OPTIONS])
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(tmp_path / "o/results.parquet").iloc[0]
    assert row["status"] == "ok"
    for metric in ("ssim", "psnr", "mse", "mae"):
        assert math.isfinite(row[metric]), metric
    assert pd.isna(row["nrmse"])
    assert re.search(r"nrmse not computed: .*reference is constant", row["notes"]), row["notes"]


# --------------------------------------------------------------------------------- manifests


def _nifti_bytes() -> bytes:
    image = nib.Nifti1Image(REF[:4, :4, :4].astype(np.float32), AFFINE)
    return gzip.compress(image.to_bytes())


HEADER = b"subject_id,reference,test\n"
MANIFEST_CASES = {
    "missing-columns": (b"subject,ref,test\ns1,ref.nii.gz,test.nii.gz\n",
                        r"missing column\(s\) subject_id, reference \(found: 'subject', 'ref', "
                        r"'test'\)"),
    "empty-file": (b"", r"is empty; it needs a header line"),
    "header-only": (HEADER, r"no data rows after the header"),
    "duplicate-rows": (HEADER + b"s1,ref.nii.gz,test.nii.gz\ns1,ref.nii.gz,test.nii.gz\n",
                       r"row 2 \(line 3, subject 's1'\): duplicate of row 1"),
    "non-utf8": (HEADER + "José,ref.nii.gz,test.nii.gz\n".encode("latin-1"),
                 r"is not UTF-8: byte 0xe9 at line 2"),
    "nifti-as-manifest": (_nifti_bytes(), r"is not a CSV text file"),
    "tab-separated": (HEADER.replace(b",", b"\t") + b"s1\tref.nii.gz\ttest.nii.gz\n",
                      r"missing column.*single column: volqa needs commas"),
    "unclosed-quote": (HEADER + b's1,"ref.nii.gz,test.nii.gz\n',
                       r"not a valid CSV file"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_manifest_error_exit_2_one_message_nothing_written(tmp_path: Path, case: str) -> None:
    content, cause = MANIFEST_CASES[case]
    save_nii(tmp_path / "ref.nii.gz", REF)
    save_nii(tmp_path / "test.nii.gz", TEST)
    manifest = tmp_path / ("manifest.nii.gz" if case == "nifti-as-manifest" else "manifest.csv")
    manifest.write_bytes(content)
    before = sha256_tree(tmp_path)
    out = tmp_path / "out"
    result = cli.invoke(app, ["score", str(manifest), "--out", str(out), *BATCH_OPTIONS])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("volqa:") == 1, result.stderr  # one message
    assert re.search(rf"manifest '{re.escape(str(manifest))}'.*{cause}", result.stderr, re.S), \
        result.stderr
    assert not out.exists()
    assert sha256_tree(tmp_path) == before


# --------------------------------------------------------------------------------- options


@pytest.mark.parametrize(("options", "pattern"), [
    (["--k1", "inf"], r"k1 and k2 must be finite numbers > 0, got k1=inf"),
    (["--k1", "1e150"], r"k1=1e\+150, .*C1 = \(K1 L\)\^2 = inf.*k1 in \[3\.61e-18, 1\.84e\+19\]"),
    (["--k2", "1e300"], r"k2=1e\+300.*k2 in \[1\.08e-17, 1\.84e\+19\]"),
    (["--sigma", "1e-300"], r"sigma must lie in \[1\.05e-154, 9\.48e\+153\] voxels"),
    (["--normalize", "none", "--data-range", "1e-300"],
     r"L=1e-300 give SSIM constants C1 = \(K1 L\)\^2 = 0 .*L in \[1\.9e-08, 4\.29e\+09\]"),
], ids=["k1-inf", "k1-1e150", "k2-1e300", "sigma-1e-300", "data-range-1e-300"])
def test_overflowing_options_are_usage_errors_with_the_valid_range(tmp_path, options,
                                                                   pattern) -> None:
    """Options whose SSIM constants or window taps float32 cannot hold (issue 9): exit 2, one
    message with the valid range, nothing written."""
    save_nii(tmp_path / "r.nii.gz", REF)
    (tmp_path / "m.csv").write_text("subject_id,reference,test\ns,r.nii.gz,r.nii.gz\n")
    before = sha256_tree(tmp_path)
    result = cli.invoke(app, ["score", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"),
                              "--no-progress", *options])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stderr.count("volqa:") == 1
    assert re.search(pattern, " ".join(result.stderr.split())), result.stderr
    assert sha256_tree(tmp_path) == before
