"""Shared machinery for published encoders: their authors' preprocessing, weight-file checks, digests.

Why Pillow on 8-bit images: every published chest X-ray encoder was trained on images its own
processor read as 8-bit PIL images (Hugging Face image processors, open_clip/torchvision transforms)
and resized with a PIL filter. Reproducing that chain exactly — quantise to uint8, replicate to RGB,
the same resize rule and filter, centre crop, rescale, normalise — is what makes radlens's input
numerically match the upstream processor's (tests check it against the upstream library). All of
it is recorded in the PreprocessSpec (`extra` carries the family's knobs), so it is hashed.

A family's spec: `size` = final square side, `resize`/`interpolation` name the rule, `mean`/`std`
per channel, `channels` = 3 for RGB models, and `extra` e.g. {"pipeline": "pil-uint8", "mode": "RGB",
"resize_to": "shortest_edge", "resize_size": 518, "crop": 518, "rescale": 1/255, "resample": "bicubic"}.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from radlens.encoders.base import PreprocessSpec

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


class MissingWeightsError(FileNotFoundError):
    """A published encoder's local weights folder is missing or incomplete."""


def require_files(family: str, folder: Path | None, expected: Iterable[str], where: str,
                  any_of: Iterable[Iterable[str]] = ()) -> Path:
    """Fail with a message naming the files wanted and where to get them. radlens never downloads
    weights on its own; `expected` are names relative to the folder, `any_of` groups of which one must exist."""
    expected, any_of = list(expected), [list(g) for g in any_of]
    wanted = ", ".join(expected + [" or ".join(g) for g in any_of])
    if folder is None:
        raise MissingWeightsError(f"{family}: no weights given. Pass --weights PATH (a local folder with {wanted}). "
                                  f"Get them from {where}")
    folder = Path(folder)
    if not folder.exists():
        raise MissingWeightsError(f"{family}: weights folder {folder} does not exist (expected {wanted}). "
                                  f"Get them from {where}")
    missing = [f for f in expected if not (folder / f).exists()]
    missing += [" or ".join(g) for g in any_of if not any((folder / f).exists() for f in g)]
    if missing:
        raise MissingWeightsError(f"{family}: {folder} lacks {', '.join(missing)} (expected {wanted}). "
                                  f"Get them from {where}")
    return folder


def files_digest(paths: Iterable[Path], length: int = 12) -> str:
    """Content digest of weight files (sorted by name), for encoder ids: same bytes, same id.

    Hashing a multi-GB checkpoint takes seconds, so each file's sha256 is cached by (absolute path, size,
    mtime) in the user's cache folder; a file that changes in place gets a new size or mtime, so a new hash.
    """
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode())
        h.update(_file_sha256(p).encode())
    return h.hexdigest()[:length]


def _digest_cache_path() -> Path:
    root = os.environ.get("RADLENS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                           os.path.expanduser("~/.cache"), "radlens")
    return Path(root) / "file-digests.json"


def _file_sha256(p: Path) -> str:
    st = p.stat()
    key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_path = _digest_cache_path()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    d = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            d.update(block)
    cache[key] = d.hexdigest()
    try:  # best effort: a read-only home only costs the re-hash next time
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dict(list(cache.items())[-2000:])))
        os.replace(tmp, cache_path)
    except OSError:
        pass
    return cache[key]


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """radlens's float [0, 1] image → the 8-bit image an upstream processor would have read."""
    return np.clip(np.asarray(pixels, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def pil_image(pixels: np.ndarray, mode: str = "RGB") -> Image.Image:
    im = Image.fromarray(to_uint8(pixels), mode="L")
    return im.convert(mode) if mode != "L" else im


def _target_size(w: int, h: int, extra: dict[str, Any], size: int) -> tuple[int, int]:
    rule = extra.get("resize_to", "square")
    n = int(extra.get("resize_size", size))
    if rule == "square":
        return n, n
    if rule == "shortest_edge":  # the shorter side becomes n, aspect kept (HF and torchvision rounding: int())
        if w <= h:
            return n, int(n * h / w)
        return int(n * w / h), n
    raise ValueError(f"unknown resize rule {rule!r}")


def pil_preprocess(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply a 'pil-uint8' spec to one decoded radiograph; returns (C, size, size) float32."""
    extra = spec.extra
    if extra.get("pipeline") != "pil-uint8":
        raise ValueError(f"spec is not a pil-uint8 pipeline: {extra}")
    im = pil_image(pixels, extra.get("mode", "RGB"))
    tw, th = _target_size(im.width, im.height, extra, spec.size)
    if (tw, th) != im.size:
        im = im.resize((tw, th), RESAMPLE[extra.get("resample", "bicubic")])
    crop = extra.get("crop")
    if crop:
        c = int(crop)
        if extra.get("crop_offset", "round") == "floor":  # Hugging Face image processors: (h - crop) // 2
            left, top = (im.width - c) // 2, (im.height - c) // 2
        else:  # torchvision / open_clip CenterCrop: round((h - crop) / 2)
            left, top = int(round((im.width - c) / 2.0)), int(round((im.height - c) / 2.0))
        im = im.crop((left, top, left + c, top + c))
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr * float(extra.get("rescale", 1 / 255))
    arr = (arr - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
