"""Greedy micro-batching of encoder forwards for concurrent requests.

One worker thread owns the model. Each request hands in its preprocessed image and waits; the worker
takes everything queued at that moment (up to `max_batch`) and runs one batched forward. Under a
single client nothing waits for company (no added latency); under load, requests that arrived during
a forward share the next one, which on a CPU costs far less per image than one forward each, and the
model never runs twice at once on the same two cores.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable

import numpy as np


class MicroBatcher:
    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], max_batch: int = 16) -> None:
        self.forward, self.max_batch = forward, max_batch
        self._q: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self.batches = 0
        self.items = 0
        self._worker = threading.Thread(target=self._run, name="radlens-batcher", daemon=True)
        self._worker.start()

    def __call__(self, x: np.ndarray, timeout: float | None = 120.0) -> np.ndarray:
        """Embed one preprocessed (C, H, W) image; blocks until its batch is done."""
        fut: Future = Future()
        self._q.put((x, fut))
        return fut.result(timeout=timeout)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._q.put(None)
                    break
                batch.append(item)
            try:
                out = self.forward(np.stack([x for x, _ in batch]))
                for (_, fut), row in zip(batch, out):
                    fut.set_result(row)
            except BaseException as e:  # noqa: BLE001 - a failed forward fails its requests, not the worker
                for _, fut in batch:
                    fut.set_exception(e)
            self.batches += 1
            self.items += len(batch)

    def close(self) -> None:
        self._q.put(None)
        self._worker.join(timeout=10)
