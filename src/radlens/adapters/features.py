"""Feature matrices an adapter learns from: embeddings, or metadata alone (the baseline row).

The metadata-only row matters: on NIH, age + sex + view alone reach a macro AUC of ~0.61 on the
14 findings, so an encoder is only worth what it adds above that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METADATA_ENCODER_ID = "metadata-only"
METADATA_COLUMNS = ("age", "sex", "view")


def metadata_features(df: pd.DataFrame, columns: tuple[str, ...] = METADATA_COLUMNS,
                      categories: dict[str, list[str]] | None = None) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """Numeric columns as is (missing → column median + an indicator); text columns one-hot.

    `categories` fixes the one-hot levels (from training) so prediction builds identical columns.
    """
    cats = dict(categories or {})
    parts, names = [], []
    for c in columns:
        if c not in df:
            raise KeyError(f"metadata baseline needs column {c!r}; the data has {list(df.columns)}")
        col = df[c]
        if pd.api.types.is_numeric_dtype(col):
            v = col.to_numpy(float)
            miss = np.isnan(v)
            parts += [np.where(miss, np.nanmedian(v) if (~miss).any() else 0.0, v), miss.astype(float)]
            names += [c, f"{c}_missing"]
        else:
            levels = cats.setdefault(c, sorted(col.dropna().astype(str).unique()))
            s = col.astype("string")
            for lev in levels:
                parts.append((s == lev).fillna(False).to_numpy(float))
                names.append(f"{c}={lev}")
    return np.column_stack(parts), names, cats
