"""Image-to-image search: a FAISS index over an embedding store, with metadata filters."""

from radlens.search.index import EmbeddingIndex, Hit, IndexMismatchError

__all__ = ["EmbeddingIndex", "Hit", "IndexMismatchError"]
