"""Committed patient-level splits shipped with radlens.

The evaluation split of NIH ChestX-ray14 is never seen by encoder training in any form; the adapter
study evaluates there. A split is a CSV of `path,patient_id,split` with split in {train, val, eval}.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

SPLITS = {"nih-cxr14": "nih-cxr14-split.csv"}


def split_path(name: str = "nih-cxr14") -> Path:
    try:
        fname = SPLITS[name]
    except KeyError:
        raise KeyError(f"unknown split {name!r}; known: {', '.join(SPLITS)}") from None
    return Path(str(resources.files("radlens.data").joinpath(fname)))


def load_split(name: str = "nih-cxr14") -> pd.DataFrame:
    """The split table; `path` is relative to the dataset folder (as in its manifest.csv)."""
    return pd.read_csv(split_path(name), dtype={"patient_id": str})
