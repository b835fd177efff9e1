"""The FAISS index on real NIH embeddings: exactness, ANN recall, filters that stay complete, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radlens.encoders import DEFAULT_ENCODER, get
from radlens.io import load_image
from radlens.search import EmbeddingIndex, IndexMismatchError

N = 400


@pytest.fixture(scope="module")
def nih_embeddings(nih_dir):
    enc = get(DEFAULT_ENCODER)
    man = pd.read_csv(nih_dir / "manifest.csv", dtype={"patient_id": str}).head(N)
    emb = np.concatenate([enc.embed([load_image(nih_dir / p).pixels for p in man.path[i:i + 50]])
                          for i in range(0, N, 50)])
    return man.assign(image_hash=[f"h{i}" for i in range(N)]), emb, enc


def _build(tmp_path, data, **kw):
    rows, emb, enc = data
    return EmbeddingIndex.build(rows, emb, encoder_id=enc.encoder_id, preprocess_hash=enc.preprocess_hash,
                                folder=tmp_path / "idx", **kw)


def _brute(emb, q, mask, k):
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    s = x @ (q / np.linalg.norm(q))
    s[~mask] = -np.inf
    return list(np.argsort(-s, kind="stable")[:k])


def test_flat_index_is_exact_and_each_image_finds_itself(tmp_path, nih_embeddings):
    rows, emb, _ = nih_embeddings
    idx = _build(tmp_path, nih_embeddings, kind="flat")
    hits = idx.search(emb[:20], k=10)
    for i, h in enumerate(hits):
        assert h[0].id == i and h[0].score == pytest.approx(1.0, abs=1e-5)
        assert [x.id for x in h] == _brute(emb, emb[i], np.ones(N, bool), 10)


def test_hnsw_recall_against_exact(tmp_path, nih_embeddings):
    rows, emb, _ = nih_embeddings
    idx = _build(tmp_path, nih_embeddings, kind="hnsw", hnsw_m=16, ef_search=64)
    hits = idx.search(emb[:100], k=10)
    recall = np.mean([len({x.id for x in h} & set(_brute(emb, emb[i], np.ones(N, bool), 10))) / 10
                      for i, h in enumerate(hits)])
    assert recall >= 0.95


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_selective_filters_return_every_match_there_is(tmp_path, nih_embeddings, kind):
    rows, emb, _ = nih_embeddings
    idx = _build(tmp_path, nih_embeddings, kind=kind, hnsw_m=16)
    filters = {"sex": "F", "view": "AP", "age": (60, None), "label": "Effusion"}
    mask = idx.allowed(filters)
    assert 0 < mask.sum() < 40  # selective
    expect = ((rows.sex == "F") & (rows.view == "AP") & (rows.age >= 60)
              & rows.finding_labels.str.split("|").map(lambda ls: "Effusion" in ls)).to_numpy()
    np.testing.assert_array_equal(mask, expect)
    for k in (5, int(mask.sum()) + 10):
        hits = idx.search(emb[:5], k=k, filters=filters)
        for i, h in enumerate(hits):
            assert len(h) == min(k, int(mask.sum()))  # never silently short
            assert [x.id for x in h] == _brute(emb, emb[i], mask, len(h))
            assert all(x.row["sex"] == "F" and x.row["view"] == "AP" and x.row["age"] >= 60 for x in h)


def test_persisted_index_round_trips_and_refuses_other_encoders(tmp_path, nih_embeddings):
    rows, emb, enc = nih_embeddings
    _build(tmp_path, nih_embeddings)
    idx = EmbeddingIndex.load(tmp_path / "idx", encoder_id=enc.encoder_id, preprocess_hash=enc.preprocess_hash)
    assert idx.search(emb[3:4], k=1)[0][0].id == 3
    with pytest.raises(IndexMismatchError, match="refusing"):
        EmbeddingIndex.load(tmp_path / "idx", encoder_id="other@1", preprocess_hash=enc.preprocess_hash)


def test_add_delete_and_compact(tmp_path, nih_embeddings):
    rows, emb, _ = nih_embeddings
    idx = _build(tmp_path, (rows.head(300), emb[:300], nih_embeddings[2]), kind="hnsw", hnsw_m=16)
    new_ids = idx.add(rows.iloc[300:], emb[300:])
    assert len(idx) == N and idx.search(emb[350:351], k=1)[0][0].id == new_ids[50]
    assert idx.delete([new_ids[50], 0]) == 2
    reloaded = EmbeddingIndex.load(tmp_path / "idx")
    for ix in (idx, reloaded):
        got = {h.id for h in ix.search(emb[350:351], k=N)[0]}
        assert new_ids[50] not in got and 0 not in got and len(got) == N - 2
    compacted = reloaded.compact()
    assert len(compacted) == N - 2 and compacted.meta["deleted"] == []
