"""Tests of volqa.pipeline.geometry.align_to_reference: tolerances, reorientation, resampling."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pipeline_data import make_affine, rotation

from volqa.errors import GeometryError
from volqa.io import Volume
from volqa.pipeline.geometry import Alignment, align_to_reference

SHAPE = (10, 9, 8)


AFFINES = {
    "ras": make_affine(np.eye(3)),
    "lps": make_affine(np.diag([-1.0, -1.0, 1.0])),
    "oblique": make_affine(rotation((10, 20, 30))),
}


def volume(affine: np.ndarray, name: str = "ref.nii.gz", seed: int = 0, shape=SHAPE) -> Volume:
    return Volume(np.random.default_rng(seed).random(shape, dtype=np.float32), affine, name)


def moved_copy(vol: Volume, perm: tuple[int, int, int], flips: tuple[int, ...],
               name: str = "test.nii.gz") -> Volume:
    """The same voxels in another axis order: flip ``flips`` axes, then transpose to ``perm``.

    Built by hand (not with nibabel.orientations) so the test checks the module against an
    independent construction. Flipping axis a maps index i to n - 1 - i, so column a of the
    affine changes sign and the origin moves to the old last voxel.
    """
    array, affine = vol.array, vol.affine.copy()
    for axis in flips:
        array = np.flip(array, axis)
        affine[:3, 3] += (vol.shape[axis] - 1) * affine[:3, axis]
        affine[:3, axis] *= -1
    array = array.transpose(perm)
    affine[:3, :3] = affine[:3, list(perm)]
    return Volume(array.copy(), affine, name)


def shifted(vol: Volume, voxels=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0), shape=None,
            name="test.nii.gz", values=None) -> Volume:
    """A grid whose origin moves by ``voxels`` (in reference voxels) and spacing scales."""
    affine = vol.affine.copy()
    affine[:3, 3] = vol.affine[:3, :3] @ voxels + vol.affine[:3, 3]
    affine[:3, :3] = vol.affine[:3, :3] * scale
    shape = shape or vol.shape
    array = np.zeros(shape, np.float32) if values is None else values(affine, shape)
    return Volume(array, affine, name)


def linear_field(affine: np.ndarray, shape) -> np.ndarray:
    """f(x, y, z) = 0.5 x - 0.25 y + 0.75 z + 100 at every voxel centre (RAS mm)."""
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (world @ [0.5, -0.25, 0.75] + 100).astype(np.float32)


# --------------------------------------------------------------------------- same grid


@pytest.mark.parametrize("name", list(AFFINES))
def test_same_grid_is_returned_unchanged(name):
    ref = volume(AFFINES[name])
    test, mask = volume(AFFINES[name], "test", 1), volume(AFFINES[name], "mask", 2)
    out_test, out_mask, alignment = align_to_reference(ref, test, mask)
    assert out_test is test and out_mask is mask
    assert alignment == Alignment("", False) == Alignment()


@pytest.mark.parametrize(
    ("voxels", "scale"),
    [((4e-4, -4e-4, 4e-4), (1, 1, 1)), ((0, 0, 0), (1 + 5e-5, 1 - 5e-5, 1))],
    ids=["origin", "spacing"],
)
def test_differences_within_tolerance_are_accepted(voxels, scale):
    ref = volume(AFFINES["oblique"])
    test = shifted(ref, voxels, scale)
    out, _, alignment = align_to_reference(ref, test)
    assert out is test and alignment == Alignment()


# --------------------------------------------------------------------------- reorientation


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize(
    ("perm", "flips"),
    [((0, 1, 2), (0,)), ((0, 1, 2), (2,)), ((0, 1, 2), (0, 1, 2)), ((1, 0, 2), ()),
     ((2, 0, 1), (1,)), ((2, 1, 0), (0, 2))],
)
@pytest.mark.parametrize("resample", [False, True])
def test_permuted_or_flipped_copy_is_reoriented_exactly(name, perm, flips, resample):
    ref = volume(AFFINES[name])
    test = moved_copy(ref, perm, flips)
    out, _, alignment = align_to_reference(ref, test, resample=resample)
    np.testing.assert_array_equal(out.array, ref.array)
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-9)
    assert alignment == Alignment(f"test {test.orientation}->{ref.orientation}", False)
    assert test.orientation != ref.orientation


def test_mask_is_reoriented_too():
    ref = volume(AFFINES["oblique"])
    mask = volume(AFFINES["oblique"], "mask.nii.gz", 3)
    mask = Volume((mask.array > 0.5).astype(np.float32), mask.affine, mask.source)
    test, moved_mask = moved_copy(ref, (1, 0, 2), (2,)), moved_copy(mask, (0, 2, 1), (0,), "mask")
    out_test, out_mask, alignment = align_to_reference(ref, test, moved_mask)
    np.testing.assert_array_equal(out_test.array, ref.array)
    np.testing.assert_array_equal(out_mask.array, mask.array)
    assert alignment.reoriented == (f"test {test.orientation}->{ref.orientation}; "
                                    f"mask {moved_mask.orientation}->{ref.orientation}")


# --------------------------------------------------------------------------- mismatches


MISMATCHES = {
    "shape": (dict(shape=(10, 9, 7)), r"shape \(10, 9, 7\) vs \(10, 9, 8\)"),
    "spacing": (dict(scale=(1.01, 1, 1)),
                r"spacing \(0\.808, 0\.9, 1\.5\) vs \(0\.8, 0\.9, 1\.5\) mm "
                r"\(relative tolerance 0\.0001\)"),
    "origin": (dict(voxels=(0.5, 0, 0)),
               r"origin \(-19\.6, 15\.5, 30\.25\) vs \(-20, 15\.5, 30\.25\) mm RAS "
               r"\(tolerance 0\.0008 mm\)"),
}


@pytest.mark.parametrize(("change", "pattern"), list(MISMATCHES.values()), ids=list(MISMATCHES))
def test_grid_mismatch_raises_with_values(change, pattern):
    ref = volume(AFFINES["ras"])
    test = shifted(ref, **change)
    with pytest.raises(GeometryError, match=pattern) as info:
        align_to_reference(ref, test)
    message = str(info.value)
    assert message.startswith("test 'test.nii.gz' is not on the voxel grid of reference "
                              "'ref.nii.gz'")
    assert "use --resample" in message


def test_direction_mismatch_raises_with_values():
    ref = volume(AFFINES["ras"])
    test = volume(make_affine(rotation((0, 0, 1))), "test.nii.gz")  # 1 degree about z
    with pytest.raises(GeometryError, match=r"direction RAS \(\(0\.999848, -0\.017452, 0\), .*"
                                            r"vs RAS \(\(1, 0, 0\), .*largest difference 0\.0175"):
        align_to_reference(ref, test)


def test_reoriented_but_still_different_reports_after_reorienting():
    ref = volume(AFFINES["oblique"])
    off_by_two = shifted(ref, voxels=(0, 0, 2), values=lambda affine, shape: ref.array)
    test = moved_copy(off_by_two, (1, 0, 2), (0,))
    with pytest.raises(GeometryError, match=re.escape(f"(after reorienting test {test.orientation}"
                                                      f"->{ref.orientation}): origin")):
        align_to_reference(ref, test)


def test_mask_mismatch_names_the_mask():
    ref = volume(AFFINES["ras"])
    mask = shifted(ref, voxels=(0, 1, 0), name="mask.nii.gz")
    with pytest.raises(GeometryError, match=r"^mask 'mask\.nii\.gz' .*nearest neighbour"):
        align_to_reference(ref, ref, mask)


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("name", ["ras", "oblique"])
@pytest.mark.parametrize(
    ("voxels", "scale", "shape"),
    [((0.5, 0, 0), (1, 1, 1), SHAPE), ((0.5, 0.5, 0.5), (2, 2, 2), (6, 5, 5))],
    ids=["half-voxel-shift", "double-spacing"],
)
def test_resample_linear_reproduces_a_linear_field(name, voxels, scale, shape):
    ref = Volume(linear_field(AFFINES[name], SHAPE), AFFINES[name], "ref")
    test = shifted(ref, voxels, scale, shape, values=linear_field)
    with pytest.raises(GeometryError):
        align_to_reference(ref, test)
    out, _, alignment = align_to_reference(ref, test, resample=True)
    assert (alignment.reoriented, alignment.resampled) == ("", True)
    assert out.shape == ref.shape and out.array.dtype == np.float32
    np.testing.assert_array_equal(out.affine, ref.affine)
    inside = (slice(1, -1),) * 3  # reference voxels whose neighbours all lie inside the test grid
    np.testing.assert_allclose(out.array[inside], ref.array[inside], atol=1e-3)
    assert out.array.min() >= test.array.min() - 1e-3  # outside: nearest edge value, not 0


def test_resample_mask_nearest_stays_binary():
    ref = volume(AFFINES["oblique"])
    coarse = np.random.default_rng(4).random((5, 5, 4)) > 0.5
    # Coarse voxel m is centred between fine voxels 2m and 2m + 1, so nearest neighbour
    # gives each coarse voxel to exactly those two fine voxels along every axis.
    mask = shifted(ref, (0.5, 0.5, 0.5), (2, 2, 2), coarse.shape, "mask",
                   lambda a, s: coarse.astype(np.float32))
    out_test, out_mask, alignment = align_to_reference(ref, ref, mask, resample=True)
    assert out_test is ref and alignment == Alignment("", True)
    expected = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[:10, :9, :8]
    np.testing.assert_array_equal(out_mask.array, expected)
    assert set(np.unique(out_mask.array)) <= {0.0, 1.0}
    assert any("nearest neighbour" in n for n in out_mask.notes)
