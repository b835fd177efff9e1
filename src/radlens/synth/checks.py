"""Consistency checks of a mask sample, measured on its masks (the first stage of the expert filter).

The checks do not trust what the sampler meant to draw: lung frames, sides, zones, sizes and the CTR are
re-measured from the pixel masks, against the prompt and the learned ranges. Each check returns a named
`Violation`; a sample passes when there is none.

- anatomy: two lungs, one piece each, not overlapping; a heart between them; the outlines within the shape
  model's range (RMS residual over modes below its truncation); CTR above 0.5 with Cardiomegaly, below without.
- per finding instance: not empty; inside the lung fields (>= 90 % of its area) unless it lies outside by nature
  (heart for cardiomegaly; pleura/chest wall for fracture and pleural thickening: inside the lungs grown by a
  band); on the prompted side; its centroid in the prompted zone; effusion reaching the costophrenic angle;
  pneumothorax along the lateral/apical pleura; its relative area within the real instances' range; a prompted
  size in mm met within 25 %.
- together: incompatible findings do not overlap; negated findings are absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radlens.anatomy.measures import measure
from radlens.synth import rules
from radlens.synth.geometry import LungFrame, heart_landmarks, lung_landmarks, side_of
from radlens.synth.prompt import ParsedPrompt
from radlens.synth.sampler import MaskPrior, MaskSample
from radlens.synth.shape_model import TRUNCATE


@dataclass(frozen=True)
class Violation:
    check: str
    finding: str | None
    detail: str

    def __str__(self) -> str:
        return f"{self.check}" + (f" [{self.finding}]" if self.finding else "") + f": {self.detail}"


def check_sample(sample: MaskSample, parsed: ParsedPrompt, prior: MaskPrior, *, shape: bool = True) -> list[Violation]:
    """Every violation of the prompt and of anatomy in one sample ([] = consistent). `shape=False` skips the
    shape-model distance (~30 ms)."""
    out: list[Violation] = []
    right, left, heart = sample.channel("lung_right"), sample.channel("lung_left"), sample.channel("heart")
    lungs = right | left
    out += _anatomy(right, left, heart, sample, parsed, prior, shape)
    frames = {"right": LungFrame.from_mask(right, "right"), "left": LungFrame.from_mask(left, "left")}
    if frames["right"] is None or frames["left"] is None:
        return out
    m = measure(right, left, heart)
    mm_per_px = prior.assumptions["thorax_mm"] / max(1, m.thorax_width_px)
    grown = ndimage.binary_dilation(lungs, iterations=rules.PLEURA_PX)
    for inst in sample.instances:
        out += _instance(inst, frames, lungs, grown, heart, prior, mm_per_px)
    out += _together(sample, parsed, frames)
    return out


def _anatomy(right, left, heart, sample, parsed, prior, shape) -> list[Violation]:
    out = []
    for name, mk in (("right lung", right), ("left lung", left), ("heart", heart)):
        n = ndimage.label(mk)[1]
        if n != 1:
            out.append(Violation("anatomy", None, f"{name} has {n} pieces"))
    if (right & left).any():
        out.append(Violation("anatomy", None, "the lungs overlap"))
    if out:
        return out
    m = measure(right, left, heart)
    hx = np.flatnonzero(heart.any(0))
    if hx.mean() < m.thorax_x0 or hx.mean() > m.thorax_x1:
        out.append(Violation("anatomy", None, "heart not between the lungs"))
    cardio = any(f.name == "Cardiomegaly" for f in parsed.findings)
    if cardio and not m.ctr > rules.CTR_RULE:
        out.append(Violation("cardiomegaly", "Cardiomegaly", f"CTR {m.ctr:.3f} not above {rules.CTR_RULE}"))
    if not cardio and not m.ctr < rules.CTR_RULE:
        out.append(Violation("cardiomegaly", None, f"CTR {m.ctr:.3f} without Cardiomegaly in the prompt"))
    if shape:
        parts = (lung_landmarks(right, "right"), lung_landmarks(left, "left"), heart_landmarks(heart))
        if any(p is None for p in parts):
            out.append(Violation("anatomy", None, "an outline is degenerate"))
        else:
            pts = np.concatenate(parts)
            c = sample.covariates
            cov = np.array([c["sex"] == "M", c["age"] / 10.0, c["view"] == "AP", c["cardiomegaly"]], float)
            # heart width was set by the CTR target, so distance is judged on the lungs' modes and the heart's place
            d = prior.shape.mahalanobis(pts, cov)
            if d > TRUNCATE:
                out.append(Violation("anatomy", None, f"outlines {d:.2f} residual SDs from the shape model"))
    return out


def _instance(inst, frames, lungs, grown, heart, prior, mm_per_px) -> list[Violation]:
    out = []
    f, mk = inst.finding, inst.mask
    area = int(mk.sum())
    if not area:
        return [Violation("empty", f, "no pixels")]
    place = rules.PLACE.get(f, "lung")
    if place == "heart":
        if (mk & heart).sum() < 0.99 * area:
            out.append(Violation("inside", f, "cardiomegaly channel is not the heart"))
        return out
    inside = float((mk & (lungs if place == "lung" else grown)).sum() / area)
    if inside < rules.MIN_INSIDE[place]:
        where = "lung fields" if place == "lung" else "lungs or their pleural band"
        out.append(Violation("inside", f, f"{inside:.0%} inside the {where}"))
    ys, xs = np.nonzero(mk)
    cx, cy = float(xs.mean()), float(ys.mean())
    side = side_of(cx, frames)
    if inst.side and side != inst.side:
        out.append(Violation("laterality", f, f"drawn on the {side}, prompted {inst.side}"))
        return out
    fr = frames[side]
    u, v = fr.to_uv(np.array(cx), np.array(cy))
    u, v = float(u), float(v)
    if inst.zone and f not in ("Effusion", "Pneumothorax"):
        lo, hi = rules.ZONES[inst.zone]
        tol = rules.ZONE_TOLERANCE
        if not lo - tol <= v <= hi + tol or (inst.zone == "perihilar" and u > rules.PERIHILAR_MAX_U + tol):
            out.append(Violation("zone", f, f"centroid at v={v:.2f} u={u:.2f}, outside the {inst.zone} zone"))
    pu, pv = fr.to_uv(xs.astype(float), ys.astype(float))
    if f == "Effusion":
        if not np.any((pv >= 0.9) & (pu >= 0.6)):
            out.append(Violation("zone", f, "does not reach the costophrenic angle"))
        if inst.zone in ("lower", "basal") and v < rules.ZONES[inst.zone][0] - rules.ZONE_TOLERANCE:
            out.append(Violation("zone", f, f"centroid v={v:.2f} above the {inst.zone} zone"))
    if f == "Pneumothorax":
        pleural = float(np.mean((pu >= 0.5) | (pv <= 0.25)))
        if pleural < 0.9:
            out.append(Violation("zone", f, f"only {pleural:.0%} along the lateral/apical pleura"))
        if inst.zone:
            lo, hi = rules.ZONES[inst.zone]
            if not np.any((pv >= lo - rules.ZONE_TOLERANCE) & (pv <= hi + rules.ZONE_TOLERANCE)):
                out.append(Violation("zone", f, f"not in the {inst.zone} zone"))
    g = prior.by_finding.get(f)
    x0, y0, x1, y1 = inst.bbox()
    if inst.size_mm:
        drawn = max(x1 - x0, y1 - y0) * mm_per_px
        if abs(drawn - inst.size_mm) > rules.MM_TOLERANCE * inst.size_mm:
            out.append(Violation("size", f, f"{drawn:.0f} mm drawn, {inst.size_mm:.0f} mm prompted"))
    elif g is not None and f not in ("Effusion", "Pneumothorax"):
        rel = ((x1 - x0) / fr.width) * ((y1 - y0) / fr.height)
        lo, hi = float(g.area.min()) / rules.SIZE_SLACK, float(g.area.max()) * rules.SIZE_SLACK
        if not lo <= rel <= hi:
            out.append(Violation("size", f, f"relative area {rel:.4f} outside the real range {lo:.4f}-{hi:.4f}"))
    return out


def _together(sample: MaskSample, parsed: ParsedPrompt, frames) -> list[Violation]:
    out = []
    inst = sample.instances
    for i in range(len(inst)):
        for j in range(i + 1, len(inst)):
            a, b = inst[i], inst[j]
            if a.finding == b.finding or rules.may_overlap(a.finding, b.finding):
                continue
            inter = int((a.mask & b.mask).sum())
            if inter > rules.MAX_OVERLAP * max(1, min(int(a.mask.sum()), int(b.mask.sum()))):
                out.append(Violation("overlap", f"{a.finding}+{b.finding}", f"{inter} px overlap"))
    drawn = set(sample.channels[3:])
    for f in parsed.negated:
        if f.name in drawn:
            out.append(Violation("negation", f.name, "negated in the prompt but drawn"))
    for f in parsed.findings:
        sides = {i.side for i in inst if i.finding == f.name}
        if f.name not in drawn:
            out.append(Violation("missing", f.name, "prompted but not drawn"))
        elif f.laterality == "bilateral" and sides != {"right", "left"}:
            out.append(Violation("laterality", f.name, f"bilateral prompted, drawn on {sorted(s for s in sides if s)}"))
    return out
