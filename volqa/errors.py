"""volqa's exception hierarchy.

The batch runner records a :class:`VolqaError` raised while scoring one subject in that row
and goes on; anything else is a bug and is recorded with its type name.

:class:`SettingsError` and :class:`InputError` (so also :class:`GeometryError`) are
:class:`ValueError` subclasses, so ``except ValueError`` catches a bad argument or a bad image
as it does with scikit-image, torchmetrics or numpy.
"""

from __future__ import annotations


class VolqaError(Exception):
    """Base class of every error volqa raises on purpose."""


class SettingsError(VolqaError, ValueError):
    """An option or argument is invalid (unknown preset, data_range <= 0, window too large, ...)."""


class InputError(VolqaError, ValueError):
    """An input volume or mask cannot be read or used (missing, corrupt, NaN, wrong shape, ...)."""


class GeometryError(InputError):
    """Reference, test and mask do not share a voxel grid and cannot be aligned as asked."""


class ManifestError(VolqaError):
    """The manifest itself is invalid; raised before any subject is scored."""


class OutputError(VolqaError):
    """The output folder cannot be written (disk full, read-only, file too large, ...).

    Raised by a batch after it stopped; what was recorded in the journal stays valid, so the
    batch can be resumed once the cause is fixed.
    """
