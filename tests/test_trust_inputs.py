"""Inputs that used to give a confident wrong number or an obscure message (issue 9, classes 2
and 5): damaged NIfTI headers, complex/colour/huge-integer voxels, special files, DICOM series
that are not one grid, lost headers, poor resampling coverage, and SSIM constants that
overflow or underflow float32. Each attack is reproduced on a small file and must now give a
specific error that names the file and the cause (the batch-level view, and the option cases
as usage errors, are in test_catalogue.py)."""

from __future__ import annotations

import math
import os
import re
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from pipeline_data import (
    UID_ROOT,
    make_affine,
    phantom,
    rotation,
    save_dicom_series,
    write_damaged_nii,
    write_nii,
)
from skimage.metrics import structural_similarity

import volqa
from volqa.errors import GeometryError, InputError, SettingsError
from volqa.io import Volume, read_volume
from volqa.pipeline.geometry import align_to_reference, covered_fraction

SHAPE = (16, 14, 12)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def nifti(path: Path, array: np.ndarray | None = None, affine: np.ndarray | None = AFFINE,
          dtype: type | None = None, **fields: object) -> Path:
    return write_damaged_nii(path, phantom(1, SHAPE) if array is None else array, affine,
                             dtype, **fields)


# ----------------------------------------------------------------------- NIfTI header fields


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"srow_x": [1.0, 0.0, 0.0, np.nan]}, r"srow_x = \[1\.0, 0\.0, 0\.0, nan\] has non-finite"),
    ({"srow_y": [0.0, np.inf, 0.0, 0.0]}, r"srow_y = \[0\.0, inf, 0\.0, 0\.0\] has non-finite"),
    ({"sform_code": 0, "qform_code": 1, "quatern_b": np.nan},
     r"quatern_b = \[nan\] has non-finite"),
    ({"sform_code": 0, "qform_code": 1, "qoffset_x": np.inf},
     r"qoffset_x = \[inf\] has non-finite"),
    ({"sform_code": 0, "pixdim": [1.0, 1.0, 0.0, 1.5, 0, 0, 0, 0]},
     r"zero voxel size in the header: pixdim\[1:4\] = \[1\.0, 0\.0, 1\.5\]"),
    ({"srow_y": [0.0, 0.0, 0.0, 0.0]}, r"the sform \(voxel-to-world matrix\) is singular"),
    ({"vox_offset": 0.0}, r"vox_offset = 0 in the header, but the voxel data of a single-file "
                          r"NIfTI \(n\+1\) starts at byte 352"),
], ids=["nan-sform", "inf-sform", "nan-qform", "inf-qoffset", "zero-pixdim", "singular-sform",
        "vox-offset-0"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_damaged_header_is_refused_naming_the_field(tmp_path, fields, pattern, ext) -> None:
    path = nifti(tmp_path / f"t{ext}", **fields)
    with pytest.raises(InputError, match=rf"^cannot read '{re.escape(str(path))}': .*{pattern}"):
        read_volume(path)


def test_vox_offset_0_used_to_read_the_header_as_voxels(tmp_path) -> None:
    """The attack as a user meets it: the header is the same as a good file's but for
    vox_offset, so nibabel alone would score a volume shifted by the header's length."""
    good = nifti(tmp_path / "good.nii")
    raw = bytearray(good.read_bytes())
    assert struct.unpack("<f", raw[108:112]) == (352.0,)
    raw[108:112] = struct.pack("<f", 0.0)
    bad = tmp_path / "bad.nii"
    bad.write_bytes(bytes(raw))
    shifted = np.asarray(nib.load(bad).dataobj)  # what a plain reader makes of it
    assert not np.allclose(shifted, np.asarray(nib.load(good).dataobj))
    with pytest.raises(InputError, match=r"vox_offset = 0"):
        read_volume(bad)


@pytest.mark.parametrize(("array", "dtype", "pattern"), [
    (phantom(1, SHAPE).astype(np.complex64) * (1 + 2j), None,
     r"complex-valued voxels \(complex64\).*save the magnitude"),
    (np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), None,
     r"colour voxels \(R, G, B channels\)"),
    ((2**60 + np.arange(np.prod(SHAPE)).reshape(SHAPE)).astype(np.int64), np.int64,
     r"int64 voxel values up to \d+ exceed 2\*\*53 = 9007199254740992"),
], ids=["complex", "rgb", "int64-beyond-2**53"])
def test_voxel_types_that_float32_would_change_are_refused(tmp_path, array, dtype,
                                                           pattern) -> None:
    path = nifti(tmp_path / "t.nii.gz", array, dtype=dtype)
    with pytest.raises(InputError, match=pattern):
        read_volume(path)


def test_int32_beyond_2_24_is_read_with_a_rounding_note(tmp_path) -> None:
    data = (2**25 + 3 * np.arange(np.prod(SHAPE)).reshape(SHAPE)).astype(np.int32)
    volume = read_volume(nifti(tmp_path / "t.nii.gz", data, dtype=np.int32))
    np.testing.assert_allclose(volume.array, data, rtol=6e-8)
    assert any("exceed 2**24 = 16777216: float32 rounds them" in n for n in volume.notes)


@pytest.mark.parametrize(("degrees", "shift", "noted"), [
    (0.0, 0.0, False), (0.0, 5e-4, False), (0.0, 0.5, True), (1.0, 0.0, True)])
def test_sform_and_qform_that_disagree_give_a_note(tmp_path, degrees, shift, noted) -> None:
    qform = make_affine(np.eye(3), (0.9, 1.0, 2.5), (-100.0, 50.0, 30.0))
    sform = make_affine(rotation((0, 0, degrees)), (0.9, 1.0, 2.5), (-100.0, 50.0 + shift, 30.0))
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    header.set_qform(qform, code=1)
    header.set_sform(sform, code=2)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(phantom(1, SHAPE), None, header), path)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, sform, atol=1e-5)  # the sform is used
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in SHAPE], indexing="ij")).reshape(3, -1).T
    apart = np.linalg.norm(apply_affine(sform, corners) - apply_affine(qform, corners), axis=1)
    notes = [n for n in volume.notes if "sform and qform" in n]
    assert bool(notes) == noted
    if noted:
        assert f"up to {apart.max():.3g} mm apart; volqa uses the sform" in notes[0]


# ----------------------------------------------------------------------- special files


def test_fifo_as_a_volume_is_refused_without_blocking(tmp_path) -> None:
    fifo = tmp_path / "test.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"is a FIFO \(named pipe\), not a regular file"):
        read_volume(fifo)


@pytest.mark.parametrize("special", ["fifo", "device-link"])
def test_special_file_in_a_dicom_folder_is_named(tmp_path, special) -> None:
    folder = tmp_path / "series"
    save_dicom_series(folder, np.round(8 * phantom(2, SHAPE)).astype(np.int16),
                      uid=f"{UID_ROOT}.91", description="s")
    odd = folder / "zz_odd.dcm"
    if special == "fifo":
        os.mkfifo(odd)
        pattern = r"zz_odd\.dcm' is a FIFO \(named pipe\), not a file"
    else:
        odd.symlink_to("/dev/null")
        pattern = r"zz_odd\.dcm' is a character device \(a symbolic link to '/dev/null'\)"
    with pytest.raises(InputError, match=rf"^cannot read '{re.escape(str(folder))}': .*{pattern}"):
        read_volume(folder)


def test_dicom_slices_with_different_pixel_spacing_are_refused(tmp_path) -> None:
    folder = tmp_path / "mixed"
    save_dicom_series(folder, np.round(8 * phantom(3, SHAPE)).astype(np.int16),
                      uid=f"{UID_ROOT}.92", description="mixed", pixel_spacing={5: 0.8})
    with pytest.raises(InputError, match=r"slices of series .* have different PixelSpacing "
                                         r"values \(\(0\.8, 0\.8\), \(1\.0, 1\.0\) mm\)"):
        read_volume(folder)


@pytest.mark.parametrize(("tag", "value", "pattern"), [
    ("ImagePositionPatient", None, r"ImagePositionPatient \(0020,0032\), so the slices' order "
                                   r"and spacing cannot be known"),
    ("ImagePositionPatient", ["0", "nan", "3"], r"readable ImagePositionPatient"),
    ("ImageOrientationPatient", None, r"ImageOrientationPatient \(0020,0037\), so the slices' "
                                      r"direction cannot be known"),
    ("PixelSpacing", None, r"PixelSpacing \(0028,0030\), so the slices' voxel size cannot"),
])
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom, about the 'nan'
def test_dicom_slice_without_its_geometry_is_refused(tmp_path, tag, value, pattern) -> None:
    import pydicom

    folder = tmp_path / "series"
    data = np.round(8 * phantom(3, SHAPE)).astype(np.int16)
    save_dicom_series(folder, data, uid=f"{UID_ROOT}.93", description="s")
    assert read_volume(folder).shape == SHAPE  # as written, the series is fine
    victim = sorted(folder.iterdir())[4]  # one slice in the middle
    ds = pydicom.dcmread(victim)
    if value is None:
        delattr(ds, tag)
    else:
        setattr(ds, tag, value)
    ds.save_as(victim)
    with pytest.raises(InputError, match=r"not every slice of series .*" + pattern):
        read_volume(folder)


def test_dicom_series_of_several_echoes_at_one_position_is_refused(tmp_path) -> None:
    folder = tmp_path / "echoes"
    depths = np.repeat(np.arange(SHAPE[2] // 2) * 1.5, 2)  # two slices at every position
    save_dicom_series(folder, np.round(8 * phantom(3, SHAPE)).astype(np.int16),
                      uid=f"{UID_ROOT}.94", description="two echoes", depths=depths)
    with pytest.raises(InputError, match=r"6 slice\(s\) of series .* lie where the slice "
                                         r"before lies \(first: slices 0 and 1, at 0 mm .*"
                                         r"several echoes, phases or time points"):
        read_volume(folder)


# ----------------------------------------------------------------------- lost headers


def test_identity_affine_with_matching_shape_is_a_lost_header_even_with_resample(tmp_path):
    """The attack: a test saved with an identity affine. Resampling it into a corner of the
    reference used to give ``ok`` with a low score; now the row says what happened."""
    ref = write_nii(tmp_path / "ref.nii.gz", phantom(4, SHAPE), make_affine(np.eye(3)))
    test = write_nii(tmp_path / "test.nii.gz", phantom(4, SHAPE), np.eye(4))
    for resample in (False, True):
        with pytest.raises(GeometryError, match=r"^test '.*test\.nii\.gz' has a default affine.*"
                                                r"header looks lost.*copy the header of "
                                                r"'.*ref\.nii\.gz' into it"):
            volqa.score_pair(ref, test, resample=resample)
    fixed = write_nii(tmp_path / "fixed.nii.gz", phantom(4, SHAPE), make_affine(np.eye(3)))
    assert volqa.score_pair(ref, fixed)["ssim"] == pytest.approx(1.0)  # the suggested fix


@pytest.mark.parametrize("lost", ["identity", "itk-default", "nifti-no-transform"])
def test_each_default_affine_counts_as_lost(tmp_path, lost) -> None:
    ref = Volume(phantom(5, SHAPE), make_affine(rotation((5, 0, 10))), "ref")
    affine = {"identity": np.eye(4), "itk-default": np.diag([-1.0, -1.0, 1.0, 1.0]),
              "nifti-no-transform": None}[lost]
    if affine is None:  # what nibabel gives a NIfTI with sform and qform codes 0
        path = tmp_path / "t.nii"
        image = nib.Nifti1Image(phantom(5, SHAPE), None)
        image.header.set_zooms((1.0, 1.0, 1.0))
        nib.save(image, str(path))
        test = read_volume(path)
    else:
        test = Volume(phantom(5, SHAPE), affine, "t")
    with pytest.raises(GeometryError, match=r"header looks lost"):
        align_to_reference(ref, test, resample=True)


# ----------------------------------------------------------------------- coverage


def brute_force_coverage(reference: Volume, other: Volume) -> float:
    """Every reference voxel centre mapped into ``other``'s voxel indices, counted inside."""
    ijk = np.indices(reference.shape).reshape(3, -1).T
    inside = apply_affine(np.linalg.inv(other.affine) @ reference.affine, ijk)
    ok = np.all((inside >= -0.5) & (inside <= np.asarray(other.shape) - 0.5), axis=1)
    return float(ok.mean())


@pytest.mark.parametrize(("degrees", "shift", "scale"), [
    ((0, 0, 0), (0, 0, 0), 1.0), ((0, 0, 0), (5.3, -2.0, 4.0), 1.0),
    ((0, 0, 30), (2.0, 0, 0), 1.0), ((10, 20, 30), (3.0, -4.0, 1.0), 1.3),
    ((0, 0, 0), (40.0, 0, 0), 1.0),
])
def test_covered_fraction_equals_brute_force(degrees, shift, scale) -> None:
    ref = Volume(np.zeros(SHAPE), make_affine(np.eye(3), (1.0, 1.0, 1.5), (0, 0, 0)), "ref")
    other_affine = make_affine(rotation(degrees), (scale, scale, 1.5 * scale), shift)
    other = Volume(np.zeros((14, 12, 10)), other_affine, "other")
    assert covered_fraction(ref, other) == pytest.approx(brute_force_coverage(ref, other),
                                                         abs=1e-12)


def test_resampled_test_covering_a_corner_fails_the_row_and_threshold_is_adjustable(tmp_path):
    ref_affine = make_affine(np.eye(3), (1.0, 1.0, 1.0), (10.0, 20.0, 30.0))
    ref = write_nii(tmp_path / "ref.nii.gz", phantom(6, SHAPE), ref_affine)
    corner = make_affine(np.eye(3), (1.0, 1.0, 1.0), (18.0, 27.0, 36.0))  # covers 1/8 of ref
    test = write_nii(tmp_path / "test.nii.gz", phantom(6, SHAPE), corner)
    expected = brute_force_coverage(read_volume(ref), read_volume(test))
    assert expected == pytest.approx(0.125)
    with pytest.raises(GeometryError, match=r"covers only 12\.5% of the reference grid.*at "
                                            r"least 95% is required.*--min-coverage"):
        volqa.score_pair(ref, test, resample=True)
    row = volqa.score_pair(ref, test, resample=True, min_coverage=0.1)
    assert row["resampled"] and row["coverage"] == pytest.approx(expected)
    inside = write_nii(tmp_path / "near.nii.gz", phantom(6, SHAPE),
                       make_affine(np.eye(3), (1.0, 1.0, 1.0), (10.5, 20.0, 30.0)))
    assert volqa.score_pair(ref, inside, resample=True)["coverage"] == pytest.approx(1.0)


# ----------------------------------------------------------------------- SSIM constants


@pytest.mark.parametrize("too_small", [True, False], ids=["below", "above"])
def test_the_valid_range_in_the_message_is_exact(too_small) -> None:
    """Values just inside the range the message gives score (as skimage in float64); values
    just outside are refused."""
    x = phantom(8, SHAPE)
    y = x + np.random.default_rng(0).normal(0, 2.0, SHAPE).astype(np.float32)
    L = float(x.max() - x.min())
    with pytest.raises(SettingsError) as info:
        volqa.ssim(x, y, data_range=L, k1=1e-30 if too_small else 1e30)
    low, high = map(float, re.search(r"k1 in \[(\S+), (\S+)\]", str(info.value)).groups())
    edge = low * 1.01 if too_small else high / 1.01
    got = float(volqa.ssim(x, y, data_range=L, k1=edge))
    want = structural_similarity(x.astype(np.float64), y.astype(np.float64), data_range=L,
                                 K1=edge, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    assert math.isfinite(got) and got == pytest.approx(want, abs=1e-4)
    with pytest.raises(SettingsError, match=r"k1 in \["):
        volqa.ssim(x, y, data_range=L, k1=low / 1.01 if too_small else high * 1.01)


def test_raw_intensities_near_the_float32_limit_are_scored_not_nan(tmp_path) -> None:
    """Intensities of 1e19 (squares beyond float32) are computed in float64: a real value,
    equal to scikit-image's float64 computation."""
    big = phantom(9, SHAPE).astype(np.float64) * 1e17
    ref = write_nii(tmp_path / "r.nii", big.astype(np.float32))
    test = write_nii(tmp_path / "t.nii", (big * 1.01).astype(np.float32))
    row = volqa.score_pair(ref, test, normalize="none", data_range=1.0, win_size=7)
    x, y = read_volume(ref).array.astype(np.float64), read_volume(test).array.astype(np.float64)
    want = structural_similarity(x, y, data_range=1.0, win_size=7, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)
    assert row["ssim"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("changed", [None, 0, -1])  # voxel 0 is sampled, the last one is not
def test_a_test_equal_to_its_reference_voxel_for_voxel_gets_a_note(tmp_path, changed) -> None:
    data = phantom(9, SHAPE)
    ref = write_nii(tmp_path / "r.nii", data)
    test = data.copy()
    if changed is not None:
        test.flat[changed] += np.float32(0.25)
    row = volqa.score_pair(ref, write_nii(tmp_path / "t.nii.gz", test))
    copied = "test: voxel for voxel the reference itself (a copy of it?)"
    assert (copied in (row["notes"] or "")) == (changed is None)
    assert (row["ssim"] == 1.0) == (changed is None)


def test_a_metric_that_comes_out_nan_fails_its_row(tmp_path) -> None:
    """The last safety net: no ``ok`` row carries a NaN computed from finite volumes."""
    from volqa.schema import METRICS, Metric

    ref = write_nii(tmp_path / "r.nii", phantom(9, SHAPE))
    METRICS.register(Metric("broken_metric", lambda c: float("nan"), "always NaN",
                            default=True))
    try:
        with pytest.raises(InputError, match=r"broken_metric came out NaN although the "
                                             r"volumes are finite"):
            volqa.score_pair(ref, ref)
    finally:
        METRICS.unregister("broken_metric")
