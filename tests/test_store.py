"""The embedding store: round trip, provenance checks, atomic chunks, single writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from radlens.store import EmbeddingStore, StoreMismatchError, infer_extra_fields, load_store, read_info


def _rows(n: int, dim: int, start: int = 0, **extra) -> list[dict]:
    rng = np.random.default_rng(start)
    return [{"image_hash": f"h{i:04d}", "path": f"/data/img{i}.png", "format": "png", "height": 512, "width": 480,
             "patient_id": str(i // 2), "sex": "F" if i % 2 else "M", "age": 40.0 + i, "view": "PA",
             "embedding": rng.standard_normal(dim).astype(np.float32), **extra} for i in range(start, start + n)]


def _open(root, **kw):
    args = dict(encoder_id="enc-a@1", preprocess_hash="p1", embedding_dim=8)
    args.update(kw)
    return EmbeddingStore(root, **args)


def test_round_trip_keeps_vectors_metadata_and_reads_with_plain_pandas(tmp_path):
    rows = _rows(10, 8, label="x")
    extra = infer_extra_fields([{"label": "x", "score": 1}, {"label": None, "score": 2.5}])
    assert [(f.name, f.type) for f in extra] == [("label", pa.string()), ("score", pa.float64())]
    with _open(tmp_path, extra_fields=extra) as st:
        st.append(rows[:6])
        st.append(rows[6:])
        assert st.keys() == {r["image_hash"] for r in rows}
    df, emb, info = load_store(tmp_path)
    assert info.encoder_id == "enc-a@1" and info.embedding_dim == 8
    np.testing.assert_array_equal(emb, np.stack([r["embedding"] for r in rows]))
    assert df.label.tolist() == ["x"] * 10 and df.age.tolist() == [40.0 + i for i in range(10)]
    assert set(df.encoder_id) == {"enc-a@1"} and set(df.preprocess_hash) == {"p1"}
    plain = pd.read_parquet(tmp_path)  # no radlens code needed to read a store
    assert len(plain) == 10 and len(plain.embedding.iloc[0]) == 8


def test_refuses_other_encoder_or_preprocessing(tmp_path):
    with _open(tmp_path) as st:
        st.append(_rows(2, 8))
    with pytest.raises(StoreMismatchError, match="enc-a@1"):
        _open(tmp_path, encoder_id="enc-b@2")
    with pytest.raises(StoreMismatchError, match="preprocess"):
        _open(tmp_path, preprocess_hash="p2")
    with pytest.raises(StoreMismatchError):
        load_store(tmp_path, encoder_id="enc-b@2")


def test_second_writer_is_refused_while_first_holds_the_store(tmp_path):
    st = _open(tmp_path)
    with pytest.raises(RuntimeError, match="another radlens process"):
        _open(tmp_path)
    st.close()
    _open(tmp_path).close()


def test_unfinished_chunk_from_a_killed_run_is_discarded(tmp_path):
    with _open(tmp_path) as st:
        st.append(_rows(3, 8))
    (tmp_path / ".part-00001-deadbeef.parquet.tmp").write_bytes(b"PAR1 half written")
    with _open(tmp_path) as st:
        assert len(st.keys()) == 3
    assert not list(tmp_path.glob(".part-*.tmp"))
    assert len(pd.read_parquet(tmp_path)) == 3


def test_store_records_provenance(tmp_path):
    with _open(tmp_path, provenance={"command": "radlens embed x --out y"}):
        pass
    info = read_info(tmp_path)
    assert info.meta["command"] == "radlens embed x --out y" and info.meta["kind"] == "embedding-store"
