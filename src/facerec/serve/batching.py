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
        while self._serve_one_batch():
            pass

    def _serve_one_batch(self) -> bool:
        """Wait for, collect and run one batch; False once closed. Every reference to the items
        (decoded photos: up to hundreds of MB) is dropped before the answers are handed back, so
        the memory is free when a caller moves on (and trims it), and none is kept while the
        worker waits for the next batch."""
        first = self._queue.get()
        if first is None:
            return False
        batch, closing = self._collect(first)
        del first
        futures = [fut for _, fut in batch if fut.set_running_or_notify_cancel()]
        items = [item for item, fut in batch if fut.running()]
        del batch
        if futures:
            self.stats["batches"] += 1
            self.stats["items"] += len(items)
            self.stats["largest"] = max(self.stats["largest"], len(items))
            outcome = self._run_items(items)
            for k, fut in enumerate(futures):
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome[k])
        return not closing

    def _run_items(self, items: list[Any]) -> list[Any] | BaseException:
        """``run(items)`` (emptying ``items``), or the exception it raised: every waiting request
        learns of it; the worker lives on."""
        n = len(items)
        try:
            results = list(self._run(items))
            if len(results) != n:
                raise RuntimeError(f"batch of {n} gave {len(results)} results")
        except BaseException as exc:  # noqa: BLE001 - handed to the callers
            return exc
        finally:
            items.clear()
        return results
