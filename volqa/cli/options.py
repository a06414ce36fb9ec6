"""Option declarations shared by the commands, as ``Annotated`` aliases, and their enums.

Only light modules are imported here (no torch, no pandas), so ``volqa --help`` is fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..engine.conventions import BORDERS, COVARIANCES, PRESETS, WINDOWS
from ..execution import DEVICES, EXECUTORS
from ..schema import METRICS
from ..settings import NORMALIZE_MODES


def _enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Normalize = _enum("Normalize", NORMALIZE_MODES)
Device = _enum("Device", DEVICES)
ExecutorName = _enum("ExecutorName", EXECUTORS)
SsimWindow = _enum("SsimWindow", WINDOWS)
Covariance = _enum("Covariance", COVARIANCES)
Border = _enum("Border", BORDERS)
Preset = _enum("Preset", PRESETS)


def pair(text: str | None, what: str) -> tuple[float, float] | None:
    """Two comma-separated numbers, or a usage error naming the option."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise typer.BadParameter(f"expected {what} as two numbers separated by a comma, "
                                 f"got {text!r}") from None


def metrics_help() -> str:
    """Help of ``--metrics``, from the registry (refreshed when help is shown)."""
    default = ",".join(METRICS.defaults(has_mask=True))
    others = ", ".join(m for m in METRICS.names() if m not in METRICS.defaults(has_mask=True))
    return (f"Comma-separated metrics (default: {default}; masked ones only with a mask "
            f"column); also {others}.")


# -- volqa score -----------------------------------------------------------------------------

ManifestArg = Annotated[Path, typer.Argument(
    metavar="MANIFEST", help="CSV with columns subject_id, reference, test[, mask] and any "
    "covariates.", exists=True, dir_okay=False, readable=True, show_default=False)]
OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="Output folder for results.csv, results.parquet, settings.json, "
    "journal.jsonl and maps/.", file_okay=False)]
MetricsOpt = Annotated[str | None, typer.Option(help=metrics_help(), show_default=False)]
NormalizeOpt = Annotated[Normalize, typer.Option(  # type: ignore[valid-type]
    help="Intensity normalisation; statistics from the reference, the same map applied to the "
    "test (minmax: reference to [0, 1], L = 1).")]
DataRangeOpt = Annotated[float | None, typer.Option(
    help="Data range L for SSIM/PSNR with --normalize none (default: reference max - min).",
    show_default=False)]
PercentilesOpt = Annotated[str, typer.Option(
    metavar="LOW,HIGH", help="Reference percentiles for --normalize percentile.")]
IntensityWindowOpt = Annotated[str | None, typer.Option(
    "--window", metavar="LEVEL,WIDTH", help="Intensity window for --normalize window (e.g. "
    "40,400 for CT in HU).", show_default=False)]
PresetOpt = Annotated[Preset | None, typer.Option(  # type: ignore[valid-type]
    help="SSIM convention of a published tool; explicit SSIM options override it.",
    show_default=False)]
SsimWindowOpt = Annotated[SsimWindow | None, typer.Option(  # type: ignore[valid-type]
    "--ssim-window", help="SSIM window (default: gaussian).", show_default=False)]
WinSizeOpt = Annotated[int | None, typer.Option(
    help="SSIM window length in voxels, odd (default: 11).", show_default=False)]
SigmaOpt = Annotated[float | None, typer.Option(
    help="Gaussian window sigma in voxels (default: 1.5).", show_default=False)]
K1Opt = Annotated[float | None, typer.Option(help="SSIM K1 (default: 0.01).",
                                             show_default=False)]
K2Opt = Annotated[float | None, typer.Option(help="SSIM K2 (default: 0.03).",
                                             show_default=False)]
CovarianceOpt = Annotated[Covariance | None, typer.Option(  # type: ignore[valid-type]
    help="Local (co)variance estimator (default: population).", show_default=False)]
BorderOpt = Annotated[Border | None, typer.Option(  # type: ignore[valid-type]
    help="Border handling (default: valid).", show_default=False)]
Ssim2dOpt = Annotated[int | None, typer.Option(
    "--ssim-2d", metavar="AXIS", min=0, max=2, help="Also report the mean 2D SSIM over slices "
    "along voxel axis 0, 1 or 2 (column ssim_2d).", show_default=False)]
DeviceOpt = Annotated[Device, typer.Option(  # type: ignore[valid-type]
    help="Where SSIM runs; auto = CUDA when available.")]
MaxMemoryOpt = Annotated[str | None, typer.Option(
    metavar="SIZE", help="Memory budget of one SSIM tile, e.g. 512M or 2G (default: half the "
    "free GPU memory, at most 512M; 32M on CPU).", show_default=False)]
ResampleOpt = Annotated[bool, typer.Option(
    "--resample", help="Resample a test/mask on another grid onto the reference grid (linear; "
    "nearest for masks) instead of failing the row.")]
SaveMapsOpt = Annotated[bool, typer.Option(
    "--save-maps", help="Write each SSIM map as NIfTI to OUT/maps (reference geometry, NaN "
    "where the window does not fit).")]
WorkersOpt = Annotated[int, typer.Option(
    min=0, help="Background threads reading the next pairs (0: none); --executor threads.")]
ExecutorOpt = Annotated[ExecutorName, typer.Option(  # type: ignore[valid-type]
    "--executor", help="Where rows run: threads of this process, worker processes of this "
    "machine (--jobs), or a Dask cluster (--scheduler).")]
JobsOpt = Annotated[int | None, typer.Option(
    min=1, help="Worker processes of --executor processes (default: one per GPU with CUDA, "
    "else one per core).", show_default=False)]
ThreadsOpt = Annotated[int | None, typer.Option(
    min=1, help="Torch threads of each worker (default: the cores divided among the workers, "
    "never more).", show_default=False)]
ShardOpt = Annotated[str | None, typer.Option(
    metavar="I/N", help="Score only the rows whose 0-based index is I modulo N (e.g. "
    "$SLURM_ARRAY_TASK_ID/N); join the parts with `volqa merge`.", show_default=False)]
SchedulerOpt = Annotated[str | None, typer.Option(
    metavar="ADDRESS", help="Dask scheduler of --executor dask: an address (tcp://host:8786) "
    "or local:N (N worker processes here).", show_default=False)]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue the batch in OUT with the settings stored there: skip rows "
    "already finished ok with the same inputs and settings. Scoring options given with it "
    "override the stored ones (affected rows are computed again).")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Start again in a non-empty OUT (replaces volqa's files there).")]
FailFastOpt = Annotated[bool, typer.Option(
    "--fail-fast", help="Stop at the first failed row (finished rows are written).")]
StrictOpt = Annotated[bool, typer.Option(
    "--strict", help="A listed file that does not exist is a manifest error (exit 2, nothing "
    "scored) instead of a failed row.")]
ProgressOpt = Annotated[bool, typer.Option(
    "--progress/--no-progress", help="Progress bar on stderr.")]
