"""Which runtime runs a model file: :func:`load_runtime`."""

from __future__ import annotations

import os
from typing import Any

from facerec.errors import FacerecError
from facerec.recognition.runtime import RUNTIMES, Runtime, model_kind


def load_runtime(checkpoint: str | os.PathLike, runtime: str = "torch",
                 device: Any = "cpu") -> Runtime:
    """The runtime for a checkpoint (``.ckpt``) or an exported model (``.onnx``, always run on
    onnxruntime); ``runtime="onnx"`` runs a ``.ckpt`` on onnxruntime (exported in memory)."""
    if runtime not in RUNTIMES:
        raise FacerecError(f"unknown runtime {runtime!r}: use torch or onnx")
    from facerec.recognition.onnx_runtime import OnnxClassifier

    if model_kind(checkpoint) == "onnx":
        return OnnxClassifier(checkpoint, device=device)
    if runtime == "onnx":
        from facerec.recognition.export import onnx_model_bytes
        from facerec.recognition.model import load_checkpoint

        return OnnxClassifier(onnx_model_bytes(load_checkpoint(checkpoint)), device=device)
    from facerec.recognition.torch_runtime import TorchRuntime

    return TorchRuntime(checkpoint, device)
