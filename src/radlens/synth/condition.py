"""The conditioning the image generator sees: mask planes (anatomy + finding groups) and finding labels.

One layout for training (real NIH images: expert anatomy, NIH boxes shaped as ellipses inside the lung, ChestX-Det
polygons, the report labels) and for generation (a `MaskSample` from the prompt sampler and its prompt's findings),
so the generator is conditioned on the same thing in both. Findings are grouped where their appearance is alike
and the data per finding is thin; labels carry findings that have no mask (most NIH images have labels but no box).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ANATOMY = ("lung_right", "lung_left", "heart")
MASK_GROUPS: dict[str, tuple[str, ...]] = {
    "effusion": ("Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "atelectasis": ("Atelectasis",),
    "airspace": ("Consolidation", "Pneumonia", "Infiltration", "Edema"),
    "nodule_mass": ("Nodule", "Mass", "Calcification"),
    "interstitial": ("Fibrosis", "Emphysema", "Diffuse Nodule", "Pleural Thickening"),
    "fracture": ("Fracture",),
}
# NIH ChestX-ray14 labels (report-mined); a prompt's findings map onto them (ChestX-Det-only names have none).
LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
          "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax")
PLANES = ANATOMY + tuple(MASK_GROUPS)
N_COND = len(PLANES) + len(LABELS)


def group_of(finding: str) -> str | None:
    for g, names in MASK_GROUPS.items():
        if finding in names:
            return g
    return None


def label_vector(findings: list[str]) -> np.ndarray:
    names = {f.replace(" ", "_") for f in findings}
    return np.array([1.0 if lab in names else 0.0 for lab in LABELS], np.float32)


def planes_from_sample(sample, size: int) -> np.ndarray:
    """(len(PLANES), size, size) float32 in [0, 1] from a MaskSample (area-resized from its 512 px canvas)."""
    full = np.zeros((len(PLANES),) + sample.masks.shape[1:], np.float32)
    for k, name in enumerate(ANATOMY):
        full[k] = sample.channel(name)
    for name in sample.channels[3:]:
        g = group_of(name)
        if g is not None:
            full[PLANES.index(g)] = np.maximum(full[PLANES.index(g)], sample.channel(name))
    return resize_planes(full, size)


def resize_planes(planes: np.ndarray, size: int) -> np.ndarray:
    if planes.shape[-1] == size:
        return planes.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(planes, np.float32))[None]
    return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].numpy()


def condition_tensor(planes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, N_COND, S, S): mask planes, then each label as a constant plane."""
    n, _, h, w = planes.shape
    return torch.cat([planes, labels[:, :, None, None].expand(n, labels.shape[1], h, w)], dim=1)
