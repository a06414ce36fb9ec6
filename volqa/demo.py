"""SSIM as a training loss, shown: fit uniform noise to a target image or volume.

The classic pytorch-ssim demonstration, in 2-D and 3-D on top of :class:`volqa.SSIMLoss`:
start from seeded uniform noise, maximise SSIM against the target with Adam, keep every k-th
step as a frame labelled "step N  SSIM 0.xxxx", and write the frames as an animated GIF.

:func:`fit` is a pure function (arrays in, a :class:`FitResult` out); :func:`load_target`
reads a target file; :func:`save_gif` and :func:`read_gif_record` write and read the GIF;
``demo_app`` is the Typer sub-app behind ``volqa demo fit`` and ``scripts/ssim_fit_demo.py``.

How a GIF records its frames
----------------------------
Frames are kept in a Python list in step order and written in that order (no files, no
file-name sorting). Each GIF carries two independent records of what each frame is:

- the label drawn on the frame: grayscale frames are stored losslessly in a GIF (8-bit gray
  palette), so a reader can decode frame ``i`` with Pillow and compare its label band
  pixel-for-pixel with ``render_label(step_i, ssim_i, width)`` — an OCR-free check that the
  drawn text matches the record;
- a GIF comment extension (standard GIF89a, read by Pillow as ``info["comment"]``) holding
  JSON ``{"volqa_fit": {"frames": [[step, ssim], ...], ...}}``, one pair per frame in frame
  order; :func:`read_gif_record` returns it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Union

import numpy as np
import torch
import typer
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError, SettingsError, VolqaError
from .losses import SSIMLoss

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Bundled example ground truth (a 64 × 64 × 48 head phantom, RAS+, spacing 1 × 1 × 1.5 mm).
#: Present in a source checkout; a wheel does not ship ``data/``.
DEFAULT_TARGET = Path(__file__).resolve().parent.parent / "data" / "example" / "phantom_gt.nii.gz"
#: File suffixes read with Pillow as 2-D images (converted to 8-bit grayscale).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: SSIM window used by the demo (volqa's defaults: Gaussian, σ 1.5, valid border).
WIN_SIZE = 11
#: Point size of Pillow's built-in font (Aileron) for frame labels.
FONT_SIZE = 12
#: Height in pixels of the black label band at the top of every frame.
LABEL_HEIGHT = 18
#: Pixels between the three panels of a 3-D frame, and their gray value.
PANEL_GAP, GAP_GRAY = 4, 96
#: Tallest panel is scaled (nearest neighbour) to at least this many pixels.
MIN_PANEL_HEIGHT = 160
#: The last frame of a GIF is shown at least this long, so the result can be seen.
FINAL_HOLD_MS = 1500
GIF_RECORD_KEY = "volqa_fit"


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    steps : int
        Adam updates made (0 if the noise already met the threshold).
    final_ssim : float
        SSIM of the final estimate against the scaled target.
    reached : bool
        ``final_ssim >= threshold``.
    threshold : float
    history : list of (int, float)
        (step, SSIM) for every step 0..steps; step 0 is the starting noise.
    frames : list of PIL.Image.Image
        Grayscale ("L") frames in step order.
    frame_history : list of (int, float)
        (step, SSIM) of each frame, same length and order as ``frames``.
    estimate : ndarray, float32
        The final estimate (target's shape, values in [0, 1]); its SSIM is ``final_ssim``.
    seconds : float
        Wall time of the optimisation loop, frame drawing included.
    device : str
    """

    steps: int
    final_ssim: float
    reached: bool
    threshold: float
    history: list[tuple[int, float]] = field(repr=False)
    frames: list[Image.Image] = field(repr=False)
    frame_history: list[tuple[int, float]] = field(repr=False)
    estimate: np.ndarray = field(repr=False)
    seconds: float = 0.0
    device: str = "cpu"


@dataclass(frozen=True)
class Target:
    """A target read by :func:`load_target`.

    ``array`` is float32, (H, W) for 2-D or (i, j, k) in RAS voxel order for 3-D; ``spacing``
    gives one value per axis (mm; 1 for image files); ``description`` says where it came from.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    description: str


# --------------------------------------------------------------------------- targets


def load_target(path: str | os.PathLike[str] | None = None, *, dims: int) -> Target:
    """Read a fit target: a 2-D image, or a volume (its middle axial slice when ``dims=2``).

    Parameters
    ----------
    path : path, optional
        PNG/JPEG/... (:data:`IMAGE_SUFFIXES`, read with Pillow and converted to grayscale) or
        any volume :func:`volqa.read_volume` reads (NIfTI, MHA/NRRD, DICOM folder). Default:
        :data:`DEFAULT_TARGET`.
    dims : {2, 3}

    Returns
    -------
    Target
        Volumes are reoriented to the closest RAS voxel order (``nibabel.orientations``), so
        the 2-D slice is the middle axial slice shown with anterior up and the patient's left
        on the left (neurological view). Intensities are unchanged: :func:`fit` scales them.

    Raises
    ------
    SettingsError
        ``dims`` not 2 or 3.
    InputError
        Unreadable file, a 2-D image with ``dims=3``, the bundled example missing.
    """
    _check_dims(dims)
    if path is None:
        if not DEFAULT_TARGET.is_file():
            raise InputError(f"the bundled example target {DEFAULT_TARGET} is missing (volqa "
                             "was installed without its source tree's data/); pass a target "
                             "path (--target)")
        path = DEFAULT_TARGET
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        if dims == 3:
            raise InputError(f"{p}: a 2-D image cannot be a 3-D target; use --dims 2 or give a "
                             "volume (NIfTI, MHA/NRRD, DICOM folder)")
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("L"), dtype=np.float32)
        except (OSError, ValueError) as e:  # missing, unreadable, not an image
            raise InputError(f"{p}: cannot read it as an image ({e})") from None
        return Target(arr, (1.0, 1.0), f"{p} (image {arr.shape[0]}x{arr.shape[1]})")

    from nibabel.orientations import apply_orientation, io_orientation

    from .io import read_volume

    vol = read_volume(p)
    ornt = io_orientation(vol.affine)
    arr = np.ascontiguousarray(apply_orientation(vol.array, ornt), dtype=np.float32)
    spacing = tuple(float(vol.spacing[int(a)]) for a in ornt[:, 0])
    if dims == 3:
        return Target(arr, spacing, f"{p} (volume {'x'.join(map(str, arr.shape))}, RAS)")
    k = arr.shape[2] // 2
    return Target(_axial(arr), (spacing[1], spacing[0]),
                  f"{p} (axial slice {k} of {'x'.join(map(str, arr.shape))})")


def _axial(vol: np.ndarray) -> np.ndarray:
    return np.flipud(vol[:, :, vol.shape[2] // 2].T)


def orthogonal_slices(vol: np.ndarray) -> list[np.ndarray]:
    """Middle axial, coronal and sagittal slices of an (i, j, k) RAS-ordered volume.

    Each comes as (rows, columns) for display with superior/anterior up: axial (j, i),
    coronal (k, i), sagittal (k, j), rows flipped so the largest index is at the top.
    """
    i, j, _ = (n // 2 for n in vol.shape)
    return [_axial(vol), np.flipud(vol[:, j, :].T), np.flipud(vol[i, :, :].T)]


# --------------------------------------------------------------------------- frames


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(FONT_SIZE)  # Aileron, embedded in Pillow (FreeType)
    except ImportError:  # Pillow built without FreeType: its bitmap font
        return ImageFont.load_default()


def frame_label(step: int, ssim: float) -> str:
    """The text drawn on a frame, e.g. ``"step 40  SSIM 0.8123"``."""
    return f"step {step}  SSIM {ssim:.4f}"


def render_label(step: int, ssim: float, width: int) -> Image.Image:
    """The label band of a frame: ``frame_label`` in white on black, ``width`` × LABEL_HEIGHT.

    Deterministic for a given Pillow build, so a decoded frame's band can be compared with it
    pixel for pixel.
    """
    band = Image.new("L", (width, LABEL_HEIGHT), 0)
    ImageDraw.Draw(band).text((4, 2), frame_label(step, ssim), fill=255, font=_font())
    return band


def _label_width(step: int, ssim: float) -> int:
    left, _, right, _ = _font().getbbox(frame_label(step, ssim))
    return int(right - left) + 8


def render_frame(
    panels: Sequence[np.ndarray],
    spacings: Sequence[tuple[float, float]],
    step: int,
    ssim: float,
    *,
    gray_levels: int = 32,
    zoom: float | None = None,
) -> Image.Image:
    """One grayscale frame: the label band above the panels placed side by side.

    Parameters
    ----------
    panels : sequence of (rows, cols) arrays with values in [0, 1]
    spacings : sequence of (row, col) pixel spacings, one per panel
        Panels are drawn with this aspect ratio (nearest-neighbour scaling).
    gray_levels : int, default 32
        Image values are posterised to this many evenly spaced gray levels (smaller GIFs).
    zoom : float, optional
        Display pixels per smallest-spacing voxel; default: the smallest integer that makes the
        tallest panel at least :data:`MIN_PANEL_HEIGHT` pixels high.
    """
    base = min(min(s) for s in spacings)
    heights = [p.shape[0] * s[0] / base for p, s in zip(panels, spacings)]
    if zoom is None:
        zoom = max(1, math.ceil(MIN_PANEL_HEIGHT / max(heights)))
    q = gray_levels - 1
    tiles = []
    for p, (sr, sc) in zip(panels, spacings):
        u8 = (np.round(np.clip(p, 0.0, 1.0) * q) * (255.0 / q)).round().astype(np.uint8)
        size = (max(1, round(p.shape[1] * zoom * sc / base)),
                max(1, round(p.shape[0] * zoom * sr / base)))
        tiles.append(Image.fromarray(np.ascontiguousarray(u8), "L").resize(size, Image.NEAREST))
    strip_w = sum(t.width for t in tiles) + PANEL_GAP * (len(tiles) - 1)
    width = max(strip_w, _label_width(step, ssim))
    frame = Image.new("L", (width, LABEL_HEIGHT + max(t.height for t in tiles)), 0)
    frame.paste(render_label(step, ssim, width), (0, 0))
    x = 0
    for n, t in enumerate(tiles):
        if n:
            frame.paste(GAP_GRAY, (x, LABEL_HEIGHT, x + PANEL_GAP, frame.height))
            x += PANEL_GAP
        frame.paste(t, (x, LABEL_HEIGHT))
        x += t.width
    return frame


# --------------------------------------------------------------------------- the fit


def _check_dims(dims: int) -> None:
    if dims not in (2, 3):
        raise SettingsError(f"dims must be 2 or 3, got {dims!r}")


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingsError(f"unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:0'"
                            ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device {device!r} asked for, but this torch sees no CUDA device; "
                            "use --device cpu")
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise SettingsError(f"device {device!r} cannot be used ({e}); use --device cpu"
                            ) from None
    return dev


def fit(
    target: ArrayLike,
    *,
    dims: int,
    threshold: float = 0.95,
    lr: float = 0.01,
    max_steps: int = 1000,
    every: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_range: float | None = None,
    spacing: Sequence[float] | None = None,
    gray_levels: int = 32,
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Fit seeded uniform noise to ``target`` by maximising SSIM with Adam.

    Parameters
    ----------
    target : (H, W) or (i, j, k) array or tensor
        Finite values, not constant. Min–max scaled to [0, 1] before fitting. 3-D frames read
        the axes as RAS voxel order (see :func:`orthogonal_slices`); any order fits the same.
    dims : {2, 3}
        Must equal ``target.ndim``. Every axis needs at least 11 voxels (the SSIM window).
    threshold : float, default 0.95
        Stop once SSIM >= threshold (SSIM lies in [-1, 1]).
    lr : float, default 0.01
        Adam learning rate (other Adam settings: torch defaults).
    max_steps : int, default 1000
        Most Adam updates; reaching it without the threshold is a result, not an error.
    every : int, default 5
        Frame stride: steps 0, every, 2·every, ... become frames, and so does the final step.
    seed : int, default 0
        Seeds the ``torch.Generator`` (CPU) that draws the start, so it is the same on every
        device.
    device : str or torch.device, default "cpu"
    data_range : float, optional
        L of SSIM's constants; default 1.0, the range of the scaled target.
    spacing : sequence of float, optional
        Voxel spacing per axis, used only to draw panels with the true aspect ratio.
    gray_levels : int, default 32
        Gray levels of the frames' image part (fewer make smaller GIFs).
    callback : callable(step, ssim), optional
        Called after every step's SSIM is known (progress bars).

    Returns
    -------
    FitResult

    Raises
    ------
    SettingsError
        Bad ``dims``, ``threshold``, ``lr``, ``max_steps``, ``every``, ``gray_levels`` or device.
    InputError
        Target of the wrong rank, too small for the window, non-finite or constant.

    Notes
    -----
    The loss is ``volqa.SSIMLoss(dims, data_range=L)``: Gaussian window 11, σ 1.5, population
    covariance, K1 0.01, K2 0.03, "valid" border. The estimate is a raw tensor (as in the
    pytorch-ssim demo) projected back onto [0, 1] after every Adam update (``clamp_``), so
    every frame shows exactly the image that was scored. Under the "valid" border, voxels
    within 5 of the edge fall inside few windows and converge last; a 1–2 voxel rim can stay
    noisy when the threshold is met. Step ``t`` in ``history`` is the SSIM of the estimate
    after ``t`` updates, computed in the forward pass whose gradient makes update ``t + 1``.
    """
    _check_dims(dims)
    if not (-1.0 <= threshold <= 1.0):
        raise SettingsError(f"threshold must lie in [-1, 1] (the range of SSIM), got {threshold}")
    if not (lr > 0 and math.isfinite(lr)):
        raise SettingsError(f"lr must be > 0 and finite, got {lr}")
    if int(max_steps) != max_steps or max_steps < 0:
        raise SettingsError(f"max_steps must be an integer >= 0, got {max_steps}")
    if int(every) != every or every < 1:
        raise SettingsError(f"every must be an integer >= 1, got {every}")
    if not (2 <= gray_levels <= 256):
        raise SettingsError(f"gray_levels must lie in 2..256, got {gray_levels}")
    dev = _device(device)

    t = (target if isinstance(target, torch.Tensor)
         else torch.from_numpy(np.ascontiguousarray(target)))
    t = t.detach().to("cpu", torch.float32)
    if t.ndim != dims:
        raise InputError(f"dims={dims} needs a {dims}-D target, got shape {tuple(t.shape)}; "
                         "for a volume's middle slice use load_target(..., dims=2)")
    if min(t.shape) < WIN_SIZE:
        raise InputError(f"target shape {tuple(t.shape)} is too small: every axis needs at "
                         f"least {WIN_SIZE} voxels (the SSIM window)")
    if not bool(torch.isfinite(t).all()):
        raise InputError("target holds NaN or Inf values")
    lo, hi = float(t.min()), float(t.max())
    if not hi > lo:
        raise InputError(f"target is constant ({lo}); SSIM against it cannot be maximised")
    t = (t - lo) / (hi - lo)
    L = 1.0 if data_range is None else data_range
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * dims
    if len(sp) != dims or not all(s > 0 for s in sp):
        raise SettingsError(f"spacing needs {dims} positive values, got {spacing!r}")
    pan_sp = [sp] if dims == 2 else [(sp[1], sp[0]), (sp[2], sp[0]), (sp[2], sp[1])]

    def draw(x: torch.Tensor, step: int, value: float) -> Image.Image:
        a = x.detach().to("cpu", torch.float32).numpy()
        panels = [a] if dims == 2 else orthogonal_slices(a)
        return render_frame(panels, pan_sp, step, value, gray_levels=gray_levels)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    x = torch.rand(t.shape, generator=gen, dtype=torch.float32).to(dev).requires_grad_(True)
    tgt = t.to(dev)[None, None]
    loss_fn = SSIMLoss(dims, data_range=L)
    opt = torch.optim.Adam([x], lr=lr)
    history: list[tuple[int, float]] = []
    frames: list[Image.Image] = []
    frame_history: list[tuple[int, float]] = []
    start = time.perf_counter()
    step = 0
    while True:
        loss = loss_fn(x[None, None], tgt)
        value = 1.0 - float(loss.detach())
        history.append((step, value))
        done = value >= threshold or step >= max_steps
        if step % every == 0 or done:
            frames.append(draw(x, step, value))
            frame_history.append((step, value))
        if callback is not None:
            callback(step, value)
        if done:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        step += 1
    estimate = x.detach().to("cpu", torch.float32).numpy()  # waits for the device
    seconds = time.perf_counter() - start
    return FitResult(steps=step, final_ssim=value, reached=value >= threshold,
                     threshold=threshold, history=history, frames=frames,
                     frame_history=frame_history, estimate=estimate, seconds=seconds,
                     device=str(dev))


# --------------------------------------------------------------------------- the GIF


def save_gif(
    frames: Sequence[Image.Image],
    path: str | os.PathLike[str],
    duration_ms: int = 100,
    *,
    records: Sequence[tuple[int, float]] | None = None,
) -> Path:
    """Write ``frames`` as a looping animated GIF, in the order given.

    Parameters
    ----------
    frames : sequence of PIL images
        Written in list order. Grayscale ("L") frames are stored losslessly.
    path : path
        Written atomically (temporary file + ``os.replace``) in GIF format, whatever the suffix.
    duration_ms : int, default 100
        Display time of each frame; the last frame is held at least :data:`FINAL_HOLD_MS`.
    records : sequence of (step, ssim), optional
        One per frame (e.g. ``FitResult.frame_history``); stored as JSON in the GIF comment
        (see :func:`read_gif_record`).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    SettingsError
        No frames, ``duration_ms`` < 10, ``records`` of another length, or two consecutive
        identical frames (a GIF writer merges them, which would break the frame-record pairing).
    """
    frames = list(frames)
    if not frames:
        raise SettingsError("save_gif needs at least one frame")
    if duration_ms < 10:
        raise SettingsError(f"duration_ms must be >= 10 (GIF delays are in 1/100 s), got "
                            f"{duration_ms}")
    if records is not None and len(records) != len(frames):
        raise SettingsError(f"records has {len(records)} entries for {len(frames)} frames")
    for n in range(1, len(frames)):
        a, b = frames[n - 1], frames[n]
        if a.size == b.size and a.mode == b.mode and a.tobytes() == b.tobytes():
            raise SettingsError(f"frames {n - 1} and {n} are identical; a GIF writer merges "
                                "them into one, so frame records would no longer line up")
    durations = [int(duration_ms)] * len(frames)
    durations[-1] = max(int(duration_ms), FINAL_HOLD_MS)
    info: dict = {}
    if records is not None:
        payload = {GIF_RECORD_KEY: {"frames": [[int(s), round(float(v), 6)] for s, v in records],
                                    "label": "step N  SSIM 0.xxxx"}}
        info["comment"] = json.dumps(payload, separators=(",", ":"))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
    try:
        with open(tmp, "wb") as f:  # usual permissions (umask), unlike mkstemp's 0600
            frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                           duration=durations, loop=0, optimize=True, **info)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_gif_record(path: str | os.PathLike[str]) -> list[tuple[int, float]]:
    """The per-frame (step, SSIM) record that :func:`save_gif` stored in a GIF's comment.

    Raises
    ------
    InputError
        The file holds no volqa record.
    """
    with Image.open(path) as im:
        comment = im.info.get("comment", b"")
    try:
        data = json.loads(comment)[GIF_RECORD_KEY]["frames"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: no volqa fit record in the GIF comment") from None
    return [(int(s), float(v)) for s, v in data]


# --------------------------------------------------------------------------- CLI


demo_app = typer.Typer(
    help="Demonstrations: SSIM as a training loss.",
    no_args_is_help=True,
    add_completion=False,
)


@demo_app.callback()
def _demo() -> None:
    """Demonstrations: SSIM as a training loss."""


class Dims(str, Enum):
    two = "2"
    three = "3"


@demo_app.command("fit")
def fit_command(
    out: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False,
        help="GIF to write (default: ssim_fit_2d.gif or ssim_fit_3d.gif)")] = None,
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

    n = int(dims.value)
    out = out if out is not None else Path(f"ssim_fit_{n}d.gif")
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
