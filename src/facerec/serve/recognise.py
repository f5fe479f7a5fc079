"""The model the server recognises with: loaded once, swapped after training, used one request at
a time (:class:`facerec.inference.predict.Predictor` keeps per-call state and the detector's buffers, so it is
not thread-safe).

Uploads are decoded outside the lock by :func:`facerec.images.load_image` (the same loader as
``facerec predict``: EXIF orientation, every mode, HEIC, the decompression-bomb limit), so a slow
decode never holds up other requests; only detection and classification are serialized.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerec.errors import UnavailableError


@dataclass
class Upload:
    name: str
    data: bytes


class Recogniser:
    """Holds the current :class:`~facerec.inference.predict.Predictor` (or none) behind a lock."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._predictor: Any = None
        self._lock = threading.Lock()      # one prediction at a time
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
        gets ``error`` set, as in ``facerec predict`` on a folder."""
        from facerec.images import ImageLoadError, load_image
        from facerec.inference.predict import ImageResult

        if self._predictor is None:
            raise UnavailableError("no model yet")
        decoded = []
        for up in uploads:
            try:
                decoded.append((up.name, load_image(Path(up.name or "upload"), data=up.data), None))
            except ImageLoadError as exc:
                decoded.append((up.name, None, str(exc)))
        results = []
        with self._lock:
            predictor = self._predictor
            for name, loaded, error in decoded:
                if loaded is None:
                    results.append(ImageResult(image=name, error=error))
                    continue
                r = predictor.predict_image(loaded.image, name=name)
                r.width, r.height = loaded.width, loaded.height
                results.append(r)
        return results
