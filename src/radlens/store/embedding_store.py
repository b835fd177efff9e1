"""A crash-safe, resumable embedding store: a folder of Parquet chunks plus `_radlens.json`.

Why this shape: `pandas.read_parquet(DIR)` reads the whole store with no radlens code; each chunk
is written to a hidden temp file and renamed, so a `kill -9` loses at most the chunk in flight and
never leaves a half-written file that readers would trip over; resuming reads only the key column
of the existing chunks. Sidecar files start with `_` because pyarrow skips those when it reads a
folder as a dataset.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

STORE_KIND = "embedding-store"
STORE_VERSION = 1
META_FILE = "_radlens.json"
QUARANTINE_FILE = "_quarantine.csv"
LOCK_FILE = ".lock"
KEY_COLUMNS = ("image_hash", "encoder_id", "preprocess_hash")

# Columns every store has, whatever the input: the adapter study and search filter on them.
CORE_FIELDS: list[pa.Field] = [
    pa.field("image_hash", pa.string()),
    pa.field("encoder_id", pa.string()),
    pa.field("preprocess_hash", pa.string()),
    pa.field("path", pa.string()),
    pa.field("format", pa.string()),
    pa.field("height", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("pixel_spacing_row", pa.float64()),
    pa.field("pixel_spacing_col", pa.float64()),
    pa.field("patient_id", pa.string()),
    pa.field("sex", pa.string()),
    pa.field("age", pa.float64()),
    pa.field("view", pa.string()),
]
_CORE_NAMES = {f.name for f in CORE_FIELDS}


class StoreMismatchError(ValueError):
    """Embeddings from a different encoder or preprocessing were about to be mixed."""


def infer_extra_fields(rows: Iterable[dict[str, Any]]) -> list[pa.Field]:
    """Arrow types for user metadata columns, decided once from *all* rows so chunks agree."""
    kinds: dict[str, set[type]] = {}
    for row in rows:
        for k, v in row.items():
            if k in _CORE_NAMES or k == "embedding":
                continue
            s = kinds.setdefault(k, set())
            if v is not None and not (isinstance(v, float) and np.isnan(v)):
                s.add(bool if isinstance(v, (bool, np.bool_)) else int if isinstance(v, (int, np.integer))
                      else float if isinstance(v, (float, np.floating)) else str)
    fields = []
    for k in sorted(kinds):
        s = kinds[k]
        t = (pa.bool_() if s == {bool} else pa.int64() if s == {int} else pa.float64() if s <= {int, float} and s
             else pa.string())
        fields.append(pa.field(k, t))
    return fields


def _field_to_json(f: pa.Field) -> list[str]:
    return [f.name, str(f.type)]


_TYPES = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(), "bool": pa.bool_()}


@dataclass
class StoreInfo:
    encoder_id: str
    preprocess_hash: str
    embedding_dim: int
    extra_fields: list[pa.Field]
    meta: dict[str, Any]


class EmbeddingStore:
    """Open (or create) a store for one encoder + preprocessing; `append` chunks, `keys` to resume."""

    def __init__(self, root: str | Path, *, encoder_id: str, preprocess_hash: str, embedding_dim: int,
                 extra_fields: list[pa.Field] | None = None, provenance: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / LOCK_FILE, os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"{self.root}: another radlens process is writing this store") from None
        try:
            self._open(encoder_id, preprocess_hash, embedding_dim, extra_fields, provenance)
        except BaseException:
            self.close()
            raise

    def _open(self, encoder_id: str, preprocess_hash: str, embedding_dim: int, extra_fields: list[pa.Field] | None,
              provenance: dict[str, Any] | None) -> None:
        for stale in self.root.glob(".part-*.tmp"):  # a chunk in flight when a previous run was killed
            log.warning("removing unfinished chunk %s from an interrupted run", stale.name)
            stale.unlink()
        # sidecars in flight (quarantine CSV, metadata): hidden from readers, but they would pile up run after run
        for stale in [*self.root.glob(f".{QUARANTINE_FILE}.*.tmp"), *self.root.glob(f".{META_FILE}.tmp")]:
            stale.unlink(missing_ok=True)
        existing = read_info(self.root)
        if existing is None:
            self.info = StoreInfo(encoder_id, preprocess_hash, embedding_dim, list(extra_fields or []),
                                  {"kind": STORE_KIND, "version": STORE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                   **(provenance or {})})
            self._write_info()
        else:
            check_compatible(existing, self.root, encoder_id, preprocess_hash)
            if existing.embedding_dim != embedding_dim:
                raise StoreMismatchError(f"{self.root}: store has {existing.embedding_dim}-d embeddings, encoder gives {embedding_dim}-d")
            known = {f.name for f in existing.extra_fields}
            new = [f.name for f in (extra_fields or []) if f.name not in known]
            if new:
                log.warning("%s: metadata columns %s are not in this store's schema (set when it was created) and "
                            "will not be stored; write a new store to keep them", self.root, new)
            self.info = existing
        self.schema = pa.schema(CORE_FIELDS + [pa.field("embedding", pa.list_(pa.float32(), self.info.embedding_dim))]
                                + self.info.extra_fields)

    # -- metadata ---------------------------------------------------------------------------------------------
    def _write_info(self) -> None:
        payload = {**self.info.meta, "encoder_id": self.info.encoder_id, "preprocess_hash": self.info.preprocess_hash,
                   "embedding_dim": self.info.embedding_dim, "key": list(KEY_COLUMNS),
                   "extra_columns": [_field_to_json(f) for f in self.info.extra_fields]}
        tmp = self.root / f".{META_FILE}.tmp"
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self.root / META_FILE)

    # -- reading ----------------------------------------------------------------------------------------------
    def parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet"))

    def keys(self) -> set[str]:
        """Image hashes already stored (the other two key columns are fixed per store)."""
        done: set[str] = set()
        for p in self.parts():
            done.update(pq.read_table(p, columns=["image_hash"]).column(0).to_pylist())
        return done

    # -- writing ----------------------------------------------------------------------------------------------
    def append(self, rows: list[dict[str, Any]]) -> Path | None:
        """Write one chunk atomically. Each row: core columns + `embedding` + metadata columns."""
        if not rows:
            return None
        cols: dict[str, list] = {f.name: [] for f in self.schema}
        for r in rows:
            for name in cols:
                v = r.get(name)
                if isinstance(v, float) and np.isnan(v):
                    v = None
                cols[name].append(v)
        cols["encoder_id"] = [self.info.encoder_id] * len(rows)
        cols["preprocess_hash"] = [self.info.preprocess_hash] * len(rows)
        emb = np.asarray(cols.pop("embedding"), dtype=np.float32).reshape(len(rows), self.info.embedding_dim)
        arrays = []
        for f in self.schema:
            if f.name == "embedding":
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), self.info.embedding_dim))
            else:
                vals = cols[f.name]
                if pa.types.is_string(f.type):
                    vals = [None if v is None else str(v) for v in vals]
                arrays.append(pa.array(vals, type=f.type))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        name = f"part-{len(self.parts()):05d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.root / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)
        return self.root / name

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_info(root: str | Path) -> StoreInfo | None:
    path = Path(root) / META_FILE
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    if d.get("kind") != STORE_KIND:
        raise ValueError(f"{path}: not a radlens embedding store (kind={d.get('kind')!r})")
    extra = [pa.field(n, _TYPES.get(t, pa.string())) for n, t in d.get("extra_columns", [])]
    return StoreInfo(d["encoder_id"], d["preprocess_hash"], int(d["embedding_dim"]), extra, d)


def check_compatible(info: StoreInfo, root: Path, encoder_id: str, preprocess_hash: str) -> None:
    if info.encoder_id != encoder_id or info.preprocess_hash != preprocess_hash:
        raise StoreMismatchError(
            f"{root}: store was made with encoder {info.encoder_id} (preprocess {info.preprocess_hash}); "
            f"refusing to mix in encoder {encoder_id} (preprocess {preprocess_hash}). Use another --out folder.")


def load_store(root: str | Path, *, encoder_id: str | None = None, preprocess_hash: str | None = None
               ) -> tuple[pd.DataFrame, np.ndarray, StoreInfo]:
    """Read a store: (metadata frame, (N, D) float32 embeddings, info). Optionally check its provenance."""
    root = Path(root)
    info = read_info(root)
    if info is None:
        raise FileNotFoundError(f"{root}: no {META_FILE}; not a radlens embedding store")
    if encoder_id is not None or preprocess_hash is not None:
        check_compatible(info, root, encoder_id or info.encoder_id, preprocess_hash or info.preprocess_hash)
    parts = sorted(root.glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=[f.name for f in CORE_FIELDS]), np.zeros((0, info.embedding_dim), np.float32), info
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    emb_col = table.column("embedding").combine_chunks()
    emb = emb_col.values.to_numpy(zero_copy_only=False).reshape(len(table), info.embedding_dim).astype(np.float32)
    df = table.drop_columns(["embedding"]).to_pandas()
    return df, emb, info
