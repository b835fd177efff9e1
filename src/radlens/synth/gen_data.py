"""Training pairs for the image generator: a real NIH image and its conditioning (`radlens.synth.condition`).

Anatomy planes are the expert's masks (cached by `real_anatomy`). Finding planes come from ChestX-Det polygons where
an image has them, else from NIH boxes drawn as the ellipse inscribed in the box and kept inside the lungs (grown a
little, since effusion and pneumothorax boxes reach the lung edge): a box is where a finding is, not its shape, and
rectangles would teach the generator rectangles. Labels are the report labels of the manifest. The set is cached
per (split, size) as an .npz of uint8 arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy import ndimage

from radlens.synth.condition import ANATOMY, LABELS, PLANES, group_of, resize_planes
from radlens.synth.lesions import NIH_TO_FINDING
from radlens.synth.real_anatomy import CANVAS, _cache_dir, nih_anatomy, nih_frame


@dataclass
class PairSet:
    images: np.ndarray  # (N, S, S) uint8
    planes: np.ndarray  # (N, P, S, S) uint8 (0..255 = fraction of the pixel covered)
    labels: np.ndarray  # (N, len(LABELS)) uint8
    info: pd.DataFrame

    def __len__(self) -> int:
        return len(self.images)


def finding_planes(root: Path, info: pd.DataFrame, lungs: np.ndarray) -> np.ndarray:
    """(N, len(MASK_GROUPS), CANVAS, CANVAS) bool finding planes on the 512 canvas."""
    groups = PLANES[len(ANATOMY):]
    out = np.zeros((len(info), len(groups), CANVAS, CANVAS), bool)
    index = {p: i for i, p in enumerate(info.path)}
    has_polygon: set[tuple[str, str]] = set()
    for rec in json.loads((root / "chestxdet.json").read_text()):
        i = index.get(rec["path"])
        if i is None:
            continue
        for sym, poly in zip(rec["syms"], rec["polygons"]):
            g = group_of(sym)
            if g is None or len(poly) < 3:
                continue
            img = Image.new("1", (CANVAS, CANVAS), 0)
            ImageDraw.Draw(img).polygon([tuple(p) for p in poly], fill=1, outline=1)
            out[i, groups.index(g)] |= np.array(img, bool)
            has_polygon.add((rec["path"], sym))
    grown = {}
    for b in pd.read_csv(root / "bbox.csv").itertuples():
        i = index.get(b.path)
        finding = NIH_TO_FINDING.get(b.finding_label, b.finding_label)
        g = group_of(finding)
        if i is None or g is None or (b.path, finding) in has_polygon:
            continue
        if i not in grown:
            grown[i] = ndimage.binary_dilation(lungs[i], iterations=8)
        img = Image.new("1", (CANVAS, CANVAS), 0)
        ImageDraw.Draw(img).ellipse([b.x, b.y, b.x + b.w, b.y + b.h], fill=1, outline=1)
        out[i, groups.index(g)] |= np.array(img, bool) & grown[i]
    return out


def load_pairs(root: Path, size: int, splits: tuple[str, ...] = ("train",), limit: int | None = None) -> PairSet:
    from radlens.io import load_image

    key = hashlib.sha256(json.dumps([str(root.resolve()), size, list(splits), limit, PLANES, LABELS]).encode())
    cache = _cache_dir() / f"pairs-{key.hexdigest()[:16]}.npz"
    info = nih_frame(root, splits)
    info = (info if limit is None else info.head(limit)).assign(
        labels=lambda d: d.finding_labels.fillna("").str.split("|"))
    if cache.is_file():  # the expert masks (~1 GB unpacked for all of NIH) are only needed to build the cache
        z = np.load(cache, allow_pickle=False)
        return PairSet(z["images"], z["planes"], z["labels"], info)
    masks = nih_anatomy(root, splits).masks[:len(info)]
    from rich.progress import track

    fp = finding_planes(root, info, masks[:, 0] | masks[:, 1])
    images = np.zeros((len(info), size, size), np.uint8)
    planes = np.zeros((len(info), len(PLANES), size, size), np.uint8)
    labels = np.zeros((len(info), len(LABELS)), np.uint8)
    for i in track(range(len(info)), description=f"pairs at {size} px", transient=True):
        px = load_image(root / info.path[i]).pixels
        img = Image.fromarray(np.clip(px * 255 + 0.5, 0, 255).astype(np.uint8))
        images[i] = np.asarray(img.resize((size, size), Image.LANCZOS))
        full = np.concatenate([masks[i], fp[i]]).astype(np.float32)
        planes[i] = np.clip(resize_planes(full, size) * 255 + 0.5, 0, 255).astype(np.uint8)
        labs = set(info.labels[i])
        labels[i] = [1 if lab in labs else 0 for lab in LABELS]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=images, planes=planes, labels=labels)
    os.replace(tmp, cache)
    return PairSet(images, planes, labels, info)
