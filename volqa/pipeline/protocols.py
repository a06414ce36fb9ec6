"""The steps of the published evaluations (:mod:`volqa.protocols`) that volqa's own pipeline
does not take: clipping and shifting HU, per-image percentile or per-slice maximum
normalisation, a data range from the reference's maximum, SSIM of a region computed on images
filled outside it, SynthRAD2025's MS-SSIM, and metrics computed on the unclipped images.

:func:`prepare` replaces :func:`volqa.pipeline.normalize.normalize` for a row under a protocol,
and :func:`make_context` gives the :class:`~volqa.pipeline.context.PairContext` whose metric
methods follow the protocol (:class:`ProtocolContext`). The registry's metrics are unchanged:
``ssim_masked`` is still ``ctx.ssim(ctx.mask)``, the context decides what that means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..engine.multiscale import ms_ssim_weights
from ..errors import InputError
from ..protocols import PROTOCOLS, ProtocolSpec
from ..schema import Metric
from ..settings import Settings
from .context import PairContext
from .normalize import Normalized, normalize, percentiles, range_note

__all__ = ["prepare", "intensity_notes", "make_context", "ProtocolContext",
           "synthrad2025_ms_ssim"]

Pair = tuple[np.ndarray, np.ndarray]

#: SynthRAD2025 pads every axis to at least this many voxels (edge mode) before its MS-SSIM:
#: (7 - 1) · 2⁴ + 1, the size five scales of a 7-voxel window need.
SYNTHRAD2025_MIN_SIZE = 97


def prepare(reference: np.ndarray, test: np.ndarray,
            settings: Settings) -> tuple[Normalized, Pair | None]:
    """The scored pair of a row and, for protocols that compute some metrics on the images as
    given (SynthRAD's MAE), that raw pair too.

    Without a protocol this is :func:`volqa.pipeline.normalize.normalize`.

    Raises
    ------
    InputError
        An image without spread for a per-image normalisation, a slice whose maximum is not
        positive (CMRxRecon), a reference whose maximum is not positive (fastMRI's L).
    """
    if settings.protocol is None:
        return normalize(reference, test, settings), None
    spec = PROTOCOLS[settings.protocol]
    ref = np.asarray(reference, dtype=np.float32)
    tst = np.asarray(test, dtype=np.float32)
    raw = (ref, tst) if spec.raw_metrics else None
    if spec.per_image == "percentile":
        ref, tst = _own_percentiles(ref, "reference"), _own_percentiles(tst, "test")
    elif spec.per_image == "slice_max":
        axis = settings.ssim_2d if settings.ssim_2d is not None else 2
        ref, tst = _slice_max(ref, axis, "reference"), _slice_max(tst, axis, "test")
    if spec.clip is not None:
        ref, tst = np.clip(ref, *spec.clip), np.clip(tst, *spec.clip)
    if spec.shift:
        ref, tst = ref + np.float32(spec.shift), tst + np.float32(spec.shift)
    if spec.data_range == "reference_max":
        L = float(ref.max())
        if not L > 0:
            raise InputError(f"protocol {spec.name}: the data range is the reference's maximum, "
                             f"which is {L:g}; the reference has no positive intensity.")
    else:
        L = 1.0 if spec.data_range is None else float(spec.data_range)
    return Normalized(ref, tst, L, "protocol", -spec.shift, 1.0, spec.clip), raw


def intensity_notes(reference: np.ndarray, test: np.ndarray, settings: Settings) -> list[str]:
    """:func:`~volqa.pipeline.normalize.range_note` of a pair, unless the protocol scales
    each image on its own (then other units are expected and normalised away)."""
    if settings.protocol is not None and PROTOCOLS[settings.protocol].per_image is not None:
        return []
    note = range_note(reference, test)
    return [note] if note else []


def _own_percentiles(a: np.ndarray, role: str) -> np.ndarray:
    """BraSyn's ``__percentile_clip``: clip to the image's own 0.5/99.5 percentiles (linear,
    as ``np.percentile``), the lower one raised to 0 when negative, and scale to [0, 1]."""
    lo, hi = (float(v) for v in percentiles(a, (0.5, 99.5)))
    lo = max(lo, 0.0)
    if not hi > lo:
        raise InputError(f"the {role}'s 0.5th and 99.5th percentiles ({lo:g}, {hi:g}) leave no "
                         "range: BraSyn scales each image by its own percentiles.")
    return (np.clip(a, lo, hi) - np.float32(lo)) / np.float32(hi - lo)


def _slice_max(a: np.ndarray, axis: int, role: str) -> np.ndarray:
    """CMRxRecon's ``gt / gt.max()``, ``pred / pred.max()`` for every 2-D image along ``axis``."""
    shape = [1, 1, 1]
    shape[axis] = a.shape[axis]
    peaks = a.max(axis=tuple(i for i in range(3) if i != axis))
    bad = np.flatnonzero(~(peaks > 0))
    if bad.size:
        raise InputError(f"{role} slice {int(bad[0])} along axis {axis} has maximum "
                         f"{float(peaks[bad[0]]):g} ({bad.size} such slice(s)): CMRxRecon "
                         "divides each image by its own maximum, which must be positive.")
    return a / peaks.reshape(shape).astype(np.float32)


def make_context(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None,
                 data_range: float, settings: Settings, *, raw: Pair | None = None,
                 **engine: Any) -> PairContext:
    """The metric context of a row: :class:`ProtocolContext` under a protocol, else
    :class:`PairContext` (``engine``: device, max_memory, keep_map)."""
    if settings.protocol is None:
        return PairContext(reference, test, mask, data_range, settings, **engine)
    return ProtocolContext(reference, test, mask, data_range, settings, raw=raw, **engine)


class ProtocolContext(PairContext):
    """A :class:`PairContext` whose metrics follow a protocol (see :mod:`volqa.protocols`).

    - metrics in ``raw_metrics`` are computed on the images as given (``raw``);
    - SSIM and MS-SSIM over a region are computed on images set to ``outside`` beyond it, with
      the row's L or (``region_range="span"``) the larger max - min of the filled images;
    - ``ms_ssim="synthrad2025"``: :func:`synthrad2025_ms_ssim`.
    """

    def __init__(self, reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None,
                 data_range: float, settings: Settings, *, raw: Pair | None = None,
                 **engine: Any) -> None:
        super().__init__(reference, test, mask, data_range, settings, **engine)
        self.spec: ProtocolSpec = PROTOCOLS[settings.protocol]  # type: ignore[index]
        self.raw = raw
        self.engine = engine

    def compute(self, metrics: Iterable[Metric]) -> dict[str, float | None]:
        chosen = list(metrics)
        on_raw = [m for m in chosen if m.name in self.spec.raw_metrics and self.raw is not None]
        out = super().compute(m for m in chosen if m not in on_raw)
        if on_raw:
            ctx = PairContext(*self.raw, self.mask, self.data_range,  # type: ignore[misc]
                              self.settings, **self.engine)
            out.update(ctx.compute(on_raw))
            self.notes.extend(ctx.notes)
        return out

    def ssim(self, region: np.ndarray | None = None) -> float:
        if region is None or self.spec.outside is None:
            return super().ssim(region)
        return self._filled(region).ssim(region)

    def ms_ssim(self, region: np.ndarray | None = None) -> float:
        if self.spec.ms_ssim == "synthrad2025":
            def compute() -> float:
                x, y = ((self.reference, self.test) if region is None
                        else self._fill(region))
                padded = tuple(max(n, SYNTHRAD2025_MIN_SIZE) for n in x.shape)
                if padded != x.shape:
                    self.note(f"synthrad2025: MS-SSIM on images edge-padded from {x.shape} to "
                              f"{padded} (the challenge's minimum of {SYNTHRAD2025_MIN_SIZE} "
                              "voxels per axis)")
                return synthrad2025_ms_ssim(
                    x, y, region, data_range=self.data_range, settings=self.settings,
                    device=self.device, max_memory=self.max_memory)
            return self._cached("synthrad2025", region, compute)
        if region is None or self.spec.outside is None:
            return super().ms_ssim(region)
        return self._filled(region).ms_ssim(region)

    def _fill(self, region: np.ndarray) -> Pair:
        value = np.float32(self.spec.outside)
        return (np.where(region, self.reference, value), np.where(region, self.test, value))

    def _filled(self, region: np.ndarray) -> PairContext:
        """The pair with the protocol's value outside ``region`` (cached per region)."""
        def make() -> PairContext:
            x, y = self._fill(region)
            L = self.data_range
            if self.spec.region_range == "span":
                L = max(float(x.max() - x.min()), float(y.max() - y.min()))
                if not L > 0:
                    raise InputError("both images are constant after the fill outside the "
                                     "region: torchmetrics' data range (max - min) is 0")
                self.note(f"{self.spec.name}: L = {L:.6g} for the {int(region.sum())}-voxel "
                          "region (max - min of the filled images, torchmetrics' default)")
            return PairContext(x, y, None, L, self.settings, **self.engine)
        return self._cached("filled", region, make)


def synthrad2025_ms_ssim(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, *,
                         data_range: float, settings: Settings, device: str = "cpu",
                         max_memory: int | None = None) -> float:
    """SynthRAD2025's masked MS-SSIM (``image_metrics.py`` at 17cac47), as the script runs.

    The images (already clipped, filled outside the mask and shifted) and the mask are
    edge-padded to at least 97 voxels per axis; at each of the scales (weights w_j, Wang et al.
    2003) the SSIM map (uniform 7, sample covariance, valid: the script's crop by 3) is raised
    to w_j after a relu, averaged over the scale's mask voxels (all voxels without a mask) and
    clipped to [0, 1]; the value is the product over scales. Between scales the images are
    box-filtered and subsampled as ``fftconvolve(im, ones((2, 2, 2)) / 8, 'same')[::2, ::2,
    ::2]`` does (voxels 2k-1 and 2k averaged, a zero before the first) and the mask subsampled
    ``[::2, ::2, ::2]``.
    """
    import torch
    import torch.nn.functional as F

    from ..engine.structural import ssim
    from ..engine.tiling import crop_to_map

    pads = [(max(0, (SYNTHRAD2025_MIN_SIZE - n) // 2),
             max(0, SYNTHRAD2025_MIN_SIZE - n - (SYNTHRAD2025_MIN_SIZE - n) // 2))
            for n in x.shape]
    xt, yt = (torch.from_numpy(np.pad(a, pads, mode="edge")).to(device) for a in (x, y))
    m = np.pad(mask, pads, mode="edge") if mask is not None else None
    product = 1.0
    for j, w in enumerate(ms_ssim_weights(settings.ms_ssim_scales)):
        _, smap = ssim(xt, yt, data_range=data_range, settings=settings.ssim, return_map=True,
                       max_memory=max_memory)
        powered = torch.relu(smap.double()) ** w
        if m is not None:
            inside = torch.from_numpy(crop_to_map(m, tuple(smap.shape))).to(device)
            if not bool(inside.any()):
                raise InputError(f"SynthRAD2025 MS-SSIM: no mask voxel inside the SSIM map at "
                                 f"scale {j + 1} (images {tuple(xt.shape)} there)")
            value = float(powered[inside].mean())
        else:
            value = float(powered.mean())
        product *= min(max(value, 0.0), 1.0)
        # zero before the first voxel of every axis, then pairs: (2k-1, 2k)
        xt, yt = (F.avg_pool3d(F.pad(t[None, None], (1, 0, 1, 0, 1, 0)), 2)[0, 0]
                  for t in (xt, yt))
        m = m[::2, ::2, ::2] if m is not None else None
    return float(product) if math.isfinite(product) else math.nan
