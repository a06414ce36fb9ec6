"""Writing and reading the fit GIF, with its per-frame record.

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

import json
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import InputError, SettingsError
from ..io.atomic import atomic_write

__all__ = ["FINAL_HOLD_MS", "GIF_RECORD_KEY", "save_gif", "read_gif_record"]

#: The last frame of a GIF is shown at least this long, so the result can be seen.
FINAL_HOLD_MS = 1500
GIF_RECORD_KEY = "volqa_fit"


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
        Ends in ``.gif``; written atomically (:func:`volqa.io.atomic.atomic_write`).
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
        A path not ending in ``.gif``, no frames, ``duration_ms`` < 10, ``records`` of another
        length, or two consecutive identical frames (a GIF writer merges them, which would
        break the frame-record pairing).
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise SettingsError(f"{str(path)!r}: the demo writes a GIF; give a path ending in .gif")
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

    def write(tmp: Path) -> None:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=durations, loop=0, optimize=True, **info)

    atomic_write(path, write)
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
