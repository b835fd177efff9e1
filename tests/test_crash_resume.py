"""SIGKILL `radlens embed` and `radlens index` at seeded random points, rerun, and check nothing is lost or doubled.

Kills land at three kinds of moment: early (imports, discovery, taking the store lock), after a random number of
chunks, and while a chunk/index file is being written (the temp file is watched and the process killed as soon
as it appears). After every kill the store must read with plain pandas; after the final run every discovered
image must be stored exactly once and no temp file or folder of a killed run may be left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from conftest import REPO, run_cli
from radlens.io import discover

N_IMAGES = 300
KILLS = 7
SEED = 20261206


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "radlens.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=_env())


def _wait_for(cond, proc: subprocess.Popen, timeout: float, poll: float = 0.01) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if cond():
            return True
        if poll:
            time.sleep(poll)
    return False


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL if still running; True if it was killed (not already finished)."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _readable(store: Path) -> pd.DataFrame:
    if not list(store.glob("part-*.parquet")):
        return pd.DataFrame({"image_hash": []})
    df = pd.read_parquet(store)  # a reader never sees a half-written chunk
    assert df.image_hash.is_unique, "a killed run left duplicate rows"
    return df


def test_embed_survives_random_sigkills(nih_dir, tmp_path):
    rng = np.random.default_rng(SEED)
    out = tmp_path / "store"
    args = ["embed", str(nih_dir), "--out", str(out), "--limit", str(N_IMAGES), "--chunk-rows", "16",
            "--batch-size", "8", "--threads", "1", "--workers", "1"]
    parts = lambda: len(list(out.glob("part-*.parquet")))  # noqa: E731
    kills, in_write, modes = 0, 0, ["early", "chunks", "write"]
    for i in range(KILLS):
        mode = modes[i % 3]
        before = parts()
        proc = _start(args)
        if mode == "early":
            time.sleep(rng.uniform(0.3, 2.5))
        elif mode == "chunks":
            _wait_for(lambda: parts() >= before + int(rng.integers(1, 3)), proc, 120)
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # watch for a chunk being written, kill the moment it appears
            _wait_for(lambda: parts() >= before + 1, proc, 120)
            caught = _wait_for(lambda: any(out.glob(".part-*.tmp")), proc, 30, poll=0)
            in_write += caught
        kills += _kill(proc)
        _readable(out)
    assert kills >= 5, f"only {kills} runs were still going when killed; raise N_IMAGES"
    partial = len(_readable(out))
    assert 0 < partial < N_IMAGES
    final = run_cli(*args)
    assert f"embedded {N_IMAGES - partial}, skipped as cached {partial}, quarantined 0" in final.stdout, final.stdout
    df = _readable(out)
    expected = {str(r.path) for r in discover(nih_dir)[:N_IMAGES]}
    assert len(df) == N_IMAGES and set(df.path) == expected and df.path.is_unique
    assert pads.dataset(str(out), format="parquet").count_rows() == N_IMAGES  # pyarrow reads the folder too
    assert np.isfinite(np.stack(df.embedding.to_numpy())).all()
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    print(f"\nembed: {kills} kills ({in_write} while a chunk was being written), {partial} rows before the last run; "
          f"{N_IMAGES} stored once, 0 lost, 0 duplicated")


@pytest.fixture(scope="module")
def growing_store(nih_dir, tmp_path_factory):
    """A store of N_IMAGES // 2 images, and a function that embeds the next `n` images into it."""
    from radlens.encoders import DEFAULT_ENCODER, get
    from radlens.store.embed_job import embed_to_store

    out = tmp_path_factory.mktemp("index_store") / "store"
    enc = get(DEFAULT_ENCODER, threads=1)
    embed_to_store(nih_dir, out, enc, limit=N_IMAGES // 2)

    def grow(n: int) -> None:
        embed_to_store(nih_dir, out, enc, limit=len(pd.read_parquet(out, columns=["image_hash"])) + n)
    return out, grow


def _index_state(store: Path) -> int | None:
    """Rows of the index as it stands (None: no index); a present index must load whole with each image once."""
    from radlens.search.index import EmbeddingIndex

    if not (store / "_index").exists():
        return None
    idx = EmbeddingIndex.load(store / "_index")
    live = idx.rows[~idx.rows._id.isin(idx.meta["deleted"])]
    assert live.image_hash.is_unique and idx.index.ntotal == len(idx.rows) == len(idx.vectors)
    return len(live)


def _kill_index(store: Path, rng: np.random.Generator, args: list[str], in_write: bool) -> tuple[bool, bool]:
    """Start `radlens index STORE ARGS`; kill it at a random moment or the moment its temp folder appears."""
    proc = _start(["index", str(store), *args])
    caught = False
    if in_write:
        caught = _wait_for(lambda: any(store.glob("._index.tmp-*")), proc, 60, poll=0)
    else:
        time.sleep(rng.uniform(0.3, 1.2))  # a whole run takes ~1 s here: imports, load, build, write
    return _kill(proc), caught


def _assert_index_complete(store: Path, n: int) -> None:
    from radlens.search.index import EmbeddingIndex
    from radlens.store import load_store

    assert _index_state(store) == n
    idx = EmbeddingIndex.load(store / "_index")
    df, emb, _ = load_store(store)
    live = idx.rows[~idx.rows._id.isin(idx.meta["deleted"])]
    assert set(live.image_hash) == set(df.image_hash) and len(df) == n
    hits = idx.search(emb[:3], k=1)  # the index answers, and each vector finds its own image
    assert [h[0].row["image_hash"] for h in hits] == df.image_hash[:3].tolist()
    stray = [p.name for p in store.iterdir() if p.name.startswith("._index.")]
    assert not stray, f"killed runs left {stray}"


def test_index_survives_random_sigkills_while_building_and_updating(growing_store):
    store, grow = growing_store
    rng = np.random.default_rng(SEED + 1)
    kills = caught = 0
    run_cli("index", str(store))
    for i in range(4):  # rebuilds: a kill must leave the previous complete index (or a new complete one)
        k, c = _kill_index(store, rng, ["--rebuild"], in_write=bool(i % 2))
        kills, caught = kills + k, caught + c
        assert _index_state(store) in (None, N_IMAGES // 2)
    run_cli("index", str(store))
    _assert_index_complete(store, N_IMAGES // 2)
    step = N_IMAGES // 2 // 5
    for i in range(5):  # updates: the store grows, each `radlens index` adds the new rows
        grow(step)
        before = _index_state(store)
        k, c = _kill_index(store, rng, [], in_write=bool(i % 2 == 0))
        kills, caught = kills + k, caught + c
        assert _index_state(store) in (None, before, N_IMAGES // 2 + (i + 1) * step)
    run_cli("index", str(store))
    _assert_index_complete(store, N_IMAGES)
    assert kills >= 5, kills
    print(f"\nindex: {kills} kills ({caught} while its temp folder existed); {N_IMAGES} rows once each")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_index_killed_between_the_two_renames_is_restored_not_rebuilt(growing_store, tmp_path):
    """The narrowest window (old index moved aside, new one not yet in): the next run puts the old one back."""
    import shutil
    import socket

    store, _ = growing_store
    work = tmp_path / "store"
    shutil.copytree(store, work, ignore=shutil.ignore_patterns("_index", "._index.*"))
    run_cli("index", str(work))
    n = _index_state(work)
    tag = f"{_dead_pid()}@{socket.gethostname()}"
    os.replace(work / "_index", work / f"._index.old-{tag}-0badcafe")
    (work / f"._index.tmp-{tag}-deadbeef").mkdir()
    (work / f"._index.tmp-{os.getpid()}@{socket.gethostname()}-feedf00d").mkdir()  # a live writer's: kept
    out = run_cli("index", str(work)).stdout
    assert "updated" in out and "added 0" in out, out  # restored, then brought up to date; no rebuild
    assert _index_state(work) == n
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("._index.")) == [
        f"._index.tmp-{os.getpid()}@{socket.gethostname()}-feedf00d"]


def test_store_open_removes_sidecar_temp_files_of_a_killed_run(tmp_path):
    from radlens.store import EmbeddingStore

    (tmp_path / "._quarantine.csv.abc123.tmp").write_text("path,stage,reason\n/half")
    (tmp_path / "._radlens.json.tmp").write_text("{")
    EmbeddingStore(tmp_path, encoder_id="e@1", preprocess_hash="p", embedding_dim=4).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "_radlens.json"]
