"""Concurrent requests share one network call: a short queue in front of the model.

The server answers each request in a thread of its own. Predicting in each of them would
either run the networks several times at once (threads fighting over the same cores, and one
copy of every activation per request) or one after the other behind a lock (what facerec did
before: requests/s did not grow with clients). :class:`MicroBatcher` takes the middle road the
inference servers take (Triton's dynamic batching, TorchServe's ``max_batch_delay``): one worker
thread runs the model; the first item to arrive waits at most ``max_wait`` seconds for others,
up to ``max_batch``, and the whole batch goes through the model at once (detection batched
across photos, embedding across all of their faces). Memory stays bounded: callers keep an item
in hand until its answer comes back, and the server admits only so many (its slots).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Runs ``run(items) -> results`` (same length, same order) on batches of submitted items.

    ``submit(item)`` returns a :class:`~concurrent.futures.Future`; an exception raised by
    ``run`` is set on every future of that batch. ``close()`` stops the worker after the queue
    is drained. ``stats`` counts batches and items (for ``/api/health`` and the bench)."""

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 8,
                 max_wait: float = 0.005, name: str = "facerec-batcher") -> None:
        self._run = run
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait))
        self._queue: queue.Queue[tuple[Any, Future] | None] = queue.Queue()
        self.stats = {"batches": 0, "items": 0, "largest": 0}
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: Any) -> Future:
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _collect(self, first: tuple[Any, Future]) -> tuple[list[tuple[Any, Future]], bool]:
        """``first`` and whatever else arrives within ``max_wait`` (at most ``max_batch``); and
        whether ``close()`` was asked meanwhile."""
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, closing = self._collect(first)
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if live:
                self._run_batch(live)
            if closing:
                return

    def _run_batch(self, batch: list[tuple[Any, Future]]) -> None:
        self.stats["batches"] += 1
        self.stats["items"] += len(batch)
        self.stats["largest"] = max(self.stats["largest"], len(batch))
        try:
            results = list(self._run([item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
        except BaseException as exc:  # every waiting request learns of it; the worker lives on
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results):
            fut.set_result(result)
