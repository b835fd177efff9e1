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


def test_hits_carry_the_same_rows_as_one_pandas_row_per_hit(tmp_path, nih_embeddings):
    rows, emb, _ = nih_embeddings
    idx = _build(tmp_path, (rows.assign(age=rows.age.astype(float).where(rows.index % 7 != 0)), emb,
                            nih_embeddings[2]), kind="flat")
    for h in idx.search(emb[:7], k=5)[0]:
        row = idx.rows.iloc[h.id].drop(labels="_id")
        assert h.row == {c: None if pd.isna(v) else v for c, v in row.items()}
    assert idx.search(emb[0], k=1)[0][0].row["age"] is None  # row 0: age masked to NaN -> None


def test_ivf_recall_filters_and_round_trip(tmp_path, nih_embeddings, monkeypatch):
    """The "ivf" kind (IVF + 4-bit PQ fast-scan shortlist, exact re-scoring) on real embeddings."""
    import radlens.search.index as index_mod

    rows, emb, enc = nih_embeddings
    idx = _build(tmp_path, nih_embeddings, kind="ivf", ivf_nlist=8, ivf_nprobe=4, rerank=5)
    m = idx.meta
    assert m["index_type"] == "ivf" and (m["ivf_nlist"], m["ivf_nprobe"], m["rerank"]) == (8, 4, 5)
    assert m["pq_m"] == emb.shape[1] // 2 and m["train_size"] == N
    everything = np.ones(N, bool)
    hits = idx.search(emb[:100], k=10)
    recall = np.mean([len({x.id for x in h} & set(_brute(emb, emb[i], everything, 10))) / 10
                      for i, h in enumerate(hits)])
    assert recall >= 0.95
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for i, h in enumerate(hits[:10]):  # scores are exact cosines, best first
        assert [round(z.score, 5) for z in h] == [round(float(x[z.id] @ x[i]), 5) for z in h]
        assert [z.score for z in h] == sorted((z.score for z in h), reverse=True)

    # filters too broad for the exact path go through the shortlist: never short, never outside the filter
    monkeypatch.setattr(index_mod, "EXACT_FILTER_MAX", 0)
    for filters in ({"sex": "F"}, {"sex": "F", "view": "AP", "age": (60, None), "label": "Effusion"}):
        mask = idx.allowed(filters)
        for k in (10, int(mask.sum()) + 5):
            got = idx.search(emb[:20], k=k, filters=filters)
            for i, h in enumerate(got):
                assert len(h) == min(k, int(mask.sum()))
                assert all(mask[z.id] for z in h)
                truth = set(_brute(emb, emb[i], mask, len(h)))
                assert len({z.id for z in h} & truth) >= 0.9 * len(h)

    # tombstones, add, and a round trip through disk keep the parameters
    new_ids = idx.add(rows.head(10), emb[:10])
    assert idx.delete([0, int(new_ids[0])]) == 2
    loaded = EmbeddingIndex.load(tmp_path / "idx", encoder_id=enc.encoder_id, preprocess_hash=enc.preprocess_hash)
    assert loaded.meta["ivf_nprobe"] == 4 and loaded.meta["rerank"] == 5
    assert __import__("faiss").extract_index_ivf(loaded.index).nprobe == 4
    got = loaded.search(emb[:1], k=len(loaded))[0]
    assert len(got) == N + 10 - 2 and not {0, int(new_ids[0])} & {h.id for h in got}
    assert loaded.search(emb[5:6], k=1)[0][0].id in (5, int(new_ids[5]))
    compacted = loaded.compact()
    assert compacted.meta["index_type"] == "ivf" and compacted.meta["rerank"] == 5 and len(compacted) == N + 8


def test_auto_kind_by_size_and_ivf_needs_training_data(tmp_path, nih_embeddings, monkeypatch):
    import radlens.search.index as index_mod

    rows, emb, enc = nih_embeddings
    monkeypatch.setattr(index_mod, "FLAT_MAX", 100)
    monkeypatch.setattr(index_mod, "IVF_MIN", 300)
    assert _build(tmp_path, (rows.head(250), emb[:250], enc)).meta["index_type"] == "hnsw"
    assert _build(tmp_path, nih_embeddings).meta["index_type"] == "ivf"
    with pytest.raises(ValueError, match="at least"):
        _build(tmp_path, (rows.head(50), emb[:50], enc), kind="ivf")
