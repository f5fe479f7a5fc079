"""The model the server recognises with: loaded once, swapped after training, used one request at
a time (:class:`facerec.inference.predict.Predictor` keeps per-call state and the detector's buffers, so it is
not thread-safe).

Uploads are decoded by :func:`facerec.images.load_image` (the same loader as ``facerec predict``:
EXIF orientation, every mode, HEIC, the pixel and memory budgets, reduced-size decoding), one
image at a time: each is read from the request's spooled file, decoded, predicted and dropped
before the next. At most ``slots`` images are being decoded or predicted at once, all requests
together (a semaphore), so the memory of concurrent requests is bounded too; a slow decode still
overlaps another request's prediction. Detection and classification are serialized.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from facerec.errors import UnavailableError


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


class Recogniser:
    """Holds the current :class:`~facerec.inference.predict.Predictor` (or none) behind a lock."""

    def __init__(self, device: str = "auto", slots: int = 2) -> None:
        self.device = device
        self._predictor: Any = None
        self._lock = threading.Lock()      # one prediction at a time
        self._slots = threading.BoundedSemaphore(max(1, int(slots)))  # images in hand at once
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
        with self._lock:
            self._predictor = predictor
            self.checkpoint = str(checkpoint)
            self.loaded_at = time.time()

    def info(self) -> dict[str, Any]:
        p = self._predictor
        return {"checkpoint": self.checkpoint, "labels": list(p.labels) if p else [],
                "threshold": p.threshold if p else None, "loaded_at": self.loaded_at}

    def predict(self, uploads: list[Upload]) -> list[Any]:
        """One :class:`~facerec.inference.predict.ImageResult` per upload, in order; an unreadable upload
        gets ``error`` set, as in ``facerec predict`` on a folder. One image at a time: decoded,
        predicted and dropped before the next (each within one of the server's slots)."""
        if self._predictor is None:
            raise UnavailableError("no model yet")
        results = []
        for up in uploads:
            with self._slots:
                result, size = self._predict_one(up)
                results.append(result)
                if size >= TRIM_AFTER_BYTES and _malloc_trim() is not None:
                    _malloc_trim()(0)  # the image is gone: give its memory back
        return results

    def _predict_one(self, up: Upload) -> tuple[Any, int]:
        """(the result of one upload, the bytes its decoded image took)."""
        from facerec.images import ImageLoadError, load_image
        from facerec.inference.predict import ImageResult

        try:
            loaded = load_image(Path(up.name or "upload"), data=up.read())
        except ImageLoadError as exc:
            return ImageResult(image=up.name, error=str(exc)), 0
        with self._lock:
            # a LoadedImage: a photo decoded at a reduced size keeps boxes in original pixels
            result = self._predictor.predict_image(loaded, name=up.name)
        result.width, result.height = loaded.width, loaded.height
        return result, loaded.image.width * loaded.image.height * 4
