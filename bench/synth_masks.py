"""Mask sampling speed: one mask stack (anatomy + findings) per prompt, against the issue's 50 ms budget and
against a baseline in the same process: drawing the anatomy alone (shape model scores -> three filled outlines),
the least any sample costs. The consistency checks (the expert filter's first stage) are timed separately.

Writes bench/results/synth_masks.json. Run: .venv/bin/python bench/synth_masks.py [--n 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MS = 50.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="samples per prompt")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from radlens.synth import shape_model as sm
    from radlens.synth.checks import check_sample
    from radlens.synth.evaluate import SHOWCASE as PROMPTS
    from radlens.synth.prompt import parse_prompt
    from radlens.synth.sampler import MaskSampler

    sampler = MaskSampler()
    shape = sampler.prior.shape
    rng = np.random.default_rng(0)
    cov = np.array([1.0, 5.0, 0.0, 0.0])
    sm.rasterize(shape.landmarks(shape.sample_scores(rng, cov)), (512, 512))  # warm-up
    t = time.perf_counter()
    for _ in range(args.n):
        sm.rasterize(shape.landmarks(shape.sample_scores(rng, cov)), (512, 512))
    base_ms = (time.perf_counter() - t) / args.n * 1000

    rows = []
    for p in PROMPTS:
        parsed = parse_prompt(p)
        sampler.sample(parsed, n=2, seed=99)  # warm-up
        times = []
        samples = []
        for i in range(args.n):
            t = time.perf_counter()
            samples.append(sampler.sample_one(parsed, 0, i))
            times.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        passed = sum(not check_sample(s, parsed, sampler.prior) for s in samples[:50])
        check_ms = (time.perf_counter() - t) / 50 * 1000
        times = np.array(times)
        rows.append({"prompt": p, "sample_ms_mean": round(float(times.mean()), 2),
                     "sample_ms_p95": round(float(np.percentile(times, 95)), 2),
                     "attempts_mean": round(float(np.mean([s.attempts for s in samples])), 3),
                     "ratio_vs_anatomy_only": round(float(times.mean()) / base_ms, 2),
                     "budget_fraction": round(float(times.mean()) / BUDGET_MS, 3),
                     "check_ms_mean": round(check_ms, 2), "checks_passed_of_50": passed})
        print(f"{p[:60]:60s} {rows[-1]['sample_ms_mean']:6.1f} ms (p95 {rows[-1]['sample_ms_p95']:.1f}) "
              f"= {rows[-1]['ratio_vs_anatomy_only']:.2f}x anatomy-only, {rows[-1]['budget_fraction']:.2f} of "
              f"the {BUDGET_MS:.0f} ms budget; checks {check_ms:.1f} ms")
    worst = max(r["sample_ms_p95"] for r in rows)
    print(f"anatomy-only baseline {base_ms:.2f} ms; worst p95 {worst:.1f} ms "
          f"({'within' if worst <= BUDGET_MS else 'OVER'} the {BUDGET_MS:.0f} ms budget)")
    out = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
           "n_per_prompt": args.n, "anatomy_only_ms": round(base_ms, 2), "budget_ms": BUDGET_MS, "prompts": rows,
           "prior_id": sampler.prior.prior_id}
    path = ROOT / "bench" / "results" / "synth_masks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
