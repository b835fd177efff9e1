"""Training data for the anatomy model: human lung masks, weak heart labels, and augmentation.

Every training image is held in memory at the model's resolution with five target planes:

    0 lung target   1 lung weight   2 heart target   3 heart weight   4 heart box

A weight of 0 means "unknown here" (no loss). Sources fill them differently:

- lung-masks (human lung polygons): lung target/weight from the mask (its 127 "ignore" pixels get weight 0); the
  heart is unknown, but anatomy says where it is not: above the upper third of the lungs, below them, and
  outside their lateral extent (``heart_prior_weight``), so those pixels are heart negatives.
- NIH Cardiomegaly boxes: the heart lies inside its box, so every pixel outside it (minus a slack band for the
  annotators' imprecision) is a heart negative, and the box is kept for the projection (tightness) loss: every
  row and column of the box must contain heart, none outside it.
- ChestX-Det Cardiomegaly polygons: a heart outline, used as a full heart target.
- Round 2 (self-refinement) adds pseudo-labels made by the round-1 model on NIH training images (``train.py``).

Augmentation (``augment``) is batched torch: affine geometry (rotation, zoom in and out with a black border,
aspect, shear, shift), simulated devices (lines, tubes, wires, ECG electrodes, markers), patchy opacities,
windowing, gamma, contrast, blur/sharpening and noise. No horizontal flips: laterality is anatomy.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from radlens.anatomy.postprocess import thorax_window
from radlens.encoders.base import PreprocessSpec, preprocess_pixels
from radlens.io import load_image
from radlens.io.splits import load_split

log = logging.getLogger(__name__)

LUNG_T, LUNG_W, HEART_T, HEART_W, BOX = range(5)
N_PLANES = 5
BOX_SLACK = 0.03  # fraction of the image side around an NIH box that is neither heart nor background


@dataclass
class AnatomySet:
    """Images (N,1,S,S) float16 in [0,1], targets (N,5,S,S) uint8, and one row of facts per image."""

    images: torch.Tensor
    targets: torch.Tensor
    box: torch.Tensor  # (N,) bool: the projection loss applies
    info: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def concat(sets: list["AnatomySet"]) -> "AnatomySet":
        sets = [s for s in sets if len(s)]
        return AnatomySet(torch.cat([s.images for s in sets]), torch.cat([s.targets for s in sets]),
                          torch.cat([s.box for s in sets]), pd.concat([s.info for s in sets], ignore_index=True))


def decode_at(path: Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode through radlens.io (the decoder inference uses) and squash to size x size, values in [0,1]."""
    img = load_image(path)
    x = preprocess_pixels(img.pixels, PreprocessSpec(size=size, mean=(0.0,), std=(1.0,)))
    return torch.from_numpy(x), img.shape


def resize_plane(a: np.ndarray, size: int) -> np.ndarray:
    """Area-like (antialiased bilinear) resize of a 0/1 plane; returns fractions in [0,1]."""
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def heart_prior_weight(lungs: np.ndarray) -> np.ndarray:
    """Where the heart certainly is not, from a lung mask: 1 there (a known negative), 0 elsewhere.

    The heart sits between the lungs, below their upper third and above their lowest point (the costophrenic
    recesses reach below the cardiac silhouette): `postprocess.thorax_window`. Without lungs nothing is known.
    """
    if not lungs.any():
        return np.zeros(lungs.shape, np.uint8)
    return (~thorax_window(lungs)).astype(np.uint8)


def load_lung_masks(root: Path, size: int, split: str | None = "train", limit: int | None = None) -> AnatomySet:
    """The human lung masks of ``root`` (lung-masks layout) in one split of the committed patient split."""
    man = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
    sp = load_split("lung-masks")
    man = man.merge(sp[["path", "split"]], on="path", how="left", validate="one_to_one")
    if man.split.isna().any():
        raise ValueError(f"{root}/manifest.csv has images not in the committed lung-masks split: "
                         f"{man.path[man.split.isna()].head().tolist()}")
    if split is not None:
        man = man[man.split == split]
    if limit:
        man = man.head(limit)
    n = len(man)
    images = torch.empty(n, 1, size, size, dtype=torch.float16)
    targets = torch.zeros(n, N_PLANES, size, size, dtype=torch.uint8)
    for i, (p, q) in enumerate(zip(man["path"], man["mask"])):
        x, shape = decode_at(root / p, size)
        images[i] = x
        m = np.asarray(Image.open(root / q).convert("L"))
        if m.shape != shape:
            raise ValueError(f"{root / q}: mask shape {m.shape} differs from its image's {shape}")
        lung = resize_plane(m >= 192, size) > 0.5
        ignore = resize_plane((m > 64) & (m < 192), size) > 0.01
        targets[i, LUNG_T] = torch.from_numpy(lung)
        targets[i, LUNG_W] = torch.from_numpy(~ignore)
        targets[i, HEART_W] = torch.from_numpy(heart_prior_weight(lung))
    info = pd.DataFrame({"source": "lung-masks", "path": man["path"].values, "patient_id": man.patient_id.values,
                         "heart": "prior"})
    return AnatomySet(images, targets, torch.zeros(n, dtype=torch.bool), info)


def nih_heart_annotations(root: Path) -> pd.DataFrame:
    """One row per NIH image with a heart annotation: `path, kind (polygon|box), geometry (512-px coordinates)`.

    ChestX-Det Cardiomegaly polygons win over NIH boxes when an image has both.
    """
    rows = {}
    boxes = pd.read_csv(root / "bbox.csv")
    for r in boxes[boxes.finding_label == "Cardiomegaly"].itertuples():
        rows[r.path] = {"path": r.path, "kind": "box", "geometry": [r.x, r.y, r.x + r.w, r.y + r.h]}
    det = root / "chestxdet.json"
    if det.is_file():
        for rec in json.loads(det.read_text()):
            for sym, poly in zip(rec["syms"], rec["polygons"]):
                if sym == "Cardiomegaly" and len(poly) >= 3:
                    rows[rec["path"]] = {"path": rec["path"], "kind": "polygon", "geometry": poly}
    return pd.DataFrame(list(rows.values()), columns=["path", "kind", "geometry"])


def rasterize(kind: str, geometry: list, shape: tuple[int, int], size: int) -> np.ndarray:
    """A box [x1,y1,x2,y2] or polygon [[x,y],...] given in the image's pixel coordinates, drawn at size x size."""
    sy, sx = size / shape[0], size / shape[1]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "box":
        x1, y1, x2, y2 = geometry
        draw.rectangle([x1 * sx, y1 * sy, x2 * sx - 1, y2 * sy - 1], fill=1)
    else:
        draw.polygon([(x * sx, y * sy) for x, y in geometry], fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def box_targets(box: np.ndarray, slack: float = BOX_SLACK) -> tuple[np.ndarray, np.ndarray]:
    """Heart target/weight from a box alone: negatives outside the box grown by `slack`, unknown inside."""
    size = box.shape[0]
    r = max(1, int(round(slack * size)))
    from scipy.ndimage import binary_dilation

    grown = binary_dilation(box.astype(bool), iterations=r)
    return np.zeros_like(box), (~grown).astype(np.uint8)


def nih_frame(root: Path, splits: tuple[str, ...]) -> pd.DataFrame:
    man = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
    sp = load_split("nih-cxr14")
    man = man.merge(sp[["path", "split"]], on="path", how="left", validate="one_to_one")
    return man[man.split.isin(splits)].reset_index(drop=True)


def load_nih(root: Path, size: int, splits: tuple[str, ...] = ("train",), annotated_only: bool = False,
             limit: int | None = None) -> AnatomySet:
    """NIH images of the given splits with their heart annotations (boxes/polygons); lungs unknown (weight 0)."""
    man = nih_frame(root, splits)
    ann = nih_heart_annotations(root).set_index("path")
    if annotated_only:
        man = man[man.path.isin(ann.index)]
    if limit:
        man = man.head(limit)
    n = len(man)
    images = torch.empty(n, 1, size, size, dtype=torch.float16)
    targets = torch.zeros(n, N_PLANES, size, size, dtype=torch.uint8)
    has_box = torch.zeros(n, dtype=torch.bool)
    kinds = []
    for i, p in enumerate(man.path):
        x, shape = decode_at(root / p, size)
        images[i] = x
        kind = ann.kind.get(p, "none")
        kinds.append(kind)
        if kind == "polygon":
            poly = rasterize("polygon", ann.geometry[p], shape, size)
            targets[i, HEART_T], targets[i, HEART_W] = torch.tensor(poly), 1
        elif kind == "box":
            box = rasterize("box", ann.geometry[p], shape, size)
            t, w = box_targets(box)
            targets[i, HEART_T], targets[i, HEART_W], targets[i, BOX] = (torch.tensor(a) for a in (t, w, box))
            has_box[i] = True
    info = pd.DataFrame({"source": "nih", "path": man.path.values, "patient_id": man.patient_id.values,
                         "heart": kinds})
    return AnatomySet(images, targets, has_box, info)


# ----------------------------------------------------------------------------------------------- augmentation


def _u(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def warp(images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator, strength: float = 1.0
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine of images (bilinear, black border) and targets (nearest; weights outside the field become 1:
    outside the film there is neither lung nor heart)."""
    n, _, h, w = images.shape
    rot = _u(n, -0.21, 0.21, gen) * strength  # ±12°
    zoom = torch.exp(_u(n, math.log(0.78), math.log(1.3), gen) * strength)  # >1 samples a larger field: zoom out
    asp = torch.exp(_u(n, -0.12, 0.12, gen) * strength)
    shear = _u(n, -0.1, 0.1, gen) * strength
    tx, ty = _u(n, -0.1, 0.1, gen) * strength, _u(n, -0.1, 0.1, gen) * strength
    cos, sin = torch.cos(rot), torch.sin(rot)
    sx, sy = zoom * asp, zoom / asp
    a = torch.stack([torch.stack([sx * cos, -sy * sin + shear * sx * cos, tx], 1),
                     torch.stack([sx * sin, sy * cos + shear * sx * sin, ty], 1)], 1)
    grid = F.affine_grid(a, (n, 1, h, w), align_corners=False)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    t = targets.float()
    flip = torch.tensor([LUNG_W, HEART_W])  # weights: pad with 1 by warping their complement
    t[:, flip] = 1 - t[:, flip]
    t = F.grid_sample(t, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    t[:, flip] = 1 - t[:, flip]
    return x, t


def _rand(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return float(torch.rand(1, generator=gen)) * (hi - lo) + lo


def devices(size: int, gen: torch.Generator) -> torch.Tensor:
    """A (size,size) overlay in [0,1] of radio-opaque devices: tubes/lines/wires (quadratic Bézier curves, solid
    or hollow), ECG electrodes (rings with a dot) and corner markers. Drawn with Pillow at 2x and downsampled
    (antialiased edges, sub-pixel widths)."""
    s2 = 2 * size
    canvas = Image.new("F", (s2, s2), 0.0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(torch.randint(1, 5, (1,), generator=gen))):
        if _rand(gen) < 0.6:  # from the neck/top edge down into the chest: ETT, NG tube, central line
            p0 = np.array([_rand(gen, 0.25, 0.75), _rand(gen, -0.1, 0.2)])
        else:  # from a side: wires, drains
            p0 = np.array([_rand(gen, -0.1, 0.1) if _rand(gen) < 0.5 else _rand(gen, 0.9, 1.1), _rand(gen, 0.1, 0.9)])
        p1 = np.array([_rand(gen, 0.1, 0.9), _rand(gen, 0.1, 0.9)])
        p2 = np.array([_rand(gen, 0.1, 0.9), _rand(gen, 0.2, 1.1)])
        t = np.linspace(0, 1, 32)[:, None]
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2) * s2
        line = [tuple(q) for q in pts]
        width, amp = max(1, int(round(_rand(gen, 1.0, 7.0)))), _rand(gen, 0.2, 0.7)
        draw.line(line, fill=amp, width=width + 2 if width > 3 else width, joint="curve")
        if width > 3 and _rand(gen) < 0.5:  # hollow tube: bright walls, fainter lumen
            draw.line(line, fill=0.35 * amp, width=width - 2, joint="curve")
    for _ in range(int(torch.randint(0, 4, (1,), generator=gen))):  # ECG electrodes
        cx, cy, r = _rand(gen, 0.05, 0.95) * s2, _rand(gen, 0.05, 0.95) * s2, _rand(gen, 6.0, 14.0)
        amp = _rand(gen, 0.3, 0.8)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=amp, width=2)
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=amp)
    if _rand(gen) < 0.3:  # a laterality marker / text block near a corner
        h, w = _rand(gen, 12, 28), _rand(gen, 12, 60)
        r0 = _rand(gen, 4, 0.15 * s2) if _rand(gen) < 0.5 else _rand(gen, 0.8 * s2, s2 - h - 4)
        c0 = _rand(gen, 4, 0.2 * s2) if _rand(gen) < 0.5 else _rand(gen, 0.75 * s2, s2 - w - 4)
        draw.rectangle([c0, r0, c0 + w, r0 + h], fill=_rand(gen, 0.6, 1.0))
    img = torch.from_numpy(np.array(canvas, dtype=np.float32))[None, None]
    return F.avg_pool2d(img, 2)[0, 0].clamp(0, 1)


def opacities(size: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth patchy brightening (consolidation, effusion-like haze): lungs stay lungs under it. Drawn at 32x32
    (the blobs are smooth) and upsampled."""
    low = 32
    yy, xx = torch.meshgrid(torch.arange(low, dtype=torch.float32), torch.arange(low, dtype=torch.float32),
                            indexing="ij")
    out = torch.zeros(low, low)
    for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
        cx, cy, s = _rand(gen, 0.15, 0.85) * low, _rand(gen, 0.2, 0.9) * low, _rand(gen, 0.04, 0.18) * low
        out += _rand(gen, 0.08, 0.3) * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    up = F.interpolate(out[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return up.clamp(0, 0.6)


def intensity(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Window, gamma, contrast, blur or sharpen, noise; x (N,1,S,S) in [0,1] → [0,1]."""
    n = x.shape[0]
    v = lambda t: t.view(n, 1, 1, 1)  # noqa: E731
    lo, hi = v(_u(n, -0.08, 0.15, gen)), v(_u(n, 0.8, 1.08, gen))
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    x = x ** v(torch.exp(_u(n, math.log(0.55), math.log(1.8), gen)))
    c, b = v(_u(n, 0.75, 1.25, gen)), v(_u(n, -0.08, 0.08, gen))
    x = ((x - 0.5) * c + 0.5 + b)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    k = v(_u(n, -1.0, 1.0, gen))  # <0 blur, >0 sharpen (unsharp mask)
    x = torch.where(k < 0, x + k.abs() * (blur - x), x + k * (x - blur))
    x = x + torch.randn(x.shape, generator=gen) * v(_u(n, 0.0, 0.04, gen))
    return x.clamp(0, 1)


def outside_air(image: torch.Tensor, target: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate air outside the body beside the chest (supine/AP films: arm | dark gap | chest wall | lung).

    On one side, everything lateral to a wavy line a little outside the lung's lateral edge becomes a dark, smooth
    "air" region with a bright arm band at the film's edge; the targets there become known background (lung and
    heart 0, weight 1). Needs a lung target; `image` (1,S,S) in [0,1], `target` (5,S,S); returns new tensors."""
    lung = target[LUNG_T] > 0.5
    if not (lung.any() and (target[LUNG_W] > 0.5).any()):
        return image, target
    s = image.shape[-1]
    cols = torch.nonzero(lung.any(0)).flatten()
    right_side = _rand(gen) < 0.5  # image left (patient's right) or image right
    margin = _rand(gen, 0.02, 0.08) * s
    edge = (float(cols.min()) - margin) if right_side else (float(cols.max()) + margin)
    rows = torch.arange(s, dtype=torch.float32)
    wave = _rand(gen, 0.0, 0.03) * s * torch.sin(rows / s * _rand(gen, 2.0, 6.0) + _rand(gen, 0.0, 6.28))
    bound = (edge - abs(float(wave.abs().max())) + wave) if right_side else (edge + abs(float(wave.abs().max())) + wave)
    xx = torch.arange(s, dtype=torch.float32)[None, :]
    region = (xx < bound[:, None]) if right_side else (xx > bound[:, None])
    if region.float().mean() < 0.01:
        return image, target
    arm_w = _rand(gen, 0.03, 0.2) * s
    arm = (xx < arm_w) if right_side else (xx > s - 1 - arm_w)
    low = F.interpolate(torch.rand(1, 1, 8, 8, generator=gen), size=(s, s), mode="bilinear", align_corners=False)[0, 0]
    air = _rand(gen, 0.05, 0.45) + 0.1 * low
    fill = torch.where(arm.expand(s, s), torch.full((s, s), _rand(gen, 0.45, 0.85)), air)
    img = image.clone()
    img[0] = torch.where(region, fill, img[0])
    t = target.clone()
    for k, v in ((LUNG_T, 0), (HEART_T, 0), (LUNG_W, 1), (HEART_W, 1)):
        t[k][region] = v
    return img, t


def augment(images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator, p_devices: float = 0.5,
            p_opacity: float = 0.3, strength: float = 1.0, p_air: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented, normalised (x − 0.5)/0.25 images and the warped targets (float 0/1)."""
    x, t = warp(images, targets, gen, strength)
    for i in range(x.shape[0]) if p_air > 0 else ():  # after the warp: a zoomed-out film has room beside the chest
        if _rand(gen) < p_air:
            x[i], t[i] = outside_air(x[i], t[i], gen)
    size = x.shape[-1]
    for i in range(x.shape[0]):
        if _rand(gen) < p_opacity:
            x[i, 0] = x[i, 0] + opacities(size, gen) * (1 - x[i, 0])
        if _rand(gen) < p_devices:
            x[i, 0] = x[i, 0] + devices(size, gen) * (1 - x[i, 0])
    x = intensity(x, gen)
    return (x - 0.5) / 0.25, t
