"""A detector whose worker process dies once, for the Ray engine's retry test.

Sent to the Ray actors by value (``ray.cloudpickle.register_pickle_by_value``): the workers do
not have the tests folder on their path.
"""

from __future__ import annotations

import os
from pathlib import Path

from facerec.defaults import DEFAULT_DETECTOR


class CrashOnce:
    """The default detector (what the local engine's reference output was made with), killing
    its own process (``os._exit``, as a crash or an OOM kill would) the first time any worker
    runs it: the marker file says it happened."""

    name = DEFAULT_DETECTOR

    def __init__(self, marker: Path, **settings) -> None:
        self.marker = str(marker)
        self.settings_given = settings
        self._inner = None

    @property
    def inner(self):
        if self._inner is None:
            from facerec.detection.detect import get_detector

            self._inner = get_detector(self.name, device="cpu", **self.settings_given)
        return self._inner

    def __getstate__(self):
        return {"marker": self.marker, "settings_given": self.settings_given, "_inner": None}

    @property
    def default_min_score(self) -> float:
        return self.inner.default_min_score

    @property
    def face_threshold(self) -> float:
        return self.inner.face_threshold

    def settings(self) -> dict:
        return self.inner.settings()

    def detect_batch(self, images):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return self.inner.detect_batch(images)

    def score_crops(self, crops, margin):
        return self.inner.score_crops(crops, margin)


class FailsInWorker(CrashOnce):
    """The default detector raising a facerec error in the worker (a stage's error, not a
    crash)."""

    def detect_batch(self, images):
        from facerec.errors import FacerecError

        raise FacerecError("the detector refused this batch")
