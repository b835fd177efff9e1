"""Embedding store: Parquet chunks keyed by (image hash, encoder id, preprocessing hash)."""

from radlens.store.embedding_store import (KEY_COLUMNS, META_FILE, QUARANTINE_FILE, EmbeddingStore, StoreInfo,
                                           StoreMismatchError, infer_extra_fields, load_store, read_info)

__all__ = ["EmbeddingStore", "StoreInfo", "StoreMismatchError", "KEY_COLUMNS", "META_FILE", "QUARANTINE_FILE",
           "infer_extra_fields", "load_store", "read_info"]
