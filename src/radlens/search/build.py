"""Build or update the index of an embedding store (`radlens index STORE`).

The index lives next to the store (`STORE/_index` by default) and is kept in step with it: running
again adds the store's new images and, with `prune`, tombstones images the store no longer holds,
instead of rebuilding. A store from another encoder than the index refuses to mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radlens.atomic import recover_interrupted
from radlens.io.splits import split_mask
from radlens.search.index import EmbeddingIndex
from radlens.store import load_store

INDEX_DIRNAME = "_index"
DROP_COLUMNS = ("encoder_id", "preprocess_hash")


def default_index_dir(store: str | Path) -> Path:
    return Path(store) / INDEX_DIRNAME


@dataclass
class IndexSummary:
    folder: Path
    created: bool
    added: int
    removed: int
    total: int
    index_type: str
    metric: str
    seconds: float


def index_store(store: str | Path, out: str | Path | None = None, *, kind: str = "auto", metric: str = "cosine",
                split: str | None = None, prune: bool = False, rebuild: bool = False,
                label_column: str = "finding_labels") -> IndexSummary:
    import time

    t0 = time.perf_counter()
    store = Path(store)
    out = Path(out) if out else default_index_dir(store)
    recover_interrupted(out)  # a write killed mid-swap: put the previous index back, drop dead temp folders
    df, emb, info = load_store(store)
    if split:
        m = split_mask(df.path, split).to_numpy()
        df, emb = df[m].reset_index(drop=True), emb[m]
    rows = df.drop(columns=[c for c in DROP_COLUMNS if c in df])
    provenance: dict[str, Any] = {"encoder": info.meta.get("encoder", {}), "store": str(store.resolve()),
                                  "split": split or "all rows", "label_column": label_column}
    if (out / "radlens.json").is_file() and not rebuild:
        idx = EmbeddingIndex.load(out)
        idx.check(info.encoder_id, info.preprocess_hash)
        have = set(idx.rows.image_hash[~idx.rows._id.isin(idx.meta["deleted"])])
        new = ~rows.image_hash.isin(have).to_numpy()
        added = len(idx.add(rows[new], emb[new])) if new.any() else 0
        removed = 0
        if prune:
            gone = idx.rows._id[~idx.rows.image_hash.isin(set(rows.image_hash))].to_numpy()
            removed = idx.delete(gone) if len(gone) else 0
        return IndexSummary(out, False, added, removed, len(idx), idx.meta["index_type"], idx.meta["metric"],
                            time.perf_counter() - t0)
    if not len(rows):
        raise ValueError(f"{store}: no images to index (split {split or 'all rows'})")
    idx = EmbeddingIndex.build(rows, np.asarray(emb), encoder_id=info.encoder_id, preprocess_hash=info.preprocess_hash,
                               folder=out, metric=metric, kind=kind, provenance=provenance)
    return IndexSummary(out, True, len(rows), 0, len(idx), idx.meta["index_type"], idx.meta["metric"],
                        time.perf_counter() - t0)
