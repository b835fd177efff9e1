"""Fit the mask prior (shape model + lesion priors) from real anatomy and real lesion annotations.

    radlens synth fit-prior --nih ../shared/data/nih-cxr14 --lung-masks ../shared/data/lung-masks --out DIR

Data: NIH images of the `train` and `val` splits (the `eval` split is kept for comparing sampled with real lesion
locations) segmented by the shipped anatomy expert, plus the lung-masks `train`+`val` human lung outlines (with the
expert's heart). Images the expert flagged (a lung reaching the film edge, an implausible heart) are left out, and
shapes far from the first fit (RMS residual above the 97.5th percentile) are dropped before the final fit, so a
few failed segmentations do not widen the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from radlens.atomic import folder_swap
from radlens.synth import shape_model as sm
from radlens.synth.geometry import heart_landmarks, lung_landmarks
from radlens.synth.lesions import real_instances
from radlens.synth.real_anatomy import AnatomySet, lung_mask_anatomy, nih_anatomy

log = logging.getLogger(__name__)
KIND = "radlens-maskprior"
VERSION = "v1"
FIT_SPLITS = ("train", "val")
# Assumptions that no data here can supply, written into priors.json so they are visible and editable:
ASSUMPTIONS = {
    # the expert's hearts are too wide on images without cardiomegaly (median CTR 0.58 on PA, see the anatomy
    # card), so the normal heart's CTR is the textbook one, not learned: PA adults ~0.45 (sd ~0.035), AP films
    # magnify the heart; always below 0.5 so a sample without Cardiomegaly is not one by the 0.5 rule
    "normal_ctr": {"PA": [0.45, 0.035], "AP": [0.47, 0.035], "max": 0.495, "min": 0.36},
    # sizes in mm are converted with the thorax: the widest internal thoracic diameter of an adult PA film is
    # ~28 cm (men ~29, women ~26); used only when a prompt gives a size in mm or cm
    "thorax_mm": 280.0,
}


def covariates(info: pd.DataFrame) -> np.ndarray:
    male = (info.sex.astype(str).str.upper().str[0] == "M").astype(float)
    male[info.sex.isna()] = np.nan
    age = pd.to_numeric(info.age, errors="coerce") / 10.0
    ap = info.view.astype(str).str.upper().str.startswith("AP").astype(float)
    cm = info.labels.map(lambda ls: float("Cardiomegaly" in ls))
    return np.stack([male, age, ap, cm], axis=1).astype(np.float64)


def landmarks_of(a: AnatomySet) -> tuple[np.ndarray, np.ndarray]:
    """Joint landmarks of every usable image and the boolean row mask of those used."""
    out, keep = [], np.zeros(len(a.masks), bool)
    for i, m in enumerate(a.masks):
        if a.info.notes[i]:
            continue
        parts = (lung_landmarks(m[0], "right"), lung_landmarks(m[1], "left"), heart_landmarks(m[2]))
        if any(p is None for p in parts):
            continue
        out.append(np.concatenate(parts))
        keep[i] = True
    return np.asarray(out), keep


def fit_prior(nih_root: Path, lung_root: Path | None, out: Path) -> dict:
    """Fit and write the prior folder atomically; returns the summary written to config.json."""
    from radlens.anatomy import api as anatomy
    from radlens.anatomy.measures import measure

    nih = nih_anatomy(nih_root, FIT_SPLITS)
    sets = [nih] + ([lung_mask_anatomy(lung_root, FIT_SPLITS)] if lung_root else [])
    lms, covs, used = [], [], []
    for a in sets:
        lm, keep = landmarks_of(a)
        lms.append(lm)
        covs.append(covariates(a.info)[keep])
        used.append(int(keep.sum()))
    lm, cov = np.concatenate(lms), np.concatenate(covs)
    first = sm.fit_shape_model(lm, cov)
    dist = np.array([first.mahalanobis(p, c) for p, c in zip(lm, cov)])
    inlier = dist <= np.quantile(dist, 0.975)
    model = sm.fit_shape_model(lm[inlier], cov[inlier])

    inst, templates = real_instances(nih_root, nih.masks, nih.info)
    # cardiomegaly CTR from the human boxes: box width over the expert's thorax width (the expert's heart width
    # matches the box on these images: ratio ~1.0)
    boxes = pd.read_csv(nih_root / "bbox.csv")
    boxes = boxes[boxes.finding_label == "Cardiomegaly"]
    pos = {p: i for i, p in enumerate(nih.info.path)}
    cm_ctr: dict[str, list[float]] = {"PA": [], "AP": []}
    for b in boxes.itertuples():
        i = pos.get(b.path)
        if i is None or nih.info.notes[i]:
            continue
        m = nih.masks[i]
        tw = measure(m[0], m[1], m[2]).thorax_width_px
        if tw:
            cm_ctr[str(nih.info.view[i]).upper()[:2]].append(round(float(b.w / tw), 4))
    thorax = [measure(m[0], m[1], m[2]).thorax_width_px for m, n in zip(nih.masks, nih.info.notes) if not n]
    priors = {
        "instances": inst.drop(columns=["path", "split"]).round(4).to_dict(orient="list"),
        "templates": templates,
        "cardiomegaly_ctr": cm_ctr,
        "thorax_width_px": [float(np.percentile(thorax, q)) for q in (5, 50, 95)],
        "assumptions": ASSUMPTIONS,
        # (male, age in decades, AP) of the shape images: unknown covariates of a sample are drawn from these rows
        "covariate_rows": [[None if math.isnan(v) else v for v in r] for r in np.round(cov[inlier][:, :3], 2).tolist()],
    }
    summary = {
        "kind": KIND, "version": VERSION, "anatomy_model": anatomy.load().model_id,
        "fit_splits": list(FIT_SPLITS),
        "shape_images": {"nih-expert": used[0], **({"lung-masks-human": used[1]} if len(used) > 1 else {}),
                         "dropped_as_outliers": int((~inlier).sum())},
        "shape_modes": model.k, "shape_variance_kept": round(model.explained, 4),
        "instances": inst.groupby(["finding", "source"]).size().unstack(fill_value=0).to_dict(orient="index"),
        "templates": {k: len(v) for k, v in templates.items()},
        "cardiomegaly_boxes": {k: len(v) for k, v in cm_ctr.items()},
    }
    with folder_swap(out) as tmp:
        sm.save(model, tmp, {"landmarks": int(lm.shape[1])})
        (tmp / "priors.json").write_text(json.dumps(priors, separators=(",", ":")))
        digest = hashlib.sha256(b"".join((tmp / f).read_bytes() for f in
                                         ("shape_model.safetensors", "priors.json"))).hexdigest()[:12]
        summary["prior_id"] = f"{KIND}-{VERSION}@{digest}"
        (tmp / "config.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
    return summary


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(o) else float(o)
    raise TypeError(type(o))
