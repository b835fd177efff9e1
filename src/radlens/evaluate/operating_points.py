"""Decision thresholds (operating points) and their measured rates.

THE CONTRACT: a finding is called positive when ``p >= threshold``. Every function here,
``metrics`` for multilabel, and any ``predict`` built on stored thresholds use exactly this
comparison; a threshold fitted under ``>`` and applied under ``>=`` (or vice versa) silently
shifts sensitivity when scores tie, one of the most common threshold bugs in the field.

Thresholds are fitted on the given (out-of-fold) predictions and are always observed score
values (or, for "call nothing positive", the next float above the maximum score), so a
stored threshold reproduces the stored rates exactly on the data it came from. The CIs are
for the rates *at that fixed threshold* (patient bootstrap); they do not include the
uncertainty of choosing the threshold, so the targeted rate's CI is optimistic — its point
value meets the target by construction on the fitting data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass
from typing import Any, Literal

import numpy as np

from radlens.arrays import check_inputs, class_names_or_default, from_json_float, safe_div, to_jsonable
from .bootstrap import _bootstrap_matrix, _percentile

logger = logging.getLogger(__name__)

__all__ = [
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "youden_threshold",
    "rates_at",
    "OperatingPoint",
    "fit_operating_points",
]

Kind = Literal["youden", "sensitivity", "specificity"]
_RATES = ("sensitivity", "specificity", "ppv", "npv")


def _check_binary(y_bin: Any, p: Any, need: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_bin)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_bin and p: expected two 1-D arrays of equal length, got shapes {y.shape} and {p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_bin: expected 0/1 labels")
    if not np.isfinite(p).all():
        raise ValueError("p: contains NaN or infinite scores")
    y = y.astype(bool)
    if "pos" in need and not y.any():
        raise ValueError("y_bin: no positives, sensitivity is undefined")
    if "neg" in need and y.all():
        raise ValueError("y_bin: no negatives, specificity is undefined")
    return y, p


def _check_target(target: float, name: str) -> float:
    t = float(target)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"{name}: expected a rate in (0, 1], got {target}")
    return t


def _candidates(p: np.ndarray) -> np.ndarray:
    """Every distinct score, plus one value above the maximum ("call nothing positive")."""
    u = np.unique(p)
    return np.append(u, np.nextafter(u[-1], np.inf))


def _sens_spec_curve(y: np.ndarray, p: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity of ``p >= t`` for each candidate t (vectorised)."""
    pos = np.sort(p[y])
    neg = np.sort(p[~y])
    tp = len(pos) - np.searchsorted(pos, cand, side="left")  # positives with p >= t
    tn = np.searchsorted(neg, cand, side="left")  # negatives with p < t
    return safe_div(tp, len(pos)), safe_div(tn, len(neg))


def threshold_for_sensitivity(y_bin: Any, p: Any, target: float) -> float:
    """Highest threshold t with sensitivity(p >= t) >= target on (y_bin, p).

    "Highest" keeps specificity as high as possible while meeting the sensitivity target.
    The result is an observed positive's score; raising it to the next distinct score value
    drops below the target.
    """
    target = _check_target(target, "target")
    y, p = _check_binary(y_bin, p, "pos")
    cand = _candidates(p)
    sens, _ = _sens_spec_curve(y, p, cand)
    ok = np.flatnonzero(sens >= target)  # sens is non-increasing in t: ok is a prefix
    return float(cand[ok[-1]])


def threshold_for_specificity(y_bin: Any, p: Any, target: float) -> float:
    """Lowest threshold t (among observed scores, plus just-above-max) with specificity(p >= t) >= target.

    "Lowest" keeps sensitivity as high as possible while meeting the specificity target;
    lowering it to the previous distinct score value drops below the target.
    """
    target = _check_target(target, "target")
    y, p = _check_binary(y_bin, p, "neg")
    cand = _candidates(p)
    _, spec = _sens_spec_curve(y, p, cand)
    ok = np.flatnonzero(spec >= target)  # spec is non-decreasing in t: ok is a suffix
    return float(cand[ok[0]])


def youden_threshold(y_bin: Any, p: Any) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity − 1.

    Among ties the lowest threshold (higher sensitivity) wins.
    """
    y, p = _check_binary(y_bin, p, "posneg")
    cand = _candidates(p)
    sens, spec = _sens_spec_curve(y, p, cand)
    j = sens + spec - 1.0
    return float(cand[int(np.argmax(j))])


def _counts(y: np.ndarray, p: np.ndarray, t: float) -> tuple[int, int, int, int]:
    pred = p >= t
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(np.count_nonzero(~pred & ~y))
    return tp, fp, tn, fn


def rates_at(y_bin: Any, p: Any, t: float) -> dict[str, float]:
    """Counts and rates of the decision ``p >= t``: tp, fp, tn, fn (ints) and sensitivity,
    specificity, ppv, npv (floats, NaN where the denominator is 0)."""
    y, p = _check_binary(y_bin, p, "")
    tp, fp, tn, fn = _counts(y, p, float(t))
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": float(safe_div(tp, tp + fn)),
        "specificity": float(safe_div(tn, tn + fp)),
        "ppv": float(safe_div(tp, tp + fp)),
        "npv": float(safe_div(tn, tn + fn)),
    }


@dataclass
class OperatingPoint:
    """A stored decision threshold with the rates it achieved and their patient-bootstrap CIs.

    ``kind`` says how the threshold was chosen: "youden" (target None), "sensitivity" or
    "specificity" (target = the required rate). Decision rule: positive iff ``p >= threshold``.
    """

    class_name: str
    kind: str
    target: float | None
    threshold: float
    sensitivity: float
    sensitivity_ci_low: float
    sensitivity_ci_high: float
    specificity: float
    specificity_ci_low: float
    specificity_ci_high: float
    ppv: float
    ppv_ci_low: float
    ppv_ci_high: float
    npv: float
    npv_ci_low: float
    npv_ci_high: float
    n_pos: int
    n_neg: int
    n_boot: int = 0
    alpha: float = 0.05
    seed: int = 0
    rule: str = "p >= threshold"

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OperatingPoint":
        kw: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            if name not in d:
                if f.default is not MISSING:  # optional field with a default
                    continue
                raise ValueError(f"operating point dict: missing field {name!r}")
            v = d[name]
            if name in ("class_name", "kind", "rule"):
                kw[name] = str(v)
            elif name == "target":
                kw[name] = None if v is None else float(v)
            elif name in ("n_pos", "n_neg", "n_boot", "seed"):
                kw[name] = int(v)
            else:
                kw[name] = from_json_float(v)
        if kw.get("rule", "p >= threshold") != "p >= threshold":
            raise ValueError(f"operating point dict: field 'rule' expected 'p >= threshold', got {kw['rule']!r}")
        if kw["kind"] not in ("youden", "sensitivity", "specificity"):
            raise ValueError(f"operating point dict: field 'kind' expected youden/sensitivity/specificity, got {kw['kind']!r}")
        return cls(**kw)


def fit_operating_points(
    y: Any,
    P: Any,
    task: str,
    class_names: Any,
    groups: Any,
    *,
    target_sensitivity: float | None = 0.9,
    target_specificity: float | None = 0.9,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> list[OperatingPoint]:
    """Fit Youden / sensitivity-target / specificity-target thresholds per class (one-vs-rest).

    Thresholds come from the given out-of-fold predictions; sensitivity, specificity, PPV and
    NPV at each fixed threshold get percentile CIs from one shared patient bootstrap (all
    classes and kinds on the same resamples). A target of None skips that kind. Classes
    without both positives and negatives get no operating point (logged as a warning).
    """
    Y, P = check_inputs(y, P, task)
    names = class_names_or_default(class_names, P.shape[1])
    if len(groups) != len(P):
        raise ValueError(f"groups has {len(groups)} entries but P has {len(P)} rows")

    specs: list[tuple[int, str, float | None, float]] = []  # (class, kind, target, threshold)
    for k, name in enumerate(names):
        yk, pk = Y[:, k], P[:, k]
        if yk.all() or not yk.any():
            logger.warning("operating points: class %r has no %s; skipped", name, "negatives" if yk.all() else "positives")
            continue
        specs.append((k, "youden", None, youden_threshold(yk, pk)))
        if target_sensitivity is not None:
            specs.append((k, "sensitivity", float(target_sensitivity), threshold_for_sensitivity(yk, pk, target_sensitivity)))
        if target_specificity is not None:
            specs.append((k, "specificity", float(target_specificity), threshold_for_specificity(yk, pk, target_specificity)))
    if not specs:
        return []

    cls_idx = np.array([s[0] for s in specs])
    thr = np.array([s[3] for s in specs])

    def rates(Yb: np.ndarray, Pb: np.ndarray) -> np.ndarray:
        # (n, m) decisions for all operating points at once → 4*m rates.
        pos = Yb[:, cls_idx].astype(bool)
        pred = Pb[:, cls_idx] >= thr[None, :]
        tp = np.count_nonzero(pred & pos, axis=0)
        fp = np.count_nonzero(pred & ~pos, axis=0)
        fn = np.count_nonzero(~pred & pos, axis=0)
        tn = np.count_nonzero(~pred & ~pos, axis=0)
        return np.concatenate([safe_div(tp, tp + fn), safe_div(tn, tn + fp), safe_div(tp, tp + fp), safe_div(tn, tn + fn)])

    point, boots = _bootstrap_matrix(rates, Y, P, groups, n_boot, seed)
    m = len(specs)
    cis = [_percentile(point[j], boots[:, j], n_boot, alpha) for j in range(4 * m)]

    out: list[OperatingPoint] = []
    for i, (k, kind, target, t) in enumerate(specs):
        vals: dict[str, float] = {}
        for r, rate in enumerate(_RATES):
            j = r * m + i
            vals[rate], vals[f"{rate}_ci_low"], vals[f"{rate}_ci_high"] = cis[j].point, cis[j].low, cis[j].high
        out.append(OperatingPoint(
            class_name=names[k], kind=kind, target=target, threshold=float(t), **vals,
            n_pos=int(Y[:, k].sum()), n_neg=int(len(Y) - Y[:, k].sum()),
            n_boot=int(n_boot), alpha=float(alpha), seed=int(seed),
        ))
    return out

