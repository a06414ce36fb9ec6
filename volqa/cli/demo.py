"""``volqa demo fit``: fit uniform noise to a target by maximising SSIM, saved as a GIF.

The demo library (:mod:`volqa.demo`, which needs Pillow) is imported inside the command.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

demo_app = typer.Typer(
    help="Demonstrations: SSIM as a training loss.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@demo_app.callback()
def _demo() -> None:
    """Demonstrations: SSIM as a training loss."""


class Dims(str, Enum):
    two = "2"
    three = "3"


def check_out(out: Path) -> None:
    """Refuse an output the fit could not be saved to, before the fit starts."""
    if out.suffix.lower() != ".gif":
        raise typer.BadParameter(f"{str(out)!r}: the demo writes an animated GIF; give a path "
                                 "ending in .gif", param_hint="'--out'")
    folder = out.parent
    if not folder.is_dir():
        raise typer.BadParameter(f"{str(folder)!r} is not a folder; create it first",
                                 param_hint="'--out'")
    if not os.access(folder, os.W_OK):
        raise typer.BadParameter(f"{str(folder)!r} is not writable", param_hint="'--out'")


@demo_app.command("fit")
def fit_command(
    out: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False,
        help="GIF to write, ending in .gif (default: ssim_fit_2d.gif or ssim_fit_3d.gif)")]
        = None,
    target: Annotated[Path | None, typer.Option(
        "--target", exists=True,
        help="Target: PNG/JPEG image (2-D), or NIfTI/MHA/NRRD/DICOM folder (its middle axial "
             "slice for --dims 2); default: the bundled example ground truth")] = None,
    dims: Annotated[Dims, typer.Option(help="2: fit an image; 3: fit a volume")] = Dims.two,
    threshold: Annotated[float, typer.Option(
        min=-1.0, max=1.0, help="Stop once SSIM reaches this")] = 0.95,
    lr: Annotated[float, typer.Option(help="Adam learning rate (> 0)")] = 0.01,
    max_steps: Annotated[int, typer.Option(min=0, help="Most Adam steps")] = 1000,
    every: Annotated[int, typer.Option(
        min=1, help="Frame stride: every K-th step is a frame (plus the first and last)")] = 5,
    duration: Annotated[int, typer.Option(
        min=10, help="Milliseconds per frame (the last is held longer)")] = 100,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu, cuda, cuda:1")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the starting noise")] = 0,
) -> None:
    """Fit uniform noise to a target by maximising SSIM (Adam) and save the steps as a GIF.

    Exit status: 0 when the GIF was written (also when the threshold was not reached),
    2 for an unusable target, option or output path.
    """
    from tqdm import tqdm

    from ..demo import fit, load_target, save_gif
    from ..errors import VolqaError

    n = int(dims.value)
    out = out if out is not None else Path(f"ssim_fit_{n}d.gif")
    check_out(out)
    try:
        tgt = load_target(target, dims=n)
        with tqdm(total=max_steps, desc="fit", unit="step", leave=False, disable=None) as bar:
            def progress(step: int, value: float) -> None:
                if step:
                    bar.update(1)
                bar.set_postfix_str(f"SSIM {value:.4f}", refresh=False)

            res = fit(tgt.array, dims=n, threshold=threshold, lr=lr, max_steps=max_steps,
                      every=every, seed=seed, device=device, spacing=tgt.spacing,
                      callback=progress)
        save_gif(res.frames, out, duration, records=res.frame_history)
    except (VolqaError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"target: {tgt.description}")
    if res.reached:
        typer.echo(f"reached SSIM {res.final_ssim:.4f} >= {threshold} after {res.steps} steps "
                   f"({res.seconds:.2f} s on {res.device})")
    else:
        typer.echo(f"threshold {threshold} not reached: SSIM {res.final_ssim:.4f} after "
                   f"{res.steps} steps ({res.seconds:.2f} s on {res.device}); raise --max-steps "
                   "or --lr")
    size = out.stat().st_size
    typer.echo(f"wrote {out}: {len(res.frames)} frames, {size / 1024:.1f} KiB")
