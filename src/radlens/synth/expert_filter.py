"""Expert filter for generated (image, masks) pairs: keep a pair only if expert models, trained on real images
only, see in the image what the masks and the prompt say.

Stages, each recorded with its scores in the pair's QC record (a rejected pair lists every reason):
0. the mask sample's own consistency checks (`radlens.synth.checks`), already run when the masks were drawn;
1. sanity: finite pixels, a usable intensity range (not blank, not saturated), not a copy of another image in the
   batch (mode collapse);
2. anatomy: the anatomy expert segments the generated image; its right lung, left lung and heart must overlap the
   conditioning masks with Dice at least the filter's thresholds. Thresholds come from real images
   (`filter_fit.anatomy_thresholds`): the expert on real images resized to the generator's size against human
   outlines, 5th percentile, so a generated image is held to what a real one of that size achieves;
3. findings: the default encoder + a logistic-regression adapter trained on real NIH training images (the
   "finding expert"); each prompted finding with an NIH label must reach the adapter's high-sensitivity operating
   point, and each negated one must stay below its high-specificity one. Findings without an NIH label (fracture,
   calcification, diffuse nodule) have no expert and are recorded as unchecked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from radlens.synth.condition import resize_planes

PACKAGED_FILTER = Path(__file__).parent / "weights" / "radlens-synth-filter-v1"
SANITY = {"min_std": 0.06, "mean_range": (0.15, 0.85), "saturated_max": 0.25, "duplicate_mad": 0.004}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = float(a.sum() + b.sum())
    return 1.0 if s == 0 else float(2.0 * (a & b).sum() / s)


@dataclass
class QC:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "scores": self.scores}


class ExpertFilter:
    def __init__(self, folder: str | Path | None = None) -> None:
        from radlens.adapters.artefact import load_adapter
        from radlens.anatomy import api as anatomy
        from radlens.encoders import get

        folder = Path(folder) if folder else PACKAGED_FILTER
        cfg = folder / "filter.json"
        if not cfg.is_file():
            raise FileNotFoundError(f"{folder} lacks filter.json; write one with `radlens synth fit-filter`")
        self.config = json.loads(cfg.read_text())
        self.anatomy = anatomy.load()
        if self.config["anatomy_model"] != self.anatomy.model_id:
            raise ValueError(f"{cfg}: thresholds were calibrated with {self.config['anatomy_model']}, this radlens "
                             f"ships {self.anatomy.model_id}; run `radlens synth fit-filter` again")
        self.encoder = get(self.config["encoder"])
        self.adapter = load_adapter(folder / "finding-expert", encoder_id=self.encoder.encoder_id,
                                    preprocess_hash=self.encoder.preprocess_hash)
        self.sens = dict(zip(self.adapter.class_names, self.adapter.thresholds("sensitivity")))
        self.spec = dict(zip(self.adapter.class_names, self.adapter.thresholds("specificity")))

    def judge(self, images: np.ndarray, samples: Sequence, negated: Sequence[Sequence[str]] | None = None,
              mask_violations: Sequence[Sequence[str]] | None = None) -> list[QC]:
        """One QC per (image (S, S) float in [0, 1], MaskSample) pair."""
        n = len(images)
        negated = negated if negated is not None else [s.negated for s in samples]
        out = [QC(True, [], {}) for _ in range(n)]
        for i, v in enumerate(mask_violations or [[]] * n):
            if v:
                out[i].reasons += [f"masks: {x}" for x in v]
        self._sanity(images, out)
        self._anatomy(images, samples, out)
        self._findings(images, samples, negated, out)
        for q in out:
            q.passed = not q.reasons
        return out

    def _sanity(self, images: np.ndarray, out: list[QC]) -> None:
        flat = images.reshape(len(images), -1)
        for i, x in enumerate(flat):
            q = out[i]
            if not np.isfinite(x).all():
                q.reasons.append("sanity: non-finite pixels")
                continue
            mean, std = float(x.mean()), float(x.std())
            sat = float(np.mean((x < 0.01) | (x > 0.99)))
            q.scores.update(intensity_mean=round(mean, 4), intensity_std=round(std, 4), saturated=round(sat, 4))
            if std < SANITY["min_std"]:
                q.reasons.append(f"sanity: flat image (std {std:.3f})")
            if not SANITY["mean_range"][0] <= mean <= SANITY["mean_range"][1]:
                q.reasons.append(f"sanity: mean intensity {mean:.2f} outside {SANITY['mean_range']}")
            if sat > SANITY["saturated_max"]:
                q.reasons.append(f"sanity: {sat:.0%} of pixels saturated")
        if len(flat) > 1:
            for i in range(len(flat)):
                d = np.abs(flat - flat[i]).mean(1)
                d[i] = np.inf
                j = int(np.argmin(d))
                out[i].scores["nearest_in_batch_mad"] = round(float(d[j]), 5)
                if d[j] < SANITY["duplicate_mad"]:
                    out[i].reasons.append(f"sanity: near-copy of image {j} in the batch (collapse)")

    def _anatomy(self, images: np.ndarray, samples: Sequence, out: list[QC]) -> None:
        masks = self.anatomy.segment(list(images.astype(np.float32)))
        s = images.shape[-1]
        th = self.config["dice_min"]
        for i, (m, sample) in enumerate(zip(masks, samples)):
            want = resize_planes(sample.masks[:3].astype(np.float32), s) >= 0.5
            for k, name in enumerate(("lung_right", "lung_left", "heart")):
                d = dice(getattr(m, name), want[k])
                out[i].scores[f"dice_{name}"] = round(d, 4)
                if th.get(name) is not None and d < th[name]:
                    out[i].reasons.append(f"anatomy: {name} Dice {d:.2f} < {th[name]:.2f}")

    def _findings(self, images: np.ndarray, samples: Sequence, negated, out: list[QC]) -> None:
        emb = self.encoder.embed(list(images.astype(np.float32)))
        P = self.adapter.predict_proba(emb)
        classes = self.adapter.class_names
        for i, sample in enumerate(samples):
            probs = {c: round(float(p), 4) for c, p in zip(classes, P[i])}
            wanted = sorted({n.replace(" ", "_") for n in sample.channels[3:]})
            checked, unchecked = [], []
            for name in wanted:
                if name not in probs:
                    unchecked.append(name)
                    continue
                checked.append(name)
                if probs[name] < self.sens[name]:
                    out[i].reasons.append(f"finding: {name} p={probs[name]:.2f} below the expert's "
                                          f"high-sensitivity threshold {self.sens[name]:.2f}")
            for name in sorted({n.replace(" ", "_") for n in negated[i]}):
                if name in probs and probs[name] >= self.spec[name]:
                    out[i].reasons.append(f"finding: negated {name} p={probs[name]:.2f} at or above the expert's "
                                          f"high-specificity threshold {self.spec[name]:.2f}")
            out[i].scores.update(finding_probs={k: probs[k] for k in checked + [n for n in negated[i] if n in probs]},
                                 findings_unchecked=unchecked)
