"""Anatomical rules shared by the sampler and the consistency checks (one table, so the checks test the same
contract the sampler aims at, measured on the masks rather than trusted from the sampler).

Zones are ranges of the lung-normalised v (apex 0, lowest lung pixel 1); perihilar also bounds u (medial 0).
"""

from __future__ import annotations

ZONES: dict[str, tuple[float, float]] = {
    "upper": (0.0, 1 / 3), "mid": (1 / 3, 2 / 3), "lower": (2 / 3, 1.0),
    "apical": (0.0, 0.2), "basal": (0.75, 1.0), "perihilar": (0.25, 0.7),
}
PERIHILAR_MAX_U = 0.45
ZONE_TOLERANCE = 0.05  # a centroid may sit this far past its zone's edge (zone edges are conventions, not anatomy)

# Where a finding lies by nature. "lung": inside the lung fields; "pleura": the pleural edge / chest wall (may
# extend a little beyond the lung outline); "heart": the cardiac silhouette.
PLACE = {
    "Atelectasis": "lung", "Effusion": "lung", "Infiltration": "lung", "Mass": "lung", "Nodule": "lung",
    "Pneumonia": "lung", "Pneumothorax": "lung", "Consolidation": "lung", "Fibrosis": "lung", "Emphysema": "lung",
    "Calcification": "lung", "Diffuse Nodule": "lung", "Fracture": "pleura", "Pleural Thickening": "pleura",
    "Cardiomegaly": "heart",
}
MIN_INSIDE = {"lung": 0.9, "pleura": 0.9}  # share of the lesion inside the lungs (pleura: lungs grown by PLEURA_PX)
PLEURA_PX = 14
# Effusion is drawn from the base up and pneumothorax along the lateral/apical pleura; their zone words narrow that.
ZONES_ALLOWED = {"Effusion": ("lower", "basal"), "Cardiomegaly": ()}
# Findings whose regions may overlap one another (airspace/interstitial processes and fluid can coexist in one
# region of the film); any other pair of different instances may overlap by at most MAX_OVERLAP of the smaller.
COEXIST = frozenset({"Atelectasis", "Consolidation", "Pneumonia", "Infiltration", "Effusion", "Fibrosis",
                     "Emphysema", "Diffuse Nodule", "Cardiomegaly"})
MAX_OVERLAP = 0.05
# Shape templates for findings ChestX-Det does not outline.
TEMPLATE_POOL = {"Infiltration": ("Consolidation",), "Pneumonia": ("Consolidation",),
                 "Mass": ("Mass", "Nodule"), "Nodule": ("Nodule", "Mass"), "Calcification": ("Calcification", "Nodule"),
                 "Atelectasis": ("Atelectasis", "Consolidation")}
SIZE_SLACK = 1.25  # sampled relative area may lie this factor beyond the real min/max
MM_TOLERANCE = 0.25  # a prompted size in mm is met within 25 %
CTR_RULE = 0.5
# Order of placement: structure first, then pleural processes, diffuse, focal last.
ORDER = ("Cardiomegaly", "Effusion", "Pneumothorax", "Pleural Thickening", "Consolidation", "Pneumonia",
         "Infiltration", "Atelectasis", "Fibrosis", "Emphysema", "Diffuse Nodule", "Mass", "Nodule", "Calcification",
         "Fracture")


def may_overlap(a: str, b: str) -> bool:
    return a in COEXIST and b in COEXIST
