"""Probability calibration (Platt / isotonic, per class one-vs-rest) and calibration error.

Why calibrate at all: adapters are ranked by AUC, which ignores calibration, but operating
points, PPV/NPV and any probability shown to a reader depend on it. Calibration is fitted on
*out-of-fold* probabilities, and the choice of method is itself cross-validated by patient
(:func:`choose_calibrator`), because isotonic regression can overfit small classes.

Serialisation is JSON only (no pickle): a calibrator is a handful of numbers per class, and
the transform is re-implemented in numpy (``expit`` for Platt, ``np.interp`` for isotonic)
so a fitted and a round-tripped calibrator run the identical code on identical floats.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sklearn.model_selection import GroupKFold

from radlens.adapters.calibration import METHODS, Calibrator
from radlens.arrays import check_inputs, class_names_or_default, nanmean_or_nan, to_jsonable
from .metrics import brier_score

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "Calibrator",
    "choose_calibrator",
    "expected_calibration_error",
    "reliability_bins",
]



def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]; p == 1 goes in the last bin."""
    return np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)


def _reliability_column(yk: np.ndarray, pk: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _bin_index(pk, n_bins)
    count = np.bincount(b, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(b, weights=pk, minlength=n_bins)
    sum_y = np.bincount(b, weights=yk.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / np.maximum(count, 1), np.nan)
        frac = np.where(count > 0, sum_y / np.maximum(count, 1), np.nan)
    return mean_p, frac, count


def _ece_columns(Y: np.ndarray, P: np.ndarray, n_bins: int) -> np.ndarray:
    n = Y.shape[0]
    out = np.full(Y.shape[1], np.nan)
    if n == 0:
        return out
    for k in range(Y.shape[1]):
        mean_p, frac, count = _reliability_column(Y[:, k], P[:, k], n_bins)
        ok = count > 0
        out[k] = float(np.sum(count[ok] / n * np.abs(mean_p[ok] - frac[ok])))
    return out


def expected_calibration_error(y: Any, P: Any, task: str, n_bins: int = 15) -> float:
    """Mean over classes of the binary one-vs-rest ECE with ``n_bins`` equal-width bins.

    Per class: sum over bins of (bin count / n) * |mean predicted p − fraction positive|.
    For multiclass this is the *classwise* ECE (not top-label confidence ECE), so it also
    penalises miscalibrated low probabilities, which matter for ruling findings out.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins: expected a positive int, got {n_bins}")
    Y, P = check_inputs(y, P, task)
    return nanmean_or_nan(_ece_columns(Y, P, n_bins))


def reliability_bins(
    y: Any, P: Any, task: str, n_bins: int = 15, class_names: Any = None
) -> dict[str, dict[str, np.ndarray]]:
    """Reliability-diagram data per class: name → {bin_edges (n_bins+1,), mean_predicted,
    fraction_positive (NaN for empty bins), count}. Same binning as the ECE."""
    Y, P = check_inputs(y, P, task)
    names = class_names_or_default(class_names, P.shape[1])
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, name in enumerate(names):
        mean_p, frac, count = _reliability_column(Y[:, k], P[:, k], n_bins)
        out[name] = {"bin_edges": edges, "mean_predicted": mean_p, "fraction_positive": frac, "count": count}
    return out


# -- choosing a method ---------------------------------------------------------------------
def choose_calibrator(
    P: Any,
    y: Any,
    task: str,
    groups: Any,
    methods: Sequence[str] = METHODS,
    n_splits: int = 5,
    seed: int = 0,
    *,
    n_bins: int = 15,
) -> tuple[Calibrator, dict[str, dict[str, Any]]]:
    """Pick a calibration method by patient-grouped CV of the calibration step, then refit it on all data.

    ``P`` must already be out-of-fold predictions of the adapter; the CV here only guards the
    *calibrator* against overfitting (e.g. isotonic on a rare class). For each method the
    calibrator is fitted on K-1 patient folds and applied to the held-out fold; the pooled
    held-out predictions are scored by mean one-vs-rest Brier score (lower is better) and
    ECE. Ties go to the method listed first (so list the simpler one first).

    Returns (calibrator fitted on all rows with the chosen method, scores) where
    ``scores[method] = {"brier", "ece", "brier_folds"}`` and ``scores["chosen"]`` names the
    winner.
    """
    Y, P = check_inputs(y, P, task)
    groups = np.asarray(groups, dtype=object) if not isinstance(groups, np.ndarray) else groups
    if len(groups) != len(P):
        raise ValueError(f"groups has {len(groups)} entries but P has {len(P)} rows")
    y_arr = np.asarray(y)
    methods = list(methods)
    if not methods:
        raise ValueError("methods: expected at least one method")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods: unknown method {m!r}; expected a subset of {METHODS}")
    n_groups = int(pd.Series(groups).nunique())
    if n_groups < 2:
        raise ValueError("groups: need at least 2 patients to cross-validate a calibrator")
    splits = min(n_splits, n_groups)
    if splits < n_splits:
        logger.warning("choose_calibrator: only %d patients; using %d folds", n_groups, splits)
    cv = GroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    folds = list(cv.split(P, groups=groups))

    scores: dict[str, Any] = {}
    best, best_brier = methods[0], np.inf
    for m in methods:
        P_cv = np.empty_like(P)
        fold_brier: list[float] = []
        for tr, te in folds:
            cal = Calibrator(m).fit(P[tr], y_arr[tr], task)
            P_cv[te] = cal.transform(P[te])
            fold_brier.append(float(np.mean((P_cv[te] - Y[te]) ** 2)))
        b = brier_score(y, P_cv, task)
        scores[m] = {
            "brier": b,
            "ece": expected_calibration_error(y, P_cv, task, n_bins=n_bins),
            "brier_folds": fold_brier,
        }
        if b < best_brier:
            best, best_brier = m, b
    scores["chosen"] = best
    return Calibrator(best).fit(P, y, task), to_jsonable(scores)
