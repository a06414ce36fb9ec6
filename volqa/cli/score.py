"""``volqa score``: a thin shell over :func:`volqa.score_manifest`.

Only the options given on the command line are passed on, so that ``--resume`` takes every
other setting from ``OUT/settings.json``. Exit codes: 0 every row ok; 1 at least one row
failed; 2 usage or manifest error (nothing scored); 130 / 143 interrupted by SIGINT / SIGTERM
(finished rows written, resume command printed).
"""

from __future__ import annotations

import shlex
import signal
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from ..execution import Execution
from ..settings import DEFAULT_NORMALIZE, DEFAULT_PERCENTILES
from .options import (
    BorderOpt,
    CovarianceOpt,
    DataRangeOpt,
    Device,
    DeviceOpt,
    ExecutorName,
    ExecutorOpt,
    FailFastOpt,
    IntensityWindowOpt,
    JobsOpt,
    K1Opt,
    K2Opt,
    ManifestArg,
    MaxMemoryOpt,
    MetricsOpt,
    Normalize,
    NormalizeOpt,
    OutOpt,
    OverwriteOpt,
    PercentilesOpt,
    PresetOpt,
    ProgressOpt,
    ResampleOpt,
    ResumeOpt,
    SaveMapsOpt,
    SchedulerOpt,
    ShardOpt,
    SigmaOpt,
    Ssim2dOpt,
    SsimWindowOpt,
    StrictOpt,
    ThreadsOpt,
    WinSizeOpt,
    WorkersOpt,
    pair,
)

EPILOG = ("Exit status: 0 every row scored; 1 some rows failed (the others are in the tables); "
          "2 usage or manifest error, nothing scored; 130/143 interrupted by Ctrl-C/SIGTERM "
          "(finished rows written; continue with --resume).")

# command-line parameter -> option name of Settings/Execution.from_options
_RENAMED = {"ssim_window": "window"}
_RUN_CONTROL = {"manifest", "out", "resume", "overwrite", "fail_fast", "strict", "progress"}
# execution options repeated in the printed resume command when they were given
_RESUME_KEEPS = ("executor", "jobs", "threads", "scheduler", "shard")


def score(
    ctx: typer.Context,
    manifest: ManifestArg,
    out: OutOpt = Path("volqa_results"),
    metrics: MetricsOpt = None,
    normalize: NormalizeOpt = Normalize(DEFAULT_NORMALIZE),
    data_range: DataRangeOpt = None,
    percentiles: PercentilesOpt = ",".join(f"{p:g}" for p in DEFAULT_PERCENTILES),
    intensity_window: IntensityWindowOpt = None,
    preset: PresetOpt = None,
    ssim_window: SsimWindowOpt = None,
    win_size: WinSizeOpt = None,
    sigma: SigmaOpt = None,
    k1: K1Opt = None,
    k2: K2Opt = None,
    covariance: CovarianceOpt = None,
    border: BorderOpt = None,
    ssim_2d: Ssim2dOpt = None,
    device: DeviceOpt = Device(Execution.device),
    max_memory: MaxMemoryOpt = None,
    resample: ResampleOpt = False,
    save_maps: SaveMapsOpt = False,
    workers: WorkersOpt = Execution.workers,
    executor: ExecutorOpt = ExecutorName(Execution.executor),
    jobs: JobsOpt = None,
    threads: ThreadsOpt = None,
    shard: ShardOpt = None,
    scheduler: SchedulerOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    fail_fast: FailFastOpt = False,
    strict: StrictOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Score every reference/test pair of MANIFEST; write OUT/results.csv and .parquet."""
    from ..errors import ManifestError, SettingsError
    from ..pipeline import BatchInterrupted, score_manifest
    from ..pipeline.summary import summarize
    from ..schema import METRICS

    given = {name: _plain(value) for name, value in ctx.params.items()
             if name not in _RUN_CONTROL
             and _given(ctx, name)}
    if "percentiles" in given:
        given["percentiles"] = pair(given["percentiles"], "--percentiles LOW,HIGH")
    if "intensity_window" in given:
        given["intensity_window"] = pair(given["intensity_window"], "--window LEVEL,WIDTH")
    options = {_RENAMED.get(k, k): v for k, v in given.items()}
    resume_argv = ["volqa", "score", str(manifest), "--out", str(out), "--resume"]
    for name in _RESUME_KEEPS:  # how the run was carried out, if given: the same again
        if name in given:
            resume_argv += [f"--{name}", str(given[name])]
    try:
        frame = score_manifest(manifest, out=out, resume=resume, overwrite=overwrite,
                               fail_fast=fail_fast, strict=strict, progress=progress, **options)
    except (ManifestError, SettingsError) as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    except BatchInterrupted as stop:
        rows = [] if stop.results is None else stop.results.to_dict("records")
        names = [m for m in METRICS.names() if stop.results is not None
                 and m in stop.results.columns]
        typer.echo(summarize(rows, names, total=stop.total))
        name = signal.Signals(stop.signum).name
        _err(f"interrupted by {name} after {stop.done} of {stop.total} rows; the finished rows "
             f"are in {out}/results.csv and results.parquet. To continue, run:\n  "
             + shlex.join(resume_argv))
        raise typer.Exit(128 + stop.signum) from None
    meta = frame.attrs["volqa"]
    typer.echo(summarize(frame.to_dict("records"),
                         [m for m in METRICS.names() if m in frame.columns],
                         total=meta["rows_total"]))
    typer.echo(f"wrote {out / 'results.csv'} and {out / 'results.parquet'}")
    if meta["rows_done"] < meta["rows_total"]:
        _err(f"stopped after the first failed row (--fail-fast): {meta['rows_done']} of "
             f"{meta['rows_total']} rows done; continue with:\n  " + shlex.join(resume_argv))
    if (frame["status"] != "ok").any():
        raise typer.Exit(1)


def _given(ctx: typer.Context, name: str) -> bool:
    """True when the option was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _err(message: str) -> None:
    typer.echo(f"volqa: {message}", err=True)
