"""The onnxruntime runtime: a model written by ``facerec export`` (:mod:`facerec.recognition.export`).

What the model takes depends on its export kind (its metadata): ``full`` models take the crop's
pixels, ``chips`` models the input of the embedder's network (cut here without torch: a
``dlib_face`` model needs only numpy, PIL, dlib's landmark fit and onnxruntime), ``head`` models
the frozen embedder's features.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import FacerecError
from facerec.images import as_rgb_image
from facerec.recognition.runtime import METADATA_KEY, Runtime


def _providers(device) -> list:
    import onnxruntime as ort

    dev = str(device or "cpu")
    if dev.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(dev.split(":", 1)[1]) if ":" in dev else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxClassifier(Runtime):
    """A facerec ONNX model on onnxruntime. ``source``: a ``.onnx`` file from ``facerec export``, or
    its bytes. ``labels``, ``threshold``, ``info`` and ``kind`` (``"full"``, ``"chips"`` or
    ``"head"``) come from the model's metadata; ``features`` are the model's outputs (logits,
    prototype_cosine, ok)."""

    name = "onnx"

    def __init__(self, source: str | os.PathLike | bytes, device: Any = "cpu") -> None:
        import onnxruntime as ort

        name = "<bytes>"
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            path = Path(source)
            name = str(path)
            if not path.is_file():
                raise FacerecError(f"model not found: {path}")
            data = path.read_bytes()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, sess_options=opts,
                                                providers=_providers(device))
        except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, Fail, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FacerecError(f"{name} is not a usable ONNX model ({first[:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info = json.loads(meta[METADATA_KEY])
            self.kind = self.info["export"]["kind"]
            self.labels: list[str] = list(self.info["labels"])
            self._inputs = {"full": self._pixels, "chips": self._network_inputs,
                            "head": self._features}[self.kind]
        except (KeyError, TypeError, ValueError):
            raise FacerecError(f"{name} is an ONNX model but not one exported by `facerec export` "
                               "(no facerec metadata: labels, threshold, preprocessing)") from None
        t = self.info.get("threshold")
        self.threshold: float | None = float(t) if t is not None and math.isfinite(t) else None
        self.input_name = self.session.get_inputs()[0].name
        self._transform = None
        self._cutter = None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, prototype_cosine) for model inputs: images (full) or unit features (head)."""
        out = self.session.run(["logits", "prototype_cosine"],
                               {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return out[0], out[1]

    def _runs(self, x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run` on ``n`` rows at a time."""
        out = [self.run(x[s:s + n]) for s in range(0, len(x), n)]
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    def outputs(self, features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return features

    def run_crops(self, crops: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits (N, K), prototype_cosine (N, K), ok (N,)) for PIL face crops."""
        k = len(self.labels)
        if not crops:
            return np.zeros((0, k)), np.zeros((0, k)), np.zeros(0, bool)
        x, rows = self._inputs(list(crops))
        logits = np.zeros((len(crops), k), dtype=np.float32)
        proto = np.zeros((len(crops), k), dtype=np.float32)
        ok = np.zeros(len(crops), bool)
        if len(rows):
            logits[rows], proto[rows] = self._runs(x, 32)
            ok[rows] = True
        return logits, proto, ok

    features = run_crops

    # ---- the model's input, per export kind: (array, the crops it holds a row for)
    def _pixels(self, crops: list) -> tuple[np.ndarray, list[int]]:
        """``full`` models: the crop resized and normalised as at training (timm)."""
        if self._transform is None:
            from facerec.recognition.backbones import eval_transform

            pre = self.info["preprocess"]
            self._transform = eval_transform(pre["input_size"], pre["mean"], pre["std"])
        import torch

        x = torch.stack([self._transform(as_rgb_image(c).image) for c in crops]).numpy()
        return x, list(range(len(crops)))

    def _network_inputs(self, crops: list) -> tuple[np.ndarray, list[int]]:
        """``chips`` models: the embedder cuts its network's input (dlib_face: its landmark fit
        and aligned chip), the model does the rest; no torch."""
        if self._cutter is None:
            from facerec.recognition.embed import embedder_class

            emb = self.info["export"]["embedding"]
            self._cutter = embedder_class(emb["embedder"]).input_cutter(
                emb.get("embedder_kwargs") or {})
        arrays, rows = self._cutter(crops)
        if not rows:
            return np.zeros((0,)), []
        return np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32), list(rows)

    def _features(self, crops: list) -> tuple[np.ndarray, list[int]]:
        """``head`` models: unit features of the frozen embedder, computed here (NaN rows: not
        embedded)."""
        from facerec.recognition.embed import get_embedder
        from facerec.recognition.features import embed_pil

        emb = self.info["export"]["embedding"]
        embedder = get_embedder(emb["embedder"], **(emb.get("embedder_kwargs") or {}))
        z = embed_pil(embedder, [as_rgb_image(c).image for c in crops],
                      bool(emb.get("mirror_tta", True)))
        rows = [i for i in range(len(z)) if np.isfinite(z[i]).all()]
        return z[rows].astype(np.float32), rows
