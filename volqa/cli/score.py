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
    FailFastOpt,
    GroupByOpt,
    IntensityWindowOpt,
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
    SigmaOpt,
    Ssim2dOpt,
    SsimWindowOpt,
    StrictOpt,
    WinSizeOpt,
    WorkersOpt,
    pair,
)

EPILOG = ("Exit status: 0 every row scored; 1 some rows failed (the others are in the tables); "
          "2 usage or manifest error, nothing scored; 130/143 interrupted by Ctrl-C/SIGTERM "
          "(finished rows written; continue with --resume).")

# command-line parameter -> option name of Settings/Execution.from_options
_RENAMED = {"ssim_window": "window"}
_RUN_CONTROL = {"manifest", "out", "resume", "overwrite", "fail_fast", "strict", "progress",
                "group_by"}


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
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    fail_fast: FailFastOpt = False,
    strict: StrictOpt = False,
    group_by: GroupByOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Score every reference/test pair of MANIFEST; write OUT/results.csv and .parquet."""
    from ..errors import ManifestError, SettingsError
    from ..io.manifest import read_manifest
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
    command = shlex.join(["volqa", "score", *_argv(ctx)])
    try:
        if group_by is not None:
            _check_group_by(read_manifest(manifest).columns, group_by)
        frame = score_manifest(manifest, out=out, resume=resume, overwrite=overwrite,
                               fail_fast=fail_fast, strict=strict, progress=progress,
                               command=command, **options)
    except (ManifestError, SettingsError) as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    except BatchInterrupted as stop:
        rows = [] if stop.results is None else stop.results.to_dict("records")
        names = [m for m in METRICS.names() if stop.results is not None
                 and m in stop.results.columns]
        typer.echo(summarize(rows, names, total=stop.total, group_by=group_by))
        name = signal.Signals(stop.signum).name
        _err(f"interrupted by {name} after {stop.done} of {stop.total} rows; the finished rows "
             f"are in {out}/results.csv and results.parquet. To continue, run:\n  "
             + shlex.join(resume_argv))
        raise typer.Exit(128 + stop.signum) from None
    meta = frame.attrs["volqa"]
    typer.echo(summarize(frame.to_dict("records"),
                         [m for m in METRICS.names() if m in frame.columns],
                         total=meta["rows_total"], group_by=group_by))
    typer.echo(f"wrote {out / 'results.csv'} and {out / 'results.parquet'}")
    if meta["rows_done"] < meta["rows_total"]:
        _err(f"stopped after the first failed row (--fail-fast): {meta['rows_done']} of "
             f"{meta['rows_total']} rows done; continue with:\n  " + shlex.join(resume_argv))
    if (frame["status"] != "ok").any():
        raise typer.Exit(1)


def _check_group_by(columns: tuple[str, ...], group_by: str) -> None:
    from ..errors import SettingsError

    if group_by not in columns:
        raise SettingsError(f"--group-by {group_by!r} is not a column of the manifest "
                            f"(columns: {', '.join(columns)}).")


def _argv(ctx: typer.Context) -> list[str]:
    """The command's arguments as given (the manifest, then each option not defaulted)."""
    argv = []
    for param in ctx.command.params:
        name = param.name or ""
        if name == "manifest":
            argv.insert(0, str(ctx.params[name]))
        elif _given(ctx, name):
            value = _plain(ctx.params[name])
            flag = max(param.opts, key=len)
            if isinstance(value, bool):
                secondary = max(getattr(param, "secondary_opts", []) or [""], key=len)
                argv.append(flag if value else secondary or flag)
            else:
                argv += [flag, str(value)]
    return argv


def _given(ctx: typer.Context, name: str) -> bool:
    """True when the option was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _err(message: str) -> None:
    typer.echo(f"volqa: {message}", err=True)
