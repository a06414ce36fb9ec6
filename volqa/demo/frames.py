"""Frames of the fit GIF: a label band over a grid of captioned panels (fit and target).

Every frame is grayscale: the label band ("step N  SSIM 0.xxxx", white on black), then one
row of panels per image (the current fit, then the target), each panel with its caption
above it. In 3-D a row holds the middle axial, coronal and sagittal slices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["LABEL_HEIGHT", "CAPTION_HEIGHT", "PANEL_GAP", "GAP_GRAY", "frame_label",
           "render_label", "render_frame", "orthogonal_slices", "axial"]

#: Point size of Pillow's built-in font (Aileron) for labels and captions.
FONT_SIZE = 12
#: Height in pixels of the black label band at the top of every frame.
LABEL_HEIGHT = 18
#: Height in pixels of the caption strip above each row of panels.
CAPTION_HEIGHT = 16
#: Pixels between the panels of a row, and their gray value.
PANEL_GAP, GAP_GRAY = 4, 96
#: Tallest panel is scaled (nearest neighbour) to at least this many pixels.
MIN_PANEL_HEIGHT = 160


def axial(vol: np.ndarray) -> np.ndarray:
    """The middle axial slice of an (i, j, k) RAS volume, anterior up, patient's left on the
    left (neurological view)."""
    return np.flipud(vol[:, :, vol.shape[2] // 2].T)


def orthogonal_slices(vol: np.ndarray) -> list[np.ndarray]:
    """Middle axial, coronal and sagittal slices of an (i, j, k) RAS-ordered volume.

    Each comes as (rows, columns) for display with superior/anterior up: axial (j, i),
    coronal (k, i), sagittal (k, j), rows flipped so the largest index is at the top.
    """
    i, j, _ = (n // 2 for n in vol.shape)
    return [axial(vol), np.flipud(vol[:, j, :].T), np.flipud(vol[i, :, :].T)]


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


def _text_width(text: str) -> int:
    left, _, right, _ = _font().getbbox(text)
    return int(right - left) + 8


def _tile(p: np.ndarray, spacing: tuple[float, float], zoom: float, base: float,
          gray_levels: int) -> Image.Image:
    q = gray_levels - 1
    u8 = (np.round(np.clip(p, 0.0, 1.0) * q) * (255.0 / q)).round().astype(np.uint8)
    size = (max(1, round(p.shape[1] * zoom * spacing[1] / base)),
            max(1, round(p.shape[0] * zoom * spacing[0] / base)))
    return Image.fromarray(np.ascontiguousarray(u8), "L").resize(size, Image.NEAREST)


def render_frame(
    grid: Sequence[Sequence[np.ndarray]],
    spacings: Sequence[tuple[float, float]],
    step: int,
    ssim: float,
    *,
    captions: Sequence[Sequence[str]] | None = None,
    gray_levels: int = 32,
    zoom: float | None = None,
) -> Image.Image:
    """One grayscale frame: the label band above rows of captioned panels.

    Parameters
    ----------
    grid : rows of (rows, cols) arrays with values in [0, 1]
        Every row has one panel per column (e.g. the fit's and the target's slices).
    spacings : one (row, col) pixel spacing per column
        Panels are drawn with this aspect ratio (nearest-neighbour scaling).
    captions : rows of str, optional
        One caption per panel, drawn above it.
    gray_levels : int, default 32
        Image values are posterised to this many evenly spaced gray levels (smaller GIFs).
    zoom : float, optional
        Display pixels per smallest-spacing voxel; default: the smallest integer that makes the
        tallest panel at least :data:`MIN_PANEL_HEIGHT` pixels high.
    """
    base = min(min(s) for s in spacings)
    heights = [p.shape[0] * s[0] / base for row in grid for p, s in zip(row, spacings)]
    if zoom is None:
        zoom = max(1, math.ceil(MIN_PANEL_HEIGHT / max(heights)))
    tiles = [[_tile(p, s, zoom, base, gray_levels) for p, s in zip(row, spacings)]
             for row in grid]
    row_w = max(sum(t.width for t in row) + PANEL_GAP * (len(row) - 1) for row in tiles)
    width = max(row_w, _text_width(frame_label(step, ssim)))
    cap = CAPTION_HEIGHT if captions is not None else 0
    height = LABEL_HEIGHT + sum(cap + max(t.height for t in row) for row in tiles)
    frame = Image.new("L", (width, height), 0)
    frame.paste(render_label(step, ssim, width), (0, 0))
    draw = ImageDraw.Draw(frame)
    y = LABEL_HEIGHT
    for r, row in enumerate(tiles):
        x, top = 0, y + cap
        for c, t in enumerate(row):
            if c:
                frame.paste(GAP_GRAY, (x, top, x + PANEL_GAP, top + max(u.height for u in row)))
                x += PANEL_GAP
            if captions is not None:
                draw.text((x + 2, y + 1), captions[r][c], fill=200, font=_font())
            frame.paste(t, (x, top))
            x += t.width
        y = top + max(t.height for t in row)
    return frame
