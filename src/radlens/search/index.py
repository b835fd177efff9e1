"""A FAISS index over an embedding store, persisted next to it with the store's provenance.

Why these choices: exact (flat) search up to `FLAT_MAX` vectors and HNSW above (chosen automatically,
overridable); cosine = inner product on L2-normalised vectors. HNSW cannot delete, so deletes are
tombstones applied as a filter and `compact()` rebuilds. A selective metadata filter makes HNSW's graph
walk return short lists without saying so (seen here: 2 of 3 allowed ids), so filtered queries run
exactly over the allowed rows when they are few, and fall back to exact search whenever the ANN answer
is shorter than min(k, allowed rows): callers always get every result that exists.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

INDEX_KIND = "index"
META_FILE = "radlens.json"
FAISS_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
ROWS_FILE = "rows.parquet"
FLAT_MAX = 200_000
EXACT_FILTER_MAX = 50_000


class IndexMismatchError(ValueError):
    """A query from another encoder or preprocessing than the index was built with."""


@dataclass
class Hit:
    id: int
    score: float  # cosine similarity (metric=cosine) or negative squared L2 distance (metric=l2)
    row: dict[str, Any]


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        n = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(n, 1e-12)
    return x


def _new_faiss(kind: str, dim: int, metric: str, hnsw_m: int):
    """index_factory owns the sub-index (no Python object whose lifetime must be managed)."""
    import faiss

    mt = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    return faiss.index_factory(dim, "IDMap2,Flat" if kind == "flat" else f"IDMap2,HNSW{hnsw_m},Flat", mt)


def _hnsw(index: Any) -> Any:
    import faiss

    return faiss.downcast_index(index.index).hnsw


class EmbeddingIndex:
    """Build with `EmbeddingIndex.build(...)`, open with `EmbeddingIndex.load(folder)`."""

    def __init__(self, folder: Path, meta: dict[str, Any], index: Any, vectors: np.ndarray, rows: pd.DataFrame) -> None:
        self.folder, self.meta, self.index, self.vectors, self.rows = folder, meta, index, vectors, rows

    # ---------------------------------------------------------------- building and persistence
    @classmethod
    def build(cls, rows: pd.DataFrame, embeddings: np.ndarray, *, encoder_id: str, preprocess_hash: str,
              folder: str | Path, metric: str = "cosine", kind: str = "auto", hnsw_m: int = 32,
              ef_construction: int = 80, ef_search: int = 64, provenance: dict[str, Any] | None = None
              ) -> "EmbeddingIndex":
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be cosine or l2, not {metric!r}")
        if kind == "auto":
            kind = "flat" if len(embeddings) <= FLAT_MAX else "hnsw"
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"index kind must be auto, flat or hnsw, not {kind!r}")
        x = _prepare(embeddings, metric)
        index = _new_faiss(kind, x.shape[1], metric, hnsw_m)
        if kind == "hnsw":
            _hnsw(index).efConstruction = ef_construction
            _hnsw(index).efSearch = ef_search
        ids = np.arange(len(x), dtype=np.int64)
        index.add_with_ids(x, ids)
        meta = {"kind": INDEX_KIND, "version": 1, "encoder_id": encoder_id, "preprocess_hash": preprocess_hash,
                "metric": metric, "index_type": kind, "dim": int(x.shape[1]), "hnsw_m": hnsw_m,
                "ef_search": ef_search, "next_id": int(len(x)), "deleted": [],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})}
        out = cls(Path(folder), meta, index, x, rows.reset_index(drop=True).assign(_id=ids))
        out.save()
        return out

    def save(self) -> None:
        """Write the folder atomically: build it beside the target, then swap it in."""
        import faiss

        folder = self.folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            faiss.write_index(self.index, str(tmp / FAISS_FILE))
            np.save(tmp / VECTORS_FILE, np.asarray(self.vectors))
            self.rows.to_parquet(tmp / ROWS_FILE, index=False)
            (tmp / META_FILE).write_text(json.dumps(self.meta, indent=1))
            old = None
            if folder.exists():
                old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")

    @classmethod
    def load(cls, folder: str | Path, *, encoder_id: str | None = None, preprocess_hash: str | None = None
             ) -> "EmbeddingIndex":
        import faiss

        folder = Path(folder)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: not a radlens index (no {META_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") != INDEX_KIND:
            raise ValueError(f"{meta_path}: kind is {meta.get('kind')!r}, expected {INDEX_KIND!r}")
        index = faiss.read_index(str(folder / FAISS_FILE))  # FAISS's own binary format, not a pickle
        if meta["index_type"] == "hnsw":
            _hnsw(index).efSearch = meta["ef_search"]
        out = cls(folder, meta, index, np.load(folder / VECTORS_FILE, mmap_mode="r"),
                  pd.read_parquet(folder / ROWS_FILE))
        if encoder_id is not None or preprocess_hash is not None:
            out.check(encoder_id or meta["encoder_id"], preprocess_hash or meta["preprocess_hash"])
        return out

    def check(self, encoder_id: str, preprocess_hash: str) -> None:
        if encoder_id != self.meta["encoder_id"] or preprocess_hash != self.meta["preprocess_hash"]:
            raise IndexMismatchError(
                f"{self.folder}: index holds embeddings of encoder {self.meta['encoder_id']} (preprocess "
                f"{self.meta['preprocess_hash']}); refusing a query from {encoder_id} (preprocess {preprocess_hash})")

    # ---------------------------------------------------------------- incremental changes
    def add(self, rows: pd.DataFrame, embeddings: np.ndarray) -> np.ndarray:
        x = _prepare(embeddings, self.meta["metric"])
        start = self.meta["next_id"]
        ids = np.arange(start, start + len(x), dtype=np.int64)
        self.index.add_with_ids(x, ids)
        self.vectors = np.concatenate([np.asarray(self.vectors), x])
        self.rows = pd.concat([self.rows, rows.reset_index(drop=True).assign(_id=ids)], ignore_index=True)
        self.meta["next_id"] = int(start + len(x))
        self.save()
        return ids

    def delete(self, ids: list[int] | np.ndarray) -> int:
        """Tombstone ids (HNSW cannot remove in place); they never appear in results again."""
        known = set(self.rows._id.tolist())
        new = sorted({int(i) for i in ids if int(i) in known} - set(self.meta["deleted"]))
        self.meta["deleted"] = sorted(set(self.meta["deleted"]) | set(new))
        self.save()
        return len(new)

    def compact(self) -> "EmbeddingIndex":
        """Rebuild without tombstoned rows (ids are renumbered)."""
        keep = ~self.rows._id.isin(self.meta["deleted"]).to_numpy()
        m = self.meta
        return EmbeddingIndex.build(self.rows[keep].drop(columns="_id"), np.asarray(self.vectors)[keep],
                                    encoder_id=m["encoder_id"], preprocess_hash=m["preprocess_hash"], folder=self.folder,
                                    metric=m["metric"], kind=m["index_type"], hnsw_m=m["hnsw_m"], ef_search=m["ef_search"])

    # ---------------------------------------------------------------- search
    def __len__(self) -> int:
        return len(self.rows) - len(self.meta["deleted"])

    def allowed(self, filters: dict[str, Any] | None) -> np.ndarray:
        """Boolean mask over rows: not deleted and matching every filter.

        Filters: {"sex": "F"} equality, {"view": ["AP", "PA"]} membership, {"age": (40, 60)} inclusive range
        (None = open end), {"label": "Effusion"} rows whose `label_column` ('|'-separated) contains it.
        """
        r = self.rows
        mask = ~r._id.isin(self.meta["deleted"]).to_numpy()
        for col, want in (filters or {}).items():
            if col == "label":
                lc = self.meta.get("label_column", "finding_labels")
                labels = r[lc].fillna("").astype(str).str.split("|")
                wanted = {want} if isinstance(want, str) else set(want)
                mask &= labels.map(lambda ls: bool(wanted & set(ls))).to_numpy()
                continue
            if col not in r:
                raise KeyError(f"filter on {col!r}: the index has no such column ({[c for c in r.columns if c != '_id']})")
            v = r[col]
            if isinstance(want, tuple):
                lo, hi = want
                m = v.notna()
                if lo is not None:
                    m &= v >= lo
                if hi is not None:
                    m &= v <= hi
                mask &= m.fillna(False).to_numpy(bool)
            elif isinstance(want, (list, set)):
                mask &= v.isin(list(want)).to_numpy()
            else:
                mask &= (v == want).fillna(False).to_numpy(bool)
        return mask

    def search(self, queries: np.ndarray, k: int = 10, filters: dict[str, Any] | None = None,
               exclude_hashes: set[str] | None = None) -> list[list[Hit]]:
        """Top-k per query; always min(k, allowed rows) hits (never a silently short list)."""
        import faiss

        q = _prepare(np.atleast_2d(queries), self.meta["metric"])
        mask = self.allowed(filters)
        if exclude_hashes and "image_hash" in self.rows:
            mask &= ~self.rows.image_hash.isin(exclude_hashes).to_numpy()
        n_allowed = int(mask.sum())
        want = min(k, n_allowed)
        if want == 0:
            return [[] for _ in q]
        restricted = n_allowed < len(self.rows)
        if restricted and n_allowed <= EXACT_FILTER_MAX:
            return [self._exact(qi, np.flatnonzero(mask), want) for qi in q]
        params = None
        if restricted:
            sel = faiss.IDSelectorBatch(self.rows._id.to_numpy()[mask].astype(np.int64))
            params = (faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.meta["ef_search"], 4 * k))
                      if self.meta["index_type"] == "hnsw" else faiss.SearchParameters(sel=sel))
        D, I = self.index.search(q, want, params=params)
        out = []
        pos = pd.Series(np.arange(len(self.rows)), index=self.rows._id.to_numpy())
        for qi, d, ids in zip(q, D, I):
            ok = ids >= 0
            if ok.sum() < want:  # the ANN walk ran dry: answer exactly instead
                out.append(self._exact(qi, np.flatnonzero(mask), want))
                continue
            out.append([self._hit(int(pos[i]), float(s)) for i, s in zip(ids[ok], d[ok])])
        return out

    def _exact(self, q: np.ndarray, rows: np.ndarray, k: int) -> list[Hit]:
        v = np.asarray(self.vectors[rows])
        s = v @ q if self.meta["metric"] == "cosine" else -((v - q) ** 2).sum(1)
        top = np.argsort(-s, kind="stable")[:k]
        return [self._hit(int(rows[j]), float(s[j])) for j in top]

    def _hit(self, pos: int, score: float) -> Hit:
        row = self.rows.iloc[pos]
        if self.meta["metric"] == "l2":
            score = -abs(score)
        return Hit(int(row._id), score, {c: (None if pd.isna(v) else v) if not isinstance(v, (list, np.ndarray)) else v
                                         for c, v in row.drop(labels="_id").items()})
