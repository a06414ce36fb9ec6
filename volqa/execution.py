"""How a run is carried out: the frozen :class:`Execution` (never changes a number).

Device, memory budget and read-ahead threads decide how fast a run is and how much memory it
takes, never its values, so they are kept apart from :class:`volqa.settings.Settings`: they
are not hashed into resume keys, and may change between a run and its ``--resume``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import SettingsError

__all__ = ["DEVICES", "Execution", "parse_memory"]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

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
        Background threads that read and prepare the next rows (0: none).
    max_volume_memory : int or None
        Largest float32 array (voxels x 4 bytes) of one volume; a volume whose header declares
        more fails its row before it is read. Rows read ahead hold at most 4 x this together.
        None: an eighth of the memory this process may use (physical memory, cgroup and
        address-space limits; :func:`volqa.pipeline.memory.usable_memory`).
    """

    device: str = "auto"
    max_memory: int | None = None
    workers: int = 2
    max_volume_memory: int | None = None
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

    @classmethod
    def from_options(cls, base: Execution | None = None, *, device: str | None = None,
                     max_memory: int | str | None = None, workers: int | None = None,
                     max_volume_memory: int | str | None = None) -> Execution:
        """``base`` with every option that is not None replacing its value."""
        given = dict(device=device, max_memory=max_memory, workers=workers,
                     max_volume_memory=max_volume_memory)
        return replace(base or cls(), **{k: v for k, v in given.items() if v is not None})

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
