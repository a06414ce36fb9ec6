"""``volqa score``: a thin shell over :func:`volqa.score_manifest`.

Only the options given on the command line are passed on, so that ``--resume`` takes every
other setting from ``OUT/settings.json``. Exit codes: 0 every row ok; 1 at least one row
failed; 2 usage or manifest error (nothing scored), or the output folder could not be written
(resume command printed); 130 / 143 interrupted by SIGINT / SIGTERM (finished rows written,
resume command printed). The summary goes to stdout; messages and ``failed: ...`` lines to
stderr, every one through :func:`volqa.pipeline.progress.printable`.
"""

from __future__ import annotations

import shlex
import signal
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
    GroupByOpt,
    IntensityWindowOpt,
    JobsOpt,
    K1Opt,
    K2Opt,
    ManifestArg,
    MaxMemoryOpt,
    MaxVolumeMemoryOpt,
    MetricsOpt,
    MinCoverageOpt,
    MsSsimScalesOpt,
    Normalize,
    NormalizeOpt,
    OutOpt,
    OverwriteOpt,
    PercentilesOpt,
    PresetOpt,
    ProgressOpt,
    ProtocolOpt,
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
    command_line,
    given,
    pair,
    plain,
)

EPILOG = ("Exit status: 0 every row scored; 1 some rows failed (the others are in the tables); "
          "2 usage or manifest error, nothing scored, or the output folder could not be written "
          "(continue with --resume); 130/143 interrupted by Ctrl-C/SIGTERM (finished rows "
          "written; continue with --resume).")

# command-line parameter -> option name of Settings/Execution.from_options
_RENAMED = {"ssim_window": "window"}
_RUN_CONTROL = {"manifest", "out", "resume", "overwrite", "fail_fast", "strict", "progress",
                "group_by"}
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
    max_volume_memory: MaxVolumeMemoryOpt = None,
    resample: ResampleOpt = False,
    min_coverage: MinCoverageOpt = None,
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
    group_by: GroupByOpt = None,
    progress: ProgressOpt = True,
    protocol: ProtocolOpt = None,
    ms_ssim_scales: MsSsimScalesOpt = None,
) -> None:
    """Score every reference/test pair of MANIFEST; write OUT/results.csv and .parquet."""
    from ..errors import ManifestError, OutputError, SettingsError
    from ..io.manifest import read_manifest
    from ..pipeline import BatchInterrupted, score_manifest
    from ..schema import METRICS

    options_given = {name: plain(value) for name, value in ctx.params.items()
                     if name not in _RUN_CONTROL and given(ctx, name)}
    if "percentiles" in options_given:
        options_given["percentiles"] = pair(options_given["percentiles"],
                                            "--percentiles LOW,HIGH")
    if "intensity_window" in options_given:
        options_given["intensity_window"] = pair(options_given["intensity_window"],
                                                 "--window LEVEL,WIDTH")
    options = {_RENAMED.get(k, k): v for k, v in options_given.items()}
    resume_argv = ["volqa", "score", str(manifest), "--out", str(out), "--resume"]
    for name in _RESUME_KEEPS:  # how the run was carried out, if given: the same again
        if name in options_given:
            resume_argv += [f"--{name}", str(options_given[name])]
    command = command_line(ctx)
    resume_hint = "To continue, run:\n  " + shlex.join(resume_argv)
    try:
        if group_by is not None:
            _check_group_by(read_manifest(manifest).columns, group_by)
        frame = score_manifest(manifest, out=out, resume=resume, overwrite=overwrite,
                               fail_fast=fail_fast, strict=strict, progress=progress,
                               command=command, **options)
    except (ManifestError, SettingsError) as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    except OutputError as exc:
        _err(f"{exc}. {resume_hint}")
        raise typer.Exit(2) from None
    except BatchInterrupted as stop:
        name = signal.Signals(stop.signum).name
        if stop.results is None:
            _err(f"interrupted by {name} while writing the tables, which were left as they "
                 f"were; the {stop.done} finished rows are in {out}/journal.jsonl. "
                 + resume_hint)
            raise typer.Exit(128 + stop.signum) from None
        rows = stop.results.to_dict("records")
        _report(rows, [m for m in METRICS.names() if m in stop.results.columns], stop.total,
                group_by)
        _err(f"interrupted by {name} after {stop.done} of {stop.total} rows; the finished rows "
             f"are in {out}/results.csv and results.parquet. " + resume_hint)
        raise typer.Exit(128 + stop.signum) from None
    meta = frame.attrs["volqa"]
    _report(frame.to_dict("records"), [m for m in METRICS.names() if m in frame.columns],
            meta["rows_total"], group_by)
    typer.echo(_printable(f"wrote {out / 'results.csv'} and {out / 'results.parquet'}"))
    if "regions" in frame.attrs:
        typer.echo(_printable(f"wrote {out / 'regions.csv'} and {out / 'regions.parquet'} "
                              f"({len(frame.attrs['regions'])} region rows)"))
    if meta["rows_done"] < meta["rows_total"]:
        _err(f"stopped after the first failed row (--fail-fast): {meta['rows_done']} of "
             f"{meta['rows_total']} rows done; continue with:\n  " + shlex.join(resume_argv))
    if (frame["status"] != "ok").any():
        raise typer.Exit(1)


def _report(rows: list[dict[str, Any]], metrics: list[str], total: int,
            group_by: str | None) -> None:
    """The summary on stdout, one ``failed: ...`` line per failed row on stderr."""
    from ..pipeline.summary import failures, summarize

    typer.echo(_printable(summarize(rows, metrics, total=total, group_by=group_by)))
    for line in failures(rows):
        typer.echo(_printable(line), err=True)


def _check_group_by(columns: tuple[str, ...], group_by: str) -> None:
    from ..errors import SettingsError

    if group_by not in columns:
        raise SettingsError(f"--group-by {group_by!r} is not a column of the manifest "
                            f"(columns: {', '.join(columns)}).")


def _err(message: str) -> None:
    typer.echo(_printable(f"volqa: {message}"), err=True)


def _printable(text: str) -> str:
    from ..pipeline.progress import printable

    return printable(text, keep_newlines=True)

