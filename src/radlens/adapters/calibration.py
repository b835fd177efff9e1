"""Probability calibrator stored inside an adapter (Platt / isotonic, per class one-vs-rest).

It lives with the adapters because `predict` applies it; choosing the method and measuring
calibration error is evaluation's job (radlens.evaluate.calibration). Serialised as JSON, never
pickled: a handful of numbers per class, applied by numpy (`expit`, `np.interp`), so a fitted and a
round-tripped calibrator run identical code on identical floats.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from radlens.arrays import as_probabilities, check_inputs, check_task, to_jsonable

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("none", "platt", "isotonic")
_FORMAT = "radlens.calibrator"
_VERSION = 1


class Calibrator:
    """Per-class one-vs-rest probability calibrator (scikit-learn style: state in ``*_``).

    Parameters
    ----------
    method : "none" | "platt" | "isotonic"
        "platt" fits ``sigmoid(a * logit(clip(p)) + b)`` per class; "isotonic" fits a
        monotone step function (``IsotonicRegression(out_of_bounds="clip")``).
    platt_C : inverse L2 strength of the 1-D logistic regression (weak by default; it only
        keeps the slope finite when a class is perfectly separated).
    clip_eps : p is clipped to [eps, 1 - eps] before ``logit``.

    A class whose training labels are all 0 or all 1 cannot be calibrated; it keeps the
    identity map (logged). For multiclass the calibrated columns are renormalised so each row
    sums to 1 (a row whose calibrated values are all 0 keeps its input probabilities).
    """

    def __init__(self, method: str = "none", *, platt_C: float = 1.0, clip_eps: float = 1e-6) -> None:
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        self.method = method
        self.platt_C = float(platt_C)
        self.clip_eps = float(clip_eps)

    # -- fitting -------------------------------------------------------------------------
    def fit(self, P: Any, y: Any, task: str) -> "Calibrator":
        """Fit one calibrator per class on (P[:, k], one-vs-rest y[:, k])."""
        Y, P = check_inputs(y, P, task)
        self.task_ = task
        self.n_classes_ = int(P.shape[1])
        params: list[dict[str, Any]] = []
        for k in range(self.n_classes_):
            yk, pk = Y[:, k], P[:, k]
            if self.method == "none":
                params.append({"kind": "identity"})
                continue
            if yk.min(initial=0) == yk.max(initial=0) or len(yk) == 0:
                logger.warning("calibrator: class %d has a single label value in the fit data; kept uncalibrated", k)
                params.append({"kind": "identity"})
                continue
            if self.method == "platt":
                x = logit(np.clip(pk, self.clip_eps, 1.0 - self.clip_eps)).reshape(-1, 1)
                lr = LogisticRegression(C=self.platt_C, solver="lbfgs", max_iter=1000)
                lr.fit(x, yk)
                params.append({"kind": "platt", "coef": float(lr.coef_[0, 0]), "intercept": float(lr.intercept_[0])})
            else:
                iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
                iso.fit(pk, yk.astype(np.float64))
                params.append({
                    "kind": "isotonic",
                    "x": [float(v) for v in iso.X_thresholds_],
                    "y": [float(v) for v in iso.y_thresholds_],
                })
        self.params_ = params
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError("Calibrator is not fitted; call fit() or from_dict() first")

    # -- applying ------------------------------------------------------------------------
    def transform(self, P: Any) -> np.ndarray:
        """Calibrated probabilities, same shape as ``P``."""
        self._check_fitted()
        P = as_probabilities(P)
        if P.shape[1] != self.n_classes_:
            raise ValueError(f"P: calibrator was fitted on {self.n_classes_} classes, got {P.shape[1]} columns")
        out = np.empty_like(P)
        for k, prm in enumerate(self.params_):
            pk = P[:, k]
            if prm["kind"] == "identity":
                out[:, k] = pk
            elif prm["kind"] == "platt":
                z = logit(np.clip(pk, self.clip_eps, 1.0 - self.clip_eps))
                out[:, k] = expit(prm["coef"] * z + prm["intercept"])
            elif prm["kind"] == "isotonic":
                out[:, k] = np.interp(pk, np.asarray(prm["x"]), np.asarray(prm["y"]))
            else:  # pragma: no cover - guarded by from_dict
                raise ValueError(f"unknown calibrator kind {prm['kind']!r}")
        if self.task_ == "multiclass" and self.method != "none":
            s = out.sum(axis=1, keepdims=True)
            ok = s[:, 0] > 0
            out[ok] = out[ok] / s[ok]
            out[~ok] = P[~ok]
        return out

    def fit_transform(self, P: Any, y: Any, task: str) -> np.ndarray:
        return self.fit(P, y, task).transform(P)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description; floats are written with full precision by ``json``."""
        self._check_fitted()
        return to_jsonable({
            "format": _FORMAT,
            "version": _VERSION,
            "method": self.method,
            "task": self.task_,
            "n_classes": self.n_classes_,
            "platt_C": self.platt_C,
            "clip_eps": self.clip_eps,
            "classes": self.params_,
        })

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Calibrator":
        """Rebuild a fitted calibrator from :meth:`to_dict` output (no pickle, no refit)."""
        if d.get("format") != _FORMAT:
            raise ValueError(f"calibrator dict: field 'format' expected {_FORMAT!r}, got {d.get('format')!r}")
        if int(d.get("version", -1)) != _VERSION:
            raise ValueError(f"calibrator dict: field 'version' expected {_VERSION}, got {d.get('version')!r}")
        check_task(d["task"])
        cal = cls(d["method"], platt_C=float(d["platt_C"]), clip_eps=float(d["clip_eps"]))
        classes = list(d["classes"])
        if len(classes) != int(d["n_classes"]):
            raise ValueError(f"calibrator dict: 'classes' has {len(classes)} entries, 'n_classes' says {d['n_classes']}")
        params: list[dict[str, Any]] = []
        for i, c in enumerate(classes):
            kind = c.get("kind")
            if kind == "identity":
                params.append({"kind": "identity"})
            elif kind == "platt":
                params.append({"kind": "platt", "coef": float(c["coef"]), "intercept": float(c["intercept"])})
            elif kind == "isotonic":
                x, yv = [float(v) for v in c["x"]], [float(v) for v in c["y"]]
                if len(x) != len(yv) or not x:
                    raise ValueError(f"calibrator dict: classes[{i}] isotonic 'x'/'y' must be non-empty and equal length")
                params.append({"kind": "isotonic", "x": x, "y": yv})
            else:
                raise ValueError(f"calibrator dict: classes[{i}].kind expected identity/platt/isotonic, got {kind!r}")
        cal.task_ = d["task"]
        cal.n_classes_ = int(d["n_classes"])
        cal.params_ = params
        return cal

    def __repr__(self) -> str:
        return f"Calibrator(method={self.method!r})"


# -- calibration error ---------------------------------------------------------------------
