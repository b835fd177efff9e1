"""What one request does, without HTTP: decode → embed → adapter → operating point → evidence.

Kept apart from the web layer so the benchmark times exactly what the service runs, and so a
notebook can call it directly. Concurrent requests never run the model at the same time (on two
cores overlapping torch calls only fight over them): their forwards are micro-batched by one worker
(`MicroBatcher`); decoding, preprocessing, search and thumbnails run in parallel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radlens.adapters.artefact import Adapter, load_adapter
from radlens.io import decode_bytes
from radlens.report.thumbnails import data_uri, thumbnail_jpeg, thumbnail_of
from radlens.search.index import EmbeddingIndex
from radlens.search.query import query_encoder
from radlens.service.batcher import MicroBatcher

MAX_K = 50
EVIDENCE_COLUMNS = ("sex", "age", "view", "patient_id")


@dataclass
class Engine:
    adapter: Adapter
    index: EmbeddingIndex
    encoder: Any
    default_k: int = 10
    max_batch: int = 16
    batcher: MicroBatcher = field(init=False, repr=False)
    _thumbs: dict[int, bytes | None] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, adapter_dir: str | Path, index_dir: str | Path, *, weights: str | Path | None = None,
             default_k: int = 10) -> "Engine":
        """Refuses an adapter and an index that were built on different encoders or preprocessing."""
        index = EmbeddingIndex.load(index_dir)
        encoder = query_encoder(index, weights)
        adapter = load_adapter(adapter_dir)
        adapter.check_features(encoder.encoder_id, encoder.preprocess_hash, source=f"the index {index_dir}")
        return cls(adapter, index, encoder, default_k)

    # ------------------------------------------------------------------ what the page shows
    def describe(self) -> dict[str, Any]:
        m = self.adapter.meta
        return {"encoder_id": self.encoder.encoder_id, "preprocess_hash": self.encoder.preprocess_hash,
                "adapter": m.get("adapter"), "task": m["task"]["name"], "task_kind": m["task"]["kind"],
                "classes": self.adapter.class_names, "operating_point": m["decision_operating_point"],
                "indexed_cases": len(self.index), "index_type": self.index.meta["index_type"],
                "metric": self.index.meta["metric"]}

    def operating_point(self, kind: str) -> list[dict[str, Any]]:
        pts = {p["class_name"]: p for p in self.adapter.meta["operating_points"] if p["kind"] == kind}
        keep = ("threshold", "target", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high", "specificity",
                "specificity_ci_low", "specificity_ci_high", "ppv", "npv", "n_pos", "n_neg")
        return [{"class_name": c, **{k: pts[c].get(k) for k in keep}} for c in self.adapter.class_names if c in pts]

    def analyse(self, data: bytes, *, name: str = "upload", k: int | None = None,
                filters: dict[str, Any] | None = None, operating_point: str | None = None) -> dict[str, Any]:
        """Raises radlens.io.DecodeError for bad images and KeyError/ValueError for bad options."""
        k = min(int(k or self.default_k), MAX_K)
        kind = operating_point or self.adapter.meta["decision_operating_point"]
        thresholds = self.adapter.thresholds(kind)  # KeyError for an unknown operating point
        t0 = time.perf_counter()
        img = decode_bytes(data, name=name)
        t1 = time.perf_counter()
        q = self.batcher(self.encoder.preprocess(img.pixels))
        t2 = time.perf_counter()
        P = self.adapter.predict_proba(q[None])[0]
        t3 = time.perf_counter()
        hits = self.index.search(q[None], k=k, filters=filters, exclude_hashes={img.content_hash})[0]
        t4 = time.perf_counter()
        identical = int((self.index.rows.image_hash == img.content_hash).sum()) if "image_hash" in self.index.rows else 0
        names = self.adapter.class_names
        lc = self.index.meta.get("label_column", "finding_labels")
        preds = [{"class_name": c, "probability": float(P[j]), "threshold": float(thresholds[j]),
                  "decision": bool(P[j] >= thresholds[j])} for j, c in enumerate(names)]
        evidence = [{"rank": r, "case_id": h.id, "similarity": h.score,
                     "labels": [s for s in str(h.row.get(lc) or "").split("|") if s],
                     "image_name": Path(str(h.row.get("path", ""))).name,
                     **{c: _plain(h.row.get(c)) for c in EVIDENCE_COLUMNS if c in h.row},
                     "thumbnail_url": f"/api/cases/{h.id}/thumbnail"} for r, h in enumerate(hits, 1)]
        out = {"image": {"name": Path(name).name, "sha256": img.content_hash, "format": img.meta.get("format"),
                         "shape": list(img.shape), "thumbnail": data_uri(thumbnail_jpeg(img.pixels))},
               "predictions": preds, "operating_point": {"kind": kind, "classes": self.operating_point(kind)},
               "evidence": evidence, "filters": {k_: list(v) if isinstance(v, tuple) else v for k_, v in (filters or {}).items()},
               "identical_cases_left_out": identical,
               "timings_ms": {"decode": 1e3 * (t1 - t0), "embed": 1e3 * (t2 - t1), "adapter": 1e3 * (t3 - t2),
                              "search": 1e3 * (t4 - t3), "total": 1e3 * (t4 - t0)},
               **{key: v for key, v in self.describe().items() if key in ("encoder_id", "adapter", "task")}}
        if self.adapter.task_kind == "multiclass":
            out["predicted_class"] = names[int(np.argmax(P))]
        return out

    def __post_init__(self) -> None:
        # created here, once: two batchers would mean two threads running the model at once
        self.batcher = MicroBatcher(self.encoder.embed, self.max_batch)

    def case_thumbnail(self, case_id: int) -> bytes | None:
        """JPEG preview of an indexed case, by index id (never by a client-supplied path); cached."""
        if case_id in self._thumbs:
            return self._thumbs[case_id]
        rows = self.index.rows
        hit = rows[(rows._id == case_id) & ~rows._id.isin(self.index.meta["deleted"])]
        thumb = thumbnail_of(hit.path.iloc[0]) if len(hit) and "path" in hit else None
        if len(self._thumbs) > 4096:
            self._thumbs.clear()
        self._thumbs[case_id] = thumb
        return thumb


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
