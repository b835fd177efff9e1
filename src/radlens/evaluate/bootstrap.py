"""Patient-level (cluster) bootstrap confidence intervals.

Images of one patient share anatomy, devices and often labels, so they are not independent
draws. Resampling images would treat a patient with 30 follow-up films as 30 independent
pieces of evidence and give intervals that are too narrow. Here the *patient* is the unit:
patients are drawn with replacement and every image of a drawn patient comes along (twice
if the patient is drawn twice).

Speed: the per-patient index lists are built once (CSR layout: images sorted by patient,
plus offsets), and each resample is assembled with ``np.repeat``/``np.arange`` arithmetic —
no Python loop over patients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from radlens.arrays import from_json_float, to_jsonable

logger = logging.getLogger(__name__)

__all__ = ["BootstrapResult", "PatientSampler", "patient_resample_indices", "bootstrap_ci", "bootstrap_cis"]


@dataclass
class BootstrapResult:
    """A point estimate with its percentile interval.

    ``n_valid`` counts the resamples where the metric was defined (e.g. a resample that drew
    no positive of a class has no AUC for it); a low ``n_valid / n_boot`` is itself a warning
    that the interval is conditional on the rare class being present.
    """

    point: float
    low: float
    high: float
    n_valid: int
    n_boot: int
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BootstrapResult":
        return cls(
            point=from_json_float(d["point"]),
            low=from_json_float(d["low"]),
            high=from_json_float(d["high"]),
            n_valid=int(d["n_valid"]),
            n_boot=int(d["n_boot"]),
            alpha=float(d.get("alpha", 0.05)),
        )


class PatientSampler:
    """Draws patient-closed resamples of image indices.

    Build once per (groups) array, then call :meth:`sample` per resample. ``groups`` may hold
    any hashable ids (str, int, mixed object); missing ids are rejected because there is no
    honest way to know which images they belong with.
    """

    def __init__(self, groups: Any) -> None:
        g = np.asarray(groups, dtype=object) if not isinstance(groups, np.ndarray) else groups
        if g.ndim != 1:
            raise ValueError(f"groups: expected a 1-D array of patient ids, got shape {g.shape}")
        if len(g) and pd.isna(pd.Series(g)).any():
            raise ValueError("groups: patient ids contain missing values (None/NaN); every image needs a patient id")
        codes, uniques = pd.factorize(pd.Series(g), sort=False)
        self.n_images = int(len(g))
        self.n_patients = int(len(uniques))
        # CSR layout: order[offsets[i]:offsets[i] + counts[i]] are the images of patient i.
        self.order = np.argsort(codes, kind="stable")
        self.counts = np.bincount(codes, minlength=self.n_patients).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.codes = codes.astype(np.int64)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Image indices of one resample: n_patients patients drawn with replacement."""
        if self.n_patients == 0:
            return np.empty(0, dtype=np.int64)
        drawn = rng.integers(0, self.n_patients, size=self.n_patients)
        lengths = self.counts[drawn]
        total = int(lengths.sum())
        # Position j of the output belongs to drawn patient r = repeat index; its offset within
        # that patient's block is j - (start of r's block in the output).
        out_starts = np.cumsum(lengths) - lengths
        shift = np.repeat(self.offsets[drawn] - out_starts, lengths)
        return self.order[np.arange(total, dtype=np.int64) + shift]


def patient_resample_indices(groups: Any, rng: np.random.Generator) -> np.ndarray:
    """Indices of one patient-level bootstrap resample (public so tests can inspect closure).

    For repeated draws build a :class:`PatientSampler` once; this convenience function
    rebuilds it on each call.
    """
    return PatientSampler(groups).sample(rng)


def _bootstrap_matrix(
    metric: Callable[[np.ndarray, np.ndarray], Any],
    y: Any,
    P: Any,
    groups: Any,
    n_boot: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Point value(s) and an (n_boot, m) matrix of resampled values of a vector metric."""
    y = np.asarray(y)
    P = np.asarray(P)
    if len(y) != len(P) or len(groups) != len(y):
        raise ValueError(f"y, P and groups must have the same length, got {len(y)}, {len(P)}, {len(groups)}")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive int, got {n_boot}")
    point = np.atleast_1d(np.asarray(metric(y, P), dtype=np.float64))
    sampler = PatientSampler(groups)
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, point.size), dtype=np.float64)
    for b in range(n_boot):
        idx = sampler.sample(rng)
        boots[b] = np.atleast_1d(np.asarray(metric(y[idx], P[idx]), dtype=np.float64))
    return point, boots


def _percentile(point: float, values: np.ndarray, n_boot: int, alpha: float) -> BootstrapResult:
    valid = values[~np.isnan(values)]
    if valid.size:
        low, high = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    else:
        low = high = float("nan")
    if valid.size < n_boot:
        logger.info("bootstrap: metric undefined in %d of %d resamples (dropped)", n_boot - valid.size, n_boot)
    return BootstrapResult(float(point), float(low), float(high), int(valid.size), int(n_boot), float(alpha))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: Any,
    P: Any,
    groups: Any,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile CI of ``metric(y, P)`` by resampling patients (``groups``) with replacement.

    ``metric`` receives row-subsets of ``y`` and ``P`` (e.g.
    ``lambda y, P: macro_auc(y, P, "multilabel")``). Resamples where it returns NaN are dropped
    and counted in ``n_valid``. The point estimate is the metric on the full data.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected 0 < alpha < 1, got {alpha}")
    point, boots = _bootstrap_matrix(metric, y, P, groups, n_boot, seed)
    if point.size != 1:
        raise ValueError("bootstrap_ci: metric must return a scalar; use bootstrap_cis for several")
    return _percentile(point[0], boots[:, 0], n_boot, alpha)


def bootstrap_cis(
    metrics: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    y: Any,
    P: Any,
    groups: Any,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, BootstrapResult]:
    """Like :func:`bootstrap_ci` for a function returning several named metrics.

    All metrics are evaluated on the *same* resamples (cheaper, and their intervals are
    mutually consistent). NaN resamples are dropped per metric.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected 0 < alpha < 1, got {alpha}")
    y_arr, P_arr = np.asarray(y), np.asarray(P)
    names = list(metrics(y_arr, P_arr).keys())

    def vector_metric(yy: np.ndarray, PP: np.ndarray) -> np.ndarray:
        d = metrics(yy, PP)
        return np.array([d[k] for k in names], dtype=np.float64)

    point, boots = _bootstrap_matrix(vector_metric, y_arr, P_arr, groups, n_boot, seed)
    return {k: _percentile(point[i], boots[:, i], n_boot, alpha) for i, k in enumerate(names)}
