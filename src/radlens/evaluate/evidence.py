"""Evidence tables: for every out-of-fold prediction of a retrieval adapter, the past cases that voted.

Kept as Parquet beside the study's results (one row per image, list columns for the neighbours) so a
reviewer can open any prediction and see which patients' images drove it and how similar they were.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def _label_string(row: np.ndarray, class_names: list[str]) -> str:
    return "|".join(c for c, v in zip(class_names, row) if v) or "(none)"


def evidence_table(frame: pd.DataFrame, Y: np.ndarray, P: np.ndarray, class_names: list[str],
                   evidence: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    """frame: the study rows; Y: (n, K) 0/1 truth; P: (n, K) out-of-fold probabilities."""
    ids = frame.image_hash.to_numpy() if "image_hash" in frame else np.arange(len(frame)).astype(str)
    paths = frame.path.to_numpy() if "path" in frame else ids
    labels = [_label_string(r, class_names) for r in Y]
    rows = []
    for i, (nbr, sim) in enumerate(zip(evidence["rows"], evidence["similarity"])):
        nbr = np.asarray(nbr, dtype=int)
        rows.append({"image_hash": ids[i], "path": paths[i], "labels": labels[i],
                     **{f"p_{c}": float(P[i, j]) for j, c in enumerate(class_names)},
                     "neighbour_hashes": [str(ids[r]) for r in nbr], "neighbour_paths": [str(paths[r]) for r in nbr],
                     "neighbour_similarity": [float(s) for s in sim], "neighbour_labels": [labels[r] for r in nbr],
                     "same_patient_neighbours": int(sum(frame.patient_id.iloc[r] == frame.patient_id.iloc[i]
                                                        for r in nbr)) if "patient_id" in frame else None})
    return pd.DataFrame(rows)


def write_evidence(path: Path, table: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path
