"""Discrimination and threshold metrics for multiclass and multilabel radiograph tasks.

Why not just call scikit-learn everywhere: the patient bootstrap calls these functions
thousands of times, and ``roc_auc_score`` spends most of its time validating inputs. The
AUC here is the rank (Mann-Whitney) form, vectorised over classes, which is exactly the
area under the empirical ROC curve with ties counted as 1/2 — the same number
``roc_auc_score`` returns (the tests check this).

Conventions used throughout:

* ``task="multiclass"``: ``y`` is an int array (n,) in 0..K-1, ``P`` is (n, K) with rows
  summing to 1. Per-class quantities are one-vs-rest. Hard decisions use ``argmax``.
* ``task="multilabel"``: ``y`` is an (n, K) 0/1 array and ``P`` holds independent per-class
  probabilities. Hard decisions are ``P[:, k] >= thresholds[k]`` (default 0.5) — the same
  ``>=`` contract as :mod:`radlens.evaluate.operating_points`.
* Quantities that are undefined (AUC of a class with no positives, F1 of a class never
  present nor predicted) are NaN and are *left out* of macro averages, never counted as 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from radlens.arrays import (
    check_inputs,
    check_task,
    class_names_or_default,
    nanmean_or_nan,
    one_hot_targets,
    safe_div,
    to_jsonable,
)

__all__ = [
    "one_vs_rest",
    "per_class_auc",
    "macro_auc",
    "roc_curves",
    "pr_curves",
    "balanced_accuracy",
    "macro_f1",
    "confusion_matrix",
    "brier_score",
    "summarize",
]


def one_vs_rest(y: Any, task: str, K: int) -> np.ndarray:
    """Return the (n, K) 0/1 target matrix: one-hot for multiclass, checked copy for multilabel.

    Every per-class metric is computed on this matrix, so both task types share one code path.
    """
    return one_hot_targets(y, task, K)


def _binary_auc_columns(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """AUC of each column of P against the matching 0/1 column of Y (NaN if degenerate)."""
    n = Y.shape[0]
    n_pos = Y.sum(axis=0).astype(np.float64)
    n_neg = n - n_pos
    if n == 0:
        return np.full(Y.shape[1], np.nan)
    ranks = rankdata(P, axis=0, method="average")
    rank_sum_pos = (ranks * Y).sum(axis=0)
    u = rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0
    return safe_div(u, n_pos * n_neg)


def per_class_auc(y: Any, P: Any, task: str) -> np.ndarray:
    """One-vs-rest ROC AUC per class, shape (K,); NaN where a class lacks positives or negatives.

    NaN (rather than 0.5 or an exception) lets a bootstrap resample that happens to miss a
    rare class still contribute to the other classes' macro average.
    """
    Y, P = check_inputs(y, P, task)
    return _binary_auc_columns(Y, P)


def macro_auc(y: Any, P: Any, task: str) -> float:
    """Unweighted mean of :func:`per_class_auc` over classes where it is defined (NaN if none)."""
    return nanmean_or_nan(per_class_auc(y, P, task))


def roc_curves(
    y: Any, P: Any, task: str, class_names: Any = None
) -> dict[str, dict[str, Any]]:
    """Per-class ROC curves for plotting: name → {fpr, tpr, thresholds, auc}.

    Classes without both positives and negatives are skipped (a curve cannot be drawn).
    Arrays are numpy; ``thresholds[0]`` is +inf as in scikit-learn — pass the result through
    ``to_jsonable`` before writing it to JSON.
    """
    Y, P = check_inputs(y, P, task)
    names = class_names_or_default(class_names, P.shape[1])
    aucs = _binary_auc_columns(Y, P)
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        if np.isnan(aucs[k]):
            continue
        fpr, tpr, thr = roc_curve(Y[:, k], P[:, k])
        out[name] = {"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": float(aucs[k])}
    return out


def pr_curves(y: Any, P: Any, task: str, class_names: Any = None) -> dict[str, dict[str, Any]]:
    """Per-class precision-recall curves: name → {precision, recall, ap}; degenerate classes skipped.

    ``ap`` is scikit-learn's average precision (step-wise, not trapezoidal, so it is not
    optimistic); it depends on prevalence, so compare it only within one dataset.
    """
    Y, P = check_inputs(y, P, task)
    names = class_names_or_default(class_names, P.shape[1])
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        n_pos = int(Y[:, k].sum())
        if n_pos == 0 or n_pos == Y.shape[0]:
            continue
        precision, recall, _ = precision_recall_curve(Y[:, k], P[:, k])
        ap = average_precision_score(Y[:, k], P[:, k])
        out[name] = {"precision": precision, "recall": recall, "ap": float(ap)}
    return out


def _check_thresholds(thresholds: Any, task: str, K: int) -> np.ndarray | None:
    if task == "multiclass":
        if thresholds is not None:
            # Silently ignoring thresholds would hide a caller's misunderstanding of the contract.
            raise ValueError("thresholds: multiclass decisions use argmax; pass thresholds=None")
        return None
    if thresholds is None:
        return np.full(K, 0.5)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(K, float(t))
    if t.shape != (K,):
        raise ValueError(f"thresholds: expected shape ({K},) (one per class), got {t.shape}")
    return t


def confusion_matrix(y: Any, P: Any, task: str, thresholds: Any = None) -> np.ndarray:
    """Confusion counts.

    multiclass: (K, K) int, rows = true class, columns = argmax prediction (scikit-learn layout).
    multilabel: (K, 2, 2) int, ``[[tn, fp], [fn, tp]]`` per class with decision ``p >= t_k``
    (scikit-learn's ``multilabel_confusion_matrix`` layout; ``.ravel()`` gives tn, fp, fn, tp).
    """
    Y, P = check_inputs(y, P, task)
    K = P.shape[1]
    t = _check_thresholds(thresholds, task, K)
    if task == "multiclass":
        true = Y.argmax(axis=1)
        pred = P.argmax(axis=1)
        cm = np.zeros((K, K), dtype=np.int64)
        np.add.at(cm, (true, pred), 1)
        return cm
    pred = P >= t[None, :]
    pos = Y.astype(bool)
    tp = (pred & pos).sum(axis=0)
    fp = (pred & ~pos).sum(axis=0)
    fn = (~pred & pos).sum(axis=0)
    tn = (~pred & ~pos).sum(axis=0)
    return np.stack([np.stack([tn, fp], axis=1), np.stack([fn, tp], axis=1)], axis=1).astype(np.int64)


def _per_class_counts(cm: np.ndarray, task: str) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn) per class from either confusion layout."""
    if task == "multiclass":
        tp = np.diag(cm).astype(np.float64)
        fp = cm.sum(axis=0) - tp
        fn = cm.sum(axis=1) - tp
        tn = cm.sum() - tp - fp - fn
        return tp, fp, fn, tn
    return (cm[:, 1, 1].astype(np.float64), cm[:, 0, 1].astype(np.float64),
            cm[:, 1, 0].astype(np.float64), cm[:, 0, 0].astype(np.float64))


def balanced_accuracy(y: Any, P: Any, task: str, thresholds: Any = None) -> float:
    """Balanced accuracy, robust to the heavy class imbalance of radiograph labels.

    multiclass: mean recall over classes present in ``y`` (equals scikit-learn's
    ``balanced_accuracy_score`` on argmax predictions).
    multilabel: mean over classes of (sensitivity + specificity) / 2 at ``p >= t_k``; classes
    lacking positives or negatives are left out.
    """
    cm = confusion_matrix(y, P, task, thresholds)
    tp, fp, fn, tn = _per_class_counts(cm, task)
    if task == "multiclass":
        return nanmean_or_nan(safe_div(tp, tp + fn))
    return nanmean_or_nan((safe_div(tp, tp + fn) + safe_div(tn, tn + fp)) / 2.0)


def macro_f1(y: Any, P: Any, task: str, thresholds: Any = None) -> float:
    """Unweighted mean per-class F1 = 2tp / (2tp + fp + fn).

    A class neither present nor predicted has an undefined F1 and is left out (multiclass
    this equals scikit-learn's ``f1_score(average="macro")``; multilabel scikit-learn would
    count such a class as 0 under ``zero_division=0``).
    """
    cm = confusion_matrix(y, P, task, thresholds)
    tp, fp, fn, _ = _per_class_counts(cm, task)
    return nanmean_or_nan(safe_div(2 * tp, 2 * tp + fp + fn))


def brier_score(y: Any, P: Any, task: str) -> float:
    """Mean over classes of the one-vs-rest Brier score (mean squared error of probabilities).

    For multiclass this is the usual multiclass Brier score divided by K, so both task types
    sit on the same 0..1 scale. Used to choose a calibrator (lower is better).
    """
    Y, P = check_inputs(y, P, task)
    if Y.shape[0] == 0:
        return float("nan")
    return float(np.mean((P - Y) ** 2))


def summarize(
    y: Any, P: Any, task: str, class_names: Any = None, thresholds: Any = None
) -> dict[str, Any]:
    """JSON-safe headline metrics: macro_auc, per_class_auc (name → AUC or None),
    balanced_accuracy and macro_f1 (threshold-dependent for multilabel)."""
    check_task(task)
    Y, P = check_inputs(y, P, task)
    names = class_names_or_default(class_names, P.shape[1])
    aucs = _binary_auc_columns(Y, P)
    out = {
        "task": task,
        "n_images": int(P.shape[0]),
        "macro_auc": nanmean_or_nan(aucs),
        "per_class_auc": dict(zip(names, aucs.tolist())),
        "balanced_accuracy": balanced_accuracy(y, P, task, thresholds),
        "macro_f1": macro_f1(y, P, task, thresholds),
    }
    if task == "multilabel":
        out["thresholds"] = dict(zip(names, _check_thresholds(thresholds, task, P.shape[1]).tolist()))
    return to_jsonable(out)
