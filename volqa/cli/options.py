"""Option declarations shared by the commands, as ``Annotated`` aliases, and their enums.

Only light modules are imported here (no torch, no pandas), so ``volqa --help`` is fast.
"""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..engine.conventions import BORDERS, COVARIANCES, PRESETS, WINDOWS
from ..execution import DEVICES, EXECUTORS
from ..protocols import PROTOCOL_NAMES
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
Protocol = _enum("Protocol", PROTOCOL_NAMES)


Test = _enum("Test", ("wilcoxon", "t"))
TableFormat = _enum("TableFormat", ("text", "markdown", "latex"))


def given(ctx: typer.Context, name: str) -> bool:
    """True when the option was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def plain(value: object) -> object:
    """An enum option's value as its plain string."""
    return value.value if isinstance(value, Enum) else value


def command_line(ctx: typer.Context) -> str:
    """The command as given: ``volqa NAME ARGUMENTS --option value ...`` (options that were
    not given are left out; flags as written)."""
    args: list[str] = []
    options: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        value = plain(ctx.params.get(name))
        if param.param_type_name == "argument":
            args += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif given(ctx, name):
            flag = max(param.opts, key=len)
            if isinstance(value, bool):
                secondary = max(getattr(param, "secondary_opts", []) or [""], key=len)
                options.append(flag if value else secondary or flag)
            else:
                options += [flag, str(value)]
    return shlex.join(["volqa", str(ctx.info_name), *args, *options])


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
MaxVolumeMemoryOpt = Annotated[str | None, typer.Option(
    metavar="SIZE", help="Largest volume to read, as float32 in memory (voxels x 4 bytes), "
    "e.g. 2G; checked from the header before reading; read-ahead holds at most 4x this "
    "(default: 1/8 of the memory this process may use).", show_default=False)]
MinCoverageOpt = Annotated[float | None, typer.Option(
    metavar="FRACTION", help="With --resample: fail a row whose test covers less than this "
    "fraction of the reference grid (default: 0.95).", show_default=False)]
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
    "--strict", help="A listed file that does not exist, or a test that is its reference file, "
    "is a manifest error (exit 2, nothing scored) instead of a failed row or a warning.")]
GroupByOpt = Annotated[str | None, typer.Option(
    "--group-by", metavar="COLUMN", help="Summarise each value of this manifest column (e.g. "
    "method) on its own at the end (default: all rows together).", show_default=False)]
ProgressOpt = Annotated[bool, typer.Option(
    "--progress/--no-progress", help="Progress bar on stderr.")]


# -- volqa compare / volqa report ------------------------------------------------------------

ResultsArg = Annotated[list[Path], typer.Argument(
    metavar="RESULTS", help="Result tables of volqa score (results.parquet or results.csv; "
    "one per method or one merged).", exists=True, dir_okay=False, readable=True,
    show_default=False)]
ByOpt = Annotated[str, typer.Option(
    "--by", metavar="COLUMN", help="The column that names the method.")]
SubjectOpt = Annotated[str, typer.Option(
    "--subject", metavar="COLUMN", help="The column that pairs rows of different methods.")]
CompareMetricsOpt = Annotated[str | None, typer.Option(
    "--metrics", metavar="M1,M2", help="Metrics to compare (default: every metric in the "
    "tables).", show_default=False)]
BaselineOpt = Annotated[str | None, typer.Option(
    "--baseline", metavar="NAME", help="Compare every method with this one (default: all "
    "pairs); marks significance against it in the paper table.", show_default=False)]
GroupOpt = Annotated[str | None, typer.Option(
    "--group", metavar="COLUMN", help="Analyse each value of this column on its own (site, "
    "region, ...).", show_default=False)]
TestOpt = Annotated[Test, typer.Option(  # type: ignore[valid-type]
    "--test", help="Paired test: Wilcoxon signed-rank or paired t.")]
NBootOpt = Annotated[int, typer.Option(
    "--n-boot", min=100, help="Bootstrap replicates (BCa intervals, ranking stability).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")]
AllowSettingsOpt = Annotated[bool, typer.Option(
    "--allow-different-settings", help="Compare tables scored with different settings "
    "anyway; the differences are written into every output.")]
CompareOutOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="Folder for summary, pairwise, ranking (.csv, .parquet), long.parquet "
    "and compare.json.", file_okay=False)]
FormatOpt = Annotated[TableFormat, typer.Option(  # type: ignore[valid-type]
    "--format", help="Format of the printed paper table.")]
ReportOutOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="The HTML file to write (self-contained).", dir_okay=False)]
FiguresOpt = Annotated[Path | None, typer.Option(
    "--figures", metavar="DIR", help="Also write every figure as PNG and SVG into DIR.",
    file_okay=False, show_default=False)]
WorstOpt = Annotated[int, typer.Option(
    "--worst", min=0, help="Worst subjects per method shown as slices (0: none).")]
# -- published evaluations and the metrics of issue 12 -----------------------------------------

ProtocolOpt = Annotated[Protocol | None, typer.Option(  # type: ignore[valid-type]
    help="Reproduce a published evaluation (normalisation, clipping, masking, data range, 2-D "
    "or 3-D, metric set) as its code does; recorded in every row. Excludes the "
    "normalisation and SSIM options.", show_default=False)]
MsSsimScalesOpt = Annotated[int | None, typer.Option(
    "--ms-ssim-scales", min=1, max=5, help="Scales of the ms_ssim metrics (default 5: "
    "Wang et al. 2003; fewer for small volumes: 5 scales of an 11-voxel window need 161 "
    "voxels per axis).", show_default=False)]
