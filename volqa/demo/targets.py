"""Targets of the fit demo: a 2-D image, or a volume in RAS voxel order.

The default target is the bundled example ground truth (a 64 x 64 x 48 head phantom, RAS+,
spacing 1 x 1 x 1.5 mm), shipped inside the package so an installed volqa has it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError, SettingsError
from .frames import axial

__all__ = ["DEFAULT_TARGET", "IMAGE_SUFFIXES", "Target", "load_target", "check_dims"]

#: The bundled example ground truth (package data; the same file as
#: ``data/example/phantom_gt.nii.gz``, written by ``scripts/make_example_data.py``).
DEFAULT_TARGET = Path(__file__).resolve().parent / "data" / "phantom_gt.nii.gz"
#: File suffixes read with Pillow as 2-D images (converted to 8-bit grayscale).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Target:
    """A target read by :func:`load_target`.

    ``array`` is float32, (H, W) for 2-D or (i, j, k) in RAS voxel order for 3-D; ``spacing``
    gives one value per axis (mm; 1 for image files); ``description`` says where it came from.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    description: str


def check_dims(dims: int) -> None:
    """2 or 3, else a SettingsError."""
    if dims not in (2, 3):
        raise SettingsError(f"dims must be 2 or 3, got {dims!r}")


def load_target(path: str | os.PathLike[str] | None = None, *, dims: int) -> Target:
    """Read a fit target: a 2-D image, or a volume (its middle axial slice when ``dims=2``).

    Parameters
    ----------
    path : path, optional
        PNG/JPEG/... (:data:`IMAGE_SUFFIXES`, read with Pillow and converted to grayscale) or
        any volume :func:`volqa.read_volume` reads (NIfTI, MHA/NRRD, DICOM folder). Default:
        :data:`DEFAULT_TARGET`.
    dims : {2, 3}

    Returns
    -------
    Target
        Volumes are reoriented to the closest RAS voxel order (``nibabel.orientations``), so
        the 2-D slice is the middle axial slice shown with anterior up and the patient's left
        on the left (neurological view). Intensities are unchanged: :func:`fit` scales them.

    Raises
    ------
    SettingsError
        ``dims`` not 2 or 3.
    InputError
        Unreadable file, a 2-D image with ``dims=3``, the bundled example missing.
    """
    check_dims(dims)
    if path is None:
        if not DEFAULT_TARGET.is_file():
            raise InputError(f"the bundled example target {DEFAULT_TARGET} is missing (a "
                             "damaged installation?); pass a target path (--target)")
        path = DEFAULT_TARGET
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        if dims == 3:
            raise InputError(f"{p}: a 2-D image cannot be a 3-D target; use --dims 2 or give a "
                             "volume (NIfTI, MHA/NRRD, DICOM folder)")
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("L"), dtype=np.float32)
        except (OSError, ValueError) as e:  # missing, unreadable, not an image
            raise InputError(f"{p}: cannot read it as an image ({e})") from None
        return Target(arr, (1.0, 1.0), f"{p} (image {arr.shape[0]}x{arr.shape[1]})")

    from nibabel.orientations import apply_orientation, io_orientation

    from ..io.readers import read_volume

    vol = read_volume(p)
    ornt = io_orientation(vol.affine)
    arr = np.ascontiguousarray(apply_orientation(vol.array, ornt), dtype=np.float32)
    spacing = tuple(float(vol.spacing[int(a)]) for a in ornt[:, 0])
    if dims == 3:
        return Target(arr, spacing, f"{p} (volume {'x'.join(map(str, arr.shape))}, RAS)")
    k = arr.shape[2] // 2
    return Target(axial(arr), (spacing[1], spacing[0]),
                  f"{p} (axial slice {k} of {'x'.join(map(str, arr.shape))})")
