"""Pure I/O: volumes in (NIfTI, ITK formats, DICOM), manifests in, tables and journals out.

Nothing here knows about SSIM or any metric; columns and their types come from
:mod:`volqa.schema`, and every file volqa writes goes through :mod:`volqa.io.atomic`.
"""

from __future__ import annotations

from .atomic import atomic_write, atomic_write_many
from .itk import volume_from_sitk, volume_to_sitk
from .nifti import write_nifti
from .paths import split_series
from .readers import read_volume
from .volume import LPS_TO_RAS, Volume

__all__ = [
    "LPS_TO_RAS",
    "Volume",
    "read_volume",
    "volume_from_sitk",
    "volume_to_sitk",
    "write_nifti",
    "split_series",
    "atomic_write",
    "atomic_write_many",
]
