"""Bring test and mask volumes onto the reference volume's voxel grid.

Two grids are the same when their shapes are equal and, within the tolerances below, their
spacing, direction and origin agree:

- spacing: ``|s_other - s_ref| <= SPACING_RTOL * s_ref`` per axis (relative 1e-4);
- direction: every direction cosine within ``DIRECTION_ATOL`` (absolute 1e-4, about 0.006
  degrees);
- origin: every RAS coordinate within ``ORIGIN_TOL_VOXELS * min(reference spacing)``, but at
  least ``ORIGIN_MIN_ATOL_MM`` (a thousandth of a voxel: 1e-3 mm for 1 mm voxels; the floor
  of 1e-4 mm covers float32 NIfTI headers far from the scanner origin).

A pure permutation or flip of the voxel axes is undone exactly (voxel values are moved, not
interpolated) with ``nibabel.orientations``; anything else is a :class:`GeometryError`
unless resampling is asked for.

Two guards keep resampling from producing a confident wrong number:

- a *lost header*: when the shapes match but one affine is a default that files get when
  their geometry was dropped (the identity; SimpleITK's default, spacing 1 at the origin;
  nibabel's affine for a NIfTI without sform and qform), the row fails with a message that
  says so and suggests copying the reference's header, even with ``resample=True``:
  resampling by a lost affine puts the volume in the wrong place;
- *coverage*: when resampling, the fraction of the reference's voxel centres that lie inside
  the test's extent (its voxel centres +- half a voxel) is recorded; below ``min_coverage``
  the row fails (outside its extent the test would be extrapolated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from nibabel.volumeutils import shape_zoom_affine

from ..errors import GeometryError
from ..io.itk import volume_to_sitk
from ..io.volume import LPS_TO_RAS, Volume, lps_geometry

__all__ = ["Alignment", "align_to_reference", "align_volume"]

SPACING_RTOL = 1e-4
DIRECTION_ATOL = 1e-4
ORIGIN_TOL_VOXELS = 1e-3
ORIGIN_MIN_ATOL_MM = 1e-4


@dataclass(frozen=True)
class Alignment:
    """What :func:`align_to_reference` did.

    Attributes
    ----------
    reoriented : str
        ``""`` when no axes were permuted or flipped, else e.g. ``"test LPI->RAS"`` or
        ``"test LPS->RAS; mask LPS->RAS"`` (orientation codes before and after).
    resampled : bool
        True when the test or the mask was interpolated onto the reference grid.
    coverage : float or None
        When the test was resampled: the fraction of the reference grid inside its extent.
    """

    reoriented: str = ""
    resampled: bool = False
    coverage: float | None = None


def align_to_reference(
    reference: Volume, test: Volume, mask: Volume | None = None, *, resample: bool = False,
    min_coverage: float = 0.0,
) -> tuple[Volume, Volume | None, Alignment]:
    """Return ``test`` and ``mask`` on the voxel grid of ``reference``.

    Parameters
    ----------
    reference : Volume
        Defines the grid.
    test, mask : Volume
        Checked, and moved onto the reference grid when needed. ``mask`` is optional.
    resample : bool
        Resample a volume whose grid differs by more than an axis permutation/flip, instead
        of raising.
    min_coverage : float
        With ``resample``: the smallest fraction of the reference's voxel centres that must
        lie inside the test's extent.

    Returns
    -------
    test : Volume
    mask : Volume or None
    alignment : Alignment

    Raises
    ------
    GeometryError
        When a grid differs (see the module docstring for the tolerances) and reorienting
        does not fix it, and ``resample`` is False; when a header looks lost; when a
        resampled test covers less than ``min_coverage`` of the reference grid. The message
        names what differs with the values.

    Notes
    -----
    Each volume is handled on its own, in this order: (1) the same grid: returned
    unchanged; (2) a different axis order or sign (``io_orientation`` differs): the array is
    permuted/flipped to the reference's orientation (``ornt_transform``,
    ``apply_orientation``, affine via ``inv_ornt_aff``) and kept if the full affine then
    matches; (3) otherwise, with ``resample=True``, SimpleITK ``Resample`` onto the
    reference grid: linear interpolation for the test, nearest neighbour for the mask (so a
    binary mask stays binary). Reference points outside the test's extent take the nearest
    edge value of the test; outside the mask's extent the mask is 0.
    """
    given = test
    test, reoriented_test, resampled_test = _align_one(reference, test, "test", resample)
    coverage = None
    if resampled_test:
        coverage = covered_fraction(reference, given)
        if coverage < min_coverage:
            raise GeometryError(
                f"test {given.source!r} covers only {coverage:.1%} of the reference grid of "
                f"{reference.source!r} after resampling (at least {min_coverage:.0%} is "
                "required; outside its extent the test would be extrapolated): do the two "
                "volumes show the same region? (--min-coverage sets the threshold)")
    reoriented_mask, resampled_mask = "", False
    if mask is not None:
        mask, reoriented_mask, resampled_mask = _align_one(reference, mask, "mask", resample)
    reoriented = "; ".join(r for r in (reoriented_test, reoriented_mask) if r)
    return test, mask, Alignment(reoriented, resampled_test or resampled_mask, coverage)


#: Roles resampled with nearest neighbour (their values are labels, not intensities).
NEAREST_ROLES = ("mask", "labels")


def align_volume(reference: Volume, volume: Volume, role: str, *,
                 resample: bool = False) -> tuple[Volume, str, bool]:
    """One more volume (a label map) onto the reference grid, by the rules of
    :func:`align_to_reference`; returns (volume, reorientation text, resampled?)."""
    return _align_one(reference, volume, role, resample)


def _align_one(reference: Volume, volume: Volume, role: str,
               resample: bool) -> tuple[Volume, str, bool]:
    """(volume on the reference grid, reorientation text, resampled?) for one volume."""
    if not _differences(reference, volume):
        return volume, "", False
    moved, how = _reorient_like(reference, volume, role)
    if how and not _differences(reference, moved):
        return moved, how, False
    if volume.shape == reference.shape:
        for lost, name, other, other_name in ((volume, role, reference, "the reference"),
                                              (reference, "reference", volume, f"the {role}")):
            if _looks_lost(lost) and not _looks_lost(other):
                raise GeometryError(
                    f"{name} {lost.source!r} has a default affine {_fmt(lost.affine[:3])}, what "
                    f"a file gets when its geometry was not saved, while its shape {lost.shape} "
                    f"matches {other_name} {other.source!r}: its header looks lost. If both "
                    f"are on one grid, copy the header of {other.source!r} into it (nibabel: "
                    "nib.Nifti1Image(data, img.affine, img.header)); --resample is not "
                    "applied, since resampling by a lost affine would misplace the volume")
    if resample:
        return _resample_onto(reference, volume, role), "", True
    differences = "; ".join(_differences(reference, moved))
    after = f" (after reorienting {how})" if how else ""
    raise GeometryError(
        f"{role} {volume.source!r} is not on the voxel grid of reference "
        f"{reference.source!r}{after}: {differences}; use --resample (resample=True) to "
        f"resample the {role} onto the reference grid "
        f"({'nearest neighbour' if role in NEAREST_ROLES else 'linear'} interpolation)"
    )


def _differences(reference: Volume, other: Volume) -> list[str]:
    """Descriptions of how ``other``'s grid differs from ``reference``'s; empty if the same."""
    found = []
    if other.shape != reference.shape:
        found.append(f"shape {other.shape} vs {reference.shape}")
    spacing, ref_spacing = np.asarray(other.spacing), np.asarray(reference.spacing)
    if np.any(np.abs(spacing - ref_spacing) > SPACING_RTOL * ref_spacing):
        found.append(f"spacing {_fmt(spacing)} vs {_fmt(ref_spacing)} mm "
                     f"(relative tolerance {SPACING_RTOL:g})")
    cosines = np.abs(other.direction - reference.direction).max()
    if cosines > DIRECTION_ATOL:
        found.append(f"direction {other.orientation} {_fmt(other.direction)} vs "
                     f"{reference.orientation} {_fmt(reference.direction)} (largest difference "
                     f"{cosines:.3g}, tolerance {DIRECTION_ATOL:g})")
    tolerance = _origin_tolerance(reference)
    if np.abs(other.origin - reference.origin).max() > tolerance:
        found.append(f"origin {_fmt(other.origin)} vs {_fmt(reference.origin)} mm RAS "
                     f"(tolerance {tolerance:.3g} mm)")
    return found


def _looks_lost(volume: Volume) -> bool:
    """True for an affine that files get when their geometry was dropped: the identity,
    SimpleITK's default (spacing 1, identity direction, origin 0: LPS_TO_RAS in RAS), or
    nibabel's affine for a NIfTI without sform and qform (centred, x flipped)."""
    defaults = (np.eye(4), LPS_TO_RAS,
                shape_zoom_affine(volume.shape, volume.spacing, x_flip=True))
    return any(np.allclose(volume.affine, d, rtol=0, atol=1e-6) for d in defaults)


def covered_fraction(reference: Volume, volume: Volume) -> float:
    """Fraction of ``reference``'s voxel centres inside ``volume``'s extent (its voxel
    centres +- half a voxel along each of its axes); exact, one vectorised pass."""
    to_vox = np.linalg.inv(volume.affine) @ reference.affine  # reference index -> volume index
    ni, nj, nk = reference.shape
    i, j = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    base = (to_vox[:3, 0, None] * i.ravel() + to_vox[:3, 1, None] * j.ravel()
            + to_vox[:3, 3, None])  # (3, ni*nj): position of (i, j, k=0)
    k_lo = np.zeros(base.shape[1])
    k_hi = np.full(base.shape[1], nk - 1.0)
    for axis, step in enumerate(to_vox[:3, 2]):
        lo, hi = -0.5 - base[axis], volume.shape[axis] - 0.5 - base[axis]
        if abs(step) < 1e-12:  # this axis does not move with k: all or nothing
            outside = (lo > 0) | (hi < 0)
            k_hi[outside] = -1.0
            continue
        a, b = lo / step, hi / step
        a, b = np.minimum(a, b), np.maximum(a, b)  # a negative step swaps the bounds
        k_lo, k_hi = np.maximum(k_lo, a), np.minimum(k_hi, b)
    counts = np.clip(np.floor(k_hi + 1e-9) - np.ceil(k_lo - 1e-9) + 1, 0, None)
    return float(counts.sum() / (ni * nj * nk))


def _origin_tolerance(reference: Volume) -> float:
    return max(ORIGIN_TOL_VOXELS * min(reference.spacing), ORIGIN_MIN_ATOL_MM)


def _reorient_like(reference: Volume, volume: Volume, role: str) -> tuple[Volume, str]:
    """Permute/flip ``volume``'s axes to ``reference``'s orientation; ("" if already so)."""
    source, target = io_orientation(volume.affine), io_orientation(reference.affine)
    if np.array_equal(source, target):
        return volume, ""
    transform = ornt_transform(source, target)
    array = apply_orientation(volume.array, transform)  # Volume copies it into C order
    affine = volume.affine @ inv_ornt_aff(transform, volume.shape)
    moved = Volume(array, affine, volume.source, volume.notes)
    return moved, f"{role} {volume.orientation}->{moved.orientation}"


def _resample_onto(reference: Volume, volume: Volume, role: str) -> Volume:
    """SimpleITK resampling of ``volume`` onto ``reference``'s grid (identity transform)."""
    nearest = role in NEAREST_ROLES
    spacing, direction, origin = lps_geometry(reference.affine)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(list(reference.shape))
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputDirection(direction)
    resampler.SetOutputOrigin(origin)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetUseNearestNeighborExtrapolator(not nearest)
    image = resampler.Execute(volume_to_sitk(volume))
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    note = ("resampled onto the reference grid "
            f"({'nearest neighbour' if nearest else 'linear'} interpolation)")
    return Volume(array, reference.affine.copy(), volume.source,
                  (*volume.notes, note))


def _fmt(values: np.ndarray) -> str:
    """A vector as ``(a, b, c)``, a matrix as nested tuples, 6 significant digits."""
    values = np.asarray(values, dtype=float)
    if values.ndim > 1:
        return "(" + ", ".join(_fmt(row) for row in values) + ")"
    return "(" + ", ".join(f"{round(v, 6) + 0.0:.6g}" for v in values) + ")"
