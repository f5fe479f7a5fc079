"""The one decision rule of every runtime (torch, onnxruntime): who a face is, or ``unknown``.

Light module: numpy only.
"""

from __future__ import annotations

import math

import numpy as np

#: the label of a face whose score is below the threshold (nobody the model knows)
UNKNOWN = "unknown"


def decide(logits: np.ndarray, proto_cos: np.ndarray, ok: np.ndarray, threshold: float | None):
    """(candidate index, score, probability, known) per row, numpy. The candidate is the argmax
    of ``logits``, its probability the softmax, its score its prototype cosine (NaN where not
    ``ok``: the crop could not be embedded); ``known`` when ok and score >= ``threshold``
    (None or not finite: everyone embedded is known)."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(logits))
    idx = logits.argmax(axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob = (e / e.sum(axis=1, keepdims=True))[rows, idx]
    ok = np.asarray(ok, dtype=bool)
    score = np.where(ok, np.asarray(proto_cos, dtype=np.float64)[rows, idx], np.nan)
    if threshold is not None and math.isfinite(threshold):
        return idx, score, prob, ok & (score >= threshold)
    return idx, score, prob, ok.copy()
