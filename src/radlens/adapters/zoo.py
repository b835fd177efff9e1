"""The lightweight adapters of the study: kNN, logistic regression, SVM, random forest, MLP, LightGBM.

Defaults and grids are sized for the published study's scale (8,842 x 1,024, bench/adapter_grid.py):
each grid searches the one or two hyperparameters that matter most for its family rather than a wide
sweep, and tree models work on 128 principal components.
Multi-label targets use one-vs-rest for the families without native multi-output support.
"""

from __future__ import annotations

import os

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.decomposition import PCA
from sklearn.preprocessing import Normalizer, StandardScaler

from radlens.adapters.registry import register_adapter


def n_jobs() -> int:
    """Worker count for adapters that parallelise; RADLENS_JOBS overrides (1 is best on a busy 2-core box)."""
    return int(os.environ.get("RADLENS_JOBS", 1))


def set_adapter_params(est: Pipeline, params: dict) -> Pipeline:
    """Grid keys name parameters of the base classifier; find it inside one-vs-rest if wrapped."""
    prefix = "clf__estimator__" if isinstance(est.named_steps["clf"], OneVsRestClassifier) else "clf__"
    return est.set_params(**{prefix + k: v for k, v in params.items()})


def _pipe(clf: BaseEstimator, task: str, ovr: bool, extra: list | None = None) -> Pipeline:
    if task == "multilabel" and ovr:
        clf = OneVsRestClassifier(clf)
    return Pipeline([("scale", StandardScaler()), *(extra or []), ("clf", clf)])


def _pca(seed: int, n: int = 128) -> tuple[str, PCA]:
    """Trees split on one feature at a time, and a kNN query streams the whole training matrix, so both
    cost in proportion to the dimension; on large sets the leading 128 principal components of 1,024-d
    embeddings keep what they can use at ~1/8 of the cost."""
    return ("pca", CappedPCA(n_components=n, random_state=seed))


class CappedPCA(TransformerMixin, BaseEstimator):
    """PCA to at most `n_components`, used only when it pays: at `min_rows` training rows or more.

    Below that, trees and neighbour search on the raw embedding are fast anyway, and a PCA fitted on a
    few hundred rows throws away signal (on the NIH demo it cost random forest 0.05 macro AUC). The
    effective PCA is the fitted `pca_` (None = passthrough), so parameters are never changed by `fit`.
    """

    def __init__(self, n_components: int = 128, min_rows: int = 2000, random_state: int | None = None) -> None:
        self.n_components = n_components
        self.min_rows = min_rows
        self.random_state = random_state

    def fit(self, X, y=None):  # noqa: ANN001
        self.n_features_in_ = X.shape[1]
        k = min(self.n_components, X.shape[0] - 1, X.shape[1])
        self.pca_ = None
        if X.shape[0] >= self.min_rows and k < X.shape[1]:
            self.pca_ = PCA(n_components=k, svd_solver="randomized", random_state=self.random_state).fit(X)
        return self

    def transform(self, X):  # noqa: ANN001
        return X if self.pca_ is None else self.pca_.transform(X)


@register_adapter("knn", description="k nearest neighbours, cosine on 128 principal components, distance-weighted",
                  grid=[{"n_neighbors": k} for k in (10, 25, 50)])
def knn(task: str, seed: int = 0) -> Pipeline:
    # Cosine neighbours as Euclidean on L2-normalised vectors: the same ranking, but sklearn's fast
    # path (metric="cosine" re-normalises the whole training set on every query: 29 ms vs ~1 ms).
    # A single query against N x 1,024 floats is memory-bound (4.4 ms for 8,842 rows even in plain numpy);
    # 128 principal components cut it 8x.
    return _pipe(KNeighborsClassifier(n_neighbors=25, weights="distance", metric="euclidean", algorithm="brute"),
                 task, ovr=False, extra=[_pca(seed), ("l2", Normalizer())])


@register_adapter("logreg", description="L2 logistic regression on standardised embeddings",
                  grid=[{"C": c} for c in (0.003, 0.03, 0.3)])
def logreg(task: str, seed: int = 0) -> Pipeline:
    return _pipe(LogisticRegression(C=0.03, max_iter=300, tol=1e-3), task, ovr=True)


@register_adapter("svm", description="linear SVM (hinge loss, L2; SGD), probabilities by 3-fold sigmoid calibration",
                  grid=[{"estimator__alpha": a} for a in (1e-3, 1e-2)])
def svm(task: str, seed: int = 0) -> Pipeline:
    # SGD on the hinge loss is the same model as LinearSVC (alpha = 1 / (C n)); liblinear took 28 s per fit
    # at 7,000 x 1,024 x 7 classes here, SGD about 1 s.
    base = CalibratedClassifierCV(SGDClassifier(loss="hinge", alpha=1e-3, max_iter=30, tol=1e-3, random_state=seed),
                                  method="sigmoid", cv=3, ensemble=False)
    return _pipe(base, task, ovr=True)


@register_adapter("rf", description="random forest on 128 principal components (sqrt features)",
                  grid=[{"min_samples_leaf": m} for m in (1, 5)])
def rf(task: str, seed: int = 0) -> Pipeline:
    return _pipe(RandomForestClassifier(n_estimators=100, max_features="sqrt", min_samples_leaf=2, max_samples=0.5,
                                        max_depth=16,
                                        n_jobs=n_jobs(), random_state=seed), task, ovr=False, extra=[_pca(seed)])


@register_adapter("mlp", description="one hidden layer (128), Adam, L2, loss-based stopping",
                  grid=[{"alpha": a} for a in (1e-3, 1e-1)])
def mlp(task: str, seed: int = 0) -> Pipeline:
    # Stops on the training loss, not on early-stopping accuracy: a held-out accuracy saturates at 1.0
    # within an epoch on easy small problems and halts training after a handful of steps.
    return _pipe(MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-2, batch_size=128, max_iter=200, tol=1e-3,
                               n_iter_no_change=5, random_state=seed), task, ovr=False)


@register_adapter("lightgbm", description="gradient-boosted trees (LightGBM) on 128 principal components",
                  grid=[{"num_leaves": n} for n in (7, 15)])
def lightgbm(task: str, seed: int = 0) -> Pipeline:
    from lightgbm import LGBMClassifier

    return _pipe(LGBMClassifier(n_estimators=80, learning_rate=0.1, num_leaves=15, min_child_samples=10, max_bin=63,
                                colsample_bytree=0.5, subsample=0.7, subsample_freq=1, reg_lambda=1.0,
                                n_jobs=n_jobs(), random_state=seed, verbose=-1), task, ovr=True, extra=[_pca(seed)])
