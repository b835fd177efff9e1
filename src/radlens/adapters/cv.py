"""Patient-grouped cross-validation with the hyperparameter search nested inside.

Why nested: choosing hyperparameters on the same folds that report the score inflates it. Why
grouped: images of one patient are near-duplicates; letting them straddle folds leaks. The outer
loop yields out-of-fold probabilities for every row — the raw material for metrics, calibration
and operating points — and the inner loop picks each outer fold's hyperparameters.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from radlens.adapters.registry import AdapterDef
from radlens.adapters.retrieval import estimator_evidence, supports_evidence
from radlens.adapters.zoo import set_adapter_params

log = logging.getLogger(__name__)


def stratum(y: np.ndarray, task: str) -> np.ndarray:
    """A single label per row to stratify on: the class, or for multi-label the rarest positive label."""
    if task == "multiclass":
        return y
    freq = y.sum(0)
    order = np.argsort(freq)  # rarest first
    out = np.full(len(y), -1)
    for j in order[::-1]:
        out[y[:, j] == 1] = j  # later (rarer) labels overwrite
    return out


def grouped_folds(y: np.ndarray, task: str, groups: np.ndarray, n_splits: int, seed: int
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"{n_groups} patients cannot fill {n_splits} folds")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        yield from cv.split(np.zeros(len(y)), stratum(y, task), groups)


def proba_matrix(est: BaseEstimator, X: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """predict_proba as an (n, K) matrix whatever the estimator's native multi-output format."""
    P = est.predict_proba(X)
    if isinstance(P, list):  # native multi-output (kNN, random forest): one (n, n_seen) array per label
        classes = getattr(est, "classes_", None) or est.named_steps["clf"].classes_
        cols = []
        for p, cl in zip(P, classes):
            cl = list(cl)
            cols.append(p[:, cl.index(1)] if 1 in cl else np.zeros(len(p)))
        return np.column_stack(cols)
    P = np.asarray(P, dtype=float)
    if task == "multilabel" and n_classes == 1 and P.shape[1] == 2:  # one label: sklearn treats it as binary
        return P[:, 1:]
    if task == "multiclass" and P.shape[1] != n_classes:  # a class absent from this training fold
        full = np.zeros((len(P), n_classes))
        full[:, est.classes_] = P
        return full
    return P


def macro_auc(y: np.ndarray, P: np.ndarray, task: str) -> float:
    Y = np.eye(P.shape[1], dtype=int)[y] if task == "multiclass" else y
    aucs = [roc_auc_score(Y[:, j], P[:, j]) for j in range(Y.shape[1]) if 0 < Y[:, j].sum() < len(Y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _fit(adef: AdapterDef, params: dict[str, Any], X: np.ndarray, y: np.ndarray, task: str, seed: int) -> BaseEstimator:
    est = set_adapter_params(clone(adef.build(task, seed)), params)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*(Only one class|Label not .* is present).*")
        warnings.filterwarnings("ignore", message="Got `batch_size` less than 1 or larger than sample size")
        return est.fit(X, y)


MAX_SEARCH_ROWS = 3000


def _search_subsample(y: np.ndarray, groups: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Whole patients drawn at random until ~max_rows images: the grid is compared on a subsample
    (relative ranking of candidates is stable at this size), the chosen one is then fitted on all rows."""
    if len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    patients = rng.permutation(np.unique(groups))
    per = pd.Series(groups).value_counts()
    keep = set(patients[: np.searchsorted(np.cumsum(per.loc[patients].to_numpy()), max_rows) + 1])
    return np.flatnonzero(pd.Series(groups).isin(keep).to_numpy())


def select_params(adef: AdapterDef, X: np.ndarray, y: np.ndarray, task: str, groups: np.ndarray, *,
                  n_splits: int = 3, seed: int = 0, max_rows: int = MAX_SEARCH_ROWS
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick the grid candidate with the best grouped-CV macro AUC (ties: the first listed).

    Above `max_rows` images the comparison runs on a patient-grouped subsample of that size.
    """
    cands = adef.candidates()
    if len(cands) == 1:
        return cands[0], []
    sub = _search_subsample(y, groups, max_rows, seed)
    X, y, groups = X[sub], y[sub], groups[sub]
    n_classes = y.max() + 1 if task == "multiclass" else y.shape[1]
    scores = []
    # n_splits=1: one grouped 80/20 holdout (the first of 5 folds) — enough at the study's sample size
    folds = list(grouped_folds(y, task, groups, 5 if n_splits == 1 else n_splits, seed + 1))[:n_splits]
    for params in cands:
        P = np.zeros((len(y), n_classes))
        for tr, te in folds:
            P[te] = proba_matrix(_fit(adef, params, X[tr], y[tr], task, seed), X[te], task, n_classes)
        scores.append({"params": params, "macro_auc": macro_auc(y, P, task)})
    best = max(range(len(cands)), key=lambda i: np.nan_to_num(scores[i]["macro_auc"], nan=-1))
    return cands[best], scores


@dataclass
class CVResult:
    oof: np.ndarray  # (n, K) out-of-fold probabilities, uncalibrated
    fold: np.ndarray  # (n,) outer fold of each row
    params: list[dict[str, Any]]  # chosen per outer fold
    fit_seconds: float  # mean seconds of one fit with the chosen hyperparameters
    predict_seconds_per_1000: float
    total_seconds: float  # the whole nested CV, search included
    search: list[list[dict[str, Any]]] = field(default_factory=list)
    # Retrieval adapters only: per row, the study rows of the neighbours behind its prediction and their
    # cosine similarities (lists: each outer fold may have chosen a different number of neighbours).
    evidence: dict[str, list[np.ndarray]] | None = None


def _outer_fold(adef: AdapterDef, X: np.ndarray, y: np.ndarray, task: str, groups: np.ndarray, tr: np.ndarray,
                te: np.ndarray, n_inner: int, seed: int, n_classes: int, threads: int) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        params, search = select_params(adef, X[tr], y[tr], task, groups[tr], n_splits=n_inner, seed=seed)
        t = time.perf_counter()
        est = _fit(adef, params, X[tr], y[tr], task, seed)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        P = proba_matrix(est, X[te], task, n_classes)
        pred_s = (time.perf_counter() - t) / len(te) * 1000
        evidence = None
        if supports_evidence(est):  # the neighbours that voted, as rows of the whole study (not of the fold)
            ev = estimator_evidence(est, X[te])
            evidence = {"rows": tr[ev["positions"]], "similarity": ev["similarity"]}
    return {"P": P, "params": params, "search": search, "fit_s": fit_s, "pred_s": pred_s, "evidence": evidence}


def nested_cv(adef: AdapterDef, X: np.ndarray, y: np.ndarray, task: str, groups: np.ndarray, *,
              n_outer: int = 5, n_inner: int = 3, seed: int = 0, jobs: int = 1, threads: int = 1) -> CVResult:
    """Outer folds run in `jobs` processes (each with `threads` BLAS threads) when jobs > 1."""
    t0 = time.perf_counter()
    n_classes = int(y.max() + 1) if task == "multiclass" else y.shape[1]
    oof = np.full((len(y), n_classes), np.nan)
    fold = np.full(len(y), -1)
    splits = list(grouped_folds(y, task, groups, n_outer, seed))
    args = [(adef, X, y, task, groups, tr, te, n_inner, seed, n_classes, threads) for tr, te in splits]
    if jobs > 1:
        from joblib import Parallel, delayed

        outs = Parallel(n_jobs=jobs)(delayed(_outer_fold)(*a) for a in args)
    else:
        outs = [_outer_fold(*a) for a in args]
    evidence = {"rows": [None] * len(y), "similarity": [None] * len(y)} if outs and outs[0]["evidence"] else None
    for k, ((tr, te), o) in enumerate(zip(splits, outs)):
        oof[te], fold[te] = o["P"], k
        log.info("%s fold %d: params %s, fit %.2fs", adef.name, k, o["params"], o["fit_s"])
        if evidence is not None:
            for i, r in enumerate(te):
                evidence["rows"][r], evidence["similarity"][r] = o["evidence"]["rows"][i], o["evidence"]["similarity"][i]
    return CVResult(oof, fold, [o["params"] for o in outs], float(np.mean([o["fit_s"] for o in outs])),
                    float(np.mean([o["pred_s"] for o in outs])), time.perf_counter() - t0, [o["search"] for o in outs],
                    evidence)


def fit_final(adef: AdapterDef, X: np.ndarray, y: np.ndarray, task: str, groups: np.ndarray, *,
              n_inner: int = 3, seed: int = 0) -> tuple[BaseEstimator, dict[str, Any]]:
    """The deployed adapter: hyperparameters by grouped CV on all rows, then one fit on all rows."""
    params, _ = select_params(adef, X, y, task, groups, n_splits=n_inner, seed=seed)
    return _fit(adef, params, X, y, task, seed), params
