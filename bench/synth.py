"""Seconds per generated pair on this CPU: mask sampling, the generator's single forward pass, and the expert
filter, at the shipped resolution, plus the same generator architecture at 256 px (random weights, for scale).
The generator is one pass (a conditional GAN), so there is no sampler step count to vary; the baseline in the same
process is the anatomy expert's forward pass on the same images (a model every pair already pays for in the filter).

Writes bench/results/synth.json. Run: .venv/bin/python bench/synth.py [--generator DIR] [--filter DIR] [--n 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "moderate right pleural effusion with cardiomegaly"


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default=None)
    ap.add_argument("--filter", default=None)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from radlens.anatomy import api as anatomy
    from radlens.synth.condition import N_COND
    from radlens.synth.expert_filter import ExpertFilter
    from radlens.synth.generator import CondUNet
    from radlens.synth.image_gen import ImageGenerator
    from radlens.synth.sampler import MaskSampler

    sampler = MaskSampler()
    gen = ImageGenerator(args.generator)
    samples = sampler.sample(PROMPT, n=args.n, seed=0)
    t_masks = timed(lambda: sampler.sample(PROMPT, n=args.n, seed=1), 1) / args.n
    gen.generate(samples[:2])
    t_gen = timed(lambda: gen.generate(samples)) / args.n
    images = gen.generate(samples)
    model = anatomy.load()
    t_anat = timed(lambda: model.segment(list(images))) / args.n
    row = {"size": gen.size, "generator_id": gen.model_id, "masks_s": round(t_masks, 4),
           "generator_s": round(t_gen, 4), "anatomy_expert_s": round(t_anat, 4),
           "ratio_generator_vs_anatomy_expert": round(t_gen / t_anat, 2)}
    try:
        filt = ExpertFilter(args.filter)
        t_filter = timed(lambda: filt.judge(images, samples), 1) / args.n
        row["filter_s"] = round(t_filter, 4)
        row["pair_s"] = round(t_masks + t_gen + t_filter, 4)
    except FileNotFoundError as e:
        row["filter_s"] = None
        row["filter_missing"] = str(e)
    big = CondUNet(widths=tuple(gen.config["widths"]) + (256,)).eval()
    x = torch.rand(8, N_COND, 256, 256)
    with torch.no_grad():
        big(x[:1])
        t_big = timed(lambda: big(x)) / 8
    row["generator_256px_random_weights_s"] = round(t_big, 4)
    print(json.dumps(row, indent=1))
    out = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
           "n": args.n, "prompt": PROMPT, **row}
    path = ROOT / "bench" / "results" / "synth.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
