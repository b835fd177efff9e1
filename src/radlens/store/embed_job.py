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


def read_hash(path: Path) -> str | DecodeError:
    """The file's sha256, or the quarantine reason when it cannot be read (both engines hash before decoding)."""
    try:
        return file_sha256(path)
    except OSError as e:
        return DecodeError(path, f"cannot read file: {e.strerror or e}")


def decode_for(path: Path, preprocess: Callable[[np.ndarray], np.ndarray]
               ) -> tuple[np.ndarray, dict[str, Any], str] | DecodeError:
    """(encoder input, decode metadata, content sha256) or the DecodeError to quarantine; never raises for a bad file."""
    try:
        img = load_image(path)
        return preprocess(img.pixels), img.meta, img.content_hash
    except DecodeError as e:
        return e


# The decode metadata a store row takes (see `build_row`); the Ray engine ships only these between processes.
ROW_META_KEYS = ("patient_id", "sex", "age", "view", "format", "original_shape", "pixel_spacing")


def build_row(rec: ImageRecord, image_hash: str, meta: dict[str, Any], emb: np.ndarray) -> dict[str, Any]:
    """One store row. Manifest columns win over DICOM header values for the demographic columns."""
    shape = meta.get("original_shape") or (None, None)
    spacing = meta.get("pixel_spacing") or (None, None)
    row = {k: meta.get(k) for k in ("patient_id", "sex", "age", "view")}
    row.update({k: v for k, v in rec.meta.items() if v is not None})
    row.update(image_hash=image_hash, path=str(rec.path), format=meta.get("format"), height=shape[0],
               width=shape[1], pixel_spacing_row=spacing[0], pixel_spacing_col=spacing[1], embedding=emb)
    return row


def open_store(out: Path, records: Sequence[ImageRecord], encoder: Encoder,
               provenance: dict[str, Any] | None) -> EmbeddingStore:
    """The store for these records and this encoder (created or resumed; metadata types from *all* records)."""
    return EmbeddingStore(out, encoder_id=encoder.encoder_id, preprocess_hash=encoder.preprocess_hash,
                          embedding_dim=encoder.embedding_dim, extra_fields=infer_extra_fields(r.meta for r in records),
                          provenance={"encoder": encoder.describe(), **(provenance or {})})


class RunLedger:
    """The bookkeeping both engines share, so they store and quarantine exactly alike.

    Why one class: what counts as cached (content hash already stored), which copy of duplicated content is
    embedded (the first in record order that decodes) and when a file leaves the quarantine (it embedded) are
    decisions; two engines with two copies of them would drift. Rows are written in chunks of `chunk_rows`
    (with the quarantine CSV after each), so a crash loses at most one chunk.
    """

    def __init__(self, store: EmbeddingStore, qpath: Path, total: int, chunk_rows: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.store, self.qpath, self.total, self.chunk_rows, self.progress = store, qpath, total, chunk_rows, progress
        self.quarantine = QuarantineReport()
        self.quarantine.merge_existing(qpath)
        self.done = store.keys()
        self.seen: dict[str, Path] = {}
        self.pending: list[dict[str, Any]] = []
        self.embedded = self.cached = self.quarantined = self.duplicates = self.accounted = 0

    def _tick(self, n: int = 1) -> None:
        self.accounted += n
        if self.progress:
            self.progress(self.accounted, self.total)

    def is_stored(self, image_hash: str) -> bool:
        return image_hash in self.done

    def skip_cached(self) -> None:
        self.cached += 1
        self._tick()

    def refuse(self, err: DecodeError, path: Path) -> None:
        """A file that could not be read or decoded: quarantined at the decode stage."""
        self.quarantine.add(path, err.reason, stage="decode")
        self.quarantined += 1
        self._tick()

    def claim(self, rec: ImageRecord, image_hash: str) -> bool:
        """A decoded file: True if it is to be embedded, False if it repeats content embedded in this run."""
        if image_hash in self.seen:
            self.quarantine.add(rec.path, f"identical content to {self.seen[image_hash]} (embedded once)",
                                stage="duplicate")
            self.duplicates += 1
            self._tick()
            return False
        self.seen[image_hash] = rec.path
        self.quarantine.discard(rec.path)  # a file fixed since an earlier run leaves the quarantine
        return True

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.pending.extend(rows)
        self.embedded += len(rows)
        self._tick(len(rows))
        if len(self.pending) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        self.store.append(self.pending)
        self.pending.clear()
        self.quarantine.write(self.qpath)

    def summary(self, t0: float, out: Path) -> EmbedSummary:
        return EmbedSummary(discovered=self.total, embedded=self.embedded, cached=self.cached,
                            quarantined=self.quarantined, duplicates=self.duplicates,
                            seconds=time.perf_counter() - t0, store=str(out), quarantine_csv=str(self.qpath))


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
    store = open_store(out, records, encoder, provenance)
    try:
        ledger = RunLedger(store, out / QUARANTINE_FILE, len(records), chunk_rows, progress)

        def prepare(rec: ImageRecord) -> tuple[ImageRecord, str | None, Any]:
            h = read_hash(rec.path)
            if isinstance(h, DecodeError):
                return rec, None, h
            if ledger.is_stored(h):
                return rec, h, None
            return rec, h, decode_for(rec.path, encoder.preprocess)

        batch: list[tuple[ImageRecord, str, np.ndarray, dict]] = []

        def run_batch() -> None:
            if not batch:
                return
            embs = encoder.embed(np.stack([b[2] for b in batch]))
            ledger.add_rows([build_row(rec, h, meta, e) for (rec, h, _, meta), e in zip(batch, embs)])
            batch.clear()

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
                    ledger.refuse(res, rec.path)
                elif res is None:
                    ledger.skip_cached()
                elif ledger.claim(rec, h):
                    batch.append((rec, h, res[0], res[1]))
                    if len(batch) >= batch_size:
                        run_batch()
            run_batch()
            ledger.flush()
        return ledger.summary(t0, out)
    finally:
        store.close()
