"""Real anatomy the mask prior learns from: expert (radlens-anatomy) masks on NIH images, human lung masks.

Masks are placed on the synthesis canvas (square, `CANVAS` px): NIH images are already 512x512; the lung-masks
images (long side 512, e.g. 512x419) are padded to a square around their centre so their aspect is kept. The
expert's masks for a set of images are cached (bit-packed .npz keyed by the model id and the image list) because
fitting the prior and evaluating it both need them and segmentation is the slow step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from radlens.anatomy.data import nih_frame
from radlens.io.splits import load_split

log = logging.getLogger(__name__)
CANVAS = 512


@dataclass
class AnatomySet:
    """Masks (N, 3, C, C) bool in lung_right, lung_left, heart order, with one row of facts per image."""

    masks: np.ndarray
    info: pd.DataFrame  # path, patient_id, split, sex, age, view, labels, source, flags


def _cache_dir() -> Path:
    return Path(os.environ.get("RADLENS_CACHE", Path.home() / ".cache" / "radlens")) / "synth"


def pad_square(a: np.ndarray, size: int = CANVAS) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Centre `a` (H, W) on a square canvas of its long side, then resize to `size`. Returns the canvas and the
    (scale, x offset, y offset) that map original pixel (x, y) to canvas (x*s + ox, y*s + oy)."""
    h, w = a.shape
    side = max(h, w)
    oy, ox = (side - h) // 2, (side - w) // 2
    sq = np.zeros((side, side), a.dtype)
    sq[oy:oy + h, ox:ox + w] = a
    s = size / side
    if side != size:
        mode = Image.NEAREST if a.dtype == bool or a.dtype == np.uint8 and a.max() <= 1 else Image.BILINEAR
        sq = np.asarray(Image.fromarray(sq.astype(np.uint8) if a.dtype == bool else sq).resize((size, size), mode))
        sq = sq.astype(a.dtype)
    return sq, (s, ox * s, oy * s)


def expert_masks(root: Path, paths: list[str], *, batch_size: int = 16) -> tuple[np.ndarray, list[str]]:
    """Expert masks (N, 3, CANVAS, CANVAS) for images under `root` and each image's notes (flags), cached."""
    from radlens.anatomy import api as anatomy

    model = anatomy.load()
    key = hashlib.sha256(json.dumps([model.model_id, str(root.resolve()), paths]).encode()).hexdigest()[:16]
    cache = _cache_dir() / f"expert-{key}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        n = len(paths)
        masks = np.unpackbits(z["bits"], count=n * 3 * CANVAS * CANVAS).reshape(n, 3, CANVAS, CANVAS).astype(bool)
        return masks, [str(s) for s in z["notes"]]
    from rich.progress import track

    masks = np.zeros((len(paths), 3, CANVAS, CANVAS), bool)
    notes: list[str] = []
    for i in track(range(0, len(paths), batch_size), description="expert anatomy", transient=True):
        chunk = paths[i:i + batch_size]
        for j, m in enumerate(model.segment([str(root / p) for p in chunk], batch_size)):
            arr = m.array().astype(bool)
            if arr.shape[1:] != (CANVAS, CANVAS):
                arr = np.stack([pad_square(a)[0] for a in arr])
            masks[i + j] = arr
            notes.append("; ".join(m.notes))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, bits=np.packbits(masks.ravel()), notes=np.array(notes, dtype=str))
    os.replace(tmp, cache)
    return masks, notes


def nih_anatomy(root: Path, splits: tuple[str, ...]) -> AnatomySet:
    """Expert masks on NIH images of `splits` with the manifest's facts."""
    man = nih_frame(root, ("train", "val", "eval"))  # one cache for every split
    masks, notes = expert_masks(root, list(man.path))
    info = man.assign(source="nih-expert", notes=notes, labels=man.finding_labels.fillna("").str.split("|"))
    keep = info.split.isin(splits).to_numpy()
    return AnatomySet(masks[keep], info[keep].reset_index(drop=True))


def lung_mask_anatomy(root: Path, splits: tuple[str, ...] = ("train",)) -> AnatomySet:
    """Human lung masks (right = image left half's component) with the expert's heart, on the canvas."""
    from radlens.anatomy.postprocess import split_lungs

    man = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
    sp = load_split("lung-masks")
    man = man.merge(sp[["path", "split"]], on="path", how="left")
    heart, notes = expert_masks(root, list(man.path))  # one cache for every split
    keep = man.split.isin(splits).to_numpy()
    man, heart, notes = man[keep].reset_index(drop=True), heart[keep], [n for n, k in zip(notes, keep) if k]
    out = np.zeros((len(man), 3, CANVAS, CANVAS), bool)
    for i, m in enumerate(man["mask"]):
        lungs = np.asarray(Image.open(root / m).convert("L")) == 255
        sq, _ = pad_square(lungs)
        right, left, _ = split_lungs(sq)
        out[i, 0], out[i, 1], out[i, 2] = right, left, heart[i, 2]
    view = man.view.fillna("").str.split().str[0]
    info = man.assign(source="lung-masks-human", notes=notes, view=view, labels=[[] for _ in range(len(man))],
                      age=pd.to_numeric(man.age, errors="coerce"))
    return AnatomySet(out, info)
