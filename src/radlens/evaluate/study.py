"""The adapter study: features × adapters → nested-CV predictions → metrics, calibration, operating
points and fairness, each with patient-bootstrap CIs.

Honesty rules built in: hyperparameters are searched inside each outer fold; AUCs are computed on
out-of-fold predictions; the calibration method is chosen by grouped CV; operating-point rates are
*cross-fitted* (each outer fold's decisions use thresholds fitted on the other folds), so the
sensitivity reported for a "90 % sensitivity" threshold is what it achieved on unseen patients.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from radlens.adapters import get_adapter
from radlens.adapters.cv import CVResult, fit_final, nested_cv
from radlens.adapters.targets import TaskSpec, Targets
from radlens.arrays import to_jsonable
from radlens.evaluate.bootstrap import bootstrap_ci, bootstrap_cis
from radlens.evaluate.calibration import choose_calibrator, reliability_bins
from radlens.evaluate.fairness import age_group, subgroup_table
from radlens.evaluate.metrics import (balanced_accuracy, confusion_matrix, macro_auc, macro_f1, one_vs_rest,
                                      per_class_auc, pr_curves, roc_curves)
from radlens.evaluate.operating_points import (OperatingPoint, threshold_for_sensitivity, threshold_for_specificity,
                                               youden_threshold)

log = logging.getLogger(__name__)
KINDS = ("youden", "sensitivity", "specificity")


@dataclass
class StudyConfig:
    n_outer: int = 5
    n_inner: int = 3
    target_sensitivity: float = 0.9
    target_specificity: float = 0.9
    decision: str = "youden"  # the operating point `predict` applies
    n_boot: int = 1000
    fairness: tuple[str, ...] = ("sex", "age", "view")
    age_bins: tuple[float, ...] = (40, 60, 80)
    min_group_size: int = 30
    seed: int = 0
    threads: int = 1  # BLAS/OpenMP threads for adapters; 1 is fastest on a busy 2-core machine (7x here)
    jobs: int = 1  # outer CV folds run in parallel processes

    def __post_init__(self) -> None:
        if self.decision not in KINDS:
            raise ValueError(f"decision must be one of {KINDS}, not {self.decision!r}")


@dataclass
class FeatureSet:
    """One source of features for the same rows: an encoder's embeddings, or metadata only."""

    name: str
    encoder_id: str
    preprocess_hash: str | None
    X: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # e.g. metadata one-hot levels, store path


@dataclass
class ModelResult:
    encoder: str
    encoder_id: str
    preprocess_hash: str | None
    adapter: str
    task: TaskSpec
    class_names: list[str]
    n_images: int
    n_patients: int
    macro_auc: dict[str, Any]
    per_class_auc: dict[str, float | None]
    balanced_accuracy: float
    macro_f1: float
    confusion: list
    fit_seconds: float
    predict_seconds_per_1000: float
    cv_seconds: float
    params: list[dict[str, Any]]
    calibration: dict[str, Any]
    operating_points: list[OperatingPoint]
    fairness_rows: list[dict[str, Any]]
    fairness_gaps: list[dict[str, Any]]
    curves: dict[str, Any] = field(repr=False, default_factory=dict)  # plots only, not in results.json
    evidence: dict[str, Any] | None = field(repr=False, default=None)  # retrieval adapters: neighbours per row

    def row(self) -> dict[str, Any]:
        return to_jsonable({
            "encoder": self.encoder, "encoder_id": self.encoder_id, "adapter": self.adapter, "task": self.task.name,
            "task_kind": self.task.kind, "n_images": self.n_images, "n_patients": self.n_patients,
            "n_classes": len(self.class_names), "macro_auc": self.macro_auc["point"],
            "ci_low": self.macro_auc["low"], "ci_high": self.macro_auc["high"],
            "macro_auc_pooled_oof": self.macro_auc["pooled_oof"],
            "balanced_accuracy": self.balanced_accuracy, "macro_f1": self.macro_f1,
            "fit_seconds": self.fit_seconds, "predict_seconds_per_1000": self.predict_seconds_per_1000,
            "cv_seconds": self.cv_seconds, "calibration": self.calibration["chosen"],
            "ece_uncalibrated": self.calibration["ece_uncalibrated"], "ece_calibrated": self.calibration["ece_calibrated"],
            "params": self.params, "per_class_auc": self.per_class_auc,
        })


def fairness_attributes(frame: pd.DataFrame, cfg: StudyConfig) -> dict[str, np.ndarray]:
    attrs = {}
    for a in cfg.fairness:
        if a == "age" and "age" in frame:
            attrs["age_group"] = age_group(frame["age"].to_numpy(float), cfg.age_bins)
        elif a in frame:
            attrs[a] = frame[a].astype("string").fillna("unknown").to_numpy(str)
        else:
            log.warning("fairness attribute %r not in the data; skipped", a)
    return attrs


def crossfit_thresholds(Y: np.ndarray, P: np.ndarray, fold: np.ndarray, cfg: StudyConfig
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Deployed thresholds (fitted on all rows) and held-out decisions (each fold by the others' thresholds)."""
    fitters: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "youden": youden_threshold,
        "sensitivity": lambda y, p: threshold_for_sensitivity(y, p, cfg.target_sensitivity),
        "specificity": lambda y, p: threshold_for_specificity(y, p, cfg.target_specificity),
    }
    K = Y.shape[1]
    deployed = {k: np.full(K, np.nan) for k in KINDS}
    decisions = {k: np.zeros_like(Y) for k in KINDS}
    for j in range(K):
        if not 0 < Y[:, j].sum() < len(Y):
            continue
        for kind, fit in fitters.items():
            deployed[kind][j] = fit(Y[:, j], P[:, j])
            for f in np.unique(fold):
                other = fold != f
                t = fit(Y[other, j], P[other, j]) if 0 < Y[other, j].sum() < other.sum() else deployed[kind][j]
                decisions[kind][fold == f, j] = P[fold == f, j] >= t
    return deployed, decisions


def _rates(Y: np.ndarray, D: np.ndarray) -> dict[str, float]:
    tp, fp = (D & Y).sum(0), (D & ~Y).sum(0)
    fn, tn = (~D & Y).sum(0), (~D & ~Y).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp), "npv": tn / (tn + fn)}
    return {f"{m}|{j}": float(v[j]) for m, v in out.items() for j in range(Y.shape[1])}


def heldout_operating_points(Y: np.ndarray, P: np.ndarray, fold: np.ndarray, groups: np.ndarray,
                             class_names: list[str], cfg: StudyConfig) -> tuple[list[OperatingPoint], dict[str, np.ndarray]]:
    deployed, decisions = crossfit_thresholds(Y, P, fold, cfg)
    Yb = Y.astype(bool)
    points: list[OperatingPoint] = []
    for kind in KINDS:
        D = decisions[kind].astype(bool)
        cis = bootstrap_cis(lambda y, d: _rates(y, d), Yb, D, groups, n_boot=cfg.n_boot, seed=cfg.seed)
        target = {"youden": None, "sensitivity": cfg.target_sensitivity, "specificity": cfg.target_specificity}[kind]
        for j, name in enumerate(class_names):
            if np.isnan(deployed[kind][j]):
                continue
            r = {m: cis[f"{m}|{j}"] for m in ("sensitivity", "specificity", "ppv", "npv")}
            points.append(OperatingPoint(
                class_name=name, kind=kind, target=target, threshold=float(deployed[kind][j]),
                **{f"{m}{suf}": getattr(r[m], attr) for m in r for suf, attr in (("", "point"), ("_ci_low", "low"),
                                                                                  ("_ci_high", "high"))},
                n_pos=int(Yb[:, j].sum()), n_neg=int((~Yb[:, j]).sum()), n_boot=cfg.n_boot, seed=cfg.seed,
                rule="p >= threshold"))
    return points, {k: decisions[k] for k in KINDS} | {f"threshold_{k}": deployed[k] for k in KINDS}


def fold_mean_auc(y: np.ndarray, P: np.ndarray, fold: np.ndarray, kind: str) -> float:
    vals = [macro_auc(y[fold == f], P[fold == f], kind) for f in np.unique(fold)]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_adapter(fs: FeatureSet, frame: pd.DataFrame, targets: Targets, task: TaskSpec, adapter: str,
                     groups: np.ndarray, cfg: StudyConfig, *, keep_model: bool = False
                     ) -> tuple[ModelResult, Any]:
    """Nested CV + everything the report needs for one (features, adapter, task); optionally the final fit."""
    with threadpool_limits(cfg.threads):
        return _evaluate_adapter(fs, frame, targets, task, adapter, groups, cfg, keep_model)


def _evaluate_adapter(fs: FeatureSet, frame: pd.DataFrame, targets: Targets, task: TaskSpec, adapter: str,
                      groups: np.ndarray, cfg: StudyConfig, keep_model: bool) -> tuple[ModelResult, Any]:
    adef = get_adapter(adapter)
    X, y, kind = fs.X, targets.y, task.kind
    cv: CVResult = nested_cv(adef, X, y, kind, groups, n_outer=cfg.n_outer, n_inner=cfg.n_inner, seed=cfg.seed,
                             jobs=cfg.jobs, threads=cfg.threads)
    K = len(targets.class_names)
    # Headline AUC = mean over outer folds of each fold's macro AUC. Pooling out-of-fold scores across folds
    # is biased low (each fold's model carries its training prevalence, which anti-correlates with its test
    # fold's): on pure noise pooled AUC came out at 0.455 [CI below 0.5], fold-averaged at ~0.5.
    with_fold = np.c_[cv.oof, cv.fold]
    auc = bootstrap_ci(lambda yy, PF: fold_mean_auc(yy, PF[:, :-1], PF[:, -1], kind), y, with_fold, groups,
                       n_boot=cfg.n_boot, seed=cfg.seed)
    pooled = macro_auc(y, cv.oof, kind)
    cal, cal_scores = choose_calibrator(cv.oof, y, kind, groups, seed=cfg.seed)
    Pc = cal.transform(cv.oof)
    Y = one_vs_rest(y, kind, K)
    points, dec = heldout_operating_points(Y, Pc, cv.fold, groups, targets.class_names, cfg)
    D = dec[cfg.decision]
    if kind == "multilabel":  # decisions at the held-out operating point
        bacc = balanced_accuracy(Y, D.astype(float), kind, thresholds=np.full(K, 0.5))
        f1 = macro_f1(Y, D.astype(float), kind, thresholds=np.full(K, 0.5))
        conf = confusion_matrix(Y, D.astype(float), kind, thresholds=np.full(K, 0.5))
    else:  # the most probable class
        bacc, f1, conf = balanced_accuracy(y, Pc, kind), macro_f1(y, Pc, kind), confusion_matrix(y, Pc, kind)
    attrs = fairness_attributes(frame, cfg)
    thr = np.nan_to_num(dec[f"threshold_{cfg.decision}"], nan=1.0)
    rows, gaps = subgroup_table(y, Pc, kind, groups, attrs, thr,
                                min_group_size=cfg.min_group_size, n_boot=min(cfg.n_boot, 200), seed=cfg.seed)
    model = None
    if keep_model:
        t = time.perf_counter()
        est, params = fit_final(adef, X, y, kind, groups, n_inner=cfg.n_inner, seed=cfg.seed)
        model = (est, params, cal, time.perf_counter() - t)
    pca = per_class_auc(y, cv.oof, kind)
    res = ModelResult(
        encoder=fs.name, encoder_id=fs.encoder_id, preprocess_hash=fs.preprocess_hash, adapter=adapter, task=task,
        class_names=targets.class_names, n_images=len(y), n_patients=int(pd.Series(groups).nunique()),
        macro_auc={**auc.to_dict(), "pooled_oof": pooled}, per_class_auc={c: (None if np.isnan(v) else float(v)) for c, v in zip(targets.class_names, pca)},
        balanced_accuracy=float(bacc), macro_f1=float(f1), confusion=to_jsonable(conf), fit_seconds=cv.fit_seconds,
        predict_seconds_per_1000=cv.predict_seconds_per_1000, cv_seconds=cv.total_seconds, params=cv.params,
        calibration={"chosen": cal.method, "scores": to_jsonable(cal_scores), "calibrator": cal.to_dict(),
                     "ece_uncalibrated": cal_scores["none"]["ece"], "ece_calibrated": cal_scores[cal.method]["ece"]},
        operating_points=points, fairness_rows=[r.to_dict() for r in rows], fairness_gaps=[g.to_dict() for g in gaps],
        curves={"roc": roc_curves(y, cv.oof, kind, targets.class_names), "pr": pr_curves(y, cv.oof, kind, targets.class_names),
                "reliability_before": reliability_bins(y, cv.oof, kind, class_names=targets.class_names),
                "reliability_after": reliability_bins(y, Pc, kind, class_names=targets.class_names)},
        evidence=None if cv.evidence is None else {**cv.evidence, "Y": Y, "P": Pc})
    log.info("%s + %s on %s: mAUC %.3f [%.3f, %.3f] (%.1fs)", fs.name, adapter, task.name, auc.point, auc.low, auc.high,
             cv.total_seconds)
    return res, model


def results_json(results: list[ModelResult], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    fair = []
    for r in results:
        for row in r.fairness_rows:
            fair.append({"encoder": r.encoder, "adapter": r.adapter, "task": r.task.name, **row})
    gaps = [{"encoder": r.encoder, "adapter": r.adapter, "task": r.task.name, **g} for r in results for g in r.fairness_gaps]
    ops = [{"encoder": r.encoder, "adapter": r.adapter, "task": r.task.name, **op.to_dict()}
           for r in results for op in r.operating_points]
    return to_jsonable({**(extra or {}), "rows": [r.row() for r in results], "fairness": fair, "fairness_gaps": gaps,
                        "operating_points": ops})
