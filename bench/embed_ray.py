"""Ray engine vs local engine on the NIH set, in one process and session, into fresh temp stores.

Local = `embed_to_store` (threads + one process). Ray = `embed_to_store_ray` on a local Ray instance started
once before timing (so `ray.init`'s ~9 s is reported apart, as a cluster user pays it once). Both stores are
compared (same keys, max vector difference). On one small machine Ray mostly adds overhead (process hops,
object store copies, a second pass to hash); its point is many machines and GPUs. Steady-state rates (from 10 %
of the images on) are reported beside the end-to-end ones: Ray's start-up (~9 s here: its first dataset execution
and the actor pool's start and model load) is paid once per run and dominates a 1,510-image set.

Writes bench/results/embed_ray.json. Run: .venv/bin/python bench/embed_ray.py [--limit N] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NIH = Path(os.environ.get("RADLENS_SHARED_DATA", ROOT.parent / "shared" / "data")) / "nih-cxr14"


class Ticks:
    """A progress callback that keeps (time, done) to measure steady-state throughput."""

    def __init__(self) -> None:
        self.t: list[tuple[float, int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.t.append((time.perf_counter(), done, total))

    def steady(self, skip: float = 0.1) -> float:
        total = self.t[-1][2]
        start = next(x for x in self.t if x[1] >= skip * total)
        end = self.t[-1]
        return (end[1] - start[1]) / (end[0] - start[0])


def distinct_copies(src: Path, dst: Path, copies: int) -> Path:
    """`copies` byte-distinct copies of every PNG under `src` (a tEXt chunk naming the copy after IHDR: same pixels,
    another content hash, so neither engine treats them as duplicates). Returns the folder. A larger set than NIH's
    1,510 images shows throughput once start-up costs are amortised, as on a real archive."""
    import struct
    import zlib

    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.rglob("*.png")):
        data = f.read_bytes()
        for k in range(copies):
            body = b"tEXt" + b"radlens-copy\0" + str(k).encode()
            chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
            (dst / f"{f.stem}-{k}.png").write_bytes(data[:33] + chunk + data[33:])
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per encoder (local and each actor)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--decode-batch", type=int, default=64, help="files per Ray decode task")
    ap.add_argument("--copies", type=int, default=1, help="embed K byte-distinct copies of the NIH images (K x 1,510)")
    ap.add_argument("--note", default="", help="free text stored with the result (e.g. 'machine contended')")
    args = ap.parse_args()

    import ray
    import torch

    from radlens.encoders import DEFAULT_ENCODER, get
    from radlens.store import load_store
    from radlens.store.embed_job import embed_to_store
    from radlens.store.ray_engine import EncoderSpec, RayOptions, embed_to_store_ray

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="WARNING")
    init_s = time.perf_counter() - t
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = NIH if args.copies == 1 else distinct_copies(NIH / "images", Path(tmp) / "copies", args.copies)
            enc = get(DEFAULT_ENCODER, threads=args.threads)
            lt, rt = Ticks(), Ticks()
            local = embed_to_store(data, Path(tmp) / "local", enc, batch_size=args.batch_size, limit=args.limit,
                                   workers=max(1, args.num_cpus - 1), progress=lt)
            spec = EncoderSpec(DEFAULT_ENCODER, kwargs={"threads": args.threads})
            rs = embed_to_store_ray(data, Path(tmp) / "ray", spec, limit=args.limit, progress=rt,
                                    options=RayOptions(actors=args.actors, batch_size=args.batch_size,
                                                       decode_batch=args.decode_batch))
            a, ea, _ = load_store(Path(tmp) / "local")
            b, eb, _ = load_store(Path(tmp) / "ray")
            ia, ib = np.argsort(a.image_hash.to_numpy()), np.argsort(b.image_hash.to_numpy())
            same_keys = a.image_hash.to_numpy()[ia].tolist() == b.image_hash.to_numpy()[ib].tolist()
            max_diff = float(np.abs(ea[ia] - eb[ib]).max()) if same_keys and len(ia) else None
    finally:
        ray.shutdown()
    res = {
        "images": local.embedded, "local_images_per_s": local.images_per_s, "ray_images_per_s": rs.images_per_s,
        "ray_over_local": rs.images_per_s / local.images_per_s if local.images_per_s else None,
        "local_seconds": local.seconds, "ray_seconds": rs.seconds, "ray_init_seconds": init_s,
        # after the first 10 % of images are accounted for: start-up (Ray Data's first execution, the actor pool's
        # start and model load) excluded, which is what a long run on a large archive sees
        "local_steady_images_per_s": lt.steady(), "ray_steady_images_per_s": rt.steady(),
        "ray_over_local_steady": rt.steady() / lt.steady(),
        "same_keys": same_keys, "max_abs_vector_difference": max_diff,
        "config": {**vars(args), "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()},
    }
    out = ROOT / "bench" / "results" / "embed_ray.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
