"""The Ray Data engine gives the same store as the local engine: keys, rows, vectors, quarantine; resumes; predicts.

One local Ray instance (2 CPUs) serves the module: in-process calls reuse it, and CLI runs connect to it with
`--address`, which is also how a user points radlens at a cluster.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import run_cli

ray = pytest.importorskip("ray", reason="the Ray engine needs radlens[ray] (ray[data]==2.60.0); pip install -e '.[ray]'")

from radlens.encoders import DEFAULT_ENCODER, get  # noqa: E402
from radlens.store import load_store  # noqa: E402
from radlens.store.embed_job import embed_to_store  # noqa: E402
from radlens.store.ray_engine import EncoderSpec, RayOptions, embed_to_store_ray  # noqa: E402

N_SUBSET = 200
ATOL = 1e-5
SPEC = EncoderSpec(DEFAULT_ENCODER, kwargs={"threads": 1})


@pytest.fixture(scope="module")
def ray_address():
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process by something else")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def subset(nih_dir, tmp_path_factory):
    """A manifest: the first N_SUBSET NIH images, then broken and duplicated files, so every rule is exercised.

    Broken: truncated PNG (two identical copies: a duplicate of a file that fails), empty, text, a row whose file
    is missing; duplicate: a byte copy of the first image under another name.
    """
    root = tmp_path_factory.mktemp("ray_subset")
    man = pd.read_csv(nih_dir / "manifest.csv", dtype={"patient_id": str}).head(N_SUBSET)
    man = man.assign(path=[str(nih_dir / p) for p in man.path])
    first = (nih_dir / pd.read_csv(nih_dir / "manifest.csv").path[0]).read_bytes()
    (root / "truncated.png").write_bytes(first[: len(first) // 3])
    (root / "truncated_copy.png").write_bytes(first[: len(first) // 3])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_bytes(b"a report, not an image\n")
    shutil.copy(man.path[0], root / "same_as_first.png")
    extra = ["truncated.png", "empty.png", "same_as_first.png", "notes.png", "truncated_copy.png", "missing.png"]
    man = pd.concat([man, pd.DataFrame({"path": [str(root / n) for n in extra]})], ignore_index=True)
    man.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv", man


@pytest.fixture(scope="module")
def local_store(subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "store"
    s = embed_to_store(subset[0], out, get(DEFAULT_ENCODER, threads=1), batch_size=16, chunk_rows=64)
    assert (s.embedded, s.quarantined, s.duplicates) == (N_SUBSET, 5, 1), s
    return out


def _by_key(store):
    df, emb, info = load_store(store)
    order = np.argsort(df.image_hash.to_numpy())
    return df.iloc[order].reset_index(drop=True), emb[order], info


def _quarantine(store) -> set[tuple[str, str, str]]:
    q = pd.read_csv(store / "_quarantine.csv")
    return set(zip(q.path, q.stage, q.reason))


def assert_same_store(a, b, *, quarantine: bool = True) -> float:
    """Same keys, schema, metadata, sidecars and quarantine; vectors within ATOL. Returns the max difference."""
    da, ea, ia = _by_key(a)
    db, eb, ib = _by_key(b)
    assert da.image_hash.tolist() == db.image_hash.tolist() and da.image_hash.is_unique
    schema = {pq.read_schema(p) for p in [*a.glob("part-*.parquet"), *b.glob("part-*.parquet")]}
    assert len(schema) == 1, schema  # every chunk of both stores: same columns, same Arrow types
    assert list(da.columns) == list(db.columns) and (da.dtypes == db.dtypes).all()
    pd.testing.assert_frame_equal(da, db)
    diff = float(np.abs(ea - eb).max()) if len(ea) else 0.0
    assert diff <= ATOL, diff
    if quarantine:
        assert _quarantine(a) == _quarantine(b)
    side = [{k: v for k, v in json.loads((s / "_radlens.json").read_text()).items() if k not in ("created", "command")}
            for s in (a, b)]
    assert side[0] == side[1]
    return diff


def test_ray_leaves_no_ray_running_it_started(subset, tmp_path):
    """Without an address the engine starts its own instance and shuts it down, also for a run with no work."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process (run this test before the module's fixture)")
    embed_to_store_ray([str(tmp_path / "nothing.png")], tmp_path / "s", SPEC, options=RayOptions(num_cpus=1))
    assert not ray.is_initialized()


def test_ray_cli_store_equals_local_store(ray_address, subset, local_store, tmp_path):
    out = tmp_path / "ray"
    proc = run_cli("embed", str(subset[0]), "--out", str(out), "--engine", "ray", "--address", ray_address,
                   "--batch-size", "16", "--chunk-rows", "64", "--threads", "1")
    assert "embedded 200, skipped as cached 0, quarantined 5, duplicate content 1" in proc.stdout, proc.stdout
    diff = assert_same_store(out, local_store)
    q = pd.read_csv(out / "_quarantine.csv")
    assert set(q.stage) == {"decode", "duplicate"} and q.path.str.endswith("truncated_copy.png").sum() == 1
    assert len(list(out.glob("part-*.parquet"))) >= 3  # streamed in chunks of ~64 rows, not written at the end
    print(f"\nrows compared {N_SUBSET}, max |ray - local| {diff:.3g}")


def test_ray_resume_embeds_every_image_once(ray_address, subset, local_store, tmp_path):
    out = tmp_path / "ray"
    half = embed_to_store_ray(subset[0], out, SPEC, options=RayOptions(batch_size=16), limit=N_SUBSET // 2,
                              chunk_rows=32)
    assert (half.embedded, half.cached, half.quarantined) == (N_SUBSET // 2, 0, 0)
    rest = embed_to_store_ray(subset[0], out, SPEC, options=RayOptions(batch_size=16), chunk_rows=32)
    # the byte copy of image 0 is now cached (its content is stored), as the local engine decides on a resume
    assert (rest.embedded, rest.cached, rest.quarantined, rest.duplicates) == (N_SUBSET // 2, N_SUBSET // 2 + 1, 5, 0)
    assert_same_store(out, local_store, quarantine=False)
    assert _quarantine(out) == {r for r in _quarantine(local_store) if r[1] != "duplicate"}
    again = embed_to_store_ray(subset[0], out, SPEC, options=RayOptions(batch_size=16))
    assert (again.embedded, again.cached) == (0, N_SUBSET + 1)
    assert len(pd.read_parquet(out)) == N_SUBSET


def test_predict_engine_ray_equals_local(ray_address, subset, local_store, tmp_path):
    ad = tmp_path / "adapter"
    run_cli("train", str(local_store), "--out", str(ad), "--adapter", "logreg", "--label-column", "sex",
            "--task-kind", "multiclass", "--n-boot", "20", "--inner", "1")
    files = [*subset[1].path[:24], str(subset[0].parent / "truncated.png")]
    run_cli("predict", str(ad), *files, "--out", str(tmp_path / "local.csv"))
    run_cli("predict", str(ad), *files, "--out", str(tmp_path / "ray.csv"), "--engine", "ray", "--address",
            ray_address, "--batch-size", "8")
    a, b = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "ray.csv")
    assert len(a) == 24 and a.path.tolist() == b.path.tolist() and list(a.columns) == list(b.columns)
    pcols = [c for c in a.columns if c.startswith("p_")]
    np.testing.assert_allclose(b[pcols].to_numpy(), a[pcols].to_numpy(), atol=ATOL)
    assert a.drop(columns=pcols).equals(b.drop(columns=pcols))
    qa, qb = (pd.read_csv(tmp_path / f"{n}.quarantine.csv") for n in ("local", "ray"))
    assert qa.equals(qb) and len(qa) == 1


@pytest.mark.slow
def test_full_nih_set_ray_equals_local(ray_address, nih_dir, tmp_path):
    local = tmp_path / "local"
    s = embed_to_store(nih_dir, local, get(DEFAULT_ENCODER, threads=1), batch_size=32)
    r = embed_to_store_ray(nih_dir, tmp_path / "ray", SPEC, options=RayOptions(batch_size=32))
    assert s.embedded == r.embedded == 1510
    diff = assert_same_store(tmp_path / "ray", local)
    print(f"\nfull NIH: rows compared 1510, max |ray - local| {diff:.3g}; local {s.seconds:.1f} s, ray {r.seconds:.1f} s")
