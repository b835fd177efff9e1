"""The retrieval classifier: a similarity-weighted vote of the most similar past cases.

Why it exists beside kNN: its prediction *is* its evidence. The neighbours that voted are the cases a
clinician is shown, found with the same cosine similarity on the raw embedding that `radlens search`
uses, so "62 % effusion" can be read off the gallery. The vote is softened two ways: weights fall off
with similarity (a softmax at `temperature`), and `prior_weight` pseudo-cases at the training
prevalence pull a vote of few or dissimilar neighbours towards the base rate instead of to 0 or 1.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from radlens.adapters.registry import register_adapter

EVIDENCE_LIMIT = 50  # neighbours kept per prediction at most (the largest n_neighbors in the grid)


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class RetrievalClassifier(ClassifierMixin, BaseEstimator):
    """Multi-label (y is an (n, K) 0/1 matrix) or multi-class (y holds class indices)."""

    def __init__(self, n_neighbors: int = 25, temperature: float = 0.05, prior_weight: float = 1.0,
                 block_rows: int = 2048) -> None:
        self.n_neighbors = n_neighbors
        self.temperature = temperature
        self.prior_weight = prior_weight
        self.block_rows = block_rows

    def fit(self, X: np.ndarray, y: np.ndarray) -> "RetrievalClassifier":
        y = np.asarray(y)
        self.vectors_ = _unit(X)
        self.n_features_in_ = self.vectors_.shape[1]
        if y.ndim == 2:  # multi-label
            self.multilabel_ = True
            self.targets_ = y.astype(np.float32)
            self.classes_ = np.arange(y.shape[1])
        else:
            self.multilabel_ = False
            self.classes_ = np.unique(y)
            self.targets_ = (y[:, None] == self.classes_[None, :]).astype(np.float32)
        self.prior_ = self.targets_.mean(0)
        # Optional row identifiers of the training set (e.g. image hashes), set by whoever knows them,
        # so evidence can name past cases rather than row positions.
        self.sample_ids_ = np.arange(len(y)).astype(str)
        return self

    def kneighbors(self, X: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions into the training set, cosine similarities), each (n, k), most similar first."""
        k = min(k or self.n_neighbors, len(self.vectors_))
        Q = _unit(X)
        idx = np.empty((len(Q), k), dtype=np.int64)
        sim = np.empty((len(Q), k), dtype=np.float32)
        for s in range(0, len(Q), self.block_rows):  # bounded memory: (block x n_train) similarities at a time
            S = Q[s:s + self.block_rows] @ self.vectors_.T
            part = np.argpartition(-S, k - 1, axis=1)[:, :k]
            ps = np.take_along_axis(S, part, 1)
            order = np.argsort(-ps, axis=1, kind="stable")
            idx[s:s + len(S)] = np.take_along_axis(part, order, 1)
            sim[s:s + len(S)] = np.take_along_axis(ps, order, 1)
        return idx, sim

    def vote(self, sim: np.ndarray, idx: np.ndarray) -> np.ndarray:
        w = np.exp((sim - sim[:, :1]) / max(self.temperature, 1e-6))  # the nearest neighbour weighs 1
        votes = np.einsum("nk,nkc->nc", w, self.targets_[idx])
        return (votes + self.prior_weight * self.prior_[None, :]) / (w.sum(1, keepdims=True) + self.prior_weight)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        idx, sim = self.kneighbors(X)
        P = self.vote(sim, idx)
        return P if self.multilabel_ else P / P.sum(1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        P = self.predict_proba(X)
        return (P >= 0.5).astype(int) if self.multilabel_ else self.classes_[P.argmax(1)]

    def evidence(self, X: np.ndarray, k: int | None = None) -> dict[str, np.ndarray]:
        """The neighbours behind each prediction: ids, positions, similarities and their labels."""
        idx, sim = self.kneighbors(X, k)
        return {"positions": idx, "ids": self.sample_ids_[idx], "similarity": sim,
                "labels": self.targets_[idx].astype(np.int8)}


def final_step(est: BaseEstimator) -> BaseEstimator:
    return est.steps[-1][1] if isinstance(est, Pipeline) else est


def supports_evidence(est: BaseEstimator) -> bool:
    return hasattr(final_step(est), "evidence")


def estimator_evidence(est: BaseEstimator, X: np.ndarray, k: int | None = None) -> dict[str, np.ndarray]:
    """Evidence of an adapter pipeline (the steps before the classifier applied first)."""
    if isinstance(est, Pipeline) and len(est.steps) > 1:
        X = est[:-1].transform(X)
    return final_step(est).evidence(X, k)


@register_adapter("retrieval", description="similarity-weighted vote of the k most similar past cases (cosine); "
                                           "keeps its evidence",
                  grid=[{"n_neighbors": k, "temperature": t} for k in (10, 25, 50) for t in (0.02, 0.1)])
def retrieval(task: str, seed: int = 0) -> Pipeline:
    # No scaling step: the vote uses the same raw-embedding cosine as the search index, so the evidence a
    # clinician sees is exactly the set of cases that voted.
    return Pipeline([("clf", RetrievalClassifier())])
