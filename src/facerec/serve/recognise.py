"""The model the server recognises with: loaded once, swapped after training, shared by all
requests through one batching queue (:class:`facerec.serve.batching.MicroBatcher`).

Uploads are decoded by :func:`facerec.images.load_image` (the same loader as ``facerec predict``:
EXIF orientation, every mode, HEIC, the pixel and memory budgets, reduced-size decoding), one
image at a time per request: each is read from the request's spooled file, decoded, predicted
and dropped before the next. Two bounds hold across all requests together: at most ``slots``
images are being decoded at once (a semaphore), and the images being decoded, waiting for or
inside the model take at most ``held_bytes`` (:class:`ByteBudget`, each claiming the most its
decode can take, :func:`facerec.images.decode_cost`, read from its header). Within them, the images of
concurrent requests are predicted together: the queue's one worker runs detection on a batch of
photos and the embedder on all their faces at once (a :class:`~facerec.inference.predict.Predictor`
keeps per-call state and the detector's buffers, so it is never called from two threads).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from facerec.errors import UnavailableError
from facerec.images import MAX_DECODE_BYTES


@dataclass
class Upload:
    """One uploaded image: its bytes, or the file they were spooled to (read when its turn
    comes, so a request never holds all its images in memory)."""

    name: str
    data: bytes | None = None
    file: BinaryIO | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        self.file.seek(0)
        return self.file.read()


#: a decoded image at least this big (bytes of its RGB pixels) is followed by a malloc_trim
TRIM_AFTER_BYTES = 32 * 1024 * 1024
#: a decoded image at least this big is predicted alone, in its request's thread, not through
#: the batching queue: a 12-MP photo (48 MB) is batched, a 4096-px scan is not. Measured with
#: bench/serve_memory.py: the worst uploads sent through the queue's worker thread peaked ~200 MB
#: higher than in their own thread (memory freed in one thread's malloc arena while the next
#: image grows another's), and they gain nothing from batching (their cost is their decode).
ALONE_BYTES = 64 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere). glibc keeps freed blocks of a few MB in the heap
    of the arena of the thread that freed them, and those heaps seldom shrink by themselves: a
    server whose pool threads each decoded a big upload would stay at gigabytes. Trimming after
    a big image gives its memory back (a fixed ``M_MMAP_THRESHOLD`` would too, but slows every
    prediction by a quarter: the model's buffers would be mapped and faulted in anew each time)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl...)
        return None


class ByteBudget:
    """At most ``limit`` bytes held at once by all threads together; one holder may always take
    up to the whole limit (a bigger claim is cut to it, so no claim waits forever)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self.held = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int):
        claim = min(max(0, int(nbytes)), self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.held + claim <= self.limit)
            self.held += claim
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._cond:
                self.held -= claim
                self._cond.notify_all()


class Recogniser:
    """Holds the current :class:`~facerec.inference.predict.Predictor` (or none) and the queue
    that batches the requests' images for it."""

    def __init__(self, device: str = "auto", slots: int = 1, held_bytes: int = MAX_DECODE_BYTES,
                 max_batch: int = 8, max_wait: float = 0.005) -> None:
        from facerec.serve.batching import MicroBatcher

        self.device = device
        self._predictor: Any = None
        self._swap = threading.Lock()      # the model changes between batches, never inside one
        self._model = threading.Lock()     # the predictor runs one batch (or big image) at a time
        self._slots = threading.BoundedSemaphore(max(1, int(slots)))  # decodes at once
        self.budget = ByteBudget(held_bytes)  # decoded pixels in hand, all requests together
        self.batcher = MicroBatcher(self._predict_batch, max_batch=max_batch, max_wait=max_wait,
                                    name="facerec-predict")
        self.checkpoint: str | None = None
        self.loaded_at: float | None = None

    @property
    def ready(self) -> bool:
        return self._predictor is not None

    def load(self, checkpoint: str | Path) -> None:
        """Load ``checkpoint`` (``weights_only`` through :func:`facerec.recognition.model.load_checkpoint`),
        warm it up, then swap it in: requests keep using the old model until the new one is
        ready."""
        from facerec.inference.predict import Predictor

        predictor = Predictor(checkpoint, device=self.device)
        predictor.warm_up()
        with self._swap:
            self._predictor = predictor
            self.checkpoint = str(checkpoint)
            self.loaded_at = time.time()

    def info(self) -> dict[str, Any]:
        p = self._predictor
        return {"checkpoint": self.checkpoint, "labels": list(p.labels) if p else [],
                "threshold": p.threshold if p else None, "loaded_at": self.loaded_at,
                "batches": dict(self.batcher.stats)}

    def predict(self, uploads: list[Upload]) -> list[Any]:
        """One :class:`~facerec.inference.predict.ImageResult` per upload, in order; an unreadable upload
        gets ``error`` set, as in ``facerec predict`` on a folder. One image of a request at a
        time: decoded, predicted (with other requests' images) and dropped before the next."""
        if self._predictor is None:
            raise UnavailableError("no model yet")
        results = []
        for up in uploads:
            results.append(self._predict_one(up))
        return results

    def _predict_batch(self, items: list[tuple[str, Any]]) -> list[Any]:
        with self._swap:
            predictor = self._predictor
        with self._model:
            return predictor.predict_loaded([(name, loaded, None) for name, loaded in items])

    def _predict_one(self, up: Upload) -> Any:
        """The result of one upload."""
        from facerec.defaults import PREDICT_MAX_SIDE
        from facerec.images import ImageLoadError, decode_cost, load_image
        from facerec.inference.predict import ImageResult

        # the claim covers the upload's bytes, the decode's peak and the decoded image until its
        # answer is back: all requests together never hold more than the budget (the worst
        # upload takes it all, alone)
        cost = decode_cost(up.data if up.data is not None else up.file)
        with self.budget.hold(cost):
            with self._slots:
                try:
                    loaded = load_image(Path(up.name or "upload"), PREDICT_MAX_SIDE,
                                        data=up.read())
                except ImageLoadError as exc:
                    return ImageResult(image=up.name, error=str(exc))
                size = loaded.image.width * loaded.image.height * 4
                # a LoadedImage: a photo decoded at a reduced size keeps boxes in original pixels
                if size >= ALONE_BYTES:  # big: predicted here, before another decode starts
                    result = self._predict_batch([(up.name, loaded)])[0]
                    del loaded
            if size < ALONE_BYTES:
                result = self.batcher.submit((up.name, loaded)).result()
                del loaded
            if max(size, cost) >= TRIM_AFTER_BYTES and _malloc_trim() is not None:
                # the image is gone: give its memory back before the budget lets the next one
                # in (trimmed after, the next decode would add to pages not yet returned). The
                # decode's peak counts (cost), not only what it kept: a 9700-px PNG is reduced
                # to a 10 MB image, after a 376 MB decode.
                _malloc_trim()(0)
        return result
