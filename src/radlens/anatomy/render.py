"""Overlays for people: the radiograph with lung and heart outlines and the two CTR diameters drawn on it."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from radlens.anatomy.api import AnatomyMasks
from radlens.anatomy.measures import AnatomyMeasures

COLOURS = {"lung_right": (60, 200, 90), "lung_left": (70, 150, 255), "heart": (255, 70, 70)}
MAX_SIDE = 1024


def _edge(mask: np.ndarray, width: int) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask, iterations=width)


def overlay(pixels: np.ndarray, masks: AnatomyMasks, measures: AnatomyMeasures | None = None,
            max_side: int = MAX_SIDE, title: str | None = None) -> Image.Image:
    """RGB overlay: tinted structures with solid outlines, heart (red) and thorax (yellow) diameters, the CTR.

    Large inputs are drawn at `max_side` on their long side (masks are downsampled with the image)."""
    h, w = pixels.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    if scale < 1:
        base = base.resize(size, Image.BILINEAR)
    rgb = np.asarray(base.convert("RGB"), dtype=np.float32)
    lw = max(1, round(max(size) / 300))
    for name, colour in COLOURS.items():
        m = getattr(masks, name)
        if scale < 1:
            m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
        c = np.array(colour, np.float32)
        rgb[m] = 0.78 * rgb[m] + 0.22 * c
        rgb[_edge(m, lw)] = c
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if measures is not None:
        s = scale
        if measures.thorax_row is not None:
            y = measures.thorax_row * s
            draw.line([(measures.thorax_x0 * s, y), (measures.thorax_x1 * s, y)], fill=(255, 220, 0), width=lw)
        if measures.heart_row is not None:
            y = measures.heart_row * s
            draw.line([(measures.heart_x0 * s, y), (measures.heart_x1 * s, y)], fill=(255, 70, 70), width=lw)
        text = f"CTR {measures.ctr:.2f}" if math.isfinite(measures.ctr) else "CTR n/a"
        if math.isfinite(measures.lr_area_ratio):
            text += f"  R/L {measures.lr_area_ratio:.2f}"
        if title:
            text = f"{title}  {text}"
        if measures.flags:
            text += "  ! " + "; ".join(measures.flags)
        draw.rectangle([0, 0, min(size[0], 8 + 6 * len(text)), 14], fill=(0, 0, 0))
        draw.text((4, 2), text, fill=(255, 255, 255))
    return img
