"""Committed patient-level splits shipped with radlens.

The evaluation split of NIH ChestX-ray14 is never seen by encoder training in any form; the adapter
study evaluates there. A split is a CSV of `path,patient_id,split` with split in {train, val, eval} (nih-cxr14)
or {train, test} (lung-masks: the anatomy model's held-out patients).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

SPLITS = {"nih-cxr14": "nih-cxr14-split.csv", "lung-masks": "lung-masks-split.csv"}


def split_path(name: str = "nih-cxr14") -> Path:
    try:
        fname = SPLITS[name]
    except KeyError:
        raise KeyError(f"unknown split {name!r}; known: {', '.join(SPLITS)}") from None
    return Path(str(resources.files("radlens.data").joinpath(fname)))


def load_split(name: str = "nih-cxr14") -> pd.DataFrame:
    """The split table; `path` is relative to the dataset folder (as in its manifest.csv)."""
    return pd.read_csv(split_path(name), dtype={"patient_id": str})


def split_mask(paths: pd.Series, spec: str) -> pd.Series:
    """Rows whose path belongs to a split, `spec` = "NAME:VALUE" (packaged) or "FILE.csv:VALUE"; VALUE may
    list several splits, comma-separated ("nih-cxr14:train,eval").

    Split files list paths relative to their dataset folder (`images/x.png`); a row matches when
    its path ends with that relative path, so absolute store paths work from any checkout.
    """
    name, sep, value = spec.rpartition(":")
    if not sep or not name or not value:
        raise ValueError(f"split {spec!r}: expected NAME:VALUE, e.g. nih-cxr14:eval")
    table = load_split(name) if name in SPLITS else pd.read_csv(name, dtype=str)
    if not {"path", "split"} <= set(table.columns):
        raise ValueError(f"split file {name}: needs columns path and split, has {list(table.columns)}")
    values = [v for v in value.split(",") if v]  # "train,eval": the union of several splits
    missing = [v for v in values if v not in set(table.split)]
    if missing:
        raise ValueError(f"split {name}: no rows with split {missing[0]!r} (values: {sorted(set(table.split))})")
    wanted = {p.replace("\\", "/").lstrip("./") for p in table.path[table.split.isin(values)]}
    parts = paths.astype(str).str.replace("\\", "/", regex=False)
    # match on the last one or two path components (dataset-relative paths are at most "dir/file")
    last1 = parts.str.rsplit("/", n=1).str[-1]
    last2 = parts.str.rsplit("/", n=2).str[-2:].str.join("/")
    return last2.isin(wanted) | last1.isin(wanted)
