"""Embedding throughput: radlens's pipeline vs a plain eager loop, in the same process.

Pipeline  = `radlens.store.embed_job.embed_to_store` (hash, threaded decode, batched channels_last
            forward, Parquet store) on every NIH image, into a fresh temp store.
Eager     = what a user writes first: for each file, Pillow decode, resize, batch-1 forward with
            default torch settings (contiguous tensors, default thread count), collect the vector.
Roofline  = achieved model GFLOP/s (end-to-end images/s x GFLOP per image) over a matmul probe.

Writes bench/results/embed_throughput.json. Run: .venv/bin/python bench/embed_throughput.py [--eager-n 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from radlens.encoders import DEFAULT_ENCODER, get
from radlens.encoders.radlens_cxr import build_model
from radlens.store import load_store
from radlens.store.embed_job import embed_to_store

ROOT = Path(__file__).resolve().parents[1]
NIH = Path(os.environ.get("RADLENS_SHARED_DATA", ROOT.parent / "shared" / "data")) / "nih-cxr14"


def conv_linear_gflops(model: nn.Module, x: torch.Tensor) -> float:
    """2 x multiply-accumulates of every Conv2d/Linear for one forward of `x` (batch 1)."""
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += 2 * out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += 2 * out.numel() * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.features(x)
    for h in hooks:
        h.remove()
    return total / 1e9


def matmul_peak_gflops(n: int = 2048, reps: int = 10, trials: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def eager_loop(paths: list[Path], encoder) -> tuple[float, np.ndarray]:
    model = build_model(encoder.config)
    model.load_state_dict(encoder.model.state_dict())
    model.eval()
    spec = encoder.spec
    out = []
    t = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            im = Image.open(p).convert("L").resize((spec.size, spec.size), Image.BILINEAR)
            x = (torch.from_numpy(np.asarray(im, np.float32) / 255.0) - spec.mean[0]) / spec.std[0]
            out.append(model.features(x[None, None]).numpy()[0])
    return len(paths) / (time.perf_counter() - t), np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eager-n", type=int, default=300, help="images for the eager loop (rate is per image)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embed_throughput.json")
    args = ap.parse_args()
    if not NIH.is_dir():
        sys.exit(f"NIH data not found at {NIH} (set RADLENS_SHARED_DATA)")
    enc = get(DEFAULT_ENCODER)
    size = enc.spec.size
    gflops = conv_linear_gflops(build_model(enc.config).eval(), torch.zeros(1, 1, size, size))
    peak = matmul_peak_gflops()

    # model-only: batched forward of preprocessed input, the compute ceiling of the pipeline
    xb = torch.randn(64, 1, size, size)
    enc.embed(xb[:8])
    t = time.perf_counter()
    enc.embed(xb)
    model_ips = 64 / (time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        s = embed_to_store(NIH, Path(tmp) / "store", enc)
        df, emb, _ = load_store(Path(tmp) / "store")
    paths = [Path(p) for p in df.path[: args.eager_n]]
    eager_ips, eager_emb = eager_loop(paths, enc)
    max_diff = float(np.abs(eager_emb - emb[: len(paths)]).max())

    res = {
        "images": s.embedded,
        "seconds": round(s.seconds, 2),
        "images_per_s": round(s.images_per_s, 2),
        "eager_images": len(paths),
        "eager_images_per_s": round(eager_ips, 2),
        "ratio_vs_eager": round(s.images_per_s / eager_ips, 3),
        "model_only_images_per_s": round(model_ips, 2),
        "gflops_per_image": round(gflops, 4),
        "measured_peak_gflops": round(peak, 1),
        "achieved_gflops": round(s.images_per_s * gflops, 1),
        "roofline_fraction": round(s.images_per_s * gflops / peak, 3),
        "model_only_roofline_fraction": round(model_ips * gflops / peak, 3),
        "max_abs_diff_pipeline_vs_eager": max_diff,
        "encoder_id": enc.encoder_id,
        "input_size": size,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, args.out)
    print(json.dumps(res, indent=1))
    print(f"ratio_vs_eager {res['ratio_vs_eager']:.2f}x  roofline_fraction {res['roofline_fraction']:.2f}")


if __name__ == "__main__":
    main()
