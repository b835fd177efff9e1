"""Image-search benchmark: radlens's EmbeddingIndex vs exact brute force, 1M x 768 on 2 CPU cores.

Data (synthetic, seeded, generated in chunks of 50,000 and L2-normalised in place; `make_generator`):
  realistic image embeddings have a low intrinsic dimension, so vectors are drawn as
    z = mu_c + B_c (s * g)        in a 64-d latent space, c ~ Categorical(w)
    x = normalise(z P + e)        in 768-d
  - 2,000 clusters with log-normal(0, 1) weights w (sizes vary ~10x); centres mu_c = m + N(0, I_64) with a
    shared mean m (|m| = 0.7 sqrt(64)), so unrelated images still have cosine ~0.25, as real embeddings do;
  - within a cluster, variation in a cluster-specific 16-d subspace of the latent space: B_c is 16 x 64 with
    N(0, 1/64) entries, g ~ N(0, I_16), spectrum s_j ∝ j^-1/2 scaled so |B_c s g| ~ 0.6 sqrt(64);
  - P: a random orthonormal 64 x 768 projection; e ~ N(0, sigma^2 I_768) isotropic noise with
    sigma sqrt(768) = 0.4 sqrt(64) (small next to the signal but not zero).
  This gives nearest-neighbour cosine ~0.87, top-10 cosine ~0.82, 98% of the exact top-10 in the query's own
  cluster and a local intrinsic dimension (MLE on the exact top-10) ~13; the JSON records these measured
  statistics. Queries are drawn from the same generator with a different seed: they are not in the index.
  Isotropic Gaussian vectors would be the wrong test: there every ANN index collapses (recall < 0.2).

Measured, in one process, FAISS and BLAS limited to `--threads` (default 2):
  exact     = faiss.IndexFlatIP over the same normalised vectors: ground truth top-10 and the qps baseline;
  radlens   = EmbeddingIndex.build(rows, vectors, kind=--kind) (auto: flat <= 200k, hnsw < 500k, ivf above)
              into a temporary folder (build_seconds includes training, adding and writing the folder), then
              EmbeddingIndex.search(batch, k=10) over all queries in batches of --batch: the public API end to
              end, Hit objects with their metadata rows included, median of --repeats passes;
  recall@10 = |radlens top-10 ∩ exact top-10| / 10, averaged over the queries;
  memory    = peak RSS of this process from just before EmbeddingIndex.build to the end of the searches (Linux
              VmHWM, reset through /proc/self/clear_refs; it includes the benchmark's own 1M x 768 input array),
              the folder's size on disk, and the peak RSS of a fresh process that loads the folder and answers
              the same queries (what serving costs).

Writes bench/results/search.json, merging into the file if it exists (keys of other parts, such as
e2e_p50_ms / e2e_p95_ms from an `e2e_benchmark`, are kept).
Run: .venv/bin/python bench/search.py            (1M: ~5 min)
     .venv/bin/python bench/search.py --n 50000 --queries 500   (smoke: seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "search.json"
CHUNK = 50_000
TARGET_QPS, TARGET_RECALL = 3_000, 0.95

GENERATOR = {"latent_dim": 64, "clusters": 2_000, "local_dim": 16, "spread": 0.6, "noise": 0.4, "mean_norm": 0.7,
             "cluster_weights": "lognormal(0, 1)", "spectrum": "j^-0.5"}


# ------------------------------------------------------------------------------------------- data
def make_generator(dim: int = 768, *, latent_dim: int = 64, clusters: int = 2_000, local_dim: int = 16,
                   spread: float = 0.6, noise: float = 0.4, mean_norm: float = 0.7, seed: int = 0) -> dict[str, Any]:
    """The fixed parts of the distribution (see the module docstring); `spread`, `noise` and `mean_norm` are
    norms relative to sqrt(latent_dim), the norm of one N(0, I) cluster offset."""
    rng = np.random.default_rng(seed)
    P = np.linalg.qr(rng.standard_normal((dim, latent_dim)))[0].T.astype(np.float32)  # orthonormal rows
    m = rng.standard_normal(latent_dim)
    m *= mean_norm * np.sqrt(latent_dim) / np.linalg.norm(m)
    mu = (m + rng.standard_normal((clusters, latent_dim))).astype(np.float32)
    B = (rng.standard_normal((clusters, local_dim, latent_dim)) / np.sqrt(latent_dim)).astype(np.float32)
    s = np.arange(1, local_dim + 1) ** -0.5
    s *= spread * np.sqrt(latent_dim) / np.sqrt((s ** 2).sum())
    w = rng.lognormal(0.0, 1.0, clusters)
    return {"P": P, "mu": mu, "B": B, "scales": s.astype(np.float32), "weights": w / w.sum(),
            "sigma": np.float32(noise * np.sqrt(latent_dim) / np.sqrt(dim)), "dim": dim}


def generate(gen: dict[str, Any], n: int, seed: int, progress: Any = None, label: str = "generate"
             ) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors (float32, filled chunk by chunk into one array) and their cluster ids."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, gen["dim"]), dtype=np.float32)
    cluster = np.empty(n, dtype=np.int32)
    task = progress.add_task(label, total=n) if progress else None
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        c = rng.choice(len(gen["weights"]), size=b - a, p=gen["weights"])
        g = rng.standard_normal((b - a, len(gen["scales"])), dtype=np.float32) * gen["scales"]
        z = gen["mu"][c] + np.einsum("nr,nrl->nl", g, gen["B"][c])
        x = out[a:b]
        np.matmul(z, gen["P"], out=x)
        x += rng.standard_normal(x.shape, dtype=np.float32) * gen["sigma"]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        cluster[a:b] = c
        if progress:
            progress.advance(task, b - a)
    return out, cluster


def synthetic_rows(cluster: np.ndarray, seed: int):
    """NIH-like metadata for each vector (what a Hit carries), so search pays for real rows."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = len(cluster)
    findings = np.array(["No Finding", "Effusion", "Atelectasis", "Infiltration", "Cardiomegaly|Effusion",
                         "Nodule", "Pneumothorax", "Atelectasis|Effusion|Infiltration", "Mass", "Consolidation"])
    return pd.DataFrame({
        "path": [f"images/{i:08d}.png" for i in range(n)],
        "patient_id": [f"{i // 3:07d}" for i in range(n)],
        "age": rng.integers(1, 96, n),
        "sex": np.where(rng.random(n) < 0.45, "F", "M"),
        "view": np.where(rng.random(n) < 0.4, "AP", "PA"),
        "finding_labels": findings[cluster % len(findings)],
        "image_hash": [f"{i:016x}" for i in range(n)],
    })


# ------------------------------------------------------------------------------------------- measuring
def _rss_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _dir_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _busy_s() -> float:
    """CPU-seconds all processes on the machine have run (user + nice + system + irq + softirq + steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def _timed_passes(fn, queries: np.ndarray, batch: int, repeats: int) -> tuple[list[float], list, dict[str, float]]:
    """Run fn over all queries in batches `repeats` times: seconds per pass, the last pass's results, and
    this process's CPU time / wall time (~threads when the cores were ours) next to the cores that other
    processes kept busy meanwhile (0 on a quiet machine)."""
    times, res = [], []
    cpu0, busy0, wall0 = _cpu_s(), _busy_s(), time.perf_counter()
    for _ in range(repeats):
        res = []
        t = time.perf_counter()
        for a in range(0, len(queries), batch):
            res.append(fn(queries[a:a + batch]))
        times.append(time.perf_counter() - t)
    wall, own = time.perf_counter() - wall0, _cpu_s() - cpu0
    return times, res, {"own_cpu_per_wall": round(own / wall, 2),
                        "other_processes_cores_busy": round(max(0.0, _busy_s() - busy0 - own) / wall, 2)}


SERVE_CHECK = r"""
import json, sys, time
import numpy as np, faiss
from threadpoolctl import threadpool_limits
folder, qpath, k, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
faiss.omp_set_num_threads(threads)
with threadpool_limits(threads):
    from radlens.search import EmbeddingIndex
    t = time.perf_counter(); idx = EmbeddingIndex.load(folder); load_s = time.perf_counter() - t
    q = np.load(qpath)
    t = time.perf_counter()
    ids = [[h.id for h in hs] for a in range(0, len(q), batch) for hs in idx.search(q[a:a + batch], k=k)]
    search_s = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec from the (large) parent
st = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(("VmHWM", "Rss"))}
print(json.dumps({"load_seconds": load_s, "qps_one_pass_after_load": len(q) / search_s, "ids": ids,
                  "peak_rss_mb": st["VmHWM"], "rss_anon_mb_at_end": st["RssAnon"],
                  "rss_file_mb_at_end": st["RssFile"]}))
"""


def ann_benchmark(n: int = 1_000_000, dim: int = 768, queries: int = 2_000, *, k: int = 10, batch: int = 500,
                  threads: int = 2, kind: str = "auto", nprobe: int | None = None, rerank: int | None = None,
                  nlist: int | None = None, repeats: int = 3, seed: int = 0, workdir: str | Path | None = None,
                  keep_index: bool = False, serve_check: bool = True, progress: bool = True) -> dict[str, Any]:
    """Build radlens's index over n synthetic clustered vectors and compare it with exact search (see module doc)."""
    import faiss
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from threadpoolctl import threadpool_limits

    from radlens.search import EmbeddingIndex
    from radlens.search import index as index_mod

    console = Console(stderr=True, quiet=not progress)
    faiss.omp_set_num_threads(threads)
    limits = threadpool_limits(threads)  # numpy's BLAS too (generation, exact fallbacks)
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    out: dict[str, Any] = {}
    tmp_root = Path(tempfile.mkdtemp(prefix="radlens-search-bench-", dir=workdir))
    try:
        with Progress(*columns, console=console, disable=not progress) as bar:
            gen = make_generator(dim, seed=seed)
            t = time.perf_counter()
            xb, cluster = generate(gen, n, seed + 1, bar, "generate index vectors")
            xq, q_cluster = generate(gen, queries, seed + 2, bar, "generate queries")
            generate_s = time.perf_counter() - t

            # ---- exact brute force: ground truth and the qps baseline
            load_exact = os.getloadavg()[0]
            exact = faiss.IndexFlatIP(dim)
            exact.add(xb)
            task = bar.add_task("exact (IndexFlatIP)", total=len(xq))

            def exact_search(q):
                r = exact.search(q, k)
                bar.advance(task, len(q))
                return r

            ex_times, ex_res, ex_cpu = _timed_passes(exact_search, xq, batch, 1)
            exact_D = np.concatenate([d for d, _ in ex_res])
            exact_I = np.concatenate([i for _, i in ex_res])
            exact_qps = len(xq) / ex_times[0]
            exact.reset()  # frees its copy of the vectors
            del ex_res

        # ---- radlens: build through the public API
        rows = synthetic_rows(cluster, seed)
        folder = tmp_root / "index"
        _reset_peak_rss()
        rss_before = _rss_mb()["VmRSS"]
        extra = {k_: v for k_, v in {"ivf_nprobe": nprobe, "rerank": rerank, "ivf_nlist": nlist}.items() if v}
        with console.status(f"EmbeddingIndex.build: {n:,} x {dim}, kind={kind} ..."):
            t = time.perf_counter()
            idx = EmbeddingIndex.build(rows, xb, encoder_id="synthetic@bench", preprocess_hash="none",
                                       folder=folder, kind=kind, **extra)
            build_s = time.perf_counter() - t
            t = time.perf_counter()
            idx.save()  # once more, only to know how much of build_seconds was writing the folder
            save_s = time.perf_counter() - t
        rss_after_build = _rss_mb()
        console.log(f"built {idx.meta['index_type']} in {build_s:.1f} s (writing the folder: {save_s:.1f} s)")
        # the exact path in search would need the vectors; the run keeps them memory-mapped like a server does
        del rows

        # ---- radlens: search through the public API
        load_search = os.getloadavg()[0]
        with Progress(*columns, console=console, disable=not progress) as bar:
            idx.search(xq[:batch], k=k)  # warm-up (page cache, lazy imports)
            task = bar.add_task(f"EmbeddingIndex.search x{repeats}", total=repeats * len(xq))

            def radlens_search(q):
                hits = idx.search(q, k=k)
                bar.advance(task, len(q))
                return [[h.id for h in hs] for hs in hits]

            times, res, search_cpu = _timed_passes(radlens_search, xq, batch, repeats)
        found = np.array([ids for r in res for ids in r])
        peak = _rss_mb()
        qps_passes = [len(xq) / s for s in times]
        qps = float(np.median(qps_passes))
        recall = _recall(found, exact_I, k)

        # ---- how much of that is the FAISS shortlist alone (ivf), for the record
        meta = idx.meta
        shortlist_qps = None
        if meta["index_type"] == "ivf":
            p = faiss.SearchParametersIVF(nprobe=meta["ivf_nprobe"])
            s_times, _, _ = _timed_passes(lambda q: idx.index.search(q, k * meta["rerank"], params=p), xq, batch, 1)
            shortlist_qps = len(xq) / s_times[0]

        # ---- serving: a fresh process loads the folder and answers the same queries
        serve = None
        if serve_check:
            np.save(tmp_root / "queries.npy", xq)
            console.log("fresh process: EmbeddingIndex.load + search ...")
            r = subprocess.run([sys.executable, "-c", SERVE_CHECK, str(folder), str(tmp_root / "queries.npy"),
                                str(k), str(batch), str(threads)], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            if r.returncode == 0:
                serve = json.loads(r.stdout.strip().splitlines()[-1])
                serve["recall_at_10"] = _recall(np.array(serve.pop("ids")), exact_I, k)
            else:
                serve = {"error": r.stderr[-2000:]}

        # ---- what the data looked like (from the exact answers)
        d = np.sqrt(np.maximum(2 - 2 * exact_D.astype(np.float64), 1e-12))
        lid = -1.0 / np.mean(np.log(d[:, :-1] / d[:, -1:]), axis=1)
        pair = np.random.default_rng(seed).integers(0, n, (2, 2000))
        out = {
            "qps": round(qps, 1),
            "recall_at_10": round(recall, 4),
            "build_seconds": round(build_s, 1),
            "memory_peak_mb": round(peak["VmHWM"], 0),
            "exact_qps": round(exact_qps, 1),
            "speedup_vs_exact": round(qps / exact_qps, 1),
            "targets": {"qps": TARGET_QPS, "recall_at_10": TARGET_RECALL,
                        "met": bool(qps >= TARGET_QPS and recall >= TARGET_RECALL)},
            "qps_passes": [round(v, 1) for v in qps_passes],
            "measured_through": "EmbeddingIndex.build and EmbeddingIndex.search (public API; Hits with their "
                                "metadata rows); exact = faiss.IndexFlatIP in the same process",
            "faiss_shortlist_qps": round(shortlist_qps, 1) if shortlist_qps else None,
            "build_seconds_writing_folder": round(save_s, 1),
            "generate_seconds": round(generate_s, 1),
            "memory": {
                "peak_rss_mb_build_and_search": round(peak["VmHWM"], 0),
                "rss_mb_before_build": round(rss_before, 0),
                "rss_mb_after_build": round(rss_after_build["VmRSS"], 0),
                "rss_anon_mb_after_search": round(peak["RssAnon"], 0),
                "rss_file_mb_after_search": round(peak["RssFile"], 0),
                "input_vectors_mb": round(xb.nbytes / 2**20, 0),
                "note": "peak includes this process's own input array (input_vectors_mb) and the normalised copy "
                        "EmbeddingIndex.build makes of it; the fresh serving process is the index alone. RssFile = pages "
                        "of the memory-mapped vectors.npy (page cache: shared, reclaimable); RssAnon = the process's own",
                "index_folder_mb": round(_dir_mb(folder), 0),
                "index_files_mb": {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(folder.iterdir())},
                "serving_process": serve and {k_: (round(v, 4 if k_ == "recall_at_10" else 1)
                                                   if isinstance(v, float) else v) for k_, v in serve.items()},
            },
            "params": {
                "n": n, "dim": dim, "queries": len(xq), "k": k, "batch_size": batch, "threads": threads,
                "repeats": repeats, "seed": seed, "kind_requested": kind,
                "index": {key: meta[key] for key in ("index_type", "metric", "faiss_factory", "ivf_nlist",
                                                       "ivf_nprobe", "pq_m", "rerank", "train_size", "hnsw_m",
                                                       "ef_search") if key in meta},
                "auto_rule": f"flat <= {index_mod.FLAT_MAX:,} < hnsw < {index_mod.IVF_MIN:,} <= ivf",
            },
            "data": {
                "generator": "x = normalise((mu_c + B_c (s * g)) P + e); see bench/search.py docstring",
                **GENERATOR, "dim": dim, "index_seed": seed + 1, "query_seed": seed + 2,
                "queries_held_out": True,
                "nn1_cosine_median": round(float(np.median(exact_D[:, 0])), 4),
                "nn10_cosine_median": round(float(np.median(exact_D[:, k - 1])), 4),
                "random_pair_cosine_median": round(float(np.median(np.einsum("ij,ij->i", xb[pair[0]], xb[pair[1]]))), 4),
                "top10_in_query_cluster": round(float((cluster[exact_I] == q_cluster[:, None]).mean()), 4),
                "local_intrinsic_dim_mle_top10_median": round(float(np.median(lid)), 1),
            },
            "machine": {
                "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "loadavg_1min_before_exact": round(load_exact, 2),
                "loadavg_1min_before_search": round(load_search, 2),
                "during_exact": ex_cpu, "during_radlens_search": search_cpu,
                "note": "own_cpu_per_wall ~ threads when FAISS runs alone (the Python part of search is one "
                        "thread); other_processes_cores_busy ~ 0 on a quiet machine",
                "faiss": faiss.__version__, "numpy": np.__version__, "python": platform.python_version(),
            },
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    finally:
        limits.restore_original_limits()
        if keep_index:
            console.log(f"index kept at {tmp_root / 'index'}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------- results file
def merge_results(update: dict[str, Any], path: Path = RESULTS) -> dict[str, Any]:
    """Read the existing JSON (if any), update these keys, write atomically (temp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.update(update)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data


def e2e_benchmark(workdir: Path, store: Path | None = None) -> dict[str, Any]:
    """Single-image latency of a service request on the NIH set (see bench/service_artefacts.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import service_artefacts

    adapter, index, queries = service_artefacts.build(workdir, store)
    return service_artefacts.e2e_latency(adapter, index, queries)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=2_000, help="held-out queries (recall and qps)")
    ap.add_argument("--batch", type=int, default=500, help="queries per search call")
    ap.add_argument("--threads", type=int, default=2, help="FAISS OpenMP and BLAS threads")
    ap.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivf"])
    ap.add_argument("--nprobe", type=int, help="ivf: lists probed (default: radlens's)")
    ap.add_argument("--rerank", type=int, help="ivf: shortlist = rerank x k, re-scored exactly (default: radlens's)")
    ap.add_argument("--nlist", type=int, help="ivf: number of lists (default: radlens's, ~sqrt(n))")
    ap.add_argument("--repeats", type=int, default=3, help="timed search passes (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="where the temporary index folder goes (default: system temp)")
    ap.add_argument("--keep-index", action="store_true")
    ap.add_argument("--no-serve-check", action="store_true", help="skip the fresh-process load + search")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--skip-ann", action="store_true", help="only the NIH end-to-end latency part")
    ap.add_argument("--skip-e2e", action="store_true", help="only the 1M ANN part")
    ap.add_argument("--e2e-store", type=Path, help="reuse an NIH embedding store for the e2e part")
    ap.add_argument("--e2e-workdir", type=Path, default=Path(tempfile.gettempdir()) / "radlens-bench-service")
    a = ap.parse_args(argv)
    if not a.skip_e2e:
        e2e = e2e_benchmark(a.e2e_workdir, a.e2e_store)
        merge_results(e2e, a.out)
        print(f"end to end, one NIH image (decode -> embed -> adapter -> top-10 evidence) over {e2e['e2e_images']} images: "
              f"p50 {e2e['e2e_p50_ms']} ms, p95 {e2e['e2e_p95_ms']} ms; stages p50 {e2e['e2e_stage_p50_ms']}; "
              f"{e2e['e2e_ratio_vs_embed_only']}x the encoder forward alone ({e2e['e2e_baseline_embed_only_p50_ms']} ms)")
    if a.skip_ann:
        return
    res = ann_benchmark(a.n, a.dim, a.queries, batch=a.batch, threads=a.threads, kind=a.kind, nprobe=a.nprobe,
                        rerank=a.rerank, nlist=a.nlist, repeats=a.repeats, seed=a.seed, workdir=a.workdir,
                        keep_index=a.keep_index, serve_check=not a.no_serve_check)
    merge_results(res, a.out)
    print(f"{a.n:,} x {a.dim}, {res['params']['index']['index_type']}: {res['qps']:,.0f} q/s at recall@10 "
          f"{res['recall_at_10']:.3f} vs exact {res['exact_qps']:,.0f} q/s -> {res['speedup_vs_exact']:.1f}x; "
          f"build {res['build_seconds']:.1f} s; peak RSS {res['memory_peak_mb']:,.0f} MB "
          f"(target >= {TARGET_QPS:,} q/s at >= {TARGET_RECALL}: {'met' if res['targets']['met'] else 'MISSED'})")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
