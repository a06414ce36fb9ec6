"""How a run is carried out: the frozen :class:`Execution` (never changes a number).

Device, memory budget, the executor (threads, worker processes or a Dask cluster), its
workers and their threads, and the shard of the manifest a run covers decide how fast a run is
and how much memory it takes, never its values, so they are kept apart from
:class:`volqa.settings.Settings`: they are not hashed into resume keys, and (except the shard,
which an output folder keeps) may change between a run and its ``--resume``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import SettingsError

__all__ = ["DEVICES", "EXECUTORS", "Execution", "parse_memory", "parse_shard", "usable_cores"]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
EXECUTORS: tuple[str, ...] = ("threads", "processes", "dask")

_MEMORY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_memory(value: int | str | None, name: str = "max_memory") -> int | None:
    """Bytes from an int or a size such as ``"512M"``, ``"2GiB"``, ``"1.5g"`` (powers of 1024).

    Raises
    ------
    SettingsError
        Not a positive size.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _MEMORY.match(str(value))
        if not m:
            raise SettingsError(f"{name} must be a byte count or a size like 512M or 2G; "
                                f"got {value!r}.")
        n = int(float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower()))
    if n <= 0:
        raise SettingsError(f"{name} must be > 0 bytes; got {value!r}.")
    return n


def parse_shard(value: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``(I, N)`` from ``"I/N"`` or a pair: the I-th of N shards, ``0 <= I < N``.

    Raises
    ------
    SettingsError
        Not two integers with ``0 <= I < N``.
    """
    if value is None:
        return None
    parts: Any = value.split("/") if isinstance(value, str) else value
    try:
        if len(parts) != 2 or any(isinstance(p, (bool, float)) for p in parts):
            raise ValueError
        i, n = int(str(parts[0]).strip()), int(str(parts[1]).strip())
    except (TypeError, ValueError):
        raise SettingsError(f"shard must be I/N, two integers such as 0/4 (the first of 4 "
                            f"shards); got {value!r}.") from None
    if not 0 <= i < n:
        raise SettingsError(f"shard I/N needs 0 <= I < N (shards are numbered 0 to N-1, so "
                            f"--shard $SLURM_ARRAY_TASK_ID/N with --array=0-(N-1)); got {i}/{n}.")
    return i, n


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _positive(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise SettingsError(f"{name} must be an integer >= 1; got {value!r}.")


@dataclass(frozen=True)
class Execution:
    """How a run is carried out; never changes a number.

    Attributes
    ----------
    device : {"auto", "cpu", "cuda"}
        Where SSIM runs (auto: CUDA when available).
    max_memory : int or None
        Byte budget of one SSIM tile (None: the engine's default for the device).
    workers : int
        Background threads that read and prepare the next rows (0: none); threads executor.
    max_volume_memory : int or None
        Largest float32 array (voxels x 4 bytes) of one volume; a volume whose header declares
        more fails its row before it is read. Rows read ahead hold at most 4 x this together.
        None: an eighth of the memory this process may use (physical memory, cgroup and
        address-space limits; :func:`volqa.pipeline.memory.usable_memory`).
    executor : {"threads", "processes", "dask"}
        Where rows run: read-ahead threads of this process, ``jobs`` worker processes of this
        machine (:mod:`volqa.pipeline.processes`), or the workers of a Dask cluster
        (:mod:`volqa.pipeline.cluster`).
    jobs : int or None
        Worker processes of the processes executor (None: one per GPU with CUDA, else one
        per usable core).
    threads : int or None
        Torch threads of each worker (None: usable cores divided among the workers, so that
        threads x workers never exceeds the cores; see :meth:`torch_threads`).
    shard : (int, int) or None
        ``(I, N)``: score only the manifest rows whose 0-based index is I modulo N.
    scheduler : str or None
        Dask scheduler address (``tcp://host:8786``) or ``local:N`` (a local cluster of N
        worker processes); only with ``executor="dask"``, which requires it.
    """

    device: str = "auto"
    max_memory: int | None = None
    workers: int = 2
    max_volume_memory: int | None = None
    executor: str = "threads"
    jobs: int | None = None
    threads: int | None = None
    shard: tuple[int, int] | None = None
    scheduler: str | None = None
    _resolved: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {', '.join(DEVICES)}; got "
                                f"{self.device!r}.")
        object.__setattr__(self, "max_memory", parse_memory(self.max_memory))
        object.__setattr__(self, "max_volume_memory",
                           parse_memory(self.max_volume_memory, "max_volume_memory"))
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or \
                self.workers < 0:
            raise SettingsError(f"workers must be an integer >= 0; got {self.workers!r}.")
        if self.executor not in EXECUTORS:
            raise SettingsError(f"executor must be one of {', '.join(EXECUTORS)}; got "
                                f"{self.executor!r}.")
        _positive(self.jobs, "jobs")
        _positive(self.threads, "threads")
        object.__setattr__(self, "shard", parse_shard(self.shard))
        if self.jobs is not None and self.executor != "processes":
            raise SettingsError(
                f"jobs={self.jobs} sets the worker processes of --executor processes, but the "
                f"executor is {self.executor!r}; add --executor processes (for Dask, the "
                "cluster decides: --scheduler local:N)."
            )
        if self.executor == "dask" and not self.scheduler:
            raise SettingsError("--executor dask needs --scheduler ADDRESS (a running "
                                "`dask scheduler`, e.g. tcp://10.0.0.5:8786) or local:N (N "
                                "worker processes on this machine).")
        if self.scheduler is not None and self.executor != "dask":
            raise SettingsError(f"--scheduler {self.scheduler} applies only to --executor "
                                f"dask (the executor is {self.executor!r}).")
        if self.scheduler is not None:
            self.local_workers()  # checks local:N

    @classmethod
    def from_options(cls, base: Execution | None = None, *, device: str | None = None,
                     max_memory: int | str | None = None, workers: int | None = None,
                     max_volume_memory: int | str | None = None,
                     executor: str | None = None, jobs: int | None = None,
                     threads: int | None = None, shard: str | tuple[int, int] | None = None,
                     scheduler: str | None = None) -> Execution:
        """``base`` with every option that is not None replacing its value."""
        given = dict(device=device, max_memory=max_memory, workers=workers,
                     max_volume_memory=max_volume_memory, executor=executor, jobs=jobs,
                     threads=threads, shard=shard, scheduler=scheduler)
        return replace(base or cls(), **{k: v for k, v in given.items() if v is not None})

    def local_workers(self) -> int | None:
        """N of ``scheduler="local:N"``; None for a scheduler address.

        Raises
        ------
        SettingsError
            ``local:`` without a positive integer.
        """
        if self.scheduler is None or not self.scheduler.startswith("local"):
            return None
        _, _, n = self.scheduler.partition(":")
        if not n.strip().isdigit() or int(n) < 1:
            raise SettingsError(f"--scheduler local:N needs N >= 1 worker processes, e.g. "
                                f"local:4; got {self.scheduler!r}.")
        return int(n)

    def torch_threads(self, workers: int, cores: int | None = None) -> int:
        """Torch threads for each of ``workers`` concurrent computations: ``threads`` when set,
        else the usable cores divided among them (at least 1), so that they never
        oversubscribe the cores."""
        if self.threads is not None:
            return self.threads
        return max(1, (cores or usable_cores()) // max(1, workers))

    def resolved_device(self) -> str:
        """"cpu" or "cuda" (auto resolved; "cuda" without a CUDA device is an error)."""
        if self._resolved is None:
            import torch

            if self.device == "auto":
                dev = "cuda" if torch.cuda.is_available() else "cpu"
            elif self.device == "cuda" and not torch.cuda.is_available():
                raise SettingsError(
                    "device='cuda' was asked for but torch sees no CUDA device (torch "
                    f"{torch.__version__}); use --device cpu or auto, or install a CUDA build "
                    "of torch."
                )
            else:
                dev = self.device
            object.__setattr__(self, "_resolved", dev)
        return self._resolved  # type: ignore[return-value]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}
