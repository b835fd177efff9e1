"""Geometry shared by the mask prior, the sampler and the checks: outlines as corresponding landmarks, polygon
rasterisation, and lung-normalised coordinates.

Lung-normalised coordinates (side, u, v) make lesion positions comparable across patients: v runs from the lung's
apex (0) to its lowest pixel (1) row by row, and u across one row from the lung's medial edge (0) to its lateral
edge (1). Outside the lung the row extents are extended from the nearest lung row, so a box below the lung (an
effusion) gets v > 1 and one beside it u > 1 or < 0. "right"/"left" are the patient's sides: on a frontal film
the right lung is on the image's left (smaller x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIDES = ("right", "left")
# points per outline segment: lungs apex -> costophrenic angle -> cardiophrenic angle -> apex; heart right border
# -> base -> left border -> top -> right border
LUNG_SEGMENTS = (28, 16, 28)
HEART_SEGMENTS = (12, 12, 12, 12)
N_LUNG = sum(LUNG_SEGMENTS)
N_HEART = sum(HEART_SEGMENTS)


def outline(mask: np.ndarray) -> np.ndarray | None:
    """The longest closed outline of a boolean mask as (N, 2) float (x, y) points, counter-clockwise on screen
    (y down), or None for an empty mask."""
    import contourpy

    if not mask.any():
        return None
    z = np.pad(mask.astype(np.float32), 1)
    lines = contourpy.contour_generator(z=z, line_type=contourpy.LineType.Separate).lines(0.5)
    if not lines:
        return None
    pts = max(lines, key=len)[:-1] - 1.0  # closed line repeats its first point; undo the padding
    x, y = pts[:, 0], pts[:, 1]
    if 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:
        pts = pts[::-1]
    return np.ascontiguousarray(pts)


def _resample(pts: np.ndarray, n: int) -> np.ndarray:
    """`n` points evenly spaced by arc length along an open polyline, its last point excluded."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return np.repeat(pts[:1], n, axis=0)
    t = np.linspace(0.0, s[-1], n, endpoint=False)
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)


def _between(pts: np.ndarray, i: int, j: int) -> np.ndarray:
    """Points from index i to j (inclusive) going forward around a closed outline."""
    if j >= i:
        return pts[i:j + 1]
    return np.concatenate([pts[i:], pts[:j + 1]])


def _landmarks(pts: np.ndarray, anchors: list[int], counts: tuple[int, ...]) -> np.ndarray | None:
    n = len(pts)
    # go round in the direction that meets the anchors in the given order
    order = [(a - anchors[0]) % n for a in anchors]
    if order != sorted(order) or len(set(order)) != len(order):
        pts = pts[::-1]
        anchors = [n - 1 - a for a in anchors]
        order = [(a - anchors[0]) % n for a in anchors]
        if order != sorted(order) or len(set(order)) != len(order):
            return None
    out = []
    for k, c in enumerate(counts):
        out.append(_resample(_between(pts, anchors[k], anchors[(k + 1) % len(anchors)]), c))
    return np.concatenate(out)


def lung_landmarks(mask: np.ndarray, side: str) -> np.ndarray | None:
    """(N_LUNG, 2) corresponding points on a lung outline: apex, down the lateral edge to the costophrenic angle,
    along the diaphragm to the cardiophrenic angle, up the medial edge. None when the outline is degenerate."""
    pts = outline(mask)
    if pts is None or len(pts) < 20:
        return None
    x, y = pts[:, 0], pts[:, 1]
    h = max(1.0, y.max() - y.min())
    w = max(1.0, x.max() - x.min())
    lateral = (x.max() - x) / w if side == "right" else (x - x.min()) / w
    yn = (y - y.min()) / h
    apex = int(np.argmin(y + 0.05 * h * lateral))  # topmost, ties to the medial side
    cp = int(np.argmax(yn + lateral))
    medial_base = int(np.argmax(yn + (1 - lateral)))
    return _landmarks(pts, [apex, cp, medial_base], LUNG_SEGMENTS)


def heart_landmarks(mask: np.ndarray) -> np.ndarray | None:
    """(N_HEART, 2) points on the heart outline between its right border, base, left border and top."""
    pts = outline(mask)
    if pts is None or len(pts) < 16:
        return None
    x, y = pts[:, 0], pts[:, 1]
    anchors = [int(np.argmin(x)), int(np.argmax(y)), int(np.argmax(x)), int(np.argmin(y))]
    return _landmarks(pts, anchors, HEART_SEGMENTS)


def fill_polygon(points: np.ndarray, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Boolean mask of a polygon given as (N, 2) (x, y) points; `offset` (x0, y0) shifts points into a crop."""
    img = Image.new("1", (shape[1], shape[0]), 0)
    p = np.asarray(points, dtype=np.float64) - np.asarray(offset, dtype=np.float64)
    if len(p) >= 3:
        ImageDraw.Draw(img).polygon([tuple(q) for q in p.tolist()], fill=1, outline=1)
    return np.array(img, dtype=bool)


@dataclass
class LungFrame:
    """Row-wise extents of one lung: v = (y - top) / (bottom - top); u = (x - medial) / (lateral - medial)."""

    side: str
    top: int
    bottom: int
    medial: np.ndarray  # (bottom - top + 1,) float x of the medial edge per row (gaps filled from neighbours)
    lateral: np.ndarray
    width: float  # widest row, px
    height: float

    @classmethod
    def from_mask(cls, mask: np.ndarray, side: str) -> "LungFrame | None":
        rows = np.flatnonzero(mask.any(1))
        if rows.size < 4:
            return None
        top, bottom = int(rows[0]), int(rows[-1])
        sub = mask[top:bottom + 1]
        has = sub.any(1)
        first = np.argmax(sub, axis=1).astype(np.float64)
        last = (sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)).astype(np.float64)
        idx = np.arange(len(sub))
        if not has.all():
            first = np.interp(idx, idx[has], first[has])
            last = np.interp(idx, idx[has], last[has])
        medial, lateral = (last, first) if side == "right" else (first, last)
        return cls(side, top, bottom, medial, lateral, float((last - first).max() + 1), float(bottom - top + 1))

    def _row(self, y: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(y).astype(np.int64) - self.top, 0, len(self.medial) - 1)

    def to_uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        r = self._row(y)
        span = self.lateral[r] - self.medial[r]
        span = np.where(np.abs(span) < 1, np.where(span < 0, -1.0, 1.0), span)
        return (x - self.medial[r]) / span, (y - self.top) / max(1.0, self.bottom - self.top)

    def to_xy(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        y = self.top + v * max(1.0, self.bottom - self.top)
        r = self._row(y)
        return self.medial[r] + u * (self.lateral[r] - self.medial[r]), y

    def uv_maps(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """u and v (float32) over the lung's bounding box (rows top..bottom, the columns it spans); returns
        (u, v, (y0, x0)), the box's top-left corner."""
        x0 = max(0, int(np.floor(min(self.medial.min(), self.lateral.min()))))
        x1 = min(shape[1], int(np.ceil(max(self.medial.max(), self.lateral.max()))) + 1)
        ys = np.arange(self.top, self.bottom + 1, dtype=np.float32)
        xs = np.arange(x0, x1, dtype=np.float32)
        span = self.lateral - self.medial
        span = np.where(np.abs(span) < 1, np.where(span < 0, -1.0, 1.0), span).astype(np.float32)
        u = (xs[None, :] - self.medial.astype(np.float32)[:, None]) / span[:, None]
        v = np.repeat(((ys - self.top) / max(1.0, self.bottom - self.top))[:, None], len(xs), axis=1)
        return u, v, (self.top, x0)


def side_of(x: float, frames: dict[str, LungFrame]) -> str:
    """The patient side whose lung is nearer in x (midline between the two lungs' medial edges)."""
    r, l = frames.get("right"), frames.get("left")
    if r is None or l is None:
        return "right" if r is not None else "left"
    mid = 0.5 * (float(np.median(r.medial)) + float(np.median(l.medial)))
    return "right" if x < mid else "left"
