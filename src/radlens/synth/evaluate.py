"""`radlens synth evaluate`: how often sampled masks pass the consistency checks, and how far sampled lesion
locations are from real ones.

Location distance: lesion box centres (measured on the sampled masks, in their own lung frames; box centres
because the real annotations are boxes, and ChestX-Det polygons are reduced to theirs) fall into 6 cells,
side x upper/mid/lower zone; their frequencies are compared with those of the real instances of the NIH `eval`
split (boxes and ChestX-Det polygons on images the prior never saw, placed in the expert's lung frames) by total
variation distance (0 = same, 1 = disjoint). Its yardstick is the same distance between the real instances the
prior was fitted on and the real eval ones (two real samples differ by this much by chance and by patient mix).
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlens.synth.checks import check_sample
from radlens.synth.geometry import LungFrame, side_of
from radlens.synth.prompt import parse_prompt
from radlens.synth.render import contact_sheet
from radlens.synth.sampler import MaskSampler

SHOWCASE = (
    "moderate right pleural effusion with cardiomegaly",
    "3 cm mass in the left upper zone",
    "small left apical pneumothorax, no effusion",
    "bilateral lower zone consolidation",
    "right basal atelectasis and a 12 mm nodule in the right mid zone",
    "severe cardiomegaly with bilateral effusions and a left lower zone pneumonia",
)
CELLS = [f"{s}-{z}" for s in ("right", "left") for z in ("upper", "mid", "lower")]


def cell(side: str, v: float) -> str:
    return f"{side}-{'upper' if v < 1 / 3 else 'mid' if v < 2 / 3 else 'lower'}"


def freqs(cells: list[str]) -> np.ndarray:
    c = collections.Counter(cells)
    a = np.array([c[k] for k in CELLS], float)
    return a / max(1.0, a.sum())


def tv(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def sampled_cells(samples) -> list[str]:
    out = []
    for s in samples:
        frames = {"right": LungFrame.from_mask(s.channel("lung_right"), "right"),
                  "left": LungFrame.from_mask(s.channel("lung_left"), "left")}
        for inst in s.instances:
            if inst.finding == "Cardiomegaly" or not inst.mask.any():
                continue
            x0, y0, x1, y1 = inst.bbox()  # box centre, as for the real boxes and polygons
            cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
            side = side_of(cx, frames)
            _, v = frames[side].to_uv(np.array(cx), np.array(cy))
            out.append(cell(side, float(v)))
    return out


def real_eval_instances(nih_root: Path) -> pd.DataFrame:
    from radlens.synth.lesions import real_instances
    from radlens.synth.real_anatomy import nih_anatomy

    a = nih_anatomy(nih_root, ("eval",))
    inst, _ = real_instances(nih_root, a.masks, a.info)
    return inst


def evaluate(out: Path, *, nih_root: Path | None, n: int = 200, seed: int = 0, prior: str | None = None) -> dict[str, Any]:
    from rich.progress import track

    sampler = MaskSampler(prior)
    fit = sampler.prior.instances
    real = real_eval_instances(nih_root) if nih_root else None
    rows = []
    for name in track(sampler.prior.supported(), description="findings"):
        parsed = parse_prompt(name.lower())
        t0 = time.perf_counter()
        samples = sampler.sample(parsed, n=n, seed=seed)
        ms = (time.perf_counter() - t0) / n * 1000
        viol = [check_sample(s, parsed, sampler.prior) for s in samples]
        kinds = collections.Counter(v.check for vs in viol for v in vs)
        row = {"finding": name, "n": n, "pass_rate": sum(not v for v in viol) / n, "violations": dict(kinds),
               "sample_ms": round(ms, 1), "attempts_mean": float(np.mean([s.attempts for s in samples]))}
        if name == "Cardiomegaly":
            from radlens.anatomy.measures import measure

            ctr = [measure(s.channel("lung_right"), s.channel("lung_left"), s.channel("heart")).ctr for s in samples]
            row["ctr_sampled_median"] = float(np.median(ctr))
            row["ctr_sampled_iqr"] = [float(np.percentile(ctr, 25)), float(np.percentile(ctr, 75))]
        else:
            p = freqs(sampled_cells(samples))
            fit_cells = [cell(s, v) for s, v in zip(fit[fit.finding == name].side, fit[fit.finding == name].v)]
            row["sampled_cells"] = dict(zip(CELLS, np.round(p, 3).tolist()))
            row["fit_n"] = len(fit_cells)
            if real is not None:
                r = real[real.finding == name]
                q = freqs([cell(s, v) for s, v in zip(r.side, r.v)])
                row["eval_n"] = len(r)
                if len(r):
                    row["eval_cells"] = dict(zip(CELLS, np.round(q, 3).tolist()))
                    row["tv_sampled_vs_eval"] = round(tv(p, q), 3)
                    row["tv_fit_vs_eval"] = round(tv(freqs(fit_cells), q), 3)
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet([(p, sampler.sample(p, n=6, seed=seed)) for p in SHOWCASE], out / "overlay_sheet.png")
    showcase = []
    for p in SHOWCASE:
        parsed = parse_prompt(p)
        ss = sampler.sample(parsed, n=n // 4, seed=seed + 1)
        showcase.append({"prompt": p, "n": len(ss),
                         "pass_rate": sum(not check_sample(s, parsed, sampler.prior) for s in ss) / len(ss)})
    result = {"prior_id": sampler.prior.prior_id, "n_per_finding": n, "seed": seed, "findings": rows,
              "showcase": showcase, "overlay_sheet": sheet.name}
    (out / "synth_masks_eval.json").write_text(json.dumps(result, indent=1))
    (out / "synth_masks_eval.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"prior {result['prior_id']}, {result['n_per_finding']} samples per finding, seed {result['seed']}", "",
             "| finding | pass | sample ms | TV sampled vs eval | TV fit vs eval | eval n | violations |",
             "|---|---|---|---|---|---|---|"]
    for r in result["findings"]:
        extra = (f"CTR median {r['ctr_sampled_median']:.3f}" if "ctr_sampled_median" in r else "")
        lines.append(f"| {r['finding']} | {r['pass_rate']:.3f} | {r['sample_ms']} | {r.get('tv_sampled_vs_eval', '-')} | "
                     f"{r.get('tv_fit_vs_eval', '-')} | {r.get('eval_n', '-')} | {r['violations'] or ''} {extra} |")
    lines += ["", "| showcase prompt | pass |", "|---|---|"]
    lines += [f"| {s['prompt']} | {s['pass_rate']:.3f} |" for s in result["showcase"]]
    return "\n".join(lines) + "\n"
