"""The metric registry's binding to the engine: one prepared pair, the metrics computed on it.

A :class:`PairContext` implements :class:`volqa.schema.MetricContext` for one normalised pair:
it holds the arrays, the mask and L, and caches what several metrics share (the SSIM value
and map, the float64 error sums of each region), so every metric is one small function in the
registry and nothing is computed twice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..engine.voxelwise import ErrorStats, error_stats, masked_mean, slice_stats
from ..errors import InputError
from ..schema import Metric
from ..settings import Settings

__all__ = ["PairContext"]


class PairContext:
    """One normalised pair and the engine calls the registry's metrics need.

    Parameters
    ----------
    reference, test : (I, J, K) float32 ndarray
        The normalised volumes.
    mask : (I, J, K) bool ndarray or None
    data_range : float
        L of SSIM and PSNR.
    settings : Settings
    device : str
        Torch device of the SSIM engine ("cpu", "cuda").
    max_memory : int or None
        Tile budget of the engine (None: its default for the device).
    keep_map : bool
        Keep the SSIM map (float32, engine shape) for :meth:`ssim_map` (``--save-maps``).
    """

    def __init__(self, reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None,
                 data_range: float, settings: Settings, *, device: str = "cpu",
                 max_memory: int | None = None, keep_map: bool = False) -> None:
        self.reference, self.test, self.mask = reference, test, mask
        self.data_range = data_range
        self.settings = settings
        self.device = device
        self.max_memory = max_memory
        self.keep_map = keep_map
        self.notes: list[str] = []
        self._tensors: tuple[Any, Any] | None = None
        self._full: tuple[float, np.ndarray | None] | None = None
        self._cache: dict[tuple[str, int], Any] = {}

    # -- what metrics use ---------------------------------------------------------------------

    def errors(self, region: np.ndarray | None = None) -> ErrorStats:
        """Float64 error sums over the whole volume or a region (cached per region)."""
        return self._cached("errors", region,
                            lambda: error_stats(self.reference, self.test, mask=region))

    def ssim(self, region: np.ndarray | None = None) -> float:
        """SSIM over the map, or the mean of the map over a region's voxels (map computed on
        the real images). Under a slice convention (fastMRI) the region's mean is taken per
        slice by :func:`volqa.ssim_slices`."""
        if region is None:
            return self._ssim_full()[0]
        if self.settings.ssim.slices:  # the mean over slices of each slice's masked mean
            x, y = self._on_device()
            return float(self._engine().ssim(x, y, mask=region, **self._engine_kw()))
        smap = self._ssim_full(need_map=True)[1]
        assert smap is not None
        return masked_mean(smap, region)

    def ssim_2d(self) -> float:
        """Mean 2-D SSIM over the slices along ``settings.ssim_2d``."""
        x, y = self._on_device()
        axis = self.settings.ssim_2d
        return float(self._engine().ssim_slices(x, y, axis=axis, **self._engine_kw()))

    def ms_ssim(self, region: np.ndarray | None = None) -> float:
        """MS-SSIM with the run's SSIM convention and ``ms_ssim_scales`` (masked: each scale's
        mean over the pooled region)."""
        def compute() -> float:
            from ..engine.multiscale import ms_ssim, ms_ssim_weights

            x, y = self._on_device()
            return float(ms_ssim(x, y, mask=region, **self._engine_kw(),
                                 weights=ms_ssim_weights(self.settings.ms_ssim_scales)))
        return self._cached("ms_ssim", region, compute)

    def hfen(self, region: np.ndarray | None = None) -> float:
        """HFEN of the pair (3-D LoG; norms over the region's voxels), float64 on the CPU."""
        def compute() -> float:
            from ..engine.highfreq import hfen

            return float(hfen(self.reference, self.test, mask=region))
        return self._cached("hfen", region, compute)

    def slice_errors(self) -> list[ErrorStats | None]:
        """Error sums of every 2-D slice along ``settings.ssim_2d`` (None: no mask voxel)."""
        return self._cached("slices", None, lambda: slice_stats(
            self.reference, self.test, self.settings.ssim_2d))

    def outside_mask(self) -> np.ndarray:
        """The complement of the row's mask (computed once)."""
        if self.mask is None:
            raise InputError("no mask: the region outside it is undefined")
        return self._cached("outside", self.mask, lambda: ~self.mask)

    def forget(self, region: Any) -> None:
        """Drop what is cached for ``region`` (per-region loops: keep memory flat)."""
        for key in [k for k in self._cache if k[1] == id(region)]:
            del self._cache[key]

    def _cached(self, what: str, region: Any, compute: Any) -> Any:
        """``compute()`` once per (quantity, region object); the region is kept with the value,
        so its id cannot be reused by another array while cached."""
        key = (what, id(region))
        if key not in self._cache:
            self._cache[key] = (region, compute())
        return self._cache[key][1]

    def ssim_map(self) -> np.ndarray:
        """The SSIM map (float32, engine shape: smaller than the volume for a valid border)."""
        smap = self._ssim_full(need_map=True)[1]
        assert smap is not None
        return smap

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- computing a set of metrics -----------------------------------------------------------

    def compute(self, metrics: Iterable[Metric]) -> dict[str, float | None]:
        """Values of ``metrics`` for this pair; masked ones are None when there is no mask."""
        out: dict[str, float | None] = {}
        for m in metrics:
            if m.needs_mask and self.mask is None:
                continue
            try:
                value = m.compute(self)
            except InputError as exc:
                if not m.undefined_ok:
                    raise
                out[m.name] = None
                self.note(f"{m.name} not computed: {exc}")
                continue
            if value is not None and math.isnan(float(value)):
                raise InputError(
                    f"{m.name} came out NaN although the volumes are finite: their intensities "
                    f"(normalised: {float(np.abs(self.reference).max()):.3g} at most in the "
                    f"reference) and L = {self.data_range:.3g} overflow or underflow float32 "
                    "in the SSIM formula; use a --normalize mode (default minmax) or a data "
                    "range of the order of the intensities")
            out[m.name] = None if value is None else float(value)
        return out

    # -- the engine ---------------------------------------------------------------------------

    @staticmethod
    def _engine():
        from .. import engine

        return engine

    def _engine_kw(self) -> dict[str, Any]:
        return {"data_range": self.data_range, "max_memory": self.max_memory,
                "settings": self.settings.ssim}

    def _on_device(self) -> tuple[Any, Any]:
        if self._tensors is None:
            import torch

            with warnings.catch_warnings():
                # a cached reference is read-only (see .cache) and the engine never writes
                # into its inputs: torch's warning about non-writable arrays does not apply
                warnings.filterwarnings("ignore", message="The given NumPy array is not "
                                        "writable", category=UserWarning)
                x = torch.from_numpy(np.ascontiguousarray(self.reference)).to(self.device)
                y = torch.from_numpy(np.ascontiguousarray(self.test)).to(self.device)
            self._tensors = (x, y)
        return self._tensors

    def _ssim_full(self, need_map: bool = False) -> tuple[float, np.ndarray | None]:
        """The row's SSIM (3-D, or a slice convention's mean over slices) and, when asked, its
        map (for a slice convention: the stack of 2-D maps)."""
        need_map = need_map or self.keep_map
        if self._full is None or (need_map and self._full[1] is None):
            x, y = self._on_device()
            result = self._engine().ssim(x, y, return_map=need_map, **self._engine_kw())
            if need_map:
                value, smap_t = result
                smap = smap_t.detach().float().cpu().numpy()
            else:
                value, smap = result, None
            self._full = (float(value), smap)
        return self._full
