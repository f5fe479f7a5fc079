"""Inference runtimes: a classifier's answer for face crops on torch (:class:`TorchRuntime`) or
onnxruntime (:class:`OnnxClassifier`, a model from ``facerec export``; ``chips`` models run
without torch), one decision rule (:func:`decide`), one eval transform for timm backbones::

    rt = load_runtime("best.ckpt", "torch", device="cpu")  # "onnx": exported in memory; or a .onnx
    idx, score, prob, known = rt.decide(rt.features(crops), rt.threshold)

Light module: numpy at import time.
"""

from __future__ import annotations

import abc
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import FacerecError
from facerec.images import as_rgb_image

__all__ = ["METADATA_KEY", "Runtime", "TorchRuntime", "OnnxClassifier", "decide",
           "eval_transform", "load_runtime", "model_kind"]

RUNTIMES = ("torch", "onnx")
METADATA_KEY = "facerec"  # the ONNX model's metadata_props entry (the checkpoint's facerec entry)


# --------------------------------------------------------------------------------------- the rule
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


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]):
    """A crop (PIL) as a timm backbone sees it at test time: resized to size x size, normalised."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((int(size), int(size))), T.ToTensor(), T.Normalize(mean, std)])


# ------------------------------------------------------------------------------------- runtimes
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


class TorchRuntime(Runtime):
    """A checkpoint on torch; ``features`` are the classifier's unit features (a tensor)."""

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: Any = "cpu") -> None:
        from facerec.recognition.model import load_checkpoint

        self.clf = load_checkpoint(checkpoint, map_location=device)
        self.info = self.clf.info
        self.labels = list(self.clf.labels)
        stored = self.clf.threshold
        self.threshold = stored if math.isfinite(stored) else None

    def features(self, crops: Sequence[Any]) -> Any:
        return self.clf.embed_crops(crops)

    def outputs(self, features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.clf.head_outputs(features)


def _providers(device) -> list:
    import onnxruntime as ort

    dev = str(device or "cpu")
    if dev.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(dev.split(":", 1)[1]) if ":" in dev else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxClassifier(Runtime):
    """A facerec ONNX model on onnxruntime. ``source``: a ``.onnx`` file from ``facerec export``, or
    a facerec checkpoint (exported in memory first). ``labels``, ``threshold``, ``info`` and ``kind``
    (``"full"``, ``"chips"`` or ``"head"``) come from the model's metadata; ``features`` are the
    model's outputs (logits, prototype_cosine, ok)."""

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
            if path.suffix.lower() == ".onnx" or path.read_bytes()[:1] == b"\x08":
                data = path.read_bytes()
            else:
                from facerec.recognition.export import onnx_model_bytes
                from facerec.recognition.model import load_checkpoint

                data = onnx_model_bytes(load_checkpoint(path))
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
        except (KeyError, TypeError, ValueError):
            raise FacerecError(f"{name} is an ONNX model but not one exported by `facerec export` "
                               "(no facerec metadata: labels, threshold, preprocessing)") from None
        t = self.info.get("threshold")
        self.threshold: float | None = float(t) if t is not None and math.isfinite(t) else None
        self.input_name = self.session.get_inputs()[0].name
        self._transform = None
        self._chipper = None

    @property
    def chipper(self):
        """dlib's landmark fit and chip cutter (no network) for ``chips`` models."""
        if self._chipper is None:
            from facerec.recognition.embed import DlibChipper

            kwargs = self.info["export"]["embedding"].get("embedder_kwargs") or {}
            self._chipper = DlibChipper(margin=float(kwargs.get("margin", 0.2)))
        return self._chipper

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
        if self.kind == "chips":  # numpy, PIL, dlib's landmarks and onnxruntime: no torch
            return self._run_chips(list(crops))
        crops = [as_rgb_image(c).image for c in crops]
        if self.kind == "head":  # unit features of the frozen embedder (NaN rows: not embedded)
            from facerec.recognition.embed import get_embedder
            from facerec.recognition.model import embed_pil

            emb = self.info["export"]["embedding"]
            embedder = get_embedder(emb["embedder"], **(emb.get("embedder_kwargs") or {}))
            z = embed_pil(embedder, crops, bool(emb.get("mirror_tta", True)))
            ok = np.isfinite(z).all(axis=1)
            z = np.where(ok[:, None], z, 0.0).astype(np.float32)
            logits, proto = self.run(z)
            return logits, proto, ok
        if self._transform is None:
            pre = self.info["preprocess"]
            self._transform = eval_transform(pre["input_size"], pre["mean"], pre["std"])
        import torch

        x = torch.stack([self._transform(c) for c in crops]).numpy()
        return (*self._runs(x, 64), np.ones(len(crops), bool))

    features = run_crops

    def _run_chips(self, crops: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``chips`` models: dlib cuts the chips, the model does the rest (32 chips a run)."""
        k = len(self.labels)
        chips, rows, _ = self.chipper.chips(crops)
        logits = np.zeros((len(crops), k), dtype=np.float32)
        proto = np.zeros((len(crops), k), dtype=np.float32)
        ok = np.zeros(len(crops), bool)
        if rows:
            x = np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)
            logits[rows], proto[rows] = self._runs(x, 32)
            ok[rows] = True
        return logits, proto, ok


# -------------------------------------------------------------------------------------- loading
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


def load_runtime(checkpoint: str | os.PathLike, runtime: str = "torch",
                 device: Any = "cpu") -> Runtime:
    """The runtime for a checkpoint (``.ckpt``) or an exported model (``.onnx``, always run on
    onnxruntime); ``runtime="onnx"`` runs a ``.ckpt`` on onnxruntime (exported in memory)."""
    if runtime not in RUNTIMES:
        raise FacerecError(f"unknown runtime {runtime!r}: use torch or onnx")
    if model_kind(checkpoint) == "onnx" or runtime == "onnx":
        return OnnxClassifier(checkpoint, device=device)
    return TorchRuntime(checkpoint, device)
