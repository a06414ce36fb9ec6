"""The ``volqa`` command line: a thin shell over :func:`volqa.runner.score_manifest`.

Exit codes: 0 every row ok; 1 at least one row failed; 2 usage or manifest error (nothing
scored); 130 / 143 interrupted by SIGINT / SIGTERM (finished rows written, resume command
printed). Messages go to stderr, the end-of-batch summary to stdout. A user mistake never
prints a traceback.
"""

from __future__ import annotations

import shlex
import signal
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .demo import demo_app
from .errors import ManifestError, SettingsError
from .ssim import BORDERS, COVARIANCES, PRESETS, WINDOWS

__all__ = ["app", "main"]

app = typer.Typer(
    name="volqa",
    help="Reference-based quality metrics (3D SSIM, PSNR, NRMSE, MAE, MSE) for reconstructed "
    "medical volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(demo_app, name="demo")  # `volqa demo fit`: the SSIM-loss demonstration


class Normalize(str, Enum):
    none = "none"
    minmax = "minmax"
    percentile = "percentile"
    zscore = "zscore"
    window = "window"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


SsimWindow = Enum("SsimWindow", {w: w for w in WINDOWS}, type=str)  # type: ignore[misc]
Covariance = Enum("Covariance", {c: c for c in COVARIANCES}, type=str)  # type: ignore[misc]
Border = Enum("Border", {b: b for b in BORDERS}, type=str)  # type: ignore[misc]
Preset = Enum("Preset", {p: p for p in PRESETS}, type=str)  # type: ignore[misc]


def _pair(text: str | None, what: str) -> tuple[float, float] | None:
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


def _value(v: object) -> object:
    return v.value if isinstance(v, Enum) else v


@app.callback()
def _root() -> None:
    """Reference-based quality metrics for reconstructed medical volumes."""


@app.command("score")
def score(
    manifest: Annotated[Path, typer.Argument(
        help="CSV with columns subject_id, reference, test[, mask] and any covariates.",
        exists=True, dir_okay=False, readable=True, show_default=False)],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output folder for results.csv, results.parquet, journal.jsonl "
        "and maps/.", file_okay=False)] = Path("volqa_results"),
    metrics: Annotated[str | None, typer.Option(
        help="Comma-separated metrics (default: ssim,ssim_masked (with a mask column),psnr,"
        "nrmse,mae,mse); also psnr_masked, nrmse_masked, mae_masked, mse_masked, ssim_2d.",
        show_default=False)] = None,
    normalize: Annotated[Normalize, typer.Option(
        help="Intensity normalisation; statistics from the reference, the same map applied "
        "to the test (minmax: reference to [0, 1], L = 1).")] = Normalize.minmax,
    data_range: Annotated[float | None, typer.Option(
        help="Data range L for SSIM/PSNR with --normalize none (default: reference max - "
        "min).", show_default=False)] = None,
    percentiles: Annotated[str, typer.Option(
        metavar="LOW,HIGH", help="Reference percentiles for --normalize percentile.")]
        = "0.5,99.5",
    intensity_window: Annotated[str | None, typer.Option(
        "--window", metavar="LEVEL,WIDTH", help="Intensity window for --normalize window "
        "(e.g. 40,400 for CT in HU).", show_default=False)] = None,
    preset: Annotated[Preset | None, typer.Option(  # type: ignore[valid-type]
        help="SSIM convention of a published tool; explicit SSIM options override it.",
        show_default=False)] = None,
    ssim_window: Annotated[SsimWindow | None, typer.Option(  # type: ignore[valid-type]
        "--ssim-window", help="SSIM window (default: gaussian).", show_default=False)] = None,
    win_size: Annotated[int | None, typer.Option(
        help="SSIM window length in voxels, odd (default: 11).", show_default=False)] = None,
    sigma: Annotated[float | None, typer.Option(
        help="Gaussian window sigma in voxels (default: 1.5).", show_default=False)] = None,
    k1: Annotated[float | None, typer.Option(
        help="SSIM K1 (default: 0.01).", show_default=False)] = None,
    k2: Annotated[float | None, typer.Option(
        help="SSIM K2 (default: 0.03).", show_default=False)] = None,
    covariance: Annotated[Covariance | None, typer.Option(  # type: ignore[valid-type]
        help="Local (co)variance estimator (default: population).", show_default=False)] = None,
    border: Annotated[Border | None, typer.Option(  # type: ignore[valid-type]
        help="Border handling (default: valid).", show_default=False)] = None,
    ssim_2d: Annotated[int | None, typer.Option(
        "--ssim-2d", metavar="AXIS", min=0, max=2, help="Also report the mean 2D SSIM over "
        "slices along voxel axis 0, 1 or 2 (column ssim_2d).", show_default=False)] = None,
    device: Annotated[Device, typer.Option(
        help="Where SSIM runs; auto = CUDA when available.")] = Device.auto,
    max_memory: Annotated[str | None, typer.Option(
        metavar="SIZE", help="Memory budget of one SSIM tile, e.g. 512M or 2G (default: half "
        "the free GPU memory, at most 512M; 32M on CPU).", show_default=False)] = None,
    resample: Annotated[bool, typer.Option(
        "--resample", help="Resample a test/mask on another grid onto the reference grid "
        "(linear; nearest for masks) instead of failing the row.")] = False,
    save_maps: Annotated[bool, typer.Option(
        "--save-maps", help="Write each SSIM map as NIfTI to OUT/maps (reference geometry, NaN "
        "where the window does not fit).")] = False,
    workers: Annotated[int, typer.Option(
        min=0, help="Background threads reading the next pairs (0: none).")] = 2,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the batch in OUT: skip rows already finished ok with the "
        "same inputs and settings.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Start again in a non-empty OUT (replaces volqa's files there).")]
        = False,
    fail_fast: Annotated[bool, typer.Option(
        "--fail-fast", help="Stop at the first failed row (finished rows are written).")]
        = False,
    strict: Annotated[bool, typer.Option(
        "--strict", help="A listed file that does not exist is a manifest error (exit 2, "
        "nothing scored) instead of a failed row.")] = False,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Score every reference/test pair of MANIFEST; write OUT/results.csv and .parquet."""
    from .results import summarize
    from .runner import BatchInterrupted, score_manifest

    options = dict(
        out=out, metrics=metrics, normalize=normalize.value, data_range=data_range,
        percentiles=_pair(percentiles, "--percentiles LOW,HIGH"),
        intensity_window=_pair(intensity_window, "--window LEVEL,WIDTH"),
        preset=_value(preset), window=_value(ssim_window), win_size=win_size, sigma=sigma,
        k1=k1, k2=k2, covariance=_value(covariance), border=_value(border), ssim_2d=ssim_2d,
        device=device.value, max_memory=max_memory, resample=resample, save_maps=save_maps,
        workers=workers, resume=resume, overwrite=overwrite, fail_fast=fail_fast,
        strict=strict, progress=progress,
    )  # fmt: skip
    resume_argv = _resume_argv(manifest, out, [
        ("--metrics", metrics, None), ("--normalize", normalize.value, "minmax"),
        ("--data-range", data_range, None), ("--percentiles", percentiles, "0.5,99.5"),
        ("--window", intensity_window, None), ("--preset", _value(preset), None),
        ("--ssim-window", _value(ssim_window), None), ("--win-size", win_size, None),
        ("--sigma", sigma, None), ("--k1", k1, None), ("--k2", k2, None),
        ("--covariance", _value(covariance), None), ("--border", _value(border), None),
        ("--ssim-2d", ssim_2d, None), ("--device", device.value, "auto"),
        ("--max-memory", max_memory, None), ("--resample", resample, False),
        ("--save-maps", save_maps, False), ("--workers", workers, 2),
        ("--strict", strict, False),  # not --fail-fast: the failed row would stop it again
    ])  # fmt: skip
    try:
        frame = score_manifest(manifest, **options)  # type: ignore[arg-type]
    except (ManifestError, SettingsError) as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    except BatchInterrupted as stop:
        rows = [] if stop.results is None else stop.results.to_dict("records")
        metric_cols = _metric_columns(stop.results)
        typer.echo(summarize(rows, metric_cols, total=stop.total))
        name = signal.Signals(stop.signum).name
        _err(
            f"interrupted by {name} after {stop.done} of {stop.total} rows; the finished rows "
            f"are in {out}/results.csv and results.parquet. To continue, run:\n  "
            + shlex.join(resume_argv)
        )
        raise typer.Exit(128 + stop.signum) from None
    rows = frame.to_dict("records")
    typer.echo(summarize(rows, _metric_columns(frame), total=frame.attrs["volqa"]["rows_total"]))
    typer.echo(f"wrote {out / 'results.csv'} and {out / 'results.parquet'}")
    done = frame.attrs["volqa"]["rows_done"]
    total = frame.attrs["volqa"]["rows_total"]
    if done < total:
        _err(f"stopped after the first failed row (--fail-fast): {done} of {total} rows done; "
             "continue with:\n  " + shlex.join(resume_argv))
    if (frame["status"] != "ok").any():
        raise typer.Exit(1)


def _metric_columns(frame) -> list[str]:
    from .results import ALL_METRICS

    return [] if frame is None else [c for c in ALL_METRICS if c in frame.columns]


def _resume_argv(manifest: Path, out: Path, options) -> list[str]:
    argv = ["volqa", "score", str(manifest), "--out", str(out)]
    for flag, value, default in options:
        if value is None or value == default:
            continue
        argv += [flag] if isinstance(value, bool) else [flag, str(value)]
    return [*argv, "--resume"]


def _err(message: str) -> None:
    typer.echo(f"volqa: {message}", err=True)


def main() -> None:
    """Console-script entry point (``volqa``)."""
    app()


if __name__ == "__main__":
    main()
