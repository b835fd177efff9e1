"""Load test of `radlens serve` on 127.0.0.1: N uploads at concurrency C, errors counted, latencies kept.

Bounded: a fixed number of requests, each with a timeout; the server is started and stopped here.
Baseline in the same run: the same requests sent one at a time (concurrency 1), so the printed ratio
is the throughput gained (or lost) by serving concurrent clients.

Writes bench/results/service_load.json. Run: .venv/bin/python bench/service_load.py [--requests 1000 --concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service_artefacts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _run(url: str, blobs: list[tuple[str, bytes]], n: int, concurrency: int, timeout: float) -> dict:
    lat: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            name, data = blobs[i % len(blobs)]
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/api/predict", files={"file": (name, data, "image/png")}, params={"k": 10})
                ok = r.status_code == 200 and len(r.json()["evidence"]) == 10
                key = "ok" if ok else f"HTTP {r.status_code}"
            except Exception as e:  # noqa: BLE001 - every failure is counted, none ends the run
                key = type(e).__name__
            if key == "ok":
                lat.append((time.perf_counter() - t) * 1e3)
            else:
                errors[key] = errors.get(key, 0) + 1

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": n, "concurrency": concurrency, "ok": len(lat), "errors": sum(errors.values()),
            "error_kinds": errors, "seconds": round(wall, 2), "requests_per_s": round(n / wall, 2),
            "p50_ms": round(statistics.median(lat), 1) if lat else None,
            "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 1) if lat else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--baseline-requests", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=120.0, help="Per request, seconds.")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "radlens-bench-service")
    ap.add_argument("--store", type=Path, default=None, help="Reuse an existing NIH embedding store.")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service_load.json")
    a = ap.parse_args()
    adapter, index, queries = service_artefacts.build(a.workdir, a.store)
    blobs = [(q.name, q.read_bytes()) for q in queries]
    port = _port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "radlens.cli", "serve", "--adapter", str(adapter), "--index", str(index),
                               "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise SystemExit("server did not start")
        asyncio.run(_run(url, blobs, 20, 2, a.timeout))  # warm up
        base = asyncio.run(_run(url, blobs, a.baseline_requests, 1, a.timeout))
        print(f"baseline, one at a time: {base['requests_per_s']} req/s, p50 {base['p50_ms']} ms", flush=True)
        load = asyncio.run(_run(url, blobs, a.requests, a.concurrency, a.timeout))
        print(f"{load['requests']} requests at concurrency {load['concurrency']}: {load['ok']} ok, {load['errors']} errors "
              f"{load['error_kinds'] or ''}; {load['requests_per_s']} req/s; p50 {load['p50_ms']} ms, p95 {load['p95_ms']} ms, "
              f"p99 {load['p99_ms']} ms", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    res = {"load": load, "baseline_sequential": base,
           "throughput_ratio_vs_sequential": round(load["requests_per_s"] / base["requests_per_s"], 3),
           "images": len(blobs), "cores": os.cpu_count(), "server": "radlens serve (uvicorn, 1 worker)"}
    print(f"throughput ratio vs sequential: {res['throughput_ratio_vs_sequential']}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
