"""Subgroup performance (sex, age band, site, view …) with patient-bootstrap CIs and gaps.

Why it is built this way:

* Every subgroup is reported, including tiny ones, which are *flagged* ``small`` rather than
  dropped: hiding a group is itself a fairness decision the reader should see.
* Gaps (max − min across groups) are given twice, over non-small groups and over all groups,
  because a gap driven by a 12-image group is mostly noise.
* CIs resample patients within each group, as everywhere in :mod:`radlens.evaluate`.
* Point estimates per group go through fairlearn's ``MetricFrame`` so the disaggregation
  follows a reviewed, widely used implementation. ``MetricFrame`` accepts the 2-D targets
  here (it stores each row as one cell and ``np.stack``s them back per group), so y is
  passed as the (n, K) one-vs-rest matrix for both task types. Its own bootstrap resamples
  *rows*, so it is not used for CIs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from radlens.arrays import check_inputs, nanmean_or_nan, safe_div, to_jsonable
from .bootstrap import bootstrap_cis
from .metrics import _binary_auc_columns

__all__ = ["UNKNOWN", "age_group", "SubgroupRow", "SubgroupGap", "subgroup_table"]

UNKNOWN = "unknown"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def age_group(age: Any, bins: Sequence[float] = (40, 60, 80)) -> np.ndarray:
    """Age bands as string labels: with the default bins "<40", "40-59", "60-79", "80+".

    Bands are half-open [lo, hi): 39.9 → "<40", 40 → "40-59", 59.5 → "40-59", 80 → "80+".
    Labels use integer ages (hi − 1) when the bins are integers, else "lo-<hi". Missing or
    non-numeric ages → "unknown" (kept as its own group, never silently dropped).
    """
    edges = [float(b) for b in bins]
    if not edges or any(b2 <= b1 for b1, b2 in zip(edges, edges[1:])):
        raise ValueError(f"bins: expected a non-empty strictly increasing sequence, got {tuple(bins)}")
    labels = [f"<{_fmt(edges[0])}"]
    for lo, hi in zip(edges, edges[1:]):
        if lo.is_integer() and hi.is_integer():
            labels.append(f"{_fmt(lo)}-{_fmt(hi - 1)}")
        else:
            labels.append(f"{_fmt(lo)}-<{_fmt(hi)}")
    labels.append(f"{_fmt(edges[-1])}+")
    a = pd.to_numeric(pd.Series(np.asarray(age, dtype=object).ravel()), errors="coerce").to_numpy(dtype=np.float64)
    idx = np.searchsorted(np.asarray(edges), a, side="right")
    out = np.array([labels[i] for i in np.minimum(idx, len(labels) - 1)], dtype=object)
    out[np.isnan(a)] = UNKNOWN
    return out


def _group_labels(values: Any, name: str, n: int) -> np.ndarray:
    v = np.asarray(values, dtype=object).ravel()
    if len(v) != n:
        raise ValueError(f"attributes[{name!r}]: expected {n} values (one per image), got {len(v)}")
    missing = pd.isna(pd.Series(v)).to_numpy()
    out = np.array([UNKNOWN if m else str(x) for x, m in zip(v, missing)], dtype=object)
    return out


def _sort_key(label: str) -> tuple[int, float, str]:
    """Natural order for band labels: "<40" < "40-59" < "60-79" < "80+" < other text < "unknown"."""
    if label == UNKNOWN:
        return (3, 0.0, label)
    m = re.match(r"^(<)?(-?\d+(?:\.\d+)?)", label)
    if m:
        return (1, float(m.group(2)) - (0.5 if m.group(1) else 0.0), label)
    return (2, 0.0, label)


@dataclass
class SubgroupRow:
    """Performance of one group of one attribute. ``small`` = fewer than ``min_group_size`` images."""

    attribute: str
    group: str
    n_images: int
    n_patients: int
    small: bool
    macro_auc: float
    macro_auc_ci_low: float
    macro_auc_ci_high: float
    sensitivity: float
    sensitivity_ci_low: float
    sensitivity_ci_high: float
    specificity: float
    specificity_ci_low: float
    specificity_ci_high: float
    n_auc_classes: int
    n_boot: int
    alpha: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


@dataclass
class SubgroupGap:
    """Disparity summary for one attribute.

    ``*_gap`` = max − min over non-small groups, ``*_gap_all`` over all groups; ``auc_std`` /
    ``auc_std_all`` = population std (ddof=0) of group macro AUCs. Groups named in
    ``excluded_groups`` (default "unknown") and groups whose metric is undefined do not enter
    the gaps. NaN when fewer than two groups qualify.
    """

    attribute: str
    n_groups: int
    n_groups_not_small: int
    auc_gap: float
    sensitivity_gap: float
    specificity_gap: float
    auc_std: float
    auc_gap_all: float
    sensitivity_gap_all: float
    specificity_gap_all: float
    auc_std_all: float
    auc_min_group: str | None
    auc_max_group: str | None
    excluded_groups: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


def _macro_sens_spec(Y: np.ndarray, P: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    pos = Y.astype(bool)
    pred = P >= t[None, :]
    tp = np.count_nonzero(pred & pos, axis=0)
    fn = np.count_nonzero(~pred & pos, axis=0)
    tn = np.count_nonzero(~pred & ~pos, axis=0)
    fp = np.count_nonzero(pred & ~pos, axis=0)
    return nanmean_or_nan(safe_div(tp, tp + fn)), nanmean_or_nan(safe_div(tn, tn + fp))


def _spread(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size < 2:
        return float("nan"), float("nan")
    return float(v.max() - v.min()), float(v.std(ddof=0))


def subgroup_table(
    y: Any,
    P: Any,
    task: str,
    groups: Any,
    attributes: Mapping[str, Any],
    thresholds: Any,
    *,
    min_group_size: int = 30,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    exclude_from_gaps: Sequence[str] = (UNKNOWN,),
) -> tuple[list[SubgroupRow], list[SubgroupGap]]:
    """Per-attribute, per-group macro AUC, sensitivity and specificity with patient-bootstrap CIs.

    ``thresholds`` (K,) are the per-class operating thresholds (decision ``p >= t_k``, also
    for multiclass, one-vs-rest). Sensitivity/specificity are macro-averaged over the classes
    that have positives / negatives in the group. ``groups`` are patient ids; each group's CI
    resamples that group's patients.
    """
    Y, P = check_inputs(y, P, task)
    n, K = P.shape
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (K,):
        raise ValueError(f"thresholds: expected shape ({K},) (one per class), got {t.shape}")
    pid = np.asarray(groups, dtype=object) if not isinstance(groups, np.ndarray) else groups
    if len(pid) != n:
        raise ValueError(f"groups has {len(pid)} entries but P has {n} rows")

    def f_auc(yt: np.ndarray, yp: np.ndarray) -> float:
        return nanmean_or_nan(_binary_auc_columns(yt.reshape(-1, K), yp.reshape(-1, K)))

    def f_sens(yt: np.ndarray, yp: np.ndarray) -> float:
        return _macro_sens_spec(yt.reshape(-1, K), yp.reshape(-1, K), t)[0]

    def f_spec(yt: np.ndarray, yp: np.ndarray) -> float:
        return _macro_sens_spec(yt.reshape(-1, K), yp.reshape(-1, K), t)[1]

    def all_three(yt: np.ndarray, yp: np.ndarray) -> dict[str, float]:
        sens, spec = _macro_sens_spec(yt, yp, t)
        return {"macro_auc": nanmean_or_nan(_binary_auc_columns(yt, yp)), "sensitivity": sens, "specificity": spec}

    try:  # imported here so `import radlens.evaluate` works (and stays fast) without fairlearn
        from fairlearn.metrics import MetricFrame
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("subgroup_table needs fairlearn (pip install fairlearn==0.15.0)") from e

    rows: list[SubgroupRow] = []
    gaps: list[SubgroupGap] = []
    excluded = set(exclude_from_gaps)
    for attr, values in attributes.items():
        labels = _group_labels(values, attr, n)
        mf = MetricFrame(
            metrics={"macro_auc": f_auc, "sensitivity": f_sens, "specificity": f_spec},
            y_true=Y,
            y_pred=P,
            sensitive_features=pd.Series(labels, name=str(attr)),
        )
        by_group = mf.by_group
        attr_rows: list[SubgroupRow] = []
        for g in sorted(set(labels.tolist()), key=_sort_key):
            mask = labels == g
            Yg, Pg, pidg = Y[mask], P[mask], pid[mask]
            cis = bootstrap_cis(all_three, Yg, Pg, pidg, n_boot=n_boot, alpha=alpha, seed=seed)
            point = {k: float(by_group.loc[g, k]) for k in ("macro_auc", "sensitivity", "specificity")}
            n_img = int(mask.sum())
            row = SubgroupRow(
                attribute=str(attr), group=g, n_images=n_img,
                n_patients=int(pd.Series(pidg).nunique()), small=n_img < min_group_size,
                macro_auc=point["macro_auc"],
                macro_auc_ci_low=cis["macro_auc"].low, macro_auc_ci_high=cis["macro_auc"].high,
                sensitivity=point["sensitivity"],
                sensitivity_ci_low=cis["sensitivity"].low, sensitivity_ci_high=cis["sensitivity"].high,
                specificity=point["specificity"],
                specificity_ci_low=cis["specificity"].low, specificity_ci_high=cis["specificity"].high,
                n_auc_classes=int(np.count_nonzero(~np.isnan(_binary_auc_columns(Yg, Pg)))),
                n_boot=int(n_boot), alpha=float(alpha), seed=int(seed),
            )
            attr_rows.append(row)
        rows.extend(attr_rows)

        considered = [r for r in attr_rows if r.group not in excluded]
        big = [r for r in considered if not r.small]
        auc_gap, auc_std = _spread([r.macro_auc for r in big])
        auc_gap_all, auc_std_all = _spread([r.macro_auc for r in considered])
        finite = [r for r in big if not math.isnan(r.macro_auc)]
        gaps.append(SubgroupGap(
            attribute=str(attr),
            n_groups=len(attr_rows),
            n_groups_not_small=sum(not r.small for r in attr_rows),
            auc_gap=auc_gap,
            sensitivity_gap=_spread([r.sensitivity for r in big])[0],
            specificity_gap=_spread([r.specificity for r in big])[0],
            auc_std=auc_std,
            auc_gap_all=auc_gap_all,
            sensitivity_gap_all=_spread([r.sensitivity for r in considered])[0],
            specificity_gap_all=_spread([r.specificity for r in considered])[0],
            auc_std_all=auc_std_all,
            auc_min_group=min(finite, key=lambda r: r.macro_auc).group if len(finite) >= 2 else None,
            auc_max_group=max(finite, key=lambda r: r.macro_auc).group if len(finite) >= 2 else None,
            excluded_groups=sorted(excluded & set(labels.tolist())),
        ))
    return rows, gaps
