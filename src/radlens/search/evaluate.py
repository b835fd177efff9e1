"""How good is the evidence? Precision@k of same-finding neighbours against the label base rate.

For each indexed image used as a query, its k most similar *other patients'* images are retrieved (a
patient's own follow-up films are near-duplicates and would flatter the figure; the same run is also
reported with them allowed, to show by how much). For a finding f, precision@k is the share of
neighbours carrying f among queries that carry f; the base rate is f's prevalence in the index, the
precision of k images drawn at random. Lift = precision / base rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radlens.search.index import EmbeddingIndex


def _label_matrix(labels: list[str], sep: str = "|") -> tuple[np.ndarray, list[str]]:
    sets = [set(s.split(sep)) if s else set() for s in labels]
    names = sorted(set().union(*sets)) if sets else []
    return np.array([[n in s for n in names] for s in sets], dtype=bool).reshape(len(sets), len(names)), names


def _neighbours(index: EmbeddingIndex, rows: np.ndarray, groups: np.ndarray | None, k: int, extra: int
                ) -> np.ndarray:
    """Positions (into index.rows) of each query's k nearest rows, skipping itself and, if given, its group."""
    pos_of = {int(i): p for p, i in enumerate(index.rows._id.to_numpy())}
    vecs = np.asarray(index.vectors)[rows]
    hits = index.search(vecs, k=k + extra)
    out = np.full((len(rows), k), -1)
    for qi, (r, hs) in enumerate(zip(rows, hits)):
        keep = [pos_of[h.id] for h in hs if pos_of[h.id] != r and (groups is None or groups[pos_of[h.id]] != groups[r])]
        if len(keep) < k:
            raise RuntimeError(f"query {r}: only {len(keep)} neighbours outside its patient; raise `extra`")
        out[qi] = keep[:k]
    return out


def precision_at_k(index: EmbeddingIndex, *, k: int = 10, group_column: str | None = "patient_id",
                   label_column: str | None = None, max_queries: int = 5000, seed: int = 0) -> dict[str, Any]:
    label_column = label_column or index.meta.get("label_column", "finding_labels")
    live = np.flatnonzero(~index.rows._id.isin(index.meta["deleted"]).to_numpy())
    Y, names = _label_matrix(index.rows[label_column].fillna("").astype(str).tolist())
    rng = np.random.default_rng(seed)
    queries = live if len(live) <= max_queries else np.sort(rng.choice(live, max_queries, replace=False))
    groups = index.rows[group_column].astype(str).to_numpy() if group_column and group_column in index.rows else None
    per_patient = int(index.rows[group_column].value_counts().max()) if groups is not None else 0
    results: dict[str, Any] = {"k": k, "queries": int(len(queries)), "indexed": int(len(live)), "labels": names,
                               "label_column": label_column, "group_column": group_column}
    settings = {"other_patients": groups, "same_patient_allowed": None} if groups is not None else {"all": None}
    base = Y[live].mean(0)
    for setting, g in settings.items():
        nb = _neighbours(index, queries, g, k, extra=per_patient + 1)
        hitsY = Y[nb]  # (q, k, L)
        per_label = {}
        for j, n in enumerate(names):
            q = Y[queries, j]
            if q.sum() == 0:
                continue
            p = float(hitsY[q, :, j].mean())
            per_label[n] = {"precision": p, "base_rate": float(base[j]), "lift": p / base[j] if base[j] else None,
                            "queries": int(q.sum())}
        share_any = (hitsY & Y[queries][:, None, :]).any(2).mean()
        chance_any = float(np.mean([(Y[live] & Y[r]).any(1).mean() for r in queries]))
        macro_p = float(np.mean([v["precision"] for v in per_label.values()]))
        macro_b = float(np.mean([v["base_rate"] for v in per_label.values()]))
        results[setting] = {"per_label": per_label, "macro_precision": macro_p, "macro_base_rate": macro_b,
                            "any_shared_label": float(share_any), "any_shared_label_chance": chance_any}
    return results
