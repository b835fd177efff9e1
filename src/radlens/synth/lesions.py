"""Real lesion instances in lung-normalised coordinates: the placement and size priors of the mask sampler.

Sources, both in 512-px coordinates of the NIH images: the NIH ChestX-ray14 boxes (8 findings) and the ChestX-Det
polygons (13 findings). Each instance is expressed relative to the expert anatomy of its own image
(:class:`~radlens.synth.geometry.LungFrame`): side, centroid (u, v), box extents (u0..u1 over the lateral/medial
direction, v0..v1), size relative to the lung (w / lung width, h / lung height), and the share of its area inside
the lung fields. ChestX-Det polygons are also kept as shape templates (normalised to their box, x running medial
-> lateral) so sampled lesions have real outlines rather than rectangles. Where an image has both a ChestX-Det
polygon and an NIH box of the same finding, the polygon is kept (they outline the same lesion).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from radlens.synth.geometry import LungFrame, fill_polygon, side_of
from radlens.synth.real_anatomy import CANVAS

NIH_TO_FINDING = {"Infiltrate": "Infiltration"}
TEMPLATE_POINTS = 48


def _normalise_polygon(poly: np.ndarray, side: str) -> np.ndarray:
    """Polygon -> its box's unit square, x from medial (0) to lateral (1), resampled to TEMPLATE_POINTS points."""
    x0, y0 = poly.min(0)
    x1, y1 = poly.max(0)
    q = (poly - [x0, y0]) / np.maximum([x1 - x0, y1 - y0], 1e-6)
    if side == "right":  # right lung: lateral = smaller x
        q[:, 0] = 1.0 - q[:, 0]
    closed = np.concatenate([q, q[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    t = np.linspace(0, s[-1], TEMPLATE_POINTS, endpoint=False)
    return np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], 1)


def real_instances(root: Path, masks: np.ndarray, info: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Every NIH box and ChestX-Det polygon on the images in `info` (masks aligned with it), in lung coordinates;
    returns (instances, templates by finding)."""
    index = {p: i for i, p in enumerate(info.path)}
    cxd = json.loads((root / "chestxdet.json").read_text())
    boxes = pd.read_csv(root / "bbox.csv")
    rows: list[dict] = []
    templates: dict[str, list] = {}
    polygon_findings: set[tuple[str, str]] = set()
    frames_cache: dict[int, dict] = {}

    def frames(i: int) -> dict:
        if i not in frames_cache:
            frames_cache[i] = {s: LungFrame.from_mask(masks[i, k], s) for k, s in enumerate(("right", "left"))}
        return frames_cache[i]

    def add(i: int, finding: str, source: str, region: np.ndarray, x0, y0, x1, y1) -> dict | None:
        fr = frames(i)
        if fr["right"] is None or fr["left"] is None:
            return None
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        side = side_of(cx, fr)
        f = fr[side]
        u, v = f.to_uv(np.array([cx, x0, x1]), np.array([cy, y0, y1]))
        lungs = masks[i, 0] | masks[i, 1]
        area = max(1, int(region.sum()))
        row = dict(path=info.path[i], split=info.split[i], finding=finding, source=source, side=side,
                   u=float(u[0]), v=float(v[0]), u_lo=float(min(u[1], u[2])), u_hi=float(max(u[1], u[2])),
                   v0=float(v[1]), v1=float(v[2]), rel_w=float((x1 - x0) / f.width), rel_h=float((y1 - y0) / f.height),
                   inside_lung=float((region & lungs).sum() / area), area_px=area)
        rows.append(row)
        return row

    for rec in cxd:
        i = index.get(rec["path"])
        if i is None:
            continue
        for sym, poly in zip(rec["syms"], rec["polygons"]):
            p = np.asarray(poly, np.float64)
            if len(p) < 3:
                continue
            region = fill_polygon(p, (CANVAS, CANVAS))
            (x0, y0), (x1, y1) = p.min(0), p.max(0)
            row = add(i, sym, "chestx-det", region, x0, y0, x1, y1)
            if row is not None:
                polygon_findings.add((rec["path"], sym))
                templates.setdefault(sym, []).append(_normalise_polygon(p, row["side"]).round(4).tolist())
    for b in boxes.itertuples():
        i = index.get(b.path)
        finding = NIH_TO_FINDING.get(b.finding_label, b.finding_label)
        if i is None or (b.path, finding) in polygon_findings:
            continue
        region = np.zeros((CANVAS, CANVAS), bool)
        region[int(b.y):int(np.ceil(b.y + b.h)), int(b.x):int(np.ceil(b.x + b.w))] = True
        add(i, finding, "nih-box", region, b.x, b.y, b.x + b.w, b.y + b.h)
    return pd.DataFrame(rows), templates
