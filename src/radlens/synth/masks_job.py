"""`radlens synth masks`: sample mask stacks for a prompt and write them as files a segmentation/detection
pipeline can read, in one atomic folder swap.

    OUT/manifest.json               prompt, parsed findings, seed, n, prior id, anatomy model id, check summary
    OUT/samples/NNNN/<channel>.png  one 8-bit mask per channel (0/255), lung_right, lung_left, heart, findings
    OUT/samples/NNNN/findings.json  per-instance finding, side, zone, severity, bbox (x0, y0, x1, y1), size, checks
    OUT/overlays/NNNN.png           colour overlay
    OUT/overlay_sheet.png           all samples on one sheet
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from radlens.atomic import folder_swap
from radlens.synth.checks import check_sample
from radlens.synth.prompt import parse_prompt
from radlens.synth.render import contact_sheet, overlay
from radlens.synth.sampler import MaskSampler

KIND = "radlens-synth-masks"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def write_masks(prompt: str, n: int, seed: int, out: Path, *, prior: str | None = None, sex: str | None = None,
                age: float | None = None, view: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Sample `n` mask stacks and write them under `out`; returns the manifest."""
    from rich.progress import track

    if out.exists() and any(out.iterdir()):
        old = out / "manifest.json"
        is_ours = old.is_file() and json.loads(old.read_text()).get("kind") == KIND
        if not (overwrite and is_ours):
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace an earlier "
                                  f"`radlens synth masks` output" + ("" if is_ours else " (this folder is not one)"))
    from radlens.anatomy import api as anatomy

    parsed = parse_prompt(prompt)
    sampler = MaskSampler(prior)
    sampler.validate(parsed)
    samples, records = [], []
    with folder_swap(out) as tmp:
        (tmp / "samples").mkdir()
        (tmp / "overlays").mkdir()
        for i in track(range(n), description="sampling masks", transient=True):
            s = sampler.sample_one(parsed, seed, i, sex=sex, age=age, view=view)
            violations = check_sample(s, parsed, sampler.prior)
            d = tmp / "samples" / f"{i:04d}"
            d.mkdir()
            for name, m in zip(s.channels, s.masks):
                Image.fromarray(m.astype(np.uint8) * 255).save(d / f"{slug(name)}.png", optimize=True)
            rec = {**s.to_json(), "files": {c: f"samples/{i:04d}/{slug(c)}.png" for c in s.channels},
                   "checks_passed": not violations, "violations": [str(v) for v in violations]}
            (d / "findings.json").write_text(json.dumps(rec, indent=1))
            Image.fromarray(overlay(s)).save(tmp / "overlays" / f"{i:04d}.png", optimize=True)
            samples.append(s)
            records.append(rec)
        per_row = 8
        rows = [(prompt if k == 0 else "", samples[k:k + per_row]) for k in range(0, len(samples), per_row)]
        contact_sheet(rows, tmp / "overlay_sheet.png")
        manifest = {
            "kind": KIND, "prompt": prompt, "n": n, "seed": seed, "canvas": list(sampler.shape),
            "prior_id": sampler.prior.prior_id, "anatomy_model": sampler.prior.config.get("anatomy_model"),
            "parsed": {"findings": [_finding(f) for f in parsed.findings],
                       "negated": [_finding(f) for f in parsed.negated], "not_understood": parsed.unparsed_text},
            "covariates_requested": {"sex": sex, "age": age, "view": view},
            "checks": {"passed": sum(r["checks_passed"] for r in records), "of": n},
            "samples": [f"samples/{i:04d}/findings.json" for i in range(n)],
            "anatomy_expert": anatomy.NAME,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _finding(f) -> dict[str, Any]:
    return {"finding": f.name, "laterality": f.laterality, "zone": f.zone, "severity": f.severity,
            "size_mm": f.size_mm, "text": f.text}
