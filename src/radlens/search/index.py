"""A FAISS index over an embedding store, persisted next to it with the store's provenance.

Why these choices: exact (flat) search up to `FLAT_MAX` vectors, HNSW up to `IVF_MIN` and "ivf" from
there (chosen automatically, overridable); cosine = inner product on L2-normalised vectors. HNSW cannot
delete, so deletes are tombstones applied as a filter and `compact()` rebuilds. A selective metadata
filter makes HNSW's graph walk return short lists without saying so (seen here: 2 of 3 allowed ids), so
filtered queries run exactly over the allowed rows when they are few, and fall back to exact search
whenever the ANN answer is shorter than min(k, allowed rows): callers always get every result that exists.

"ivf" (for ~1M vectors on a 2-core CPU): `IDMap2,IVF{nlist},PQ{m}x4fs` (k-means coarse lists trained on a
seeded subsample, 4-bit fast-scan product-quantised codes, m = dim/2 sub-quantisers, 192 bytes a 768-d
vector) picks a shortlist of `rerank` x k candidates, which are re-scored exactly against the stored
float32 vectors (memory-mapped `vectors.npy`, multi-threaded FAISS `fvec_*_by_idx`), so scores are exact
and only the shortlist is approximate. Measured on 1M x 768 clustered vectors (bench/search.py, 2 cores,
nprobe 8, rerank 10): build 45 s, recall@10 0.986, ~3,300-4,000 queries/s through `search` (Hits with
their rows; the FAISS shortlist alone ~8,000) against 84 q/s exact; 192 bytes a vector in the index
file besides vectors.npy, which stays memory-mapped. FAISS 1.15's IVF fast-scan
ignores an IDSelector silently, so filters and tombstones are applied after the shortlist (over-fetching by
the inverse of the allowed fraction), again falling back to exact search when that comes back short.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlens.atomic import folder_swap
from radlens.safe_files import UnsafeArtefactError, read_npy

INDEX_KIND = "index"
META_FILE = "radlens.json"
FAISS_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
ROWS_FILE = "rows.parquet"
FLAT_MAX = 200_000
IVF_MIN = 500_000
EXACT_FILTER_MAX = 50_000
IVF_MIN_TRAIN = 256  # fewer vectors than this cannot train the coarse lists and 16-centroid PQ codebooks
IVF_DEFAULT_NPROBE = 8
IVF_DEFAULT_RERANK = 10


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


def ivf_defaults(n: int, dim: int) -> dict[str, int]:
    """nlist ~ sqrt(n) rounded to a power of two (at least 39 training points a list); m = dim/2 sub-quantisers."""
    nlist = int(max(1, min(2 ** round(np.log2(max(np.sqrt(n), 1))), n // 39)))
    return {"ivf_nlist": nlist, "pq_m": dim // 2 if dim % 2 == 0 else dim,
            "train_size": int(min(n, max(50 * nlist, 10_000)))}


def _factory(kind: str, hnsw_m: int, nlist: int = 0, pq_m: int = 0) -> str:
    if kind == "flat":
        return "IDMap2,Flat"
    if kind == "hnsw":
        return f"IDMap2,HNSW{hnsw_m},Flat"
    return f"IDMap2,IVF{nlist},PQ{pq_m}x4fs"


def _new_faiss(kind: str, dim: int, metric: str, hnsw_m: int, nlist: int = 0, pq_m: int = 0):
    """index_factory owns the sub-index (no Python object whose lifetime must be managed)."""
    import faiss

    mt = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    return faiss.index_factory(dim, _factory(kind, hnsw_m, nlist, pq_m), mt)


def _one_chunk(rows: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed columns (pandas' default strings, read from Parquet in row groups) as one chunk each.

    Taking a few thousand rows of a chunked 1M-row column costs ~10 ms a column, of one chunk ~1 ms: this
    is most of a search's time at 1M rows otherwise. Values and dtypes are unchanged; anything unexpected
    is left as it is.
    """
    import pyarrow as pa

    out = rows
    for c in rows.columns:
        arr = rows[c].array
        if not hasattr(arr, "__arrow_array__"):
            continue
        try:
            chunked = arr.__arrow_array__()
            if not isinstance(chunked, pa.ChunkedArray) or chunked.num_chunks <= 1:
                continue
            try:
                new = type(arr)(chunked.combine_chunks(), dtype=arr.dtype)
            except TypeError:
                new = type(arr)(chunked.combine_chunks())
        except (TypeError, ValueError, AttributeError, pa.ArrowException):
            continue
        if new.dtype == arr.dtype and len(new) == len(arr):
            out = rows.copy(deep=False) if out is rows else out
            out[c] = pd.Series(new, index=rows.index, name=c)
    return out


def _hnsw(index: Any) -> Any:
    import faiss

    return faiss.downcast_index(index.index).hnsw


def _ivf(index: Any) -> Any:
    import faiss

    return faiss.extract_index_ivf(index)


class EmbeddingIndex:
    """Build with `EmbeddingIndex.build(...)`, open with `EmbeddingIndex.load(folder)`."""

    def __init__(self, folder: Path, meta: dict[str, Any], index: Any, vectors: np.ndarray, rows: pd.DataFrame) -> None:
        self.folder, self.meta, self.index, self.vectors, self.rows = folder, meta, index, vectors, rows
        self._lut: tuple[pd.DataFrame, np.ndarray] | None = None  # (rows it was made from, id -> position)

    # ---------------------------------------------------------------- building and persistence
    @classmethod
    def build(cls, rows: pd.DataFrame, embeddings: np.ndarray, *, encoder_id: str, preprocess_hash: str,
              folder: str | Path, metric: str = "cosine", kind: str = "auto", hnsw_m: int = 32,
              ef_construction: int = 80, ef_search: int = 64, provenance: dict[str, Any] | None = None,
              ivf_nlist: int | None = None, ivf_nprobe: int = IVF_DEFAULT_NPROBE, pq_m: int | None = None,
              rerank: int = IVF_DEFAULT_RERANK, train_size: int | None = None, seed: int = 0
              ) -> "EmbeddingIndex":
        """kind: auto (flat up to FLAT_MAX vectors, hnsw up to IVF_MIN, ivf above), flat, hnsw or ivf.

        ivf_* / pq_m / rerank / train_size / seed only concern kind "ivf" (None = `ivf_defaults`); nprobe and
        rerank (shortlist = rerank x k, re-scored exactly) are stored in the metadata and used by `search`.
        """
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be cosine or l2, not {metric!r}")
        if kind == "auto":
            n = len(embeddings)
            kind = "flat" if n <= FLAT_MAX else "hnsw" if n < IVF_MIN else "ivf"
        if kind not in ("flat", "hnsw", "ivf"):
            raise ValueError(f"index kind must be auto, flat, hnsw or ivf, not {kind!r}")
        if kind == "ivf" and len(embeddings) < IVF_MIN_TRAIN:
            raise ValueError(f"an ivf index needs at least {IVF_MIN_TRAIN} vectors to train, got "
                             f"{len(embeddings)}: use kind='flat'")
        x = _prepare(embeddings, metric)
        extra: dict[str, Any] = {}
        if kind == "ivf":
            d = ivf_defaults(len(x), x.shape[1])
            extra = {"ivf_nlist": int(ivf_nlist or d["ivf_nlist"]), "ivf_nprobe": int(ivf_nprobe),
                     "pq_m": int(pq_m or d["pq_m"]), "rerank": int(rerank),
                     "train_size": int(min(len(x), train_size or d["train_size"])), "train_seed": int(seed)}
            if extra["rerank"] < 1 or extra["ivf_nprobe"] < 1:
                raise ValueError("rerank and ivf_nprobe must be at least 1")
            if x.shape[1] % extra["pq_m"]:
                raise ValueError(f"pq_m={extra['pq_m']} must divide the dimension {x.shape[1]}")
        index = _new_faiss(kind, x.shape[1], metric, hnsw_m, extra.get("ivf_nlist", 0), extra.get("pq_m", 0))
        if kind == "hnsw":
            _hnsw(index).efConstruction = ef_construction
            _hnsw(index).efSearch = ef_search
        if kind == "ivf":
            sample = np.sort(np.random.default_rng(seed).choice(len(x), extra["train_size"], replace=False))
            index.train(x[sample])
            _ivf(index).nprobe = extra["ivf_nprobe"]
            extra["faiss_factory"] = _factory(kind, hnsw_m, extra["ivf_nlist"], extra["pq_m"])
        ids = np.arange(len(x), dtype=np.int64)
        index.add_with_ids(x, ids)
        meta = {"kind": INDEX_KIND, "version": 1, "encoder_id": encoder_id, "preprocess_hash": preprocess_hash,
                "metric": metric, "index_type": kind, "dim": int(x.shape[1]), "hnsw_m": hnsw_m,
                "ef_search": ef_search, **extra, "next_id": int(len(x)), "deleted": [],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})}
        out = cls(Path(folder), meta, index, x, _one_chunk(rows.reset_index(drop=True).assign(_id=ids)))
        out.save()
        return out

    def save(self) -> None:
        """Write the folder atomically: build it beside the target, then swap it in."""
        import faiss

        folder = self.folder
        with folder_swap(folder) as tmp:
            faiss.write_index(self.index, str(tmp / FAISS_FILE))
            np.save(tmp / VECTORS_FILE, np.asarray(self.vectors))
            self.rows.to_parquet(tmp / ROWS_FILE, index=False)
            (tmp / META_FILE).write_text(json.dumps(self.meta, indent=1))
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
        try:
            index = faiss.read_index(str(folder / FAISS_FILE))  # FAISS's own binary format, not a pickle
        except RuntimeError as e:
            raise UnsafeArtefactError(f"{folder / FAISS_FILE}: not a FAISS index ({str(e).splitlines()[-1]})") from None
        try:
            rows = pd.read_parquet(folder / ROWS_FILE)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise UnsafeArtefactError(f"{folder / ROWS_FILE}: not a Parquet table ({e})") from None
        if meta["index_type"] == "hnsw":
            _hnsw(index).efSearch = meta["ef_search"]
        elif meta["index_type"] == "ivf":
            _ivf(index).nprobe = meta["ivf_nprobe"]
        out = cls(folder, meta, index, read_npy(folder / VECTORS_FILE, mmap_mode="r"), _one_chunk(rows))
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
        self.rows = _one_chunk(pd.concat([self.rows, rows.reset_index(drop=True).assign(_id=ids)], ignore_index=True))
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
        kind, ivf = m["index_type"], {}
        if kind == "ivf" and keep.sum() < IVF_MIN_TRAIN:
            kind = "flat"  # too few left to train on
        elif kind == "ivf":  # nlist and training size follow the new size
            ivf = {k: m[k] for k in ("ivf_nprobe", "pq_m", "rerank") if k in m} | {"seed": m.get("train_seed", 0)}
        return EmbeddingIndex.build(self.rows[keep].drop(columns="_id"), np.asarray(self.vectors)[keep],
                                    encoder_id=m["encoder_id"], preprocess_hash=m["preprocess_hash"], folder=self.folder,
                                    metric=m["metric"], kind=kind, hnsw_m=m["hnsw_m"], ef_search=m["ef_search"], **ivf)

    # ---------------------------------------------------------------- search
    def __len__(self) -> int:
        return len(self.rows) - len(self.meta["deleted"])

    def allowed(self, filters: dict[str, Any] | None) -> np.ndarray:
        """Boolean mask over rows: not deleted and matching every filter.

        Filters: {"sex": "F"} equality, {"view": ["AP", "PA"]} membership, {"age": (40, 60)} inclusive range
        (None = open end), {"label": "Effusion"} rows whose `label_column` ('|'-separated) contains it.
        """
        r = self.rows
        mask = ~r._id.isin(self.meta["deleted"]).to_numpy() if self.meta["deleted"] else np.ones(len(r), bool)
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
            return self._hits([self._exact(qi, np.flatnonzero(mask), want) for qi in q])
        if self.meta["index_type"] == "ivf":
            return self._hits(self._search_ivf(q, want, mask, n_allowed))
        params = None
        if restricted:
            sel = faiss.IDSelectorBatch(self.rows._id.to_numpy()[mask].astype(np.int64))
            params = (faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.meta["ef_search"], 4 * k))
                      if self.meta["index_type"] == "hnsw" else faiss.SearchParameters(sel=sel))
        D, I = self.index.search(q, want, params=params)
        out = []
        pos = self._positions(I)
        for qi, d, p in zip(q, D, pos):
            ok = p >= 0
            if ok.sum() < want:  # the ANN walk ran dry: answer exactly instead
                out.append(self._exact(qi, np.flatnonzero(mask), want))
                continue
            out.append((p[ok], d[ok]))
        return self._hits(out)

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """FAISS ids (-1 = none) -> positions in `rows` (-1 = none)."""
        if self._lut is None or self._lut[0] is not self.rows:
            lut = np.full(max(int(self.meta["next_id"]), 1), -1, dtype=np.int64)
            lut[self.rows._id.to_numpy()] = np.arange(len(self.rows))
            self._lut = (self.rows, lut)
        lut = self._lut[1]
        return np.where(ids >= 0, lut[np.clip(ids, 0, len(lut) - 1)], -1)

    def _search_ivf(self, q: np.ndarray, want: int, mask: np.ndarray, n_allowed: int
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Shortlist rerank x want (over-fetched by 1 / allowed fraction) from the PQ codes, re-score exactly."""
        import faiss

        m, n = self.meta, len(self.rows)
        kk = int(min(n, np.ceil(want * m["rerank"] * n / n_allowed)))
        _, cand = self.index.search(q, kk, params=faiss.SearchParametersIVF(nprobe=m["ivf_nprobe"]))
        pos = self._positions(cand)
        if n_allowed < n:  # fast-scan IVF ignores IDSelectors: filter (and tombstone) after the fact
            pos[(pos >= 0) & ~mask[np.maximum(pos, 0)]] = -1
        v = self.vectors
        if not (isinstance(v, np.ndarray) and v.dtype == np.float32 and v.flags.c_contiguous):
            v = self.vectors = np.ascontiguousarray(v, dtype=np.float32)
        s = np.empty(pos.shape, dtype=np.float32)
        nq, d = q.shape[0], q.shape[1]
        if m["metric"] == "cosine":  # -inf / +inf where pos < 0
            faiss.fvec_inner_products_by_idx(faiss.swig_ptr(s), faiss.swig_ptr(q), faiss.swig_ptr(v),
                                             faiss.swig_ptr(pos), d, nq, kk)
        else:
            faiss.fvec_L2sqr_by_idx(faiss.swig_ptr(s), faiss.swig_ptr(q), faiss.swig_ptr(v),
                                    faiss.swig_ptr(pos), d, nq, kk)
            np.negative(s, out=s)
        if kk > want:
            part = np.argpartition(-s, want - 1, axis=1)[:, :want]
        else:
            part = np.broadcast_to(np.arange(kk), (nq, kk))
        ps = np.take_along_axis(s, part, 1)
        order = np.take_along_axis(part, np.argsort(-ps, axis=1, kind="stable"), 1)
        top_s, top_p = np.take_along_axis(s, order, 1), np.take_along_axis(pos, order, 1)
        out = []
        for qi, ts, tp in zip(q, top_s, top_p):
            if not np.isfinite(ts[-1]):  # the probed lists held too few allowed rows: answer exactly instead
                out.append(self._exact(qi, np.flatnonzero(mask), want))
            else:
                out.append((tp, ts))
        return out

    def _exact(self, q: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(self.vectors[rows])
        s = v @ q if self.meta["metric"] == "cosine" else -((v - q) ** 2).sum(1)
        top = np.argsort(-s, kind="stable")[:k]
        return rows[top], s[top]

    def _hits(self, per_query: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Hit]]:
        """(positions, scores) per query -> Hits, reading all their rows in one go (not a pandas row per hit)."""
        sizes = [len(p) for p, _ in per_query]
        if not sum(sizes):
            return [[] for _ in per_query]
        pos = np.concatenate([np.asarray(p, dtype=np.int64) for p, _ in per_query])
        scores = np.concatenate([np.asarray(s, dtype=np.float64) for _, s in per_query])
        if self.meta["metric"] == "l2":
            scores = -np.abs(scores)
        ids = self.rows._id.to_numpy()[pos]
        cols = [c for c in self.rows.columns if c != "_id"]
        values = []
        for c in cols:  # column by column: missing values become None (cells holding lists or arrays are kept)
            col = self.rows[c].iloc[pos]
            v = col.tolist()
            na = col.isna().to_numpy()
            if na.any():
                for j in np.flatnonzero(na):
                    v[j] = None
            values.append(v)
        hits = [Hit(int(i), float(sc), dict(zip(cols, vals))) for i, sc, vals in zip(ids.tolist(), scores, zip(*values))]
        out, at = [], 0
        for size in sizes:
            out.append(hits[at:at + size])
            at += size
        return out
