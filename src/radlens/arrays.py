"""Task conventions and array checks shared by adapters and evaluation.

multiclass: y int (n,), P (n, K) rows sum to 1; multilabel: y (n, K) 0/1, P (n, K) independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

Task = Literal["multiclass", "multilabel"]
TASKS: tuple[str, ...] = ("multiclass", "multilabel")


def check_task(task: str) -> None:
    """Raise unless ``task`` is one of the two supported task types."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")


def as_probabilities(P: Any, name: str = "P") -> np.ndarray:
    """Return ``P`` as a finite float64 (n, K) array, or raise naming what is wrong."""
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n, K) array of probabilities, got shape {P.shape}")
    if not np.isfinite(P).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return P


def one_hot_targets(y: Any, task: str, K: int, name: str = "y") -> np.ndarray:
    """(n, K) int 0/1 matrix: one-vs-rest columns for multiclass, the checked matrix for multilabel."""
    check_task(task)
    y = np.asarray(y)
    if task == "multiclass":
        if y.ndim != 1:
            raise ValueError(f"{name}: multiclass expects a 1-D int array of class indices, got shape {y.shape}")
        if y.size and not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.mod(y, 1) == 0):
                raise ValueError(f"{name}: multiclass labels must be integers in 0..{K - 1}")
            y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= K):
            raise ValueError(f"{name}: multiclass labels must lie in 0..{K - 1}, got range {y.min()}..{y.max()}")
        return (y[:, None] == np.arange(K)[None, :]).astype(np.int64)
    if y.ndim != 2 or y.shape[1] != K:
        raise ValueError(f"{name}: multilabel expects a (n, {K}) 0/1 array, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name}: multilabel targets must be 0/1")
    return y.astype(np.int64)


def check_inputs(y: Any, P: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (y, P) pair and return (Y one-vs-rest (n, K) int, P float64 (n, K))."""
    check_task(task)
    P = as_probabilities(P)
    Y = one_hot_targets(y, task, P.shape[1])
    if Y.shape[0] != P.shape[0]:
        raise ValueError(f"y has {Y.shape[0]} rows but P has {P.shape[0]}")
    return Y, P


def class_names_or_default(class_names: Any, K: int) -> list[str]:
    """Return ``class_names`` as a list of K strings (default ``class_0..``), checking the length."""
    if class_names is None:
        return [f"class_{k}" for k in range(K)]
    names = [str(c) for c in class_names]
    if len(names) != K:
        raise ValueError(f"class_names: expected {K} names (one per column of P), got {len(names)}")
    return names


def safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den with NaN (not a warning, not inf) where den == 0: undefined rates stay undefined."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def nanmean_or_nan(x: np.ndarray) -> float:
    """Mean over the finite entries, NaN when there are none (no RuntimeWarning)."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays to Python types; NaN and ±inf become None.

    Records are written to ``radlens.json`` files and served over HTTP; ``json.dumps`` would
    otherwise emit the non-standard token ``NaN`` or fail on numpy scalars.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def from_json_float(x: Any) -> float:
    """Inverse of :func:`to_jsonable` for a float field: None → NaN."""
    return float("nan") if x is None else float(x)
