#!/usr/bin/env python
"""Build volqa's bundled example data: a 3-D head phantom and degraded reconstructions of it.

Run from anywhere::

    python scripts/make_example_data.py    # writes data/example/ and data_manifest.csv
    python scripts/make_example_data.py --out /tmp/ex --manifest /tmp/ex/m.csv

It writes two sets: the single phantom with degraded reconstructions described below (manifest
``data/example/degradations.csv``), and the example study of ``scripts/example_study.py``
(8 phantom subjects x 3 reconstruction methods in ``data/example/study/``, manifest
``data_manifest.csv``: the README's score -> compare -> report walk-through).

Every random draw comes from a fixed seed, so two runs with the same library versions write
byte-identical files (gzip headers carry mtime 0 and no file name; DICOM dates, times and UIDs
are fixed).

Ground truth
    ``phantom_gt.nii.gz`` — a 3-D Shepp–Logan-style head (ten ellipsoids defined below, with
    intensities changed to a T1-like contrast: scalp/skull 0.9, brain 0.5, ventricles 0.15,
    small structures 0.65–0.75), sampled 2×2×2 per voxel for partial-volume edges and modulated
    by a smooth tissue texture (5 % standard deviation). Grid 64 × 64 × 48 voxels, spacing
    (1.0, 1.0, 1.5) mm, RAS+ axes (identity direction), centred on the world origin, float32,
    values in [0, 1].
    ``phantom_gt_dicom/`` holds the same volume as a DICOM series (48 files).
``phantom_head_mask.nii.gz``
    The outer ellipsoid (whole head) at voxel centres, uint8 0/1.

Reconstructions (same grid as the ground truth)
    ``phantom_zf4.nii.gz`` / ``phantom_zf8.nii.gz``
        Zero-filled Cartesian undersampling, acceleration 4 and 8. The phantom gets a smooth
        phase (as a real MR image has), its 3-D k-space is sampled on whole lines along the
        second axis (j, anterior–posterior phase encode): a fully sampled centre (8 % of the lines
        at 4×, 4 % at 8×) plus lines drawn at random with a density falling off towards the
        k-space edge, 64/R lines in all. The reconstruction is the magnitude of the inverse FFT.
        ``phantom_zf4_dicom/`` holds the 4× reconstruction as a DICOM series.
    ``phantom_gauss.nii.gz``
        Ground truth plus white Gaussian noise, σ = 0.03 (can go below zero).
    ``phantom_rician.nii.gz``
        Magnitude of the complex image plus complex Gaussian noise, σ = 0.05 per channel
        (Rician: the background becomes a positive noise floor).
    ``phantom_blur.nii.gz``
        Ground truth convolved with an isotropic Gaussian of σ = 1.0 mm (FFT, periodic; the head
        lies well inside the field of view).
    ``phantom_scale.nii.gz``
        Ground truth times 1.1 (a global intensity scaling error).

Storage
    Every volume is rounded to multiples of 2**-12, as a 12-bit scanner stores it, so the NIfTI
    (float32) and DICOM (int16 with RescaleSlope 2**-12, RescaleIntercept 0) copies hold
    identical values. DICOM series are written by SimpleITK/GDCM, one file per slice, with the
    same world geometry as the NIfTI files (NIfTI affines are RAS+, DICOM is LPS+: x and y change
    sign). GDCM stores MR images with a non-identity rescale as Enhanced MR Image Storage, one
    frame per file; the position, orientation, pixel spacing and rescale tags then sit in the
    functional group sequences, which SimpleITK/GDCM read as usual.

``degradations.csv`` (one row per scored pair; paths relative to the manifest's folder)
    subject_id, reference, test, mask (empty when unused), method, acceleration (1 = fully
    sampled), noise_sigma (0 = no added noise). One row compares DICOM with DICOM, one a DICOM
    reference with a NIfTI test, one uses the head mask.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import shutil
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parent.parent

SHAPE = (64, 64, 48)
SPACING = (1.0, 1.0, 1.5)  # mm, along voxel axes i, j, k
MM_PER_PHANTOM_UNIT = 30.0  # the phantom is defined on [-1, 1]^3; 1 unit = 30 mm
QUANTUM = 2.0**-12  # storage step of every volume = DICOM RescaleSlope
SEED = 20261126

# RAS+ (NIfTI/nibabel) <-> LPS+ (DICOM/ITK): x and y change sign, z does not.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

# Ellipsoids: added intensity, semi-axes (a, b, c), centre (x, y, z), rotation about z (degrees).
# Geometry after the 3-D Shepp–Logan phantom, brain shrunk for a ~2 mm skull; x = right,
# y = anterior, z = superior (phantom units). Intensities are our own: the sums give a T1-like head.
Vec3 = tuple[float, float, float]
ELLIPSOIDS: tuple[tuple[float, Vec3, Vec3, float], ...] = (
    (0.90, (0.690, 0.920, 0.900), (0.00, 0.000, 0.00), 0.0),  # scalp and skull
    (-0.40, (0.620, 0.840, 0.830), (0.00, -0.0184, 0.00), 0.0),  # brain
    (-0.35, (0.110, 0.310, 0.220), (0.22, 0.000, 0.00), -18.0),  # right ventricle
    (-0.35, (0.160, 0.410, 0.280), (-0.22, 0.000, 0.00), 18.0),  # left ventricle
    (0.15, (0.210, 0.250, 0.410), (0.00, 0.350, -0.15), 0.0),  # anterior structure
    (0.20, (0.046, 0.046, 0.050), (0.00, 0.100, 0.25), 0.0),
    (0.20, (0.046, 0.046, 0.050), (0.00, -0.100, 0.25), 0.0),
    (0.25, (0.046, 0.023, 0.050), (-0.08, -0.605, 0.00), 0.0),
    (0.25, (0.023, 0.023, 0.020), (0.00, -0.606, 0.00), 0.0),
    (0.25, (0.023, 0.046, 0.020), (0.06, -0.605, 0.00), 0.0),
)

TEXTURE_AMPLITUDE = 0.05
CENTRE_FRACTION = {4: 0.08, 8: 0.04}
GAUSS_SIGMA = 0.03
RICIAN_SIGMA = 0.05
BLUR_SIGMA_MM = 1.0
SCALE = 1.1


def make_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """(4, 4) RAS+ affine of an axis-aligned grid whose centre lies at the world origin."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return affine


def world_grid(
    affine: np.ndarray, shape: tuple[int, int, int], offset: Vec3 = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """World coordinates (mm), shape (3, *shape), of voxel index + ``offset`` (voxel units)."""
    index = np.indices(shape, dtype=np.float64) + np.asarray(offset)[:, None, None, None]
    return np.einsum("ab,b...->a...", affine[:3, :3], index) + affine[:3, 3, None, None, None]


def ellipsoid_inside(points: np.ndarray, axes: Vec3, centre: Vec3, angle_deg: float) -> np.ndarray:
    """Bool array: which of ``points`` (3, ...) in phantom units lie inside the ellipsoid."""
    d = points - np.asarray(centre)[:, None, None, None]
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    u = c * d[0] + s * d[1]
    v = -s * d[0] + c * d[1]
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (d[2] / axes[2]) ** 2 <= 1.0


def phantom(
    affine: np.ndarray,
    shape: tuple[int, int, int],
    supersample: int = 2,
    ellipsoids: tuple[tuple[float, Vec3, Vec3, float], ...] = ELLIPSOIDS,
) -> np.ndarray:
    """Sum of the ellipsoids, averaged over ``supersample**3`` points per voxel (float64)."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    total = np.zeros(shape)
    for offset in itertools.product(offsets, repeat=3):
        points = world_grid(affine, shape, offset) / MM_PER_PHANTOM_UNIT
        for value, axes, centre, angle in ellipsoids:
            total += value * ellipsoid_inside(points, axes, centre, angle)
    return total / supersample**3


def gaussian_filter_fft(volume: np.ndarray, sigma_mm: float, spacing: Vec3) -> np.ndarray:
    """Periodic Gaussian smoothing (σ in mm) of a real volume through its FFT."""
    transfer = np.ones(volume.shape)
    for axis, (n, step) in enumerate(zip(volume.shape, spacing)):
        freq = np.fft.fftfreq(n, d=step)  # cycles per mm
        shape = [1, 1, 1]
        shape[axis] = n
        transfer = transfer * np.exp(-2.0 * (np.pi * sigma_mm * freq) ** 2).reshape(shape)
    return np.fft.ifftn(np.fft.fftn(volume) * transfer).real


def smooth_field(
    rng: np.random.Generator, sigma_mm: float, shape: tuple[int, int, int] = SHAPE,
    spacing: Vec3 = SPACING,
) -> np.ndarray:
    """Smooth random field with zero mean and unit standard deviation."""
    field = gaussian_filter_fft(rng.standard_normal(shape), sigma_mm, spacing)
    return (field - field.mean()) / field.std()


def line_mask(n: int, acceleration: int, rng: np.random.Generator) -> np.ndarray:
    """Bool (n,) sampling mask over k-space lines, DC at index n // 2 (fftshift order).

    ``round(n * CENTRE_FRACTION[acceleration])`` central lines are always taken; the rest of the
    ``round(n / acceleration)`` lines are drawn without replacement with weight
    ``(1 - |k| / k_max) ** 2`` (weighted sampling by random keys ``log(u) / weight``).
    """
    n_lines = round(n / acceleration)
    n_centre = round(n * CENTRE_FRACTION[acceleration])
    mask = np.zeros(n, dtype=bool)
    start = n // 2 - n_centre // 2
    mask[start : start + n_centre] = True
    distance = np.abs(np.arange(n) - n // 2) / (n // 2)
    weight = np.clip(1.0 - distance, 0.0, None) ** 2
    keys = np.full(n, -np.inf)
    free = ~mask & (weight > 0)
    keys[free] = np.log(rng.random(int(free.sum()))) / weight[free]
    mask[np.argsort(-keys, kind="stable")[: n_lines - n_centre]] = True
    return mask


def zero_filled(image: np.ndarray, lines: np.ndarray, axis: int) -> np.ndarray:
    """Magnitude of the inverse FFT of ``image``'s k-space with only ``lines`` kept on ``axis``."""
    shape = [1, 1, 1]
    shape[axis] = lines.size
    keep = np.fft.ifftshift(lines).reshape(shape)
    return np.abs(np.fft.ifftn(np.fft.fftn(image, norm="ortho") * keep, norm="ortho"))


def quantize(volume: np.ndarray) -> np.ndarray:
    """Round to multiples of QUANTUM as float32 (exact in float32 and in int16 DICOM storage)."""
    steps = np.round(volume / QUANTUM)
    if np.abs(steps).max() > np.iinfo(np.int16).max:
        raise SystemExit(f"values up to {np.abs(volume).max():.3f} do not fit int16 storage")
    return (steps * QUANTUM + 0.0).astype(np.float32)  # + 0.0 turns -0.0 into 0.0


def uid(name: str) -> str:
    """Deterministic DICOM UID '2.25.<decimal uuid5>' for ``name``."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, f"volqa-example/{name}").int)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    """Write ``array`` (voxel order i, j, k) with a RAS+ affine; deterministic gzip."""
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = description.encode("ascii")[:79]
    image.to_filename(path)


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """SimpleITK image of an (i, j, k) array with a RAS+ affine (ITK arrays are (k, j, i))."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((RAS_TO_LPS @ (affine[:3, :3] / spacing)).ravel().tolist())
    image.SetOrigin((RAS_TO_LPS @ affine[:3, 3]).tolist())
    return image


def write_dicom_series(
    array: np.ndarray, affine: np.ndarray, folder: Path, *, series_number: int, description: str
) -> None:
    """Write ``array`` (multiples of QUANTUM) as a deterministic MR DICOM series, a file a slice."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.dcm"):
        old.unlink()
    image = to_sitk(array, affine)
    series_uid = uid(f"series/{description}")
    common = {
        "0008|0012": "20000101",  # instance creation date
        "0008|0013": "120000",  # instance creation time
        "0008|0020": "20000101",  # study date
        "0008|0030": "120000",  # study time
        "0008|0021": "20000101",  # series date
        "0008|0031": "120000",  # series time
        "0008|0060": "MR",
        "0008|0070": "volqa make_example_data.py",  # manufacturer
        "0008|103e": description,
        "0010|0010": "Phantom^Head",
        "0010|0020": "VOLQA-PHANTOM",
        "0018|0050": f"{SPACING[2]:g}",  # slice thickness
        "0020|000d": uid("study"),
        "0020|000e": series_uid,
        "0020|0010": "1",  # study id
        "0020|0011": str(series_number),
        "0020|0052": uid("frame-of-reference"),
        "0028|1052": "0",  # rescale intercept
        "0028|1053": repr(QUANTUM),  # rescale slope
        "0028|0100": "16",  # bits allocated
        "0028|0101": "16",  # bits stored
        "0028|0102": "15",  # high bit
        "0028|0103": "1",  # signed (int16)
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        # A one-slice 3-D image: GDCM writes its position, orientation and spacing itself.
        slice_ = image[:, :, k : k + 1]
        for tag, value in common.items():
            slice_.SetMetaData(tag, value)
        slice_.SetMetaData("0008|0018", uid(f"{series_uid}/{k}"))  # SOP instance UID
        slice_.SetMetaData("0020|0013", str(k + 1))  # instance number
        writer.SetFileName(str(folder / f"IM{k + 1:04d}.dcm"))
        writer.Execute(slice_)


def read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(array (i, j, k), RAS+ affine) of the single series in ``folder``, via SimpleITK."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    direction = RAS_TO_LPS @ np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = RAS_TO_LPS @ np.array(image.GetOrigin())
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), affine


def check_round_trip(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Stop with a message unless ``path`` reads back as exactly ``array`` on ``affine``."""
    if path.is_dir():
        got, got_affine = read_dicom_series(path)
    else:
        image = nib.load(path)
        got, got_affine = np.asanyarray(image.dataobj), image.affine
    if got.shape != array.shape or not np.array_equal(got, array):
        raise SystemExit(f"{path}: values read back differ from those written")
    if not np.allclose(got_affine, affine, atol=1e-5):
        raise SystemExit(f"{path}: geometry read back\n{got_affine}\ndiffers from\n{affine}")


def build() -> dict[str, np.ndarray]:
    """All volumes of the example set, keyed by short name."""
    affine = make_affine(SHAPE, SPACING)
    texture = smooth_field(np.random.default_rng([SEED, 1]), sigma_mm=4.0)
    phase = np.pi / 4 * smooth_field(np.random.default_rng([SEED, 2]), sigma_mm=12.0)
    gt = quantize(np.clip(phantom(affine, SHAPE) * (1 + TEXTURE_AMPLITUDE * texture), 0.0, 1.0))
    complex_gt = gt * np.exp(1j * phase)

    points = world_grid(affine, SHAPE) / MM_PER_PHANTOM_UNIT
    _, axes, centre, angle = ELLIPSOIDS[0]  # the outer ellipsoid: whole head
    volumes = {
        "gt": gt,
        "head_mask": ellipsoid_inside(points, axes, centre, angle).astype(np.uint8),
    }
    for acceleration in (4, 8):
        lines = line_mask(SHAPE[1], acceleration, np.random.default_rng([SEED, 10 + acceleration]))
        volumes[f"zf{acceleration}"] = quantize(zero_filled(complex_gt, lines, axis=1))
    noise = np.random.default_rng([SEED, 20]).standard_normal(SHAPE)
    volumes["gauss"] = quantize(gt + GAUSS_SIGMA * noise)
    noise = np.random.default_rng([SEED, 21]).standard_normal((2, *SHAPE))
    volumes["rician"] = quantize(np.abs(complex_gt + RICIAN_SIGMA * (noise[0] + 1j * noise[1])))
    blurred = gaussian_filter_fft(gt, BLUR_SIGMA_MM, SPACING)
    volumes["blur"] = quantize(np.clip(blurred, 0.0, None))  # clip float error below zero
    volumes["scale"] = quantize(SCALE * gt)
    return volumes


NIFTI_FILES = {  # short name -> (file name, NIfTI description)
    "gt": ("phantom_gt.nii.gz", "volqa phantom ground truth"),
    "head_mask": ("phantom_head_mask.nii.gz", "volqa phantom head mask"),
    "zf4": ("phantom_zf4.nii.gz", "zero-filled 4x (variable-density lines along j)"),
    "zf8": ("phantom_zf8.nii.gz", "zero-filled 8x (variable-density lines along j)"),
    "gauss": ("phantom_gauss.nii.gz", f"Gaussian noise sigma {GAUSS_SIGMA}"),
    "rician": ("phantom_rician.nii.gz", f"Rician noise sigma {RICIAN_SIGMA}"),
    "blur": ("phantom_blur.nii.gz", f"Gaussian blur sigma {BLUR_SIGMA_MM} mm"),
    "scale": ("phantom_scale.nii.gz", f"intensity scaled x{SCALE}"),
}
DICOM_SERIES = {  # short name -> (folder name, series number, series description)
    "gt": ("phantom_gt_dicom", 1, "phantom ground truth"),
    "zf4": ("phantom_zf4_dicom", 2, "phantom zero-filled 4x"),
}
MANIFEST_COLUMNS = (
    "subject_id", "reference", "test", "mask", "method", "acceleration", "noise_sigma"
)
# Volumes by short name; "dicom:<name>" is the DICOM copy.
MANIFEST_ROWS = (
    ("phantom-zf4", "gt", "zf4", "", "zero_filled", 4, 0),
    ("phantom-zf8", "gt", "zf8", "", "zero_filled", 8, 0),
    ("phantom-zf4-dicom", "dicom:gt", "dicom:zf4", "", "zero_filled", 4, 0),
    ("phantom-zf8-masked", "gt", "zf8", "head_mask", "zero_filled", 8, 0),
    ("phantom-gauss", "gt", "gauss", "", "gaussian_noise", 1, GAUSS_SIGMA),
    ("phantom-rician", "gt", "rician", "", "rician_noise", 1, RICIAN_SIGMA),
    ("phantom-blur", "dicom:gt", "blur", "", "gaussian_blur", 1, 0),
    ("phantom-scale", "gt", "scale", "", "intensity_scale", 1, 0),
)


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "data" / "example",
        help="output folder (default: data/example in the repository)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=REPO_ROOT / "data_manifest.csv",
        help="the study's manifest to write, with paths relative to its folder "
        "(default: data_manifest.csv at the repository root)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    study_manifest: Path = args.manifest.resolve()
    manifest = out / "degradations.csv"
    out.mkdir(parents=True, exist_ok=True)
    study_manifest.parent.mkdir(parents=True, exist_ok=True)

    volumes = build()
    affine = make_affine(SHAPE, SPACING)
    paths: dict[str, Path] = {}
    for name, (file_name, description) in NIFTI_FILES.items():
        paths[name] = out / file_name
        write_nifti(volumes[name], affine, paths[name], description)
    for name, (folder, number, description) in DICOM_SERIES.items():
        paths[f"dicom:{name}"] = out / folder
        write_dicom_series(
            volumes[name], affine, out / folder, series_number=number, description=description
        )
    for key, path in paths.items():
        check_round_trip(path, volumes[key.removeprefix("dicom:")], affine)
    # the demo's default target ships inside the package (an installed volqa has no data/)
    packaged = REPO_ROOT / "volqa" / "demo" / "data" / "phantom_gt.nii.gz"
    if out == (REPO_ROOT / "data" / "example").resolve():
        packaged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths["gt"], packaged)

    def rel(key: str) -> str:
        return Path(os.path.relpath(paths[key], manifest.parent)).as_posix() if key else ""

    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for subject, reference, test, mask, method, acceleration, sigma in MANIFEST_ROWS:
            writer.writerow(
                [subject, rel(reference), rel(test), rel(mask), method, acceleration, sigma]
            )

    total = 0
    print(f"grid {SHAPE} voxels, spacing {SPACING} mm, RAS+ affine centred on the origin")
    for key, path in paths.items():
        size = size_of(path)
        total += size
        kind = f"DICOM series, {len(list(path.iterdir()))} files" if path.is_dir() else "NIfTI"
        volume = volumes[key.removeprefix("dicom:")]
        print(
            f"wrote {path}  ({kind}, {size / 1024:.0f} KiB, {volume.dtype}, "
            f"range {volume.min():.3f}..{volume.max():.3f})"
        )
    print(f"total {total / 1024**2:.2f} MiB; all read back (nibabel, SimpleITK) equal")
    print(f"wrote {manifest}  ({len(MANIFEST_ROWS)} rows)")

    from example_study import MANIFEST_COLUMNS as STUDY_COLUMNS
    from example_study import write_study

    rows = write_study(out / "study")
    with open(study_manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(STUDY_COLUMNS)
        for subject, reference, test, mask, *covariates in rows:
            writer.writerow([subject, *(Path(os.path.relpath(p, study_manifest.parent))
                                        .as_posix() for p in (reference, test, mask)),
                             *covariates])
    size = sum(f.stat().st_size for f in (out / "study").iterdir())
    print(f"wrote {out / 'study'}  ({size / 1024**2:.2f} MiB) and {study_manifest}  "
          f"({len(rows)} rows)")


if __name__ == "__main__":
    main()
