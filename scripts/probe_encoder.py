"""Linear-probe macro AUC of an embedding store on the NIH evaluation split (for the model card).

Logistic regression per finding (standardised inputs), patient-grouped 5-fold CV, C chosen per outer
fold by an inner patient-grouped 3-fold CV on macro AUC; out-of-fold probabilities pooled, then
per-finding ROC AUC and their mean (findings with < 2 positives skipped). The metadata-only row
(age, sex, view) is computed the same way on the same images, for context.

Run: python scripts/probe_encoder.py STORE [--split eval] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radlens.encoders.train_radlens_cxr import NIH_FINDINGS, label_matrix
from radlens.io.splits import load_split
from radlens.store import load_store

CS = (0.003, 0.01, 0.03, 0.1)


def oof_probs(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, C: float, n_splits: int, seed: int = 0) -> np.ndarray:
    P = np.zeros_like(Y, dtype=float)
    for tr, te in GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X, groups=groups):
        P[te] = fit_predict(X[tr], Y[tr], X[te], C)
    return P


def fit_predict(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, C: float) -> np.ndarray:
    """One standardised logistic regression per finding; a constant training label predicts its rate."""
    P = np.zeros((len(Xte), Ytr.shape[1]))
    for j in range(Ytr.shape[1]):
        if Ytr[:, j].min() == Ytr[:, j].max():
            P[:, j] = Ytr[:, j].mean()
            continue
        m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
        P[:, j] = m.fit(Xtr, Ytr[:, j]).predict_proba(Xte)[:, 1]
    return P


def per_label_auc(Y: np.ndarray, P: np.ndarray) -> dict[int, float]:
    return {j: roc_auc_score(Y[:, j], P[:, j]) for j in range(Y.shape[1]) if 2 <= Y[:, j].sum() <= len(Y) - 2}


def nested_probe(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, seed: int = 0
                 ) -> tuple[np.ndarray, list[float], list[float]]:
    P = np.zeros_like(Y, dtype=float)
    chosen, fold_aucs = [], []
    for tr, te in GroupKFold(n_splits=5, shuffle=True, random_state=seed).split(X, groups=groups):
        inner = {C: np.mean(list(per_label_auc(Y[tr], oof_probs(X[tr], Y[tr], groups[tr], C, 3, seed)).values()))
                 for C in CS}
        C = max(inner, key=inner.get)
        chosen.append(C)
        P[te] = fit_predict(X[tr], Y[tr], X[te], C)
        fold_aucs.append(float(np.mean(list(per_label_auc(Y[te], P[te]).values()))))
    return P, chosen, fold_aucs


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--split", default="eval")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    df, emb, info = load_store(a.store)
    df["rel"] = df.path.map(lambda p: "images/" + Path(p).name)
    split = load_split("nih-cxr14").set_index("path").split
    keep = (df.rel.map(split) == a.split).to_numpy()
    df, emb = df[keep].reset_index(drop=True), emb[keep]
    Y = label_matrix(df.finding_labels, NIH_FINDINGS)
    groups = df.patient_id.to_numpy()
    meta = np.column_stack([df.age.to_numpy(float), (df.sex == "M").to_numpy(float), (df.view == "PA").to_numpy(float)])
    rows = {}
    for name, X in (("encoder", emb), ("metadata_only", meta)):
        P, chosen, fold_aucs = nested_probe(X, Y, groups)
        aucs = per_label_auc(Y, P)
        rows[name] = {"macro_auc": float(np.mean(list(aucs.values()))), "macro_auc_fold_mean": float(np.mean(fold_aucs)),
                      "fold_macro_aucs": fold_aucs, "chosen_C": chosen,
                      "per_finding_auc": {NIH_FINDINGS[j]: round(v, 4) for j, v in aucs.items()}}
    res = {"store": str(a.store), "encoder_id": info.encoder_id, "preprocess_hash": info.preprocess_hash,
           "split": a.split, "images": len(df), "patients": int(pd.Series(groups).nunique()),
           "positives": {f: int(Y[:, j].sum()) for j, f in enumerate(NIH_FINDINGS)},
           "protocol": "per-finding logistic regression on standardised embeddings; patient-grouped 5-fold CV; "
                       "C in %s chosen per outer fold by inner patient-grouped 3-fold CV; macro_auc pools the out-of-fold "
                       "probabilities, macro_auc_fold_mean averages the 5 folds' macro AUCs" % (CS,), **rows}
    print(json.dumps(res, indent=1))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
