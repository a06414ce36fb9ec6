"""How much memory a run may use: the per-volume limit and the read-ahead budget.

A volume's memory is estimated from its header before it is read (voxels x 4 bytes: volqa
holds every volume as float32; :func:`volqa.io.readers.volume_shape`). A volume over the
limit fails its row with a message instead of taking the process down (a 4 MB ``.nii.gz``
can declare 4 GiB of zeros). The limit is ``--max-volume-memory``; by default an eighth of
:func:`usable_memory`, because a row holds its reference, test and mask, and normalised
copies of reference and test, and reading briefly needs more. Rows read ahead by
background threads hold at most 4 x the limit together (the row being scored included;
it alone may exceed the budget).
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path

from ..execution import Execution

__all__ = ["usable_memory", "volume_limit", "read_ahead_budget", "header_bytes",
           "VOLUME_FRACTION", "READ_AHEAD_VOLUMES"]

#: The default per-volume limit is this fraction of the usable memory.
VOLUME_FRACTION = 1 / 8
#: Rows read ahead hold at most this many times the per-volume limit together.
READ_AHEAD_VOLUMES = 4

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max",  # cgroup v2 (containers, Slurm, systemd)
                  "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v1


def usable_memory() -> int:
    """Bytes this process may use: the smallest of physical memory, the cgroup memory limit
    (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``) and the address-space limit
    (``ulimit -v``), whichever are set."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft not in (resource.RLIM_INFINITY, -1):
        limits.append(soft)
    return min(limits)


def volume_limit(execution: Execution) -> int:
    """The per-volume limit in bytes: ``max_volume_memory``, else the default."""
    if execution.max_volume_memory is not None:
        return execution.max_volume_memory
    return int(usable_memory() * VOLUME_FRACTION)


def read_ahead_budget(execution: Execution) -> int:
    """Bytes that rows in flight (read ahead, and the row being scored) may hold together."""
    return READ_AHEAD_VOLUMES * volume_limit(execution)


def header_bytes(path: str | os.PathLike[str]) -> int | None:
    """The float32 size of the volume at ``path``, from its header; None if it cannot be read
    (the row reads the file and reports why)."""
    from ..io.readers import volume_shape

    try:
        return 4 * math.prod(volume_shape(path))
    except Exception:  # noqa: BLE001 - an estimate never fails the batch
        return None
