"""The noise-to-image demo: SSIM as a training loss (``volqa demo fit``).

Imported only by its command and by users who want it; ``import volqa`` does not load it (it
needs Pillow).
"""

from __future__ import annotations

from .fit import WIN_SIZE, FitResult, fit
from .frames import LABEL_HEIGHT, frame_label, orthogonal_slices, render_frame, render_label
from .gif import FINAL_HOLD_MS, read_gif_record, save_gif
from .targets import DEFAULT_TARGET, IMAGE_SUFFIXES, Target, load_target

__all__ = [
    "DEFAULT_TARGET",
    "IMAGE_SUFFIXES",
    "FINAL_HOLD_MS",
    "LABEL_HEIGHT",
    "WIN_SIZE",
    "FitResult",
    "Target",
    "fit",
    "frame_label",
    "load_target",
    "orthogonal_slices",
    "read_gif_record",
    "render_frame",
    "render_label",
    "save_gif",
]
