"""Embedding and batch prediction on Ray Data: the same store, rows and quarantine as the local engine.

Pipeline (Ray Datasets built with `ray.data.from_items` from the records `discover` returns):

1. hash: `map_batches(_hash_batch)` reads every file's sha256 in parallel tasks, next to the data. The driver
   then applies the local engine's rules (`RunLedger`): unreadable -> quarantine, already stored -> cached
   (this is resume), and of several records with one content only the first is decoded; the others follow
   its outcome (duplicate if it embedded, the same decode error if it failed), as the local engine decides.
2. decode: `map_batches(_decode_batch)` tasks decode and apply the encoder's own preprocessing
   (`Encoder.preprocessor()`: no weights shipped). A file that fails becomes a row with ok=False and the
   reason, so it reaches the driver and `_quarantine.csv`; nothing is dropped on the way.
3. embed: `map_batches(_EmbedActor, concurrency=N)`: an actor pool that builds the encoder once per actor
   through `radlens.encoders.get`, on a GPU when actors ask for one, and optionally applies a head (an
   adapter, for `radlens predict`) to the vectors there.
4. the driver consumes `iter_batches` as results stream in and writes through the same `EmbeddingStore`
   and `RunLedger` as the local engine: chunk by chunk, so a crash loses at most one chunk and a rerun
   resumes from the keys already stored.

Why hash in a stage of its own: resume must skip stored images without decoding them, and which copy of
duplicated content is embedded must not depend on which task finishes first; both need every hash before
any decode is scheduled. Like the local engine, this reads each new file twice (hash, then decode).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from radlens.encoders import get
from radlens.io import DecodeError, ImageRecord, discover
from radlens.store.embed_job import (ROW_META_KEYS, EmbedSummary, RunLedger, build_row, decode_for, open_store,
                                     read_hash)
from radlens.store.embedding_store import QUARANTINE_FILE

log = logging.getLogger(__name__)
DECODE_MEMORY = 512 * 2**20  # bytes reserved per decode task


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run.

    address: an existing cluster ("auto" on a cluster node, "HOST:6379", "ray://HOST:10001"); None starts a
    local instance with `num_cpus` CPUs (None: all) and stops it afterwards. `actors` encoder actors, each
    reserving `cpus_per_actor` CPUs and `gpus_per_actor` GPUs (> 0 runs the encoder on CUDA); `batch_size`
    images per forward pass; `decode_batch` files per decode task.
    """

    address: str | None = None
    num_cpus: int | None = None
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 32
    decode_batch: int = 16


@dataclass(frozen=True)
class EncoderSpec:
    """How an actor builds its encoder: the registry name and arguments (`radlens.encoders.get` is the only entry)."""

    name: str
    weights: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self):
        return get(self.name, weights=self.weights, **self.kwargs)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to `address` or start a local instance, and never leave either behind.

    If Ray is already initialised in this process (a notebook, a test fixture), that session is used and left
    as it is: it belongs to the caller. Otherwise `ray.shutdown()` runs on the way out, also on errors: it
    disconnects from a cluster given by `address` (the cluster keeps running) and stops a local instance.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {} if address else {"num_cpus": num_cpus}
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _quiet_data_context() -> None:
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


def _blocks(n: int, per_block: int) -> int:
    return max(1, math.ceil(n / max(1, per_block)))


# ------------------------------------------------------------------------------------------- stage functions
def _hash_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    hashes, errors = [], []
    for p in batch["path"]:
        h = read_hash(Path(str(p)))
        hashes.append("" if isinstance(h, DecodeError) else h)
        errors.append(h.reason if isinstance(h, DecodeError) else "")
    return {"idx": batch["idx"], "hash": np.asarray(hashes, dtype=object), "error": np.asarray(errors, dtype=object)}


def _json_meta(meta: dict[str, Any]) -> str:
    """The decode facts a store row uses, as JSON (numpy scalars as Python ones; floats round-trip exactly)."""
    def plain(v: Any) -> Any:
        return v.item() if isinstance(v, np.generic) else v
    return json.dumps({k: plain(meta.get(k)) for k in ROW_META_KEYS}, default=lambda v: plain(v))


def _decode_batch(batch: dict[str, np.ndarray], preprocess: Callable[[np.ndarray], np.ndarray],
                  shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Decode + preprocess each file; failures are rows (ok=False, reason), with zero pixels as a placeholder."""
    n = len(batch["idx"])
    pixels = np.zeros((n, *shape), np.float32)
    ok = np.zeros(n, bool)
    reason, meta, hashes = [""] * n, [""] * n, [""] * n
    for i, p in enumerate(batch["path"]):
        res = decode_for(Path(str(p)), preprocess)
        if isinstance(res, DecodeError):
            reason[i] = res.reason
            continue
        pixels[i], meta[i], hashes[i], ok[i] = res[0], _json_meta(res[1]), res[2], True
    return {"idx": batch["idx"], "ok": ok, "reason": np.asarray(reason, dtype=object),
            "meta": np.asarray(meta, dtype=object), "hash": np.asarray(hashes, dtype=object), "pixels": pixels}


class _EmbedActor:
    """One encoder per actor (built once, in the actor's process); embeds the rows that decoded.

    `head` (optional) maps embeddings to `head_outputs` scores in the actor, e.g. `AdapterScorer`.
    """

    def __init__(self, spec: EncoderSpec, device: str, head: Callable[[np.ndarray], np.ndarray] | None = None,
                 head_outputs: int = 0) -> None:
        self.encoder = spec.build()
        if device != "cpu":
            self.encoder.to(device)
        self.head, self.head_outputs = head, head_outputs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        emb = np.zeros((len(ok), self.encoder.embedding_dim), np.float32)
        if ok.any():
            emb[ok] = self.encoder.embed(np.asarray(batch["pixels"])[ok])
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["embedding"] = emb
        if self.head is not None:
            scores = np.zeros((len(ok), self.head_outputs), np.float64)
            if ok.any():
                scores[ok] = self.head(emb[ok])
            out["scores"] = scores
        return out


def _input_shape(preprocess: Callable[[np.ndarray], np.ndarray], name: str) -> tuple[int, ...]:
    probe = np.asarray(preprocess(np.full((64, 64), 0.5, np.float32)))
    if probe.dtype != np.float32:
        raise ValueError(f"encoder {name}: its preprocessing gives {probe.dtype} input, not a float32 array; "
                         "the Ray engine moves fixed-shape arrays between stages: use --engine local")
    return tuple(probe.shape)


def _stream(records: Sequence[ImageRecord], idx: Sequence[int], spec: EncoderSpec, opts: RayOptions,
            preprocess: Callable[[np.ndarray], np.ndarray], head: Callable[[np.ndarray], np.ndarray] | None = None,
            head_outputs: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """decode tasks -> encoder actor pool, as numpy batches in completion order."""
    import ray.data

    shape = _input_shape(preprocess, spec.name)
    items = [{"idx": int(i), "path": str(records[i].path)} for i in idx]
    ds = ray.data.from_items(items, override_num_blocks=_blocks(len(items), opts.decode_batch))
    # `memory` reserves room for one decode (a large DICOM is hundreds of MB as float32). Being a remote arg the
    # actor stage lacks, it also keeps decode a stage of its own: Ray fuses a task stage into the next actor
    # stage when their remote args are equal, which would run every decode inside the encoder actors, one after
    # the other, instead of in parallel tasks.
    ds = ds.map_batches(_decode_batch, batch_size=opts.decode_batch, batch_format="numpy",
                        fn_kwargs={"preprocess": preprocess, "shape": shape}, num_cpus=1, memory=DECODE_MEMORY)
    ds = ds.map_batches(_EmbedActor, batch_size=opts.batch_size, batch_format="numpy",
                        fn_constructor_kwargs={"spec": spec, "device": "cuda" if opts.gpus_per_actor > 0 else "cpu",
                                               "head": head, "head_outputs": head_outputs},
                        compute=ray.data.ActorPoolStrategy(size=opts.actors), num_cpus=opts.cpus_per_actor,
                        **({"num_gpus": opts.gpus_per_actor} if opts.gpus_per_actor > 0 else {}))
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def _hash_all(records: Sequence[ImageRecord]) -> list[str | DecodeError]:
    import ray.data

    items = [{"idx": i, "path": str(r.path)} for i, r in enumerate(records)]
    ds = ray.data.from_items(items, override_num_blocks=_blocks(len(items), 64))
    out: list[str | DecodeError | None] = [None] * len(records)
    for b in ds.map_batches(_hash_batch, batch_size=64, batch_format="numpy").iter_batches(batch_size=None,
                                                                                             batch_format="numpy"):
        for i, h, e in zip(b["idx"], b["hash"], b["error"]):
            out[int(i)] = DecodeError(records[int(i)].path, str(e)) if e else str(h)
    missing = [str(records[i].path) for i, v in enumerate(out) if v is None]
    if missing:
        raise RuntimeError(f"Ray returned no hash for {len(missing)} file(s), e.g. {missing[0]}")
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------- jobs
def embed_to_store_ray(source: str | Path | Sequence[str | Path], out: str | Path, spec: EncoderSpec, *,
                       options: RayOptions = RayOptions(), limit: int | None = None, chunk_rows: int = 256,
                       progress: Callable[[int, int], None] | None = None,
                       provenance: dict[str, Any] | None = None) -> EmbedSummary:
    """`embed_to_store` on Ray Data: same discovery, keys, rows, sidecars and quarantine; resumable."""
    t0 = time.perf_counter()
    out = Path(out)
    records = discover(source)
    if limit is not None:
        records = records[:limit]
    encoder = spec.build()  # the driver's copy: ids, dimension, schema and preprocessing for the tasks
    store = open_store(out, records, encoder, provenance)
    try:
        ledger = RunLedger(store, out / QUARANTINE_FILE, len(records), chunk_rows, progress)
        with ray_session(options.address, options.num_cpus):
            _quiet_data_context()
            hashes = _hash_all(records) if records else []
            leaders: list[int] = []
            followers: dict[str, list[int]] = {}
            for i, (rec, h) in enumerate(zip(records, hashes)):
                if isinstance(h, DecodeError):
                    ledger.refuse(h, rec.path)
                elif ledger.is_stored(h):
                    ledger.skip_cached()
                elif h in followers:
                    followers[h].append(i)
                else:
                    followers[h] = []
                    leaders.append(i)
            if leaders:
                for batch in _stream(records, leaders, spec, options, encoder.preprocessor()):
                    rows = []
                    for j, i in enumerate(batch["idx"]):
                        h = hashes[int(i)]
                        group = [records[int(i)]] + [records[f] for f in followers[h]]
                        if not batch["ok"][j]:
                            for rec in group:  # identical bytes fail identically (reasons never name the path)
                                ledger.refuse(DecodeError(rec.path, str(batch["reason"][j])), rec.path)
                            continue
                        meta = json.loads(batch["meta"][j])
                        rows += [build_row(rec, h, meta, batch["embedding"][j]) for rec in group if ledger.claim(rec, h)]
                    ledger.add_rows(rows)
        ledger.flush()
        return ledger.summary(t0, out)
    finally:
        store.close()


@dataclass
class ImageResults:
    """Per-input results of `embed_images_ray`, in input order: rows that decoded, and those that did not."""

    ok: list[int]  # indices into the records
    hashes: list[str]
    embeddings: np.ndarray
    scores: np.ndarray | None
    failed: list[tuple[int, str]]  # (index, reason)


def embed_images_ray(records: Sequence[ImageRecord], spec: EncoderSpec, *, preprocess: Callable[[np.ndarray], np.ndarray],
                     embedding_dim: int, options: RayOptions = RayOptions(),
                     head: Callable[[np.ndarray], np.ndarray] | None = None, head_outputs: int = 0) -> ImageResults:
    """Embed (and score with `head`) every record in memory: the image-input path of `radlens predict`.

    `preprocess` is the driver's `encoder.preprocessor()`. No store and no de-duplication: like the local
    path, every input gets its own row.
    """
    got: dict[int, tuple[str, np.ndarray, np.ndarray | None]] = {}
    failed: list[tuple[int, str]] = []
    with ray_session(options.address, options.num_cpus):
        _quiet_data_context()
        if records:
            for batch in _stream(records, range(len(records)), spec, options, preprocess, head, head_outputs):
                for j, i in enumerate(batch["idx"]):
                    if batch["ok"][j]:
                        got[int(i)] = (str(batch["hash"][j]), batch["embedding"][j],
                                       batch["scores"][j] if head is not None else None)
                    else:
                        failed.append((int(i), str(batch["reason"][j])))
    ok = sorted(got)
    emb = np.stack([got[i][1] for i in ok]) if ok else np.zeros((0, embedding_dim), np.float32)
    scores = (np.stack([got[i][2] for i in ok]) if ok else np.zeros((0, head_outputs))) if head is not None else None
    return ImageResults(ok, [got[i][0] for i in ok], emb, scores, sorted(failed))
