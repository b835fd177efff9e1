"""Micro-batching: concurrent callers get exactly their own result, batches form under load, errors reach callers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from radlens.service.batcher import MicroBatcher


def test_concurrent_callers_get_their_own_rows_and_share_batches():
    sizes = []

    def forward(X):
        sizes.append(len(X))
        time.sleep(0.02)  # a forward long enough for others to queue behind it
        return X.reshape(len(X), -1).sum(1, keepdims=True) * np.array([[1.0, 2.0]])

    b = MicroBatcher(forward, max_batch=8)
    xs = [np.full((1, 2, 2), i, dtype=np.float32) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(b, xs))
    for i, row in enumerate(out):
        np.testing.assert_allclose(row, [4 * i, 8 * i])
    assert sum(sizes) == 40 and max(sizes) <= 8 and len(sizes) < 40  # some requests shared a forward
    b.close()


def test_a_lone_caller_is_not_kept_waiting_and_errors_reach_the_caller():
    calls = threading.Event()

    def forward(X):
        calls.set()
        if (X < 0).any():
            raise ValueError("negative input")
        return X.reshape(len(X), -1)

    b = MicroBatcher(forward)
    t = time.perf_counter()
    b(np.ones((1, 1, 1), np.float32))
    assert time.perf_counter() - t < 0.5 and calls.is_set()
    with pytest.raises(ValueError, match="negative"):
        b(-np.ones((1, 1, 1), np.float32))
    np.testing.assert_allclose(b(np.full((1, 1, 1), 3, np.float32)), [3])  # the worker survived
    b.close()
