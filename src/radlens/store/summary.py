"""What is in a store, in numbers a user can sanity-check at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlens.store.embedding_store import QUARANTINE_FILE, load_store


def summarize(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    df, emb, info = load_store(root)
    norms = np.linalg.norm(emb, axis=1) if len(emb) else np.zeros(0)
    q = root / QUARANTINE_FILE
    quarantined = len(pd.read_csv(q)) if q.exists() and q.stat().st_size else 0
    out: dict[str, Any] = {
        "store": str(root),
        "rows": len(df),
        "unique_images": int(df.image_hash.nunique()) if len(df) else 0,
        "encoder_id": info.encoder_id,
        "preprocess_hash": info.preprocess_hash,
        "embedding_dim": info.embedding_dim,
        "embedding_norm_mean": float(norms.mean()) if len(norms) else None,
        "non_finite_embeddings": int((~np.isfinite(emb)).any(axis=1).sum()),
        "quarantined": quarantined,
        "columns": [c for c in df.columns if c not in ("image_hash", "encoder_id", "preprocess_hash")],
    }
    for col in ("sex", "view"):
        if col in df and df[col].notna().any():
            out[f"{col}_counts"] = df[col].value_counts().to_dict()
    if "patient_id" in df and df.patient_id.notna().any():
        out["patients"] = int(df.patient_id.nunique())
    if "finding_labels" in df:
        out["finding_counts"] = df.finding_labels.dropna().str.split("|").explode().value_counts().to_dict()
    return out
