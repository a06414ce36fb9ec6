"""Where the engine runs, and what happens when it runs out of memory.

The policy: an out-of-memory error retries the computation on the same device with half
the tile budget (half of what the failed attempt used: the engine's default when none was
given); on CUDA, a second one moves it to the CPU. The row records where it finally ran and a
note for each retry. Out of memory means torch's CUDA error, its CPU allocator's failure
(``[enforce fail at alloc_cpu.cpp] ... DefaultCPUAllocator: can't allocate memory``) and
Python's ``MemoryError`` (numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["is_oom", "run_with_oom_fallback"]

T = TypeVar("T")
_HALF = object()  # marker: "half of the budget used by the failed attempt"


_OOM_TEXTS = ("out of memory", "can't allocate memory", "not enough memory",
              "defaultcpuallocator")


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors: torch's (CUDA, CPU allocator) and ``MemoryError``."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom | MemoryError) or (
        isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXTS)
    )


def _half_budget(device: str, max_memory: int | None) -> int:
    if max_memory is not None:
        return max(1, max_memory // 2)
    from ..engine.tiling import default_max_memory

    return max(1, default_max_memory(device) // 2)


def _free_cuda() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort only
        pass


def run_with_oom_fallback(
    compute: Callable[[str, int | None], T], device: str, max_memory: int | None
) -> tuple[T, str, list[str]]:
    """Call ``compute(device, max_memory)`` under the out-of-memory policy.

    Returns
    -------
    (result, device, notes)
        The result, the device it was computed on, and one note per retry.
    """
    attempts: list[tuple[str, object]] = [(device, max_memory), (device, _HALF)]
    if device != "cpu":
        attempts.append(("cpu", max_memory))
    notes: list[str] = []
    for i, (dev, budget) in enumerate(attempts):
        if budget is _HALF:
            budget = _half_budget(dev, max_memory)
        try:
            return compute(dev, budget), dev, notes  # type: ignore[arg-type]
        except Exception as exc:
            if not (is_oom(exc) and i + 1 < len(attempts)):
                raise
            _free_cuda()
            nxt = attempts[i + 1]
            used = f"{budget / 2**20:.0f} MiB slabs" if budget else "the default slab budget"
            notes.append(f"{dev} out of memory with {used}; retried on {nxt[0]}"
                         + (" with half the slab budget" if nxt[1] is _HALF else ""))
    raise AssertionError("unreachable")  # pragma: no cover
