"""Small JPEG previews of radiographs for galleries and the service (decoded through radlens.io)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from radlens.io import DecodeError, load_image

THUMB_SIZE = 256


def thumbnail_jpeg(pixels: np.ndarray, size: int = THUMB_SIZE, quality: int = 85) -> bytes:
    """`pixels`: radlens's (H, W) float image in [0, 1] (display convention already applied by the decoder)."""
    im = Image.fromarray(np.clip(np.asarray(pixels) * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail_of(path: str | Path, size: int = THUMB_SIZE) -> bytes | None:
    """A preview of a stored case, or None when its file is gone or no longer decodes."""
    try:
        return thumbnail_jpeg(load_image(path).pixels, size)
    except DecodeError:
        return None


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
