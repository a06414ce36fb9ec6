"""Masks as volqa reads them: a voxel is inside when its value is non-zero.

The values must be whole numbers (a binary mask, or a label map whose labels are all used
together); fractional values (a probability map, or a mask resampled with linear
interpolation) are an error, because any threshold would be a guess.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["binarize_mask", "whole_numbers"]


def whole_numbers(array: np.ndarray, what: str, way_out: str) -> np.ndarray:
    """``array`` as an ndarray after checking that it holds only finite whole numbers (masks
    and label maps); ``what`` names it in the message, ``way_out`` ends it.

    Raises
    ------
    InputError
        NaN/Inf or fractional values.
    """
    a = np.asarray(array)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{what}: contains NaN or Inf values.")
        frac = a != np.round(a)
        if frac.any():
            raise InputError(f"{what}: {int(frac.sum())} voxel(s) have fractional values (e.g. "
                             f"{float(a[frac].flat[0]):g}); {way_out}")
    return a


def binarize_mask(array: np.ndarray, *, source: str = "mask") -> tuple[np.ndarray, str]:
    """Turn a mask volume into a boolean array (inside = non-zero), checking the values.

    Parameters
    ----------
    array : ndarray
        The mask volume as read (any numeric dtype).
    source : str
        The file name, used in messages.

    Returns
    -------
    (ndarray of bool, str)
        The mask and a note ("" for a 0/1 mask; for a label map, the labels merged).

    Raises
    ------
    InputError
        NaN or fractional values (probability map: threshold it first), or no voxel inside.
    """
    a = whole_numbers(array, f"mask {source!r}", "volqa needs a binary or label mask (inside "
                      "= non-zero). Threshold it first (e.g. value >= 0.5) and save it as "
                      "integers.")
    inside = a != 0
    if not inside.any():
        raise InputError(f"mask {source!r}: no voxel is non-zero (empty mask); nothing to score.")
    note = ""
    labels = np.unique(a[inside])
    if labels.size > 1 or float(labels[0]) != 1.0:
        shown = ", ".join(f"{float(v):g}" for v in labels[:10])
        more = f" and {labels.size - 10} more" if labels.size > 10 else ""
        note = f"mask has values {shown}{more}: every non-zero voxel is inside"
    return inside, note


