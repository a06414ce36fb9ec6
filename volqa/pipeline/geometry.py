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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from ..errors import GeometryError
from ..io.itk import volume_to_sitk
from ..io.volume import Volume, lps_geometry

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
    """

    reoriented: str = ""
    resampled: bool = False


def align_to_reference(
    reference: Volume, test: Volume, mask: Volume | None = None, *, resample: bool = False
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

    Returns
    -------
    test : Volume
    mask : Volume or None
    alignment : Alignment

    Raises
    ------
    GeometryError
        When a grid differs (see the module docstring for the tolerances) and reorienting
        does not fix it, and ``resample`` is False. The message names what differs with
        the values.

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
    test, reoriented_test, resampled_test = _align_one(reference, test, "test", resample)
    reoriented_mask, resampled_mask = "", False
    if mask is not None:
        mask, reoriented_mask, resampled_mask = _align_one(reference, mask, "mask", resample)
    reoriented = "; ".join(r for r in (reoriented_test, reoriented_mask) if r)
    return test, mask, Alignment(reoriented, resampled_test or resampled_mask)


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


def _origin_tolerance(reference: Volume) -> float:
    return max(ORIGIN_TOL_VOXELS * min(reference.spacing), ORIGIN_MIN_ATOL_MM)


def _reorient_like(reference: Volume, volume: Volume, role: str) -> tuple[Volume, str]:
    """Permute/flip ``volume``'s axes to ``reference``'s orientation; ("" if already so)."""
    source, target = io_orientation(volume.affine), io_orientation(reference.affine)
    if np.array_equal(source, target):
        return volume, ""
    transform = ornt_transform(source, target)
    array = np.ascontiguousarray(apply_orientation(volume.array, transform))
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
    return Volume(np.ascontiguousarray(array), reference.affine.copy(), volume.source,
                  (*volume.notes, note))


def _fmt(values: np.ndarray) -> str:
    """A vector as ``(a, b, c)``, a matrix as nested tuples, 6 significant digits."""
    values = np.asarray(values, dtype=float)
    if values.ndim > 1:
        return "(" + ", ".join(_fmt(row) for row in values) + ")"
    return "(" + ", ".join(f"{round(v, 6) + 0.0:.6g}" for v in values) + ")"
