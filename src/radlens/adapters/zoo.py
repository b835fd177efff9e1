"""The lightweight adapters of the study: kNN, logistic regression, SVM, random forest, MLP, LightGBM.

Defaults and grids are chosen so that the whole grid with 5-fold CV fits in about a minute on
8,842 x 1,024 embeddings on 2 cores (bench/adapter_grid.py); each grid searches the one or two
hyperparameters that matter most for that family rather than a wide sweep.
Multi-label targets use one-vs-rest for the families without native multi-output support.
"""

from __future__ import annotations

import os

from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from radlens.adapters.registry import register_adapter


def n_jobs() -> int:
    """Worker count for adapters that parallelise; RADLENS_JOBS overrides (1 is best on a busy 2-core box)."""
    return int(os.environ.get("RADLENS_JOBS", 1))


def set_adapter_params(est: Pipeline, params: dict) -> Pipeline:
    """Grid keys name parameters of the base classifier; find it inside one-vs-rest if wrapped."""
    prefix = "clf__estimator__" if isinstance(est.named_steps["clf"], OneVsRestClassifier) else "clf__"
    return est.set_params(**{prefix + k: v for k, v in params.items()})


def _pipe(clf: BaseEstimator, task: str, ovr: bool) -> Pipeline:
    if task == "multilabel" and ovr:
        clf = OneVsRestClassifier(clf)
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


@register_adapter("knn", description="k nearest neighbours, cosine, distance-weighted",
                  grid=[{"n_neighbors": k} for k in (10, 25, 50)])
def knn(task: str, seed: int = 0) -> Pipeline:
    return _pipe(KNeighborsClassifier(n_neighbors=25, weights="distance", metric="cosine", algorithm="brute"),
                 task, ovr=False)


@register_adapter("logreg", description="L2 logistic regression on standardised embeddings",
                  grid=[{"C": c} for c in (0.003, 0.03, 0.3)])
def logreg(task: str, seed: int = 0) -> Pipeline:
    return _pipe(LogisticRegression(C=0.03, max_iter=300, tol=1e-3), task, ovr=True)


@register_adapter("svm", description="linear SVM, probabilities by 3-fold sigmoid (Platt) calibration",
                  grid=[{"estimator__C": c} for c in (0.001, 0.01)])
def svm(task: str, seed: int = 0) -> Pipeline:
    base = CalibratedClassifierCV(LinearSVC(C=0.01, dual="auto", max_iter=2000, tol=1e-3), method="sigmoid",
                                  cv=3, ensemble=False)
    return _pipe(base, task, ovr=True)


@register_adapter("rf", description="random forest (sqrt features, shallow-leaf regularised)",
                  grid=[{"min_samples_leaf": m} for m in (1, 5)])
def rf(task: str, seed: int = 0) -> Pipeline:
    return _pipe(RandomForestClassifier(n_estimators=150, max_features="sqrt", min_samples_leaf=2, max_samples=0.5,
                                        n_jobs=n_jobs(), random_state=seed), task, ovr=False)


@register_adapter("mlp", description="one hidden layer (256), Adam, L2, loss-based stopping",
                  grid=[{"alpha": a} for a in (1e-3, 1e-1)])
def mlp(task: str, seed: int = 0) -> Pipeline:
    # Stops on the training loss, not on early-stopping accuracy: a held-out accuracy saturates at 1.0
    # within an epoch on easy small problems and halts training after a handful of steps.
    return _pipe(MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-2, batch_size=128, max_iter=60, tol=1e-3,
                               n_iter_no_change=5, random_state=seed), task, ovr=False)


@register_adapter("lightgbm", description="gradient-boosted trees (LightGBM), column-subsampled",
                  grid=[{"num_leaves": n} for n in (7, 15)])
def lightgbm(task: str, seed: int = 0) -> Pipeline:
    from lightgbm import LGBMClassifier

    return _pipe(LGBMClassifier(n_estimators=100, learning_rate=0.08, num_leaves=15, min_child_samples=10,
                                colsample_bytree=0.2, subsample=0.8, subsample_freq=1, reg_lambda=1.0,
                                n_jobs=n_jobs(), random_state=seed, verbose=-1), task, ovr=True)
