"""Held-out evaluation of an anatomy model: what the model card reports.

- Lungs: Dice of the (right ∪ left) lung mask against the human mask at the image's own size (its "ignore"
  pixels left out), on the lung-masks `test` patients, which training never sees; summarised per image and per
  patient (a patient's images averaged first, so follow-up films do not count twice).
- Heart, no human heart masks exist: (a) IoU of the heart mask's bounding box with the NIH Cardiomegaly box and
  (b) Dice with the ChestX-Det Cardiomegaly polygon, on NIH patients the model never trained on; (c) how well the
  cardiothoracic ratio separates NIH images labelled Cardiomegaly from the rest (ROC AUC with a patient-bootstrap
  95 % CI), overall and within PA and AP views (AP magnifies the heart and is itself associated with the label).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

from radlens.anatomy.api import AnatomyModel
from radlens.anatomy.data import nih_frame, nih_heart_annotations, rasterize
from radlens.evaluate.bootstrap import bootstrap_ci
from radlens.io import load_image
from radlens.io.splits import load_split


def _summary(values: Any) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "p10": float(np.percentile(v, 10)), "median": float(np.median(v)),
            "max": float(v.max())}


def _dice(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    if valid is not None:
        a, b = a & valid, b & valid
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def _segment_paths(model: AnatomyModel, paths: list[Path], batch_size: int = 16):
    """(Radiograph, masks) per path, batched."""
    for i in range(0, len(paths), batch_size):
        imgs = [load_image(p) for p in paths[i:i + batch_size]]
        masks = model.segment(imgs, batch_size=batch_size)
        yield from zip(imgs, masks)


def lung_heldout(model: AnatomyModel, root: Path, split: str = "test") -> dict[str, Any]:
    man = pd.read_csv(root / "manifest.csv", dtype={"patient_id": str})
    sp = load_split("lung-masks")
    man = man.merge(sp[["path", "split"]], on="path", validate="one_to_one")
    man = man[man.split == split].reset_index(drop=True)
    rows = []
    for (img, m), r in zip(_segment_paths(model, [root / p for p in man.path]), man.itertuples()):
        gt = np.asarray(Image.open(root / r.mask).convert("L"))
        valid = ~((gt > 64) & (gt < 192))
        rows.append({"path": r.path, "patient_id": r.patient_id, "view": r.view, "dice": _dice(m.lungs, gt >= 192, valid),
                     "flags": "; ".join(m.measures().flags)})
    per_image = pd.DataFrame(rows)
    per_patient = per_image.groupby("patient_id", sort=True).agg(dice=("dice", "mean"), images=("dice", "size"),
                                                                 view=("view", "first")).reset_index()
    return {"split": split, "images": len(per_image), "patients": len(per_patient),
            "per_patient_summary": _summary(per_patient.dice), "per_image_summary": _summary(per_image.dice),
            "per_view_patient_mean": per_patient.groupby(per_patient.view.str[:2]).dice.mean().round(4).to_dict(),
            "per_patient": per_patient.round(4).to_dict("records"), "per_image": per_image.round(4).to_dict("records")}


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _box_iou(a: tuple | None, b: tuple) -> float:
    if a is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def heart_and_ctr(model: AnatomyModel, root: Path, split: str = "eval", n_boot: int = 1000) -> dict[str, Any]:
    """Heart box IoU, polygon Dice and CTR-vs-Cardiomegaly AUC on one NIH split."""
    man = nih_frame(root, (split,))
    ann = nih_heart_annotations(root).set_index("path")
    boxes = pd.read_csv(root / "bbox.csv")
    boxes = boxes[boxes.finding_label == "Cardiomegaly"].set_index("path")
    rows, box_rows, poly_rows = [], [], []
    for (img, m), r in zip(_segment_paths(model, [root / p for p in man.path]), man.itertuples()):
        ms = m.measures()
        bb = _bbox(m.heart)
        rows.append({"path": r.path, "patient_id": r.patient_id, "view": r.view,
                     "cardiomegaly": int("Cardiomegaly" in str(r.finding_labels).split("|")), "ctr": ms.ctr,
                     "ctr_bbox": (bb[2] - bb[0]) / ms.thorax_width_px if bb and ms.thorax_width_px else math.nan,
                     "heart_lung_area_ratio": ms.heart_lung_area_ratio, "flags": "; ".join(ms.flags)})
        if r.path in boxes.index:
            b = boxes.loc[[r.path]].iloc[0]
            gt = (b.x, b.y, b.x + b.w, b.y + b.h)
            box_rows.append({"path": r.path, "patient_id": r.patient_id, "iou": _box_iou(_bbox(m.heart), gt)})
        if r.path in ann.index and ann.kind[r.path] == "polygon":
            poly = rasterize("polygon", ann.geometry[r.path], img.shape, img.shape[0]).astype(bool)
            if poly.shape != img.shape:  # non-square inputs: rasterize at the image's own size
                poly = np.asarray(Image.fromarray(poly.astype(np.uint8)).resize(img.shape[::-1], Image.NEAREST)) > 0
            poly_rows.append({"path": r.path, "dice": _dice(m.heart, poly),
                              "box_iou": _box_iou(_bbox(m.heart), _bbox(poly))})
    df = pd.DataFrame(rows)
    out: dict[str, Any] = {"split": split, "images": len(df), "patients": int(df.patient_id.nunique()),
                           "cardiomegaly_images": int(df.cardiomegaly.sum())}
    bx = pd.DataFrame(box_rows)
    out["box_iou"] = {**_summary(bx.iou if len(bx) else []),
                      "share_ge_0.5": float((bx.iou >= 0.5).mean()) if len(bx) else math.nan}
    pl = pd.DataFrame(poly_rows)
    out["polygon"] = {"dice": _summary(pl.dice if len(pl) else []), "box_iou": _summary(pl.box_iou if len(pl) else [])}
    ok = df[np.isfinite(df.ctr)]
    out["ctr_missing"] = int(len(df) - len(ok))
    out["ctr_flagged"] = int((df["flags"] != "").sum())

    def auc(y: np.ndarray, p: np.ndarray) -> float:
        return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else math.nan

    if len(ok) and 0 < ok.cardiomegaly.sum() < len(ok):
        ci = bootstrap_ci(auc, ok.cardiomegaly.values, ok.ctr.values, ok.patient_id.values, n_boot=n_boot, seed=0)
        out["ctr_auc"] = ci.to_dict()
        by_view = {}
        for v, g in ok.groupby(ok.view.str[:2]):
            if 0 < g.cardiomegaly.sum() < len(g):
                c = bootstrap_ci(auc, g.cardiomegaly.values, g.ctr.values, g.patient_id.values, n_boot=n_boot, seed=0)
                by_view[v] = {**c.to_dict(), "images": int(len(g)), "positives": int(g.cardiomegaly.sum())}
        out["ctr_auc_by_view"] = by_view
        for alt in ("ctr_bbox", "heart_lung_area_ratio"):  # the bounding-box CTR reading, and the area ratio
            g = ok[np.isfinite(ok[alt])]
            out[f"{alt}_auc"] = bootstrap_ci(auc, g.cardiomegaly.values, g[alt].values, g.patient_id.values,
                                             n_boot=n_boot, seed=0).to_dict()
        # context: the view alone (AP films are likelier to carry the label) and the textbook CTR > 0.5 rule
        out["view_ap_auc"] = auc(ok.cardiomegaly.values, (ok.view.str[:2] == "AP").astype(float).values)
        y, pos = ok.cardiomegaly.values.astype(bool), ok.ctr.values > 0.5
        out["ctr_gt_0.5"] = {"sensitivity": float(pos[y].mean()), "specificity": float((~pos[~y]).mean())}
        out["ctr_by_label"] = {"cardiomegaly": _summary(ok.ctr[y]), "other": _summary(ok.ctr[~y])}
    out["per_image"] = df.round(4).to_dict("records")
    return out
