"""Prompt -> anatomy-consistent pseudo masks (the AURAD mask stage): anatomy first, then each finding placed
relative to it.

    sampler = MaskSampler()                       # the packaged prior (radlens-maskprior-v1)
    samples = sampler.sample("moderate right pleural effusion with cardiomegaly", n=16, seed=0)
    samples[0].masks                              # (C, 512, 512) bool: lung_right, lung_left, heart, findings...

How a sample is drawn (all from one numpy Generator seeded with (seed, index), so a sample does not depend on n):
1. Covariates: sex/age/view as given, else those of a random real image of the fit set; cardiomegaly from the
   prompt. The shape model draws the three outlines; the heart is then widened or narrowed about its centre to a
   target CTR: for Cardiomegaly, a CTR of a real NIH Cardiomegaly box (its width over the thorax) above 0.5 (by
   severity tercile when one is given); otherwise the textbook normal CTR (see ASSUMPTIONS in `fit.py`).
2. Each finding (structure first, focal lesions last) picks a real instance of that finding in lung coordinates
   (same side when there are enough, in the prompted zone, in the prompted severity's size tercile), jitters it
   (a kernel density step), and draws it in this anatomy: effusion as a meniscus from the base up (it reaches the
   costophrenic angle by construction), pneumothorax as a band along the lateral and apical pleura, cardiomegaly
   as the heart itself, others as a real ChestX-Det outline of that finding scaled to the sampled box, clipped to
   the lung. Placements that would overlap an incompatible finding are redrawn; a sample that cannot be completed
   is redrawn from its anatomy.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from radlens.anatomy.measures import thorax_width, widest_row
from radlens.synth import rules, shape_model as sm
from radlens.synth.geometry import LungFrame, fill_polygon
from radlens.synth.prompt import Finding, ParsedPrompt, parse_prompt

PACKAGED_PRIOR = Path(__file__).parent / "weights" / "radlens-maskprior-v1"
ANATOMY = ("lung_right", "lung_left", "heart")
CANVAS = 512
MAX_TRIES = 40
PLACE_TRIES = 25
MIN_POOL = 15  # fewer real instances on the requested side than this: pool both sides (lung coords are mirrored)


class SynthError(ValueError):
    """The prompt asks for something the prior cannot draw (the message says what and why)."""


@dataclass
class Instance:
    finding: str
    side: str | None  # right | left (None for cardiomegaly)
    zone: str | None
    severity: str | None
    size_mm: float | None
    mask: np.ndarray  # (H, W) bool
    target_uv: tuple[float, float] | None = None
    text: str = ""

    def bbox(self) -> list[int]:
        return list(_bbox(self.mask)) if self.mask.any() else [0, 0, 0, 0]

    def to_json(self, mm_per_px: float) -> dict[str, Any]:
        x0, y0, x1, y1 = self.bbox()
        return {"finding": self.finding, "laterality": self.side, "zone": self.zone, "severity": self.severity,
                "size_mm_prompted": self.size_mm, "bbox_xyxy": [x0, y0, x1, y1],
                "size_mm_drawn": round(max(x1 - x0, y1 - y0) * mm_per_px, 1), "area_px": int(self.mask.sum()),
                "prompt_text": self.text}


@dataclass
class MaskSample:
    channels: list[str]
    masks: np.ndarray  # (C, H, W) bool
    instances: list[Instance]
    negated: list[str]
    covariates: dict[str, Any]
    ctr_target: float
    seed: tuple[int, int]
    prior_id: str
    mm_per_px: float
    attempts: int = 1
    notes: list[str] = field(default_factory=list)

    def channel(self, name: str) -> np.ndarray:
        return self.masks[self.channels.index(name)]

    def to_json(self) -> dict[str, Any]:
        return {"seed": list(self.seed), "prior_id": self.prior_id, "channels": self.channels,
                "findings": [i.to_json(self.mm_per_px) for i in self.instances], "negated": self.negated,
                "covariates": self.covariates, "ctr_target": round(self.ctr_target, 4),
                "mm_per_px": round(self.mm_per_px, 4), "attempts": self.attempts, "notes": self.notes}


class MaskPrior:
    """The fitted prior folder: shape model, real instances, templates, assumptions."""

    def __init__(self, folder: str | Path | None = None) -> None:
        folder = Path(folder) if folder else PACKAGED_PRIOR
        need = ("config.json", "priors.json", "shape_model.json", "shape_model.safetensors")
        missing = [f for f in need if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"mask prior {folder} lacks {', '.join(missing)}; write one with "
                                    "`radlens synth fit-prior`")
        self.folder = folder
        self.config = json.loads((folder / "config.json").read_text())
        self.shape = sm.load(folder)
        raw = json.loads((folder / "priors.json").read_text())
        digest = hashlib.sha256((folder / "shape_model.safetensors").read_bytes()
                                + (folder / "priors.json").read_bytes()).hexdigest()[:12]
        if not self.config.get("prior_id", "").endswith(digest):
            raise ValueError(f"{folder}: files do not match config.json's prior_id {self.config.get('prior_id')} "
                             f"(content hash {digest}); the folder was edited by hand or partly copied")
        self.prior_id = self.config["prior_id"]
        self.instances = pd.DataFrame(raw["instances"])
        self.instances["area"] = self.instances.rel_w * self.instances.rel_h
        self.templates = {k: [np.asarray(t) for t in v] for k, v in raw["templates"].items()}
        self.cm_ctr = {k: np.asarray(v) for k, v in raw["cardiomegaly_ctr"].items()}
        self.assumptions = raw["assumptions"]
        self.covariate_rows = np.array([[np.nan if x is None else x for x in r] for r in raw["covariate_rows"]])
        self.by_finding = {k: g.reset_index(drop=True) for k, g in self.instances.groupby("finding")}
        self.terciles = {k: np.quantile(g.area, [1 / 3, 2 / 3]) for k, g in self.by_finding.items()}

    def supported(self) -> list[str]:
        """Findings the prior can place: at least 3 real instances (Cardiomegaly: the heart boxes)."""
        return sorted(k for k, g in self.by_finding.items() if len(g) >= 3 and k in rules.PLACE)


class MaskSampler:
    def __init__(self, prior: MaskPrior | str | Path | None = None, shape: tuple[int, int] = (CANVAS, CANVAS)):
        self.prior = prior if isinstance(prior, MaskPrior) else MaskPrior(prior)
        if tuple(shape) != (CANVAS, CANVAS):
            raise ValueError(f"the prior is fitted on a {CANVAS}x{CANVAS} canvas; resize the masks afterwards")
        self.shape = (CANVAS, CANVAS)

    # -- public ---------------------------------------------------------------------------------------------
    def validate(self, parsed: ParsedPrompt) -> None:
        """Raise SynthError naming every finding or zone the prior cannot draw."""
        problems = []
        ok = set(self.prior.supported())
        for f in parsed.findings:
            if f.name not in ok:
                problems.append(f"{f.name}: no location data to learn from (supported: {', '.join(sorted(ok))})")
            elif f.zone and f.name in rules.ZONES_ALLOWED and f.zone not in rules.ZONES_ALLOWED[f.name]:
                problems.append(f"{f.name}: drawn from the lung base up; zone {f.zone!r} is not supported")
        if problems:
            raise SynthError("; ".join(dict.fromkeys(problems)))

    def sample(self, prompt: str | ParsedPrompt, n: int = 1, seed: int = 0, *, sex: str | None = None,
               age: float | None = None, view: str | None = None) -> list[MaskSample]:
        parsed = parse_prompt(prompt) if isinstance(prompt, str) else prompt
        self.validate(parsed)
        return [self.sample_one(parsed, seed, i, sex=sex, age=age, view=view) for i in range(n)]

    def sample_one(self, parsed: ParsedPrompt, seed: int, index: int, *, sex: str | None = None,
                   age: float | None = None, view: str | None = None) -> MaskSample:
        rng = np.random.default_rng([seed, index])
        names = [f.name for f in parsed.findings]
        cardio = "Cardiomegaly" in names
        for attempt in range(1, MAX_TRIES + 1):
            cov = self._covariates(rng, sex, age, view, cardio)
            anatomy, ctr_target = self._anatomy(rng, cov, parsed)
            if anatomy is None:
                continue
            masks, frames, mm_per_px = anatomy
            placed = self._place_all(rng, parsed, masks, frames, mm_per_px)
            if placed is None:
                continue
            channels = list(ANATOMY) + list(dict.fromkeys(i.finding for i in placed))
            stack = np.zeros((len(channels),) + self.shape, bool)
            stack[:3] = masks
            for inst in placed:
                stack[channels.index(inst.finding)] |= inst.mask
            covd = {"sex": "M" if cov[0] == 1 else "F", "age": round(float(cov[1]) * 10, 1),
                    "view": "AP" if cov[2] == 1 else "PA", "cardiomegaly": bool(cardio)}
            return MaskSample(channels, stack, placed, [f.name for f in parsed.negated], covd, ctr_target,
                              (seed, index), self.prior.prior_id, mm_per_px, attempt)
        raise SynthError(f"could not draw {' + '.join(names) or 'the anatomy'} without conflicts in {MAX_TRIES} "
                         "attempts; the findings may not fit together (e.g. several large findings on one side)")

    # -- anatomy --------------------------------------------------------------------------------------------
    def _covariates(self, rng, sex, age, view, cardio) -> np.ndarray:
        row = self.prior.covariate_rows[rng.integers(len(self.prior.covariate_rows))].copy()
        if np.isnan(row[0]):
            row[0] = float(rng.random() < 0.55)
        if np.isnan(row[1]):
            row[1] = float(np.nanmedian(self.prior.covariate_rows[:, 1]))
        if sex is not None:
            row[0] = 1.0 if str(sex).upper().startswith("M") else 0.0
        if age is not None:
            row[1] = float(age) / 10.0
        if view is not None:
            row[2] = 1.0 if str(view).upper().startswith("AP") else 0.0
        return np.array([row[0], row[1], row[2], 1.0 if cardio else 0.0])

    def _target_ctr(self, rng, cov, parsed: ParsedPrompt) -> float:
        view = "AP" if cov[2] == 1 else "PA"
        cm = [f for f in parsed.findings if f.name == "Cardiomegaly"]
        if cm:
            pool = self.prior.cm_ctr.get(view)
            pool = pool if pool is not None and len(pool) >= 10 else np.concatenate(list(self.prior.cm_ctr.values()))
            pool = np.sort(pool[pool > rules.CTR_RULE + 0.01])
            sev = cm[0].severity
            if sev:
                k = {"mild": 0, "moderate": 1, "severe": 2}[sev]
                pool = np.array_split(pool, 3)[k]
            return float(np.clip(rng.choice(pool) + rng.normal(0, 0.01), rules.CTR_RULE + 0.01, 0.85))
        a = self.prior.assumptions["normal_ctr"]
        mu, sd = a[view]
        return float(np.clip(rng.normal(mu, sd), a["min"], a["max"]))

    def _anatomy(self, rng, cov, parsed):
        scores = self.prior.shape.sample_scores(rng, cov)
        pts = self.prior.shape.landmarks(scores)
        masks = sm.rasterize(pts, self.shape)
        right, left, heart = masks
        if (right & left).any() or any(ndimage.label(m)[1] != 1 for m in masks):
            return None, 0.0
        tw = thorax_width(right, left)[0]
        if not tw:
            return None, 0.0
        target = self._target_ctr(rng, cov, parsed)
        hpts = sm.split_landmarks(pts)[2].copy()
        for _ in range(2):  # widen/narrow the heart about its centre; the base stays on the diaphragm
            hw = widest_row(heart)[0]
            if not hw:
                return None, 0.0
            f = target * tw / hw
            cx = 0.5 * (hpts[:, 0].min() + hpts[:, 0].max())
            base = hpts[:, 1].max()
            hpts[:, 0] = cx + (hpts[:, 0] - cx) * f
            hpts[:, 1] = base - (base - hpts[:, 1]) * f ** 0.3
            heart = fill_polygon(hpts, self.shape)
        if ndimage.label(heart)[1] != 1:  # the resized outline folded over itself
            return None, 0.0
        masks = np.stack([right, left, heart])
        frames = {"right": LungFrame.from_mask(right, "right"), "left": LungFrame.from_mask(left, "left")}
        mm_per_px = self.prior.assumptions["thorax_mm"] / tw
        return (masks, frames, mm_per_px), target

    # -- findings -------------------------------------------------------------------------------------------
    def _place_all(self, rng, parsed, masks, frames, mm_per_px) -> list[Instance] | None:
        todo: list[tuple[Finding, str | None]] = []
        for f in parsed.findings:
            if f.name == "Cardiomegaly":
                todo.append((f, None))
                continue
            if f.laterality == "bilateral":
                todo += [(f, "right"), (f, "left")]
            else:
                todo.append((f, f.laterality or self._draw_side(rng, f.name)))
        todo.sort(key=lambda t: rules.ORDER.index(t[0].name) if t[0].name in rules.ORDER else len(rules.ORDER))
        placed: list[Instance] = []
        for f, side in todo:
            for _ in range(PLACE_TRIES):
                inst = self._place(rng, f, side, masks, frames, mm_per_px)
                if inst is not None and inst.mask.any() and not _conflicts(inst, placed):
                    placed.append(inst)
                    break
            else:
                return None
        return placed

    def _draw_side(self, rng, name: str) -> str:
        g = self.prior.by_finding[name]
        return "right" if rng.random() < float((g.side == "right").mean()) else "left"

    def _pool(self, rng, f: Finding, side: str) -> tuple[pd.Series, float]:
        """A real instance to imitate and a size factor (1 unless the severity tercile had no instance)."""
        g = self.prior.by_finding[f.name]
        same = g[g.side == side]
        pool = same if len(same) >= MIN_POOL else g
        if f.zone and f.name not in ("Effusion", "Pneumothorax"):
            lo, hi = rules.ZONES[f.zone]
            inzone = pool[(pool.v >= lo) & (pool.v < hi)]
            if f.zone == "perihilar":
                inzone = inzone[inzone.u <= rules.PERIHILAR_MAX_U]
            if len(inzone) >= 3:
                pool = inzone
            else:  # too few real instances in this zone: keep sizes/shapes from the pool, draw the position
                row = pool.iloc[int(rng.integers(len(pool)))].copy()
                row["v"] = rng.uniform(lo + 0.03, hi - 0.03)
                umax = rules.PERIHILAR_MAX_U if f.zone == "perihilar" else 0.85
                row["u"] = rng.uniform(0.15, umax)
                return row, self._severity_factor(f, pool, row)
        factor = 1.0
        if f.severity:
            k = {"mild": 0, "moderate": 1, "severe": 2}[f.severity]
            t = self.prior.terciles[f.name]
            tier = np.digitize(pool.area, t)
            chosen = pool[tier == k]
            if len(chosen):
                pool = chosen
            else:
                factor = self._tier_area(f.name, k) / float(pool.area.median())
        return pool.iloc[int(rng.integers(len(pool)))].copy(), factor

    def _tier_area(self, name: str, k: int) -> float:
        g = self.prior.by_finding[name]
        t = np.digitize(g.area, self.prior.terciles[name])
        return float(g.area[t == k].median()) if (t == k).any() else float(g.area.median())

    def _severity_factor(self, f: Finding, pool, row) -> float:
        if not f.severity:
            return 1.0
        k = {"mild": 0, "moderate": 1, "severe": 2}[f.severity]
        return self._tier_area(f.name, k) / max(1e-6, float(row.area))

    def _place(self, rng, f: Finding, side: str | None, masks, frames, mm_per_px) -> Instance | None:
        if f.name == "Cardiomegaly":
            return Instance(f.name, None, None, f.severity, None, masks[2].copy(), None, f.text)
        row, factor = self._pool(rng, f, side)
        frame: LungFrame = frames[side]
        lung = masks[0] if side == "right" else masks[1]
        n = len(self.prior.by_finding[f.name])
        bw = 0.6 * n ** (-1 / 6)  # Scott's factor (2-D), narrowed: stay near real positions
        u = float(row.u + rng.normal(0, bw * 0.15))
        v = float(row.v + rng.normal(0, bw * 0.1))
        if f.zone and f.name not in ("Effusion", "Pneumothorax"):
            lo, hi = rules.ZONES[f.zone]
            v = float(np.clip(v, lo + 0.02, hi - 0.02))
        scale = math.sqrt(factor) * math.exp(rng.normal(0, 0.1))
        w = max(4.0, row.rel_w * frame.width * scale)
        h = max(4.0, row.rel_h * frame.height * scale)
        g = self.prior.by_finding[f.name]
        amin, amax = float(g.area.min()), float(g.area.max())
        rel = (w / frame.width) * (h / frame.height)
        if f.size_mm:
            s = (f.size_mm / mm_per_px) / max(w, h)
            w, h = w * s, h * s
        elif not amin <= rel <= amax / rules.SIZE_SLACK:  # stay within the sizes seen in real images (drawing
            s = math.sqrt(np.clip(rel, amin, amax / rules.SIZE_SLACK) / rel)  # and rotation add a little)
            w, h = w * s, h * s
        if f.name == "Effusion":
            mask = _effusion(rng, frame, lung, row, factor)
        elif f.name == "Pneumothorax":
            mask = _pneumothorax(rng, frame, lung, row, factor, f.zone)
        else:
            u = float(np.clip(u, 0.08, 0.92)) if rules.PLACE[f.name] == "lung" else u
            v = float(np.clip(v, 0.03, 0.97)) if rules.PLACE[f.name] == "lung" else v
            x, y = frame.to_xy(np.array(u), np.array(v))
            state = rng.bit_generator.state
            mask = self._template(rng, f.name, side, float(x), float(y), w, h)
            if rules.PLACE[f.name] == "lung":
                full = mask.sum()
                clipped = mask & lung
                if clipped.any():  # clipping moves the box centre: shift once so the clipped box sits where aimed
                    x0, y0, x1, y1 = _bbox(clipped)
                    dx, dy = float(x) - 0.5 * (x0 + x1), float(y) - 0.5 * (y0 + y1)
                    if abs(dx) + abs(dy) > 2:
                        rng.bit_generator.state = state  # the same outline and rotation, moved
                        mask = self._template(rng, f.name, side, float(x) + dx, float(y) + dy, w, h)
                        full = mask.sum()
                        clipped = mask & lung
                mask = clipped
                # mostly outside this lung: redraw. Real boxes at the base often reach below the expert's lung
                # (dense lung is segmented as non-lung), so the bar is relative to the real instance's own share.
                if mask.sum() < 0.6 * min(1.0, float(row.inside_lung)) * full:
                    return None
            else:  # pleura / chest wall: keep it within a band around the lungs
                near = ndimage.binary_dilation(lung, iterations=rules.PLEURA_PX // 2) if mask.any() else lung
                mask &= near
            if not f.size_mm and mask.any():  # clipping must not shrink it below the real sizes
                ys, xs = np.nonzero(mask)
                drawn = ((np.ptp(xs) + 1) / frame.width) * ((np.ptp(ys) + 1) / frame.height)
                if not amin / rules.SIZE_SLACK <= drawn <= amax * rules.SIZE_SLACK:
                    return None
            if f.size_mm and mask.any():  # a prompted size must survive clipping
                x0, y0, x1, y1 = _bbox(mask)
                if abs(max(x1 - x0, y1 - y0) * mm_per_px - f.size_mm) > 0.8 * rules.MM_TOLERANCE * f.size_mm:
                    return None
            if f.zone and mask.any():  # clipping to the lung moves the centroid: keep it in the zone
                ys, xs = np.nonzero(mask)
                cu, cv = frame.to_uv(np.array(xs.mean()), np.array(ys.mean()))
                lo, hi = rules.ZONES[f.zone]
                if not lo <= float(cv) <= hi or (f.zone == "perihilar" and float(cu) > rules.PERIHILAR_MAX_U):
                    return None
        return Instance(f.name, side, f.zone, f.severity, f.size_mm, mask, (u, v), f.text)

    def _template(self, rng, name: str, side: str, x: float, y: float, w: float, h: float) -> np.ndarray:
        pool = [t for k in rules.TEMPLATE_POOL.get(name, (name,)) for t in self.prior.templates.get(k, [])]
        if pool:
            t = pool[int(rng.integers(len(pool)))].copy()
        else:  # no outline of this finding anywhere: a lobulated ellipse
            a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            r = 0.5 * (1 + sum(rng.normal(0, 0.06) * np.cos(k * a + rng.uniform(0, 6.3)) for k in range(2, 6)))
            t = np.stack([0.5 + r * np.cos(a), 0.5 + r * np.sin(a)], 1)
        px = (t[:, 0] - 0.5) * w
        px = -px if side == "right" else px  # template x runs medial -> lateral
        py = (t[:, 1] - 0.5) * h
        ang = rng.normal(0, math.radians(10))
        c, s = math.cos(ang), math.sin(ang)
        pts = np.stack([x + c * px - s * py, y + s * px + c * py], 1)
        return fill_polygon(pts, (CANVAS, CANVAS))


def _conflicts(inst: Instance, placed: list[Instance]) -> bool:
    a = int(inst.mask.sum())
    for p in placed:
        if p.finding == inst.finding and p.side == inst.side and p.zone == inst.zone:
            continue
        if rules.may_overlap(p.finding, inst.finding):
            continue
        inter = int((p.mask & inst.mask).sum())
        if inter > rules.MAX_OVERLAP * max(1, min(a, int(p.mask.sum()))):
            return True
    return False


def _bbox(m: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _band(frame: LungFrame, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    u, v, (y0, x0) = frame.uv_maps(lung.shape)
    return u, v, lung[y0:y0 + u.shape[0], x0:x0 + u.shape[1]], (y0, x0)


def _paste(region: np.ndarray, corner: tuple[int, int], like: np.ndarray) -> np.ndarray:
    out = np.zeros_like(like)
    out[corner[0]:corner[0] + region.shape[0], corner[1]:corner[1] + region.shape[1]] = region
    return out


def _effusion(rng, frame: LungFrame, lung: np.ndarray, row, factor: float) -> np.ndarray:
    """Fluid from the base up: a meniscus, highest at the lateral wall, so it fills the costophrenic angle."""
    u, v, inside, corner = _band(frame, lung)
    top = float(np.clip(1.0 - (1.0 - row.v0) * math.sqrt(factor) + rng.normal(0, 0.03), 0.1, 0.93))
    curve = 0.55 * np.clip(1.0 - u, 0, 1) ** 1.5 + 0.02 * np.sin(u * rng.uniform(4, 9) + rng.uniform(0, 6.3))
    region = inside & (v >= top + (1.0 - top) * curve)
    return _paste(region, corner, lung)


def _pneumothorax(rng, frame: LungFrame, lung: np.ndarray, row, factor: float, zone: str | None) -> np.ndarray:
    """Pleural air along the lateral wall and over the apex: a band whose inner edge is the collapsed lung."""
    u, v, inside, corner = _band(frame, lung)
    t = float(np.clip(row.rel_w * 0.45 * math.sqrt(factor) + rng.normal(0, 0.03), 0.06, 0.55))
    bottom = float(np.clip(row.v1 + rng.normal(0, 0.05), 0.25, 0.95))
    if zone in ("apical", "upper"):
        bottom = min(bottom, rules.ZONES[zone][1])
    elif zone in ("lower", "basal"):
        bottom = 1.0
    wobble = 1 + 0.12 * np.sin(v * rng.uniform(5, 10) + rng.uniform(0, 6.3))
    apex = max(0.03, t * frame.width / frame.height * 0.7)
    if zone in ("lower", "basal"):  # a deep-sulcus (basal) pneumothorax: along the lateral wall from the zone down
        lo = rules.ZONES[zone][0]
        taper = np.clip((v - (lo - 0.15)) / 0.15, 0, 1) ** 0.5
        dist = (1 - u) / t
    elif zone is None and row.v0 > 0.3:  # the real one starts below the apex: a lateral band from v0 down
        start = float(np.clip(row.v0 + rng.normal(0, 0.03), 0.3, 0.85))
        end = max(bottom, start + 0.15)
        ramp = lambda d: 0.5 * (1 + np.cos(np.pi * np.clip(d, 0, 1)))  # noqa: E731
        taper = ramp((start + 0.08 - v) / 0.08) * ramp((v - (end - 0.1)) / 0.1)
        dist = (1 - u) / (t * wobble)
    else:  # lateral band and apical cap joined by a rounded (soft-min) corner; the band tapers out at `bottom`
        taper = np.where(v <= 0.7 * bottom, 1.0,
                         0.5 * (1 + np.cos(np.pi * np.clip((v - 0.7 * bottom) / (0.3 * bottom), 0, 1))))
        a, b = (1 - u) / (t * wobble), v / apex
        m = np.minimum(a, b)
        dist = m - np.log(np.exp(-4 * (a - m)) + np.exp(-4 * (b - m))) / 4 + np.log(2) / 4
    region = inside & (dist <= taper)
    return _paste(region, corner, lung)
