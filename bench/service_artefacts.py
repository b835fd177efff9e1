"""Shared by the search and service benchmarks: a real adapter + index on NIH, and the e2e timing.

Artefacts: the NIH images embedded with the packaged encoder (or an existing store via --store), a
logistic-regression adapter on the 14 findings trained on the evaluation split, and a flat index over
the train+eval splits. Queries come from the validation split: images neither the adapter nor the
index has seen.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NIH = ROOT.parent / "shared" / "data" / "nih-cxr14"


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "radlens.cli", *args], check=True, cwd=ROOT, capture_output=True, text=True)


def build(workdir: Path, store: Path | None = None) -> tuple[Path, Path, list[Path]]:
    """(adapter folder, index folder, query image paths); reuses what a previous run left in `workdir`."""
    import pandas as pd

    from radlens.io.splits import split_mask

    workdir.mkdir(parents=True, exist_ok=True)
    if store is None:
        store = workdir / "store"
        if not (store / "_radlens.json").is_file():
            print("embedding NIH for the benchmark store…", flush=True)
        _cli("embed", str(NIH), "--out", str(store))
    adapter, index = workdir / "adapter", workdir / "index"
    if not (adapter / "radlens.json").is_file():
        print("training the benchmark adapter (logreg, nih-findings, eval split)…", flush=True)
        _cli("train", str(store), "--out", str(adapter), "--adapter", "logreg", "--task", "nih-findings",
             "--split", "nih-cxr14:eval", "--n-boot", "100", "--inner", "1")
    if not (index / "radlens.json").is_file():
        _cli("index", str(store), "--out", str(index), "--split", "nih-cxr14:train,eval")
    man = pd.read_csv(NIH / "manifest.csv")
    queries = [NIH / p for p in man.path[split_mask(man.path, "nih-cxr14:val").to_numpy()]]
    return adapter, index, queries


def e2e_latency(adapter: Path, index: Path, queries: list[Path], *, k: int = 10, warmup: int = 5) -> dict:
    """Single-image latency of what one service request runs: decode → embed → adapter → top-k evidence.

    The file's bytes are read before the clock starts (the service receives bytes, not paths).
    Baseline in the same run: the encoder forward alone on the same images, the floor of any pipeline.
    """
    from radlens.io import decode_bytes
    from radlens.service.engine import Engine
    from radlens.search.query import embed_image

    eng = Engine.load(adapter, index)
    blobs = [(q.name, q.read_bytes()) for q in queries]
    for name, data in blobs[:warmup]:
        eng.analyse(data, name=name, k=k)
    total, parts = [], {"decode": [], "embed": [], "adapter": [], "search": []}
    for name, data in blobs:
        t = time.perf_counter()
        out = eng.analyse(data, name=name, k=k)
        total.append((time.perf_counter() - t) * 1e3)
        for p in parts:
            parts[p].append(out["timings_ms"][p])
    embed_only = []
    for name, data in blobs:
        img = decode_bytes(data, name=name)
        t = time.perf_counter()
        embed_image(eng.encoder, img)
        embed_only.append((time.perf_counter() - t) * 1e3)

    def q(xs: list[float], p: float) -> float:
        return float(statistics.quantiles(xs, n=100, method="inclusive")[int(p) - 1])

    return {"e2e_images": len(total), "e2e_k": k, "e2e_p50_ms": round(statistics.median(total), 2),
            "e2e_p95_ms": round(q(total, 95), 2), "e2e_stage_p50_ms": {p: round(statistics.median(v), 2) for p, v in parts.items()},
            "e2e_baseline_embed_only_p50_ms": round(statistics.median(embed_only), 2),
            "e2e_ratio_vs_embed_only": round(statistics.median(total) / statistics.median(embed_only), 3),
            "e2e_indexed_cases": len(eng.index), "e2e_index_type": eng.index.meta["index_type"]}
