"""The embed job: discover → hash → decode/preprocess (thread pool) → batched encoder → store chunks.

Why threads, not processes: Pillow's decoders, zlib, sha256 and torch's resize release the GIL, so a
small thread pool keeps decode overlapped with the batched forward pass without forking a process
that holds a model. Images already in the store are recognised by content hash *before* decoding,
so a second run does no image work at all.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from radlens.encoders.base import Encoder
from radlens.io import DecodeError, ImageRecord, QuarantineReport, discover, load_image
from radlens.store.embedding_store import QUARANTINE_FILE, EmbeddingStore, infer_extra_fields

log = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    discovered: int
    embedded: int
    cached: int
    quarantined: int
    duplicates: int
    seconds: float
    store: str
    quarantine_csv: str

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _row(rec: ImageRecord, image_hash: str, meta: dict[str, Any], emb: np.ndarray) -> dict[str, Any]:
    """Manifest columns win over DICOM header values for the demographic columns."""
    shape = meta.get("original_shape") or (None, None)
    spacing = meta.get("pixel_spacing") or (None, None)
    row = {k: meta.get(k) for k in ("patient_id", "sex", "age", "view")}
    row.update({k: v for k, v in rec.meta.items() if v is not None})
    row.update(image_hash=image_hash, path=str(rec.path), format=meta.get("format"), height=shape[0],
               width=shape[1], pixel_spacing_row=spacing[0], pixel_spacing_col=spacing[1], embedding=emb)
    return row


def embed_to_store(source: str | Path | Sequence[str | Path], out: str | Path, encoder: Encoder, *,
                   batch_size: int = 32, workers: int = 2, limit: int | None = None, chunk_rows: int = 256,
                   progress: Callable[[int, int], None] | None = None,
                   provenance: dict[str, Any] | None = None) -> EmbedSummary:
    """Embed every image of `source` into the store at `out`; resumable and idempotent.

    `progress(done, total)` is called as images are accounted for (embedded, cached or quarantined).
    """
    t0 = time.perf_counter()
    out = Path(out)
    records = discover(source)
    if limit is not None:
        records = records[:limit]
    extra = infer_extra_fields(r.meta for r in records)
    quarantine = QuarantineReport()
    qpath = out / QUARANTINE_FILE
    store = EmbeddingStore(out, encoder_id=encoder.encoder_id, preprocess_hash=encoder.preprocess_hash,
                           embedding_dim=encoder.embedding_dim, extra_fields=extra,
                           provenance={"encoder": encoder.describe(), **(provenance or {})})
    try:
        quarantine.merge_existing(qpath)
        done = store.keys()
        n_cached = n_dup = n_embedded = n_quar = 0
        accounted = 0
        total = len(records)

        def tick(n: int = 1) -> None:
            nonlocal accounted
            accounted += n
            if progress:
                progress(accounted, total)

        def prepare(rec: ImageRecord) -> tuple[ImageRecord, str | None, Any]:
            try:
                image_hash = file_sha256(rec.path)
            except OSError as e:
                return rec, None, DecodeError(rec.path, f"cannot read file: {e.strerror or e}")
            if image_hash in done:
                return rec, image_hash, None
            try:
                img = load_image(rec.path)
                return rec, image_hash, (encoder.preprocess(img.pixels), img.meta)
            except DecodeError as e:
                return rec, image_hash, e

        pending_rows: list[dict[str, Any]] = []
        batch: list[tuple[ImageRecord, str, np.ndarray, dict]] = []
        seen_this_run: dict[str, Path] = {}

        def run_batch() -> None:
            nonlocal n_embedded
            if not batch:
                return
            embs = encoder.embed(np.stack([b[2] for b in batch]))
            for (rec, h, _, meta), e in zip(batch, embs):
                pending_rows.append(_row(rec, h, meta, e))
            n_embedded += len(batch)
            tick(len(batch))
            batch.clear()

        def flush() -> None:
            store.append(pending_rows)
            pending_rows.clear()
            quarantine.write(qpath)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            window: deque[Future] = deque()
            it = iter(records)
            lookahead = max(2 * batch_size, 4 * workers)
            for rec in it:
                window.append(pool.submit(prepare, rec))
                if len(window) >= lookahead:
                    break
            while window:
                rec, h, res = window.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    window.append(pool.submit(prepare, nxt))
                if isinstance(res, DecodeError):
                    quarantine.add(rec.path, res.reason, stage="decode")
                    n_quar += 1
                    tick()
                elif res is None:
                    n_cached += 1
                    tick()
                elif h in seen_this_run:
                    quarantine.add(rec.path, f"identical content to {seen_this_run[h]} (embedded once)",
                                   stage="duplicate")
                    n_dup += 1
                    tick()
                else:
                    seen_this_run[h] = rec.path
                    quarantine.discard(rec.path)  # a file fixed since an earlier run leaves the quarantine
                    batch.append((rec, h, res[0], res[1]))
                    if len(batch) >= batch_size:
                        run_batch()
                        if len(pending_rows) >= chunk_rows:
                            flush()
            run_batch()
            flush()
        return EmbedSummary(discovered=total, embedded=n_embedded, cached=n_cached, quarantined=n_quar,
                            duplicates=n_dup, seconds=time.perf_counter() - t0, store=str(out),
                            quarantine_csv=str(qpath))
    finally:
        store.close()
