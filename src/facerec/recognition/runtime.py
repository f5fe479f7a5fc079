"""Inference runtimes: a classifier's answer for face crops, on torch
(:class:`facerec.recognition.torch_runtime.TorchRuntime`) or onnxruntime
(:class:`facerec.recognition.onnx_runtime.OnnxClassifier`, a model from ``facerec export``),
behind one interface (:class:`Runtime`) and one decision rule
(:func:`facerec.recognition.decision.decide`); :func:`facerec.recognition.loader.load_runtime`
picks one for a file::

    rt = load_runtime("best.ckpt", "torch", device="cpu")  # "onnx": exported in memory; or a .onnx
    idx, score, prob, known = rt.decide(rt.features(crops), rt.threshold)

Light module: numpy at import time.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from facerec.errors import FacerecError
from facerec.recognition.decision import decide

__all__ = ["METADATA_KEY", "RUNTIMES", "Runtime", "model_kind"]

RUNTIMES = ("torch", "onnx")
METADATA_KEY = "facerec"  # the ONNX model's metadata_props entry (the checkpoint's facerec entry)


class Runtime(abc.ABC):
    """A classifier of face crops: ``name``, ``labels``, ``info`` (the checkpoint's ``facerec``
    entry), ``threshold`` (the stored unknown threshold; None: nobody is unknown)."""

    name: str = ""

    @abc.abstractmethod
    def features(self, crops: Sequence[Any]) -> Any:
        """What this runtime computes from face crops (PIL images, RGB arrays or paths)."""

    @abc.abstractmethod
    def outputs(self, features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits (N, K), prototype_cosine (N, K), ok (N,)) of :meth:`features`' result."""

    def decide(self, features: Any, threshold: float | None):
        return decide(*self.outputs(features), threshold)


def model_kind(path: str | os.PathLike) -> str:
    """``"onnx"`` or ``"torch"`` from the file's first bytes; anything else is not a model."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise FacerecError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save: a zip file, or a legacy pickle
        return "torch"
    if head[:1] == b"\x08":  # ONNX: a protobuf whose first field is ir_version (tag byte 0x08)
        return "onnx"
    raise FacerecError(f"{path} is not a facerec checkpoint (neither a PyTorch checkpoint nor an "
                       "ONNX model): give a .ckpt from `facerec train` or a .onnx from "
                       "`facerec export`")
