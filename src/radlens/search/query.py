"""Turning a user's query into index terms: an image into an embedding, `--filter` strings into filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radlens.io import Radiograph
from radlens.search.index import EmbeddingIndex


class FilterError(ValueError):
    """A --filter string that cannot be read."""


def parse_filter(text: str) -> tuple[str, Any]:
    """`sex=F`, `view=AP,PA` (any of), `age=40-60` / `age=60-` / `age=-40` (inclusive range), `label=Effusion`."""
    if "=" not in text:
        raise FilterError(f"filter {text!r}: expected COLUMN=VALUE (e.g. sex=F, age=40-60, view=AP,PA, label=Effusion)")
    col, val = (s.strip() for s in text.split("=", 1))
    if not col or not val:
        raise FilterError(f"filter {text!r}: empty column or value")
    if col == "age":
        lo, sep, hi = val.partition("-")
        try:
            if not sep:
                return col, (float(lo), float(lo))
            return col, (float(lo) if lo else None, float(hi) if hi else None)
        except ValueError:
            raise FilterError(f"filter {text!r}: age takes a number or a range such as 40-60, 60- or -40") from None
    values = [v.strip() for v in val.split(",") if v.strip()]
    if col == "label":
        return col, values[0] if len(values) == 1 else values
    return col, values[0] if len(values) == 1 else values


def parse_filters(texts: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in texts or []:
        k, v = parse_filter(t)
        if k in out:
            raise FilterError(f"filter on {k!r} given twice")
        out[k] = v
    return out


def query_encoder(index: EmbeddingIndex, weights: str | Path | None = None) -> Any:
    """The encoder the index was built with, checked against the index's provenance."""
    from radlens.encoders import get

    name = (index.meta.get("encoder") or {}).get("name")
    if not name:
        raise ValueError(f"{index.folder}: index does not record its encoder's name; cannot embed a query image")
    enc = get(name, weights=weights)
    index.check(enc.encoder_id, enc.preprocess_hash)
    return enc


def embed_image(encoder: Any, image: Radiograph) -> np.ndarray:
    return encoder.embed(encoder.preprocess(image.pixels)[None])[0]


def search_image(index: EmbeddingIndex, encoder: Any, image: Radiograph, *, k: int = 10,
                 filters: dict[str, Any] | None = None, include_identical: bool = False
                 ) -> tuple[list[Any], int, np.ndarray]:
    """Top-k evidence for one decoded image: (hits, identical images left out, the query's embedding).

    An indexed copy of the query itself (same file content) is not evidence about it, so it is left out
    unless asked for; how many were left out is returned, never hidden.
    """
    q = embed_image(encoder, image)
    exclude = None if include_identical else {image.content_hash}
    hits = index.search(q[None], k=k, filters=filters, exclude_hashes=exclude)[0]
    excluded = 0
    if exclude and "image_hash" in index.rows:
        excluded = int((index.rows.image_hash == image.content_hash).sum())
    return hits, excluded, q
