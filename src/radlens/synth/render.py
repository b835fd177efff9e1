"""Colour overlays of mask samples: one RGB image per sample, and a contact sheet (rows = prompts)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from radlens.synth.sampler import MaskSample

ANATOMY_RGB = {"lung_right": (70, 110, 170), "lung_left": (70, 140, 170), "heart": (150, 60, 60)}
FINDING_RGB = {
    "Effusion": (40, 170, 255), "Pneumothorax": (255, 230, 40), "Cardiomegaly": (255, 80, 80),
    "Consolidation": (255, 140, 0), "Pneumonia": (255, 110, 40), "Infiltration": (240, 170, 60),
    "Atelectasis": (200, 90, 255), "Mass": (255, 40, 160), "Nodule": (80, 255, 120), "Calcification": (255, 255, 255),
    "Fibrosis": (180, 255, 60), "Emphysema": (120, 220, 255), "Diffuse Nodule": (60, 220, 160),
    "Fracture": (255, 0, 0), "Pleural Thickening": (255, 200, 150),
}


def _edge(m: np.ndarray) -> np.ndarray:
    e = np.zeros_like(m)
    e[1:-1, 1:-1] = m[1:-1, 1:-1] & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
    return e


def overlay(sample: MaskSample) -> np.ndarray:
    """(H, W, 3) uint8: anatomy as dim fills with outlines, findings as bright translucent fills with outlines."""
    h, w = sample.masks.shape[1:]
    img = np.zeros((h, w, 3), np.float32)
    for name in ("lung_right", "lung_left", "heart"):
        m = sample.channel(name)
        img[m] = 0.5 * img[m] + 0.5 * np.array(ANATOMY_RGB[name])
    for name in ("lung_right", "lung_left", "heart"):
        img[_edge(sample.channel(name))] = (220, 220, 220)
    for name in sample.channels[3:]:
        m = sample.channel(name)
        c = np.array(FINDING_RGB.get(name, (255, 255, 0)), np.float32)
        img[m] = 0.35 * img[m] + 0.65 * c
        img[_edge(m)] = c
    return np.clip(img, 0, 255).astype(np.uint8)


def contact_sheet(rows: Sequence[tuple[str, Sequence[MaskSample]]], path: Path, cell: float = 2.2) -> Path:
    """A PNG grid: one row per (title, samples); each cell titled with what was drawn (side, zone, CTR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ncol = max(len(s) for _, s in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(cell * ncol + 1.8, cell * len(rows) + 0.6), squeeze=False)
    used: set[str] = set()
    for r, (title, samples) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(samples):
                continue
            s = samples[c]
            ax.imshow(overlay(s))
            used.update(s.channels[3:])
            parts = [f"{i.finding[:5]} {(i.side or '')[:1].upper()}" for i in s.instances if i.finding != "Cardiomegaly"]
            ax.set_title(f"#{s.seed[1]} CTR {s.ctr_target:.2f} {s.covariates['view']}\n" + ", ".join(parts)[:40],
                         fontsize=6)
        axes[r, 0].text(-0.08, 0.5, textwrap.fill(title, 24), transform=axes[r, 0].transAxes, ha="right",
                        va="center", fontsize=7)
    handles = [Patch(color=np.array(FINDING_RGB.get(n, (255, 255, 0))) / 255, label=n) for n in sorted(used)]
    handles += [Patch(color=np.array(ANATOMY_RGB[n]) / 255, label=n) for n in ANATOMY_RGB]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=7, frameon=False)
    fig.subplots_adjust(left=1.8 / (cell * ncol + 1.8), right=0.99, top=0.96, bottom=0.06, wspace=0.05, hspace=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_overlay(image: np.ndarray, sample: MaskSample) -> np.ndarray:
    """(S, S, 3) uint8: the generated image in grey with the conditioning outlines (anatomy grey-blue, findings in
    their colours) drawn at the image's size."""
    from radlens.synth.condition import resize_planes

    s = image.shape[-1]
    base = np.clip(image * 255, 0, 255).astype(np.float32)
    rgb = np.stack([base] * 3, -1)
    planes = resize_planes(sample.masks.astype(np.float32), s) >= 0.5
    for name, m in zip(sample.channels, planes):
        c = np.array(ANATOMY_RGB.get(name) or FINDING_RGB.get(name, (255, 255, 0)), np.float32)
        if name in ANATOMY_RGB:
            c = np.array((90, 200, 255), np.float32) if name != "heart" else np.array((255, 120, 120), np.float32)
        rgb[_edge(m)] = c
    return rgb.astype(np.uint8)


def pair_sheet(rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, MaskSample, bool]]]], path: Path,
               cell: float = 2.0) -> Path:
    """Rows of (title, [(image, sample, passed)]): each pair as the bare image and the image with mask outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 2 * max(len(r) for _, r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(cell * ncol + 1.8, cell * len(rows) + 0.3), squeeze=False)
    for r, (title, pairs) in enumerate(rows):
        for k in range(ncol // 2):
            a, b = axes[r, 2 * k], axes[r, 2 * k + 1]
            a.axis("off")
            b.axis("off")
            if k >= len(pairs):
                continue
            img, sample, passed = pairs[k]
            a.imshow(img, cmap="gray", vmin=0, vmax=1)
            b.imshow(image_overlay(img, sample))
            a.set_title(f"#{sample.seed[1]} {'kept' if passed else 'rejected'}", fontsize=6,
                        color="black" if passed else "red")
        axes[r, 0].text(-0.08, 0.5, textwrap.fill(title, 24), transform=axes[r, 0].transAxes, ha="right",
                        va="center", fontsize=7)
    fig.subplots_adjust(left=1.8 / (cell * ncol + 1.8), right=0.99, top=0.95, bottom=0.02, wspace=0.04, hspace=0.25)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
