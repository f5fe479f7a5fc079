"""The torch runtime: a checkpoint's classifier (:mod:`facerec.recognition.model`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from facerec.recognition.runtime import Runtime


class TorchRuntime(Runtime):
    """A checkpoint on torch; ``features`` are the classifier's unit features (a tensor).
    ``checkpoint`` keeps the file's validated contents (its calibration gallery, ...)."""

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: Any = "cpu") -> None:
        from facerec.recognition.checkpoint import Checkpoint
        from facerec.recognition.model import load_checkpoint

        self.checkpoint = Checkpoint.read(checkpoint)
        self.clf = load_checkpoint(self.checkpoint, map_location=device)
        self.info = self.clf.info
        self.labels = list(self.clf.labels)
        stored = self.clf.threshold
        self.threshold = stored if math.isfinite(stored) else None

    def features(self, crops: Sequence[Any]) -> Any:
        return self.clf.embed_crops(crops)

    def outputs(self, features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.clf.head_outputs(features)
