"""Tests of volqa.io: formats, RAS/LPS geometry, DICOM series and every input error."""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pipeline_data import make_affine, rotation
from pydicom.data import get_testdata_file

import volqa.io
import volqa.io.readers
from volqa.errors import InputError, SettingsError
from volqa.io import Volume, read_volume, volume_from_sitk, volume_to_sitk, write_nifti

# DICOM/ITK world coordinates are LPS, NIfTI's are RAS: negate x and y. Written out here
# independently of volqa.io.LPS_TO_RAS so that the tests check the convention itself.
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
UID_A = "1.2.826.0.1.3680043.9.7777.1.1"
UID_B = "1.2.826.0.1.3680043.9.7777.1.2"
DICOMDIR_TESTS = Path(get_testdata_file("DICOMDIR")).parent  # pydicom's bundled series


OBLIQUE = make_affine(rotation((10, 20, 30)))
AFFINES = {
    "ras": make_affine(np.eye(3)),
    "lps": make_affine(np.diag([-1.0, -1.0, 1.0])),
    "permuted": make_affine(np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]])),
    "oblique": OBLIQUE,
}


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray = OBLIQUE,
               slope: float | None = None, inter: float = 0.0) -> Path:
    image = nib.Nifti1Image(array, affine)
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, path)
    return path


def sitk_image(array: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """SimpleITK image of an (i, j, k) array, geometry set from a RAS affine via FLIP."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = FLIP @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def write_dicom_series(folder: Path, hu: np.ndarray, affine_ras: np.ndarray, *, uid: str,
                       description: str = "volqa test", slope: float = 2.0,
                       intercept: float = -1024.0, depths: np.ndarray | None = None) -> list[Path]:
    """Write an int16 (i, j, k) HU volume as a CT series, one file per k slice.

    SimpleITK's writer is driven slice by slice (ImageFileWriter, the documented way to give
    every slice its own tags): study/series UIDs, ImagePositionPatient,
    ImageOrientationPatient, SliceThickness, RescaleSlope/Intercept. GDCM derives
    PixelSpacing from the image and stores (HU - intercept) / slope as raw pixel values.
    ``depths`` (mm along the slice normal) overrides the regular slice positions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk_image(hu, affine_ras)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.8f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    normal = np.array(d).reshape(3, 3)[:, 2]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(hu.shape[2]):
        piece = image[:, :, k : k + 1]
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k)))
        if depths is not None:
            position = np.array(image.GetOrigin()) + depths[k] * normal
        piece.SetOrigin(position.tolist())
        tags = {
            "0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.9.7777.0", "0020|000e": uid,
            "0020|0052": "1.2.826.0.1.3680043.9.7777.9", "0008|0018": f"{uid}.{k + 1}",
            "0008|103e": description, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position), "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|1053": f"{slope:g}", "0028|1052": f"{intercept:g}",
        }
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        paths.append(folder / f"{uid.rsplit('.', 1)[1]}_{k:03d}.dcm")
        writer.SetFileName(str(paths[-1]))
        writer.Execute(piece)
    return paths


def ct_like(rng: np.random.Generator, shape=(12, 10, 8)) -> np.ndarray:
    """int16 HU values that slope 2 / intercept -1024 store exactly."""
    return (2 * rng.integers(0, 1500, size=shape) - 1024).astype(np.int16)


# --------------------------------------------------------------------------- Volume, NIfTI


def test_volume_geometry_properties():
    affine = np.array([[-2.0, 0, 0, 10], [0, 0, 3, -5], [0, 4, 0, 7], [0, 0, 0, 1]])
    vol = Volume(np.zeros((2, 3, 4), np.float32), affine, "x")
    assert vol.shape == (2, 3, 4)
    assert vol.spacing == (2.0, 4.0, 3.0)
    np.testing.assert_array_equal(vol.direction, [[-1, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(vol.origin, [10, -5, 7])
    assert vol.orientation == "LSA"
    assert vol.array.dtype == np.float32 and vol.affine.dtype == np.float64


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("name", list(AFFINES))
def test_write_nifti_round_trip(tmp_path, suffix, name):
    rng = np.random.default_rng(1)
    like = Volume(rng.random((9, 8, 7), dtype=np.float32), AFFINES[name], "like")
    path = tmp_path / f"out{suffix}"
    path.write_bytes(b"old content")  # replaced atomically
    write_nifti(like.array * 2, like, path)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, like.array * 2)
    np.testing.assert_allclose(back.affine, like.affine, atol=1e-5)
    assert back.orientation == like.orientation
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_write_nifti_bool_and_errors(tmp_path):
    like = Volume(np.zeros((4, 5, 6), np.float32), OBLIQUE, "like")
    mask = np.zeros(like.shape, bool)
    mask[1:3, 2:4, 3:5] = True
    write_nifti(mask, like, tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "mask.nii.gz").array, mask)
    with pytest.raises(SettingsError, match=r"array shape \(4, 5\) differs from .* \(4, 5, 6\)"):
        write_nifti(np.zeros((4, 5)), like, tmp_path / "x.nii")
    with pytest.raises(SettingsError, match=r"\.nii or \.nii\.gz"):
        write_nifti(mask, like, tmp_path / "x.mha")


def test_4d_with_one_volume_is_3d(tmp_path):
    data = np.random.default_rng(2).random((6, 5, 4, 1)).astype(np.float32)
    vol = read_volume(save_nifti(tmp_path / "one.nii.gz", data))
    assert vol.shape == (6, 5, 4)
    np.testing.assert_array_equal(vol.array, data[..., 0])


@pytest.mark.parametrize("shape", [(33, 17, 40), (32, 32, 32), (5, 70, 3)])
@pytest.mark.parametrize("layout", ["fortran", "permuted", "flipped", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_c_order_copy_equals_numpy_for_every_layout(shape, layout, dtype):
    """The blocked copy into C order gives numpy's values for any layout and block remainder."""
    base = (np.random.default_rng(4).random((80, 80, 80)) * 3000).astype(dtype)
    view = {"fortran": np.asfortranarray(base[: shape[0], : shape[1], : shape[2]]),
            "permuted": base[: shape[2], : shape[0], : shape[1]].transpose(1, 2, 0),
            "flipped": base[: shape[0], : shape[1], : shape[2]][::-1, :, ::-1],
            "strided": base[::2, :, ::2][: shape[0], : shape[1], : shape[2]]}[layout]
    assert view.shape == shape and not view.flags.c_contiguous
    out = volqa.io.volume.c_order_float32(view)
    assert out.flags.c_contiguous and out.dtype == np.float32
    np.testing.assert_array_equal(out, view.astype(np.float32))


def test_c_order_of_a_c_ordered_float32_array_is_no_copy():
    array = np.zeros((4, 5, 6), np.float32)
    assert volqa.io.volume.c_order_float32(array) is array


def test_gzip_members_padding_and_truncation(tmp_path):
    """A .nii.gz may hold several gzip members (``cat a.gz b.gz``, or BGZF's many small ones)
    and zero padding, as gzip itself accepts; a stream cut short is an error, as gzip says."""
    raw = _nifti_bytes(tmp_path)
    half = len(raw) // 2
    packed = gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + bytes(7)
    assert gzip.decompress(packed) == raw  # the reference reader agrees
    (tmp_path / "two.nii.gz").write_bytes(packed)
    vol = read_volume(tmp_path / "two.nii.gz")
    np.testing.assert_array_equal(vol.array, np.asarray(nib.load(tmp_path / "good.nii").dataobj))
    blocks = b"".join(gzip.compress(raw[i:i + 512]) + bytes(i % 3)  # BGZF-like, padded
                      for i in range(0, len(raw), 512))
    (tmp_path / "blocks.nii.gz").write_bytes(blocks)
    np.testing.assert_array_equal(read_volume(tmp_path / "blocks.nii.gz").array, vol.array)
    # bytes after the voxels the header declares are checked, not kept (nibabel ignores them)
    (tmp_path / "long.nii.gz").write_bytes(gzip.compress(raw + b"\x01" * 100_000))
    np.testing.assert_array_equal(read_volume(tmp_path / "long.nii.gz").array, vol.array)
    cut = gzip.compress(raw)[:-4]  # no length in the trailer
    with pytest.raises(EOFError):
        gzip.decompress(cut)
    (tmp_path / "cut.nii.gz").write_bytes(cut)
    with pytest.raises(InputError, match=r"cut\.nii\.gz.*corrupt gzip stream"):
        read_volume(tmp_path / "cut.nii.gz")


@pytest.mark.parametrize(("in_chunk", "out_chunk"),
                         [(1 << 16, 1 << 22), (7, 1 << 22), (1 << 16, 100)])
@pytest.mark.parametrize("size", [1, 10_000, 300_000, 10**6])
def test_read_data_streams_against_gzip(tmp_path, monkeypatch, in_chunk, out_chunk, size):
    """The streamed inflate keeps the first ``size`` bytes of what :func:`gzip.decompress`
    gives, whatever the piece sizes (headers, members and padding split across reads; output
    limited per call); the bytes past ``size`` are still checked: a stream cut anywhere is an
    error, as gzip says; a plain file is its first ``size`` bytes."""
    from volqa.io import nifti

    monkeypatch.setattr(nifti, "_IN_CHUNK", in_chunk)
    monkeypatch.setattr(nifti, "_OUT_CHUNK", out_chunk)
    rng = np.random.default_rng(3)
    payload = (rng.integers(0, 40, 300_000, dtype=np.uint8) // 7).tobytes()  # compressible
    first = gzip.compress(payload[:150_001])
    stream = (first + bytes(70_000)  # padding longer than a read
              + b"".join(gzip.compress(payload[i:min(i + 997, 250_000)]) + bytes(i % 3)
                         for i in range(150_001, 250_000, 997))
              + gzip.compress(payload[250_000:]))
    assert len(stream) > 2 * (1 << 16)
    reference = gzip.decompress(stream)
    assert reference == payload
    path = tmp_path / "x.nii.gz"
    path.write_bytes(stream)
    assert nifti.read_data(path, size).tobytes() == reference[:size]
    # cut in a header, in deflate data, in a small member, in a trailer
    for cut in (len(first) + 70_000 + 5, len(first) // 2, len(first) + 70_000 + 1500,
                len(stream) - 4):
        path.write_bytes(stream[:cut])
        with pytest.raises((EOFError, zlib.error)):
            gzip.decompress(path.read_bytes())
        with pytest.raises((EOFError, zlib.error)):
            nifti.read_data(path, size)
    plain = tmp_path / "x.nii"
    plain.write_bytes(payload)
    assert nifti.read_data(plain, size).tobytes() == payload[:size]


@pytest.mark.parametrize(
    ("dtype", "low", "high", "slope", "inter"),
    [
        (np.uint16, 0, 65535, None, 0.0),
        (np.uint16, 0, 65535, 1.0, -1024.0),
        (np.int16, -32768, 32767, 2.0, -1024.0),
        (np.int16, -32768, 32767, None, 0.0),
    ],
)
def test_integer_nifti_converted_without_overflow(tmp_path, dtype, low, high, slope, inter):
    raw = np.random.default_rng(3).integers(low, high, size=(6, 5, 4), endpoint=True).astype(dtype)
    raw.flat[:2] = (low, high)  # the extremes must survive the scaling
    vol = read_volume(save_nifti(tmp_path / "int.nii", raw, slope=slope, inter=inter))
    expected = raw.astype(np.float64) * (1.0 if slope is None else slope) + inter
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, expected)


@pytest.mark.parametrize(("dtype", "slope", "inter"), [
    (">f4", None, 0.0), ("<f8", 2.5, -3.0), ("i1", 0.5, 10.0), ("u1", None, 0.0),
    (">i2", 3.0, 0.0), ("<i4", 1e-3, 1.0), ("u2", 0.0, 0.0), ("i2", float("nan"), 0.0),
])
def test_voxels_and_scaling_equal_nibabels(tmp_path, dtype, slope, inter):
    """volqa reads the stored voxels without nibabel's copy, and scales them as nibabel does
    (a zero or NaN slope means no scaling); both byte orders."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    raw = np.random.default_rng(5).uniform(info.min if info else -1e3, info.max if info else 1e3,
                                            (7, 6, 5)).astype(dtype)
    header = nib.Nifti1Header(endianness=">" if dtype.startswith(">") else "<")
    packed = nib.Nifti1Image(raw, AFFINES["oblique"], header=header).to_bytes()
    stored = nib.Nifti1Header.from_fileobj(io.BytesIO(packed), check=False)
    stored["scl_slope"], stored["scl_inter"] = (np.nan if slope is None else slope), inter
    assert stored.endianness == header.endianness
    path = tmp_path / "v.nii.gz"
    path.write_bytes(gzip.compress(stored.binaryblock + packed[348:]))
    want = np.asarray(nib.load(path).dataobj)
    if slope not in (None, 0.0) and slope == slope:
        assert not np.array_equal(want, raw)  # the scaling is applied
    np.testing.assert_array_equal(read_volume(path).array, want.astype(np.float32))


# --------------------------------------------------------------------------- ITK formats, LPS


@pytest.mark.parametrize("name", list(AFFINES))
def test_sitk_round_trip_keeps_ras_affine(name):
    vol = Volume(np.random.default_rng(4).random((5, 6, 7), dtype=np.float32), AFFINES[name], "v")
    image = volume_to_sitk(vol)
    assert image.GetSize() == (5, 6, 7)
    ijk = (4, 1, 3)
    lps = FLIP @ vol.affine @ (*ijk, 1)
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(ijk), lps[:3], atol=1e-9)
    back = volume_from_sitk(image, "v")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".mhd"])
@pytest.mark.parametrize("direction_lps", [np.eye(3), rotation((-15, 5, 40))])
def test_itk_file_with_lps_direction_matches_nifti(tmp_path, suffix, direction_lps):
    data = np.random.default_rng(5).random((7, 6, 5)).astype(np.float32)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    image.SetSpacing((0.7, 1.1, 2.0))
    image.SetOrigin((12.0, -34.0, 56.0))
    image.SetDirection(direction_lps.ravel().tolist())
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    affine_ras = FLIP @ make_affine(direction_lps, (0.7, 1.1, 2.0), (12.0, -34.0, 56.0))
    from_itk = read_volume(tmp_path / f"v{suffix}")
    from_nifti = read_volume(save_nifti(tmp_path / "v.nii.gz", data, affine_ras))
    np.testing.assert_array_equal(from_itk.array, from_nifti.array)
    np.testing.assert_allclose(from_itk.affine, from_nifti.affine, atol=1e-5)
    if np.allclose(direction_lps, np.eye(3)):
        assert from_itk.orientation == "LPS"


@pytest.mark.parametrize(("unit", "factor"), [("mm", 1.0), ("unknown", 1.0), ("micron", 1e-3),
                                             ("meter", 1e3)])
def test_nifti_positions_in_other_units_are_read_in_mm_as_itk_reads_them(tmp_path, unit,
                                                                         factor):
    affine = make_affine(rotation((10, 0, 30)), (500.0, 400.0, 2000.0), (-1e4, 2e4, 3e4))
    image = nib.Nifti1Image(np.random.default_rng(9).random((6, 7, 8), dtype=np.float32), affine)
    image.header.set_xyzt_units(xyz=unit)
    path = tmp_path / "v.nii.gz"
    nib.save(image, path)
    volume = read_volume(path)
    itk = sitk.ReadImage(str(path))  # ITK converts the header's unit to mm
    lps = FLIP @ volume.affine
    np.testing.assert_allclose(volume.spacing, itk.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(lps[:3, 3], itk.GetOrigin(), rtol=1e-6)
    np.testing.assert_allclose(volume.affine[:3], affine[:3] * factor, rtol=1e-6)
    noted = [n for n in volume.notes if "the header gives positions in" in n]
    assert bool(noted) == (factor != 1.0)
    # the same volume saved by ITK is on the NIfTI's grid
    sitk.WriteImage(itk, str(tmp_path / "v.mha"))
    np.testing.assert_allclose(read_volume(tmp_path / "v.mha").affine, volume.affine,
                               rtol=1e-6, atol=1e-6 * factor)


def _mhd(tmp_path: Path, old: str, new: str) -> Path:
    """A .mhd (+ .raw) with origin (12, -34, 56) LPS, spacing (0.5, 1.25, 2.0), whose header line
    ``old`` is replaced by ``new`` (a hand-edited header)."""
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    image.SetSpacing((0.5, 1.25, 2.0))
    image.SetOrigin((12.0, -34.0, 56.0))
    path = tmp_path / "v.mhd"
    sitk.WriteImage(image, str(path))
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(("old", "new"), [
    ("Offset = 12 -34 56", "Offset=12 -34 56"),
    ("Offset = 12 -34 56", "Offset =\t+12  -3.4e1 56.0\r"),
    ("Offset = 12 -34 56", "Origin = 12 -34 56"),
    ("Offset = 12 -34 56", "Offset = 12 -34 56\nPosition = 12.0 -34 5.6E1"),
])
def test_hand_written_metaimage_header_that_is_exact_is_read(tmp_path, old, new):
    volume = read_volume(_mhd(tmp_path, old, new))
    np.testing.assert_allclose(volume.affine[:3, 3], (-12.0, 34.0, 56.0))  # LPS -> RAS
    np.testing.assert_allclose(np.abs(np.diag(volume.affine))[:3], (0.5, 1.25, 2.0))


@pytest.mark.parametrize(("old", "new", "pattern"), [
    # each of these, ITK's MetaIO reads without a word, with the origin somewhere else
    ("Offset = 12 -34 56", "Offset = nan -34 56", r"Offset = 'nan -34 56' is not 3 finite"),
    ("Offset = 12 -34 56", "Offset = 12 inf 56", r"is not 3 finite decimal numbers"),
    ("Offset = 12 -34 56", "Offset = 12,-34,56", r"Offset = '12,-34,56' is not 3 finite"),
    ("Offset = 12 -34 56", "Offset = 12 -34", r"Offset = '12 -34' is not 3 finite .*NDims = 3"),
    ("Offset = 12 -34 56", "Offset = 12 -34 56 7", r"is not 3 finite decimal numbers"),
    ("Offset = 12 -34 56", "Offset = 0x0C -34 56", r"is not 3 finite decimal numbers"),
    ("Offset = 12 -34 56", "offset = 12 -34 56",
     r"key 'offset' is not MetaImage's 'Offset' .*write it as 'Offset'"),
    ("Offset = 12 -34 56", "Offset = 12 -34 56\nOrigin = 0 0 0",
     r"gives Offset = '12 -34 56' and Origin = '0 0 0', which MetaImage reads into the same"),
    ("Offset = 12 -34 56", "Offset = 12 -34 56\nOffset = 1 2 3", r"gives Offset twice"),
    ("ElementSpacing = 0.5 1.25 2", "ElementSpacing = 0.5 1.25 nan",
     r"ElementSpacing = '0.5 1.25 nan' is not 3 finite"),
    ("TransformMatrix = 1 0 0 0 1 0 0 0 1", "TransformMatrix = 1 0 0 0 1 0",
     r"TransformMatrix = '1 0 0 0 1 0' is not 9 finite"),
])
def test_metaimage_header_that_itk_would_misread_is_refused(tmp_path, old, new, pattern):
    path = _mhd(tmp_path, old, new)
    with pytest.raises(InputError, match=pattern) as info:
        read_volume(path)
    assert str(info.value).startswith(f"cannot read {str(path)!r}: ")


# --------------------------------------------------------------------------- DICOM


def test_dicom_series_matches_nifti_and_applies_rescale(tmp_path):
    hu = ct_like(np.random.default_rng(6))
    files = write_dicom_series(tmp_path / "ct", hu, OBLIQUE, uid=UID_A)
    from_dicom = read_volume(tmp_path / "ct")
    from_nifti = read_volume(save_nifti(tmp_path / "ct.nii.gz", hu, OBLIQUE))
    np.testing.assert_array_equal(from_dicom.array, hu)
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    assert from_dicom.notes == ()
    assert from_dicom.source == str(tmp_path / "ct")
    # The files hold raw values; the reader applied the stored slope and intercept.
    ds = pydicom.dcmread(files[0])
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1024.0)
    assert float(ds.SliceThickness) == pytest.approx(1.5)
    assert [float(s) for s in ds.PixelSpacing] == pytest.approx([0.9, 0.8])  # row, column
    np.testing.assert_array_equal(ds.pixel_array.T * 2.0 - 1024.0, hu[:, :, 0])
    assert not np.array_equal(ds.pixel_array.T, hu[:, :, 0])


def test_pydicom_ct_series_spacing_matches_tags():
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"
    datasets = sorted((pydicom.dcmread(f) for f in folder.iterdir()),
                      key=lambda ds: float(ds.ImagePositionPatient[2]))
    vol = read_volume(folder)
    steps = np.diff([float(ds.ImagePositionPatient[2]) for ds in datasets])
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    assert vol.shape == (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    assert vol.spacing == pytest.approx((column_spacing, row_spacing, steps[0]))
    assert np.allclose(steps, steps[0])
    first = np.array([float(v) for v in datasets[0].ImagePositionPatient])
    np.testing.assert_allclose(vol.origin, first * [-1, -1, 1])
    assert vol.orientation == "LPS"
    assert vol.notes == ()
    expected = np.stack([ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                         for ds in datasets], axis=-1)
    np.testing.assert_array_equal(vol.array, expected)


def test_pydicom_series_with_gap_gets_notes():
    vol = read_volume(DICOMDIR_TESTS / "77654033" / "CT2")  # steps 202.5, 1.25, 1.25 mm
    assert vol.shape == (16, 16, 4)
    assert any(re.search(r"possible missing slices: 1 gap.*202\.5 mm after slice 0", n)
               for n in vol.notes)
    assert any(n.startswith("non-uniform slice spacing") for n in vol.notes)


@pytest.mark.parametrize(
    ("depths", "expected"),
    [
        ([0.0, 2.0, 4.0, 6.0, 8.0, 10.0], ()),
        ([0.0, 2.0, 4.6, 6.6, 8.6, 10.6], ("non-uniform slice spacing",)),
        ([0.0, 2.0, 4.0, 8.0, 10.0, 12.0],
         ("non-uniform slice spacing", "possible missing slices")),
    ],
    ids=["uniform", "non-uniform", "missing"],
)
def test_dicom_slice_spacing_notes(tmp_path, depths, expected):
    hu = ct_like(np.random.default_rng(7), shape=(6, 5, 6))
    affine = make_affine(np.eye(3), (1.0, 1.0, 2.0))
    write_dicom_series(tmp_path / "s", hu, affine, uid=UID_A, depths=np.array(depths))
    vol = read_volume(tmp_path / "s")
    assert tuple(n.split(":")[0] for n in vol.notes) == expected


def test_dicom_folder_with_two_series(tmp_path):
    rng = np.random.default_rng(8)
    first, second = ct_like(rng, (6, 5, 4)), ct_like(rng, (6, 5, 4))
    write_dicom_series(tmp_path / "two", first, OBLIQUE, uid=UID_A, description="first recon")
    write_dicom_series(tmp_path / "two", second, OBLIQUE, uid=UID_B, description="second recon")
    folder = tmp_path / "two"
    with pytest.raises(InputError, match="holds 2 DICOM series") as info:
        read_volume(folder)
    message = str(info.value)
    for text in (str(folder), UID_A, UID_B, "'first recon', 4 files", "'second recon'",
                 "#<SeriesInstanceUID>"):
        assert text in message
    picked = read_volume(f"{folder}#{UID_B}")
    np.testing.assert_array_equal(picked.array, second)
    assert picked.source == f"{folder}#{UID_B}"
    by_keyword = read_volume(folder, series_uid=UID_A)
    np.testing.assert_array_equal(by_keyword.array, first)
    assert by_keyword.source == f"{folder}#{UID_A}"
    with pytest.raises(InputError, match=r"no series with SeriesInstanceUID '1\.2\.3'.*" + UID_A):
        read_volume(f"{folder}#1.2.3")


def test_single_dicom_file_multiframe():
    path = get_testdata_file("rtdose.dcm")  # 15 frames of 10 x 10
    ds = pydicom.dcmread(path)
    vol = read_volume(path)
    frame_steps = np.diff([float(v) for v in ds.GridFrameOffsetVector])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    assert vol.spacing == pytest.approx((column_spacing, row_spacing, frame_steps[0]))
    np.testing.assert_allclose(vol.origin, np.array([float(v) for v in ds.ImagePositionPatient])
                               * [-1, -1, 1])
    np.testing.assert_array_equal(vol.array, ds.pixel_array.transpose(2, 1, 0))


def test_single_dicom_slice_is_2d():
    path = DICOMDIR_TESTS / "98892001" / "CT5N" / "2062"  # no extension: found by preamble
    with pytest.raises(InputError, match=r"2-D image of shape \(16, 16, 1\).*folder"):
        read_volume(path)


@pytest.mark.parametrize("kind", ["nii", "nii.gz", "mha", "nrrd", "dicom"])
def test_paths_with_spaces_and_non_ascii(tmp_path, kind):
    folder = tmp_path / "dir with spaces ü é 日本"
    folder.mkdir()
    hu = ct_like(np.random.default_rng(9), (6, 5, 4))
    if kind == "dicom":
        write_dicom_series(folder / "série ü", hu, OBLIQUE, uid=UID_A)
        path = folder / "série ü"
    elif kind.startswith("nii"):
        path = save_nifti(folder / f"vol ü.{kind}", hu)
    else:
        path = folder / f"vol ü.{kind}"
        sitk.WriteImage(sitk_image(hu, OBLIQUE), str(path))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array, hu)
    np.testing.assert_allclose(vol.affine, OBLIQUE, atol=1e-4)


# --------------------------------------------------------------------------- errors


def _nifti_bytes(tmp_path: Path) -> bytes:
    data = np.random.default_rng(10).random((8, 9, 10)).astype(np.float32)
    return save_nifti(tmp_path / "good.nii", data).read_bytes()


def _damaged_gzip(tmp_path: Path) -> bytes:
    packed = bytearray(gzip.compress(_nifti_bytes(tmp_path)))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = bytes(64)
    return bytes(packed)


def _write(name: str, content: Callable[[Path], bytes]) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(content(tmp_path))
        return path
    return build


def _nifti(name: str, data: np.ndarray) -> Callable[[Path], Path]:
    return lambda tmp_path: save_nifti(tmp_path / name, data)


def _mha(image: sitk.Image) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        sitk.WriteImage(image, str(tmp_path / "v.mha"))
        return tmp_path / "v.mha"
    return build


def _folder(name: str, files: dict[str, bytes]) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        (tmp_path / name).mkdir()
        for file, content in files.items():
            (tmp_path / name / file).write_bytes(content)
        return tmp_path / name
    return build


def _with_bad_values(values: list[float]) -> np.ndarray:
    data = np.ones((5, 6, 7), np.float32)
    data.flat[: len(values)] = values
    return data


def _image_4d() -> sitk.Image:
    volumes = [sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32)) for _ in range(2)]
    return sitk.JoinSeries(volumes)


BAD_INPUTS = {
    "missing": (lambda p: p / "nope.nii.gz", r"no such file or directory"),
    "zero-byte": (_write("empty.nii.gz", lambda p: b""), r"the file is empty \(0 bytes\)"),
    "not-gzip": (_write("plain.nii.gz", _nifti_bytes),
                 r"not gzip-compressed although named .nii.gz.*rename it to .nii"),
    "bad-deflate": (_write("bad.nii.gz", _damaged_gzip), r"corrupt gzip stream"),
    "truncated-gz": (_write("cut.nii.gz", lambda p: gzip.compress(_nifti_bytes(p))[:-300]),
                     r"corrupt gzip stream"),
    "truncated-nii": (_write("cut.nii", lambda p: _nifti_bytes(p)[:-100]),
                      r"truncated NIfTI: the header says \(8, 9, 10\) voxels of float32 "
                      r"\(3232 bytes with the header\), the data holds 3132 bytes"),
    "text-as-nii": (_write("notes.nii", lambda p: b"subject,score\n" * 40), r"not a NIfTI image"),
    "4d": (_nifti("4d.nii.gz", np.zeros((8, 9, 10, 3), np.float32)),
           r"4-D image of shape \(8, 9, 10, 3\) \(3 volumes\)"),
    "4d-mha": (_mha(_image_4d()), r"4-D image of shape \(6, 5, 4, 2\) \(2 volumes\)"),
    "2d": (_nifti("2d.nii", np.zeros((8, 9), np.float32)), r"2-D image of shape \(8, 9\)"),
    "one-slice": (_nifti("2d.nii", np.zeros((8, 9, 1), np.float32)),
                  r"2-D image of shape \(8, 9, 1\)"),
    "2d-mha": (_mha(sitk.GetImageFromArray(np.zeros((8, 9), np.float32))), r"2-D image"),
    "rgb-mha": (_mha(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)),
                r"3 components per voxel"),
    "garbage-mha": (_write("bad.mha", lambda p: b"not an image\n"), r"SimpleITK cannot read it"),
    "empty-folder": (_folder("scans", {}), r"empty folder"),
    "no-dicom": (_folder("scans", {"a.txt": b"hello", "b.csv": b"1,2"}),
                 r"no DICOM series in this folder \(2 entries"),
    "dir-as-file": (_folder("scan.nii.gz", {}),
                    r"is a directory, but a \.nii\.gz file was expected"),
    "unknown-extension": (_write("scan.png", lambda p: b"\x89PNG....."),
                          r"unknown extension '\.png' and not a DICOM file"),
    "nan": (_nifti("nan.nii", _with_bad_values([np.nan, np.nan])), r"2 NaN and 0 Inf voxels"),
    "inf": (_nifti("inf.nii.gz", _with_bad_values([np.inf, -np.inf, np.nan])),
            r"1 NaN and 2 Inf voxels"),
}


@pytest.mark.parametrize(("build", "pattern"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_raises_input_error_naming_file_and_cause(tmp_path, build, pattern):
    path = build(tmp_path)
    with pytest.raises(InputError, match=pattern) as info:
        read_volume(path)
    assert str(info.value).startswith(f"cannot read {str(path)!r}: ")


def test_series_uid_for_a_file_is_an_error(tmp_path):
    path = save_nifti(tmp_path / "v.nii", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(InputError, match=r"series UID was given but the path is a file"):
        read_volume(path, series_uid=UID_A)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can read a file whatever its mode")
def test_unreadable_file(tmp_path):
    path = save_nifti(tmp_path / "secret.nii", np.zeros((3, 4, 5), np.float32))
    path.chmod(0)
    try:
        with pytest.raises(InputError, match=re.escape(str(path)) + r".*permission denied"):
            read_volume(path)
    finally:
        path.chmod(0o644)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    """As root chmod 000 does not stop reads, so make the reader's open() fail instead."""
    path = save_nifti(tmp_path / "secret.nii", np.zeros((3, 4, 5), np.float32))

    def refuse(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(volqa.io.readers, "open", refuse, raising=False)
    with pytest.raises(InputError, match=re.escape(str(path)) + r".*permission denied"):
        read_volume(path)


@pytest.mark.parametrize("which", [0, -1])  # first and last file by name: stack ends included
def test_dicom_file_dropped_by_gdcm_is_noted(tmp_path, which):
    import shutil

    folder = tmp_path / "series"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data/example/phantom_gt_dicom", folder)
    victim = sorted(folder.iterdir())[which]
    victim.write_bytes(victim.read_bytes()[:400])  # truncated: header only
    volume = read_volume(folder)
    assert volume.shape[2] == 47
    assert any("1 DICOM file(s) in the folder are not part of series" in n for n in volume.notes)

