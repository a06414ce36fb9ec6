"""Published evaluations by name: what each protocol sets and the code it follows.

A protocol is a whole evaluation: normalisation, clipping, masking, data range, 2-D or 3-D, the
SSIM convention and the metric set, as a challenge's published evaluation code computes them.
This module is the declarative table (read by :class:`volqa.Settings`, printed in the README);
the steps the general pipeline lacks are carried out by :mod:`volqa.pipeline.protocols`.

Each entry cites the repository, commit and file it follows; every row scored under a protocol
records the protocol and that source. Where volqa differs from a script (arithmetic precision,
or a bug whose intent is evident), :attr:`ProtocolSpec.differences` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProtocolSpec", "PROTOCOLS", "PROTOCOL_NAMES"]


@dataclass(frozen=True)
class ProtocolSpec:
    """One published evaluation.

    Attributes
    ----------
    name : str
        The ``--protocol`` value.
    source : str
        ``owner/repo@commit path`` of the evaluation code followed.
    sets : str
        One line: what the protocol does, for the README's table and ``settings.json``.
    differences : str
        What volqa does differently from the published script, and why ("" if nothing).
    options : mapping
        :meth:`volqa.Settings.from_options` options the protocol implies (SSIM preset,
        metric set, slice axis, MS-SSIM scales).
    clip : (float, float) or None
        Both images clipped to this range (input units) before the metrics.
    shift : float
        Added to both images after clipping (SynthRAD: +1024, so that HU >= 0).
    data_range : float, "reference_max" or None
        L of SSIM/PSNR: a number, the reference's maximum (fastMRI), or None for 1 after a
        per-image normalisation.
    per_image : {None, "percentile", "slice_max"}
        Each image normalised by its own statistics: its 0.5/99.5 percentiles, lower bound
        raised to 0 (BraSyn), or every 2-D slice along the slice axis divided by its own
        maximum (CMRxRecon).
    outside : float or None
        Masked SSIM-family metrics over a region are computed on images whose voxels outside
        the region are set to this value (in the units after clipping and shift); None: on
        the real images (volqa's own definition).
    region_range : {"row", "span"}
        L of the SSIM of a region: the row's L, or (BraSyn, torchmetrics' default) the larger
        max - min of the two images after the outside fill.
    raw_metrics : tuple of str
        Metrics computed on the unclipped, unshifted images (SynthRAD's MAE).
    ms_ssim : {"wang", "synthrad2025"}
        The MS-SSIM definition (:mod:`volqa.pipeline.protocols` for SynthRAD2025's).
    """

    name: str
    source: str
    sets: str
    differences: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    clip: tuple[float, float] | None = None
    shift: float = 0.0
    data_range: float | str | None = None
    per_image: str | None = None
    outside: float | None = None
    region_range: str = "row"
    raw_metrics: tuple[str, ...] = ()
    ms_ssim: str = "wang"


PROTOCOLS: dict[str, ProtocolSpec] = {p.name: p for p in (
    ProtocolSpec(
        "fastmri",
        "facebookresearch/fastMRI@91f2df4 fastmri/evaluate.py",
        "no normalisation; SSIM = mean over slices (voxel axis 0) of 2-D skimage SSIM "
        "(uniform 7, sample covariance); PSNR, NMSE, MSE of the volume; L = reference max",
        "fastMRI centre-crops its images to (W, W) before scoring; volqa scores the volumes "
        "as given (crop them as fastMRI does). skimage computes float32 images in float32; "
        "volqa keeps float64 means (differences below 1e-6)",
        options={"preset": "fastmri", "metrics": ("ssim", "psnr", "nmse", "mse")},
        data_range="reference_max",
    ),
    ProtocolSpec(
        "synthrad2023",
        "SynthRAD2023/metrics@3200007 functions/image_metrics.py",
        "CT in HU: masked MAE (unclipped); masked PSNR and SSIM after clipping to "
        "[-1024, 3000], L = 4024; SSIM on the images with -1024 outside the mask, shifted by "
        "+1024, 3-D skimage defaults, mean of the map over the mask cropped by 3",
        "SynthRAD computes float32 images in float32 (no centring); volqa's float32 path "
        "centres the data and accumulates in float64 (differences below 1e-5)",
        options={"preset": "synthrad2023",
                 "metrics": ("ssim_masked", "psnr_masked", "mae_masked")},
        clip=(-1024.0, 3000.0), shift=1024.0, data_range=4024.0, outside=0.0,
        raw_metrics=("mae", "mae_masked"),
    ),
    ProtocolSpec(
        "synthrad2025",
        "SynthRAD2025/evaluation@17cac47 image_metrics.py",
        "CT in HU: masked MAE (unclipped); masked PSNR after clipping to [-1024, 3071], "
        "L = 4095; masked 3-D MS-SSIM: -1024 outside the mask, +1024 shift, edge-padded to "
        ">= 97 voxels per axis, 5 scales of uniform-7 sample-covariance SSIM, each scale the "
        "mean over the mask of relu(SSIM map)^w, clipped to [0, 1], multiplied",
        "as the script runs, not as its comments say: its luminance exponents equal the scale "
        "weights at every scale (the line meant to zero them tests `scale_weights is None` "
        "after setting it), each exponent applies to the map before the mean, and its "
        "downsampling (fftconvolve 'same' with a 2x2x2 box, then [::2]) averages voxels 2k-1 "
        "and 2k with a zero before the first; the mask is subsampled [::2]. These define the "
        "challenge's ranking, so volqa reproduces them; it computes every scale with centred "
        "float32 data and float64 means where the script uses uncentred float32 at the first "
        "scale",
        options={"preset": "skimage",
                 "metrics": ("ms_ssim_masked", "psnr_masked", "mae_masked"),
                 "ms_ssim_scales": 5},
        clip=(-1024.0, 3071.0), shift=1024.0, data_range=4095.0, outside=0.0,
        raw_metrics=("mae", "mae_masked"), ms_ssim="synthrad2025",
    ),
    ProtocolSpec(
        "brasyn",
        "hongweilibran/BraSyn@8908040 ssim.py",
        "each image clipped to its own 0.5/99.5 percentiles (lower bound raised to 0) and "
        "scaled to [0, 1]; torchmetrics SSIM (Gaussian 11, reflect border) of the tumour "
        "(mask, any label > 0) and of the healthy region (the rest), each on images set to 0 "
        "outside the region, L = the larger max - min of the two (torchmetrics' default)",
        "BraSyn's script averages the SSIM map of the zero-filled images over the whole "
        "volume (ssim.py at ecdaf00; at 4d9af6d it indexed the map with the int64 mask, "
        "integer indexing along the batch axis); its comment says 'only take values from "
        "masked region', so volqa averages the map over the region's voxels",
        options={"preset": "torchmetrics", "metrics": ("ssim_masked", "ssim_outside")},
        per_image="percentile", outside=0.0, region_range="span",
    ),
    ProtocolSpec(
        "cmrxrecon",
        "CmrxRecon/CMRxRecon@2cb293a Evaluation/Evaluation.py, Evaluation/Main_Score.py",
        "each 2-D image (slices along voxel axis 2) of reference and test divided by its own "
        "maximum; per image 2-D skimage SSIM (uniform 7, sample covariance), PSNR and NMSE "
        "with L = 1, averaged over the images of the volume",
        "CMRxRecon reads 4-D (x, y, slice, time) arrays; volqa reads 3-D volumes, so stack "
        "slices and time frames along axis 2 (the mean over all images is the same)",
        options={"preset": "skimage", "metrics": ("ssim_2d", "psnr_2d", "nmse_2d"),
                 "ssim_2d": 2},
        per_image="slice_max",
    ),
)}
PROTOCOL_NAMES: tuple[str, ...] = tuple(PROTOCOLS)
