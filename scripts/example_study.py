"""The bundled example study: 8 phantom subjects x 3 reconstructions (``data/example/study``).

Used by ``scripts/make_example_data.py`` (run that; this module only builds the volumes).

Subjects
    ``sub-01`` .. ``sub-08``: the head phantom of ``make_example_data.py`` with anatomy drawn per
    subject (head size x0.92–1.05, ventricles x0.7–1.4, structures shifted by up to 1.5 mm, own
    tissue texture), on a 48 x 48 x 32 grid of 1.25 x 1.25 x 2 mm. Subjects 1–4 come from
    site ``A``, 5–8 from site ``B``, whose scanner is noisier (k-space noise σ 0.09 vs 0.02 per
    channel, on an image in [0, 1]). ``sub-XX_mask.nii.gz`` is the head (uint8).

Reconstructions, from the same 4x undersampled noisy k-space per subject (lines along j with a
fully sampled centre, as in ``make_example_data.line_mask``; a new mask per subject)
    ``zero_filled``  magnitude of the inverse FFT of the sampled lines (aliasing, noise);
    ``zf_smoothed``  the same, smoothed with a Gaussian of σ 0.5 mm (less noise, but blurred
                     edges, and the aliasing stays);
    ``tv``           60 gradient steps (step 0.5) on ||A x - y||² / 2 + λ TV_ε(x), λ = 0.01,
                     ε = 0.02: data consistency with a smoothed total-variation penalty on the
                     complex image, a small compressed-sensing reconstruction; magnitude.

Every volume is quantised to multiples of 2**-10 and stored as float32 NIfTI (RAS+).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from make_example_data import (
    ELLIPSOIDS,
    MM_PER_PHANTOM_UNIT,
    SEED,
    ellipsoid_inside,
    gaussian_filter_fft,
    line_mask,
    make_affine,
    phantom,
    smooth_field,
    world_grid,
    write_nifti,
)

SHAPE = (48, 48, 32)
SPACING = (1.25, 1.25, 2.0)
SUBJECTS = tuple(f"sub-{i:02d}" for i in range(1, 9))
METHODS = ("zero_filled", "zf_smoothed", "tv")
ACCELERATION = 4
NOISE = {"A": 0.02, "B": 0.09}
QUANTUM = 2.0**-10
SMOOTH_MM = 0.5
TV_STEPS, TV_STEP, TV_LAMBDA, TV_EPS = 60, 0.5, 0.01, 0.02
MANIFEST_COLUMNS = ("subject_id", "reference", "test", "mask", "method", "site", "acceleration")


def site_of(index: int) -> str:
    return "A" if index < 4 else "B"


def anatomy(rng: np.random.Generator) -> tuple[tuple[float, tuple, tuple, float], ...]:
    """The phantom's ellipsoids with this subject's head size, ventricles and shifts."""
    head = rng.uniform(0.92, 1.05)
    ventricles = rng.uniform(0.7, 1.4)
    out = []
    for i, (value, axes, centre, angle) in enumerate(ELLIPSOIDS):
        scale = head * (ventricles if i in (2, 3) else 1.0)
        shift = (0.0, 0.0, 0.0) if i < 2 else tuple(rng.uniform(-1.5, 1.5, 3) / MM_PER_PHANTOM_UNIT)
        out.append((value, tuple(a * scale for a in axes),
                    tuple(head * c + s for c, s in zip(centre, shift)), angle))
    return tuple(out)


def quantize(volume: np.ndarray) -> np.ndarray:
    return (np.round(volume / QUANTUM) * QUANTUM + 0.0).astype(np.float32)


def tv_gradient(x: np.ndarray, eps: float) -> np.ndarray:
    """Gradient of the smoothed total variation sum sqrt(|D_a x|² + ε²) over the three axes
    (forward differences, zero at the last voxel of each axis)."""
    grad = np.zeros_like(x)
    for axis in range(3):
        d = np.diff(x, axis=axis, append=np.take(x, [-1], axis=axis))
        n = d / np.sqrt(np.abs(d) ** 2 + eps**2)
        grad -= np.diff(n, axis=axis, prepend=np.zeros_like(np.take(n, [0], axis=axis)))
    return grad


def reconstructions(image: np.ndarray, lines: np.ndarray, noise: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """The three methods from the sampled lines of ``image``'s k-space plus ``noise``."""
    keep = np.fft.ifftshift(lines).reshape(1, -1, 1)
    kspace = (np.fft.fftn(image, norm="ortho") + noise) * keep
    zf = np.fft.ifftn(kspace, norm="ortho")
    x = zf.copy()
    for _ in range(TV_STEPS):
        residual = np.fft.ifftn(np.fft.fftn(x, norm="ortho") * keep - kspace, norm="ortho")
        x = x - TV_STEP * (residual + TV_LAMBDA * tv_gradient(x, TV_EPS))
    return {
        "zero_filled": np.abs(zf),
        "zf_smoothed": gaussian_filter_fft(np.abs(zf), SMOOTH_MM, SPACING),
        "tv": np.abs(x),
    }


def build_subject(index: int) -> dict[str, np.ndarray]:
    """Ground truth, head mask and the three reconstructions of subject ``index`` (0-based)."""
    affine = make_affine(SHAPE, SPACING)
    rng = np.random.default_rng([SEED, 100, index])
    ellipsoids = anatomy(rng)
    texture = smooth_field(rng, 4.0, SHAPE, SPACING)
    phase = np.pi / 4 * smooth_field(rng, 12.0, SHAPE, SPACING)
    gt = quantize(np.clip(phantom(affine, SHAPE, ellipsoids=ellipsoids)
                          * (1 + 0.05 * texture), 0.0, 1.0))
    points = world_grid(affine, SHAPE) / MM_PER_PHANTOM_UNIT
    _, axes, centre, angle = ellipsoids[0]
    lines = line_mask(SHAPE[1], ACCELERATION, rng)
    sigma = NOISE[site_of(index)]
    noise = sigma * (rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE))
    volumes = {"gt": gt, "mask": ellipsoid_inside(points, axes, centre, angle).astype(np.uint8)}
    for method, volume in reconstructions(gt * np.exp(1j * phase), lines, noise).items():
        volumes[method] = quantize(np.clip(volume, 0.0, None))
    return volumes


def write_study(folder: Path) -> list[tuple[str, ...]]:
    """Write every subject's volumes into ``folder``; the manifest rows (paths as written)."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = make_affine(SHAPE, SPACING)
    rows = []
    for index, subject in enumerate(SUBJECTS):
        volumes = build_subject(index)
        paths = {}
        for name, volume in volumes.items():
            paths[name] = folder / f"{subject}_{name}.nii.gz"
            write_nifti(volume, affine, paths[name], f"volqa example study {subject} {name}")
        for method in METHODS:
            rows.append((subject, str(paths["gt"]), str(paths[method]), str(paths["mask"]),
                         method, site_of(index), str(ACCELERATION)))
    return rows
