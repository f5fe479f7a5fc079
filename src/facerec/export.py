"""``facerec export``: a checkpoint as an ONNX model that onnxruntime runs without facerec's torch code.

Library API::

    from facerec.export import export_onnx, OnnxClassifier
    result = export_onnx("runs/NAME/version_0/checkpoints/best.ckpt", "model.onnx")
    clf = OnnxClassifier("model.onnx")                  # onnxruntime; labels, threshold, info
    logits, prototype_cosine, ok = clf.run_crops([crop1, crop2])

What is exported depends on the backbone:

* a timm backbone (``resnet18``, ...): the whole classifier, ``image`` (N, 3, S, S), the crop
  resized to S x S and normalised with the stored mean/std -> ``logits`` (N, K) = scale * cosine to
  the head's class weights, ``prototype_cosine`` (N, K) = cosine to each person's prototype (the
  open-set score), ``features`` (N, D) unit feature;
* ``dlib_face``: the whole classifier from the aligned face chip on, dlib's face ResNet included
  (:mod:`facerec.dlib_net`): ``chips`` (N, 3, 150, 150), RGB 0..255 as ``dlib.get_face_chip``
  cuts them -> ``logits``, ``prototype_cosine``, ``features`` (N, 128) the unit mean of the
  descriptors of the chip and its mirror image (computed in the graph, one batch), and
  ``embedding`` (N, 128) the chip's raw dlib descriptor. Only the chip itself (dlib's 5-point
  landmark fit and ``get_face_chip``, :class:`facerec.embed.DlibChipper`) is made outside the model;
  no torch and no dlib network are needed to run it;
* another frozen embedder (not a torch model): the head only, ``features`` (N, D) -> ``logits``,
  ``prototype_cosine``; :class:`OnnxClassifier` computes the features itself. (Models exported
  from ``dlib_face`` checkpoints by facerec < 0.2 are of this kind and still run.)

The decision is the same as :meth:`facerec.model.FaceClassifier.predict_features`: the candidate is
``argmax(logits)``, its score ``prototype_cosine[candidate]``, ``unknown`` below the threshold. The
model carries everything needed to use it in its ONNX metadata: ``metadata_props["facerec"]`` is
the checkpoint's ``facerec`` entry (labels, threshold, preprocessing, backbone) plus ``export``
(kind, input and output names, facerec version).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import FacerecError

__all__ = ["ExportResult", "OnnxClassifier", "export_onnx", "onnx_model_bytes", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
METADATA_KEY = "facerec"


# ------------------------------------------------------------------------------------------ graphs
def _export_kind(clf) -> str:
    """``"full"`` (timm), ``"chips"`` (dlib_face: chip -> network -> head) or ``"head"``."""
    if clf.backbone is not None:
        return "full"
    return "chips" if clf.config["backbone"].get("embedder") == "dlib_face" else "head"


def _graph(clf):
    """The torch module that is exported: full classifier (timm), dlib's network + head
    (dlib_face) or the head alone (another frozen embedder)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("weight", F.normalize(clf.head.weight.detach().float(), dim=1))
            self.register_buffer("prototypes", clf.prototypes.detach().float().clone())
            self.scale = float(clf.head.scale)

        def decide(self, z: torch.Tensor):
            return self.scale * (z @ self.weight.T), z @ self.prototypes.T

        def forward(self, features: torch.Tensor):
            z = F.normalize(features.float(), dim=1)
            return self.decide(z)

    class Full(Head):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = clf.backbone

        def forward(self, image: torch.Tensor):
            z = F.normalize(self.backbone(image).float(), dim=1)
            logits, proto = self.decide(z)
            return logits, proto, z

    class Chips(Head):
        def __init__(self) -> None:
            super().__init__()
            self.net = clf.dlib_network()  # dlib's weights, or the --finetune ones
            self.mirror_tta = bool(clf.config["backbone"].get("mirror_tta", True))

        def forward(self, chips: torch.Tensor):
            n = chips.shape[0]
            if self.mirror_tta:  # the chip and its mirror image in one batch, as in torch
                both = self.net(torch.cat([chips, chips.flip(3)]))
                emb, mirror = both[:n], both[n:]
                z = F.normalize(F.normalize(emb, dim=1) + F.normalize(mirror, dim=1), dim=1)
            else:
                emb = self.net(chips)
                z = F.normalize(emb, dim=1)
            logits, proto = self.decide(z)
            return logits, proto, z, emb

    module = {"full": Full, "chips": Chips, "head": Head}[_export_kind(clf)]()
    return module.to("cpu").eval()


def _clean(obj: Any) -> Any:
    """JSON-able copy with non-finite floats as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _export_info(clf, opset: int) -> dict:
    from facerec._version import __version__

    info = _clean(dict(clf.info))
    kind = _export_kind(clf)
    pre = info.get("preprocess") or {}
    dim = int(info["backbone"]["dim"])
    exp: dict[str, Any] = {"format": "onnx", "kind": kind, "opset": int(opset),
                           "facerec_version": __version__, "embedding": None}
    if kind == "full":
        exp.update(input="image", outputs=["logits", "prototype_cosine", "features"],
                   input_shape=["N", 3, int(pre["input_size"]), int(pre["input_size"])])
    else:
        embedding = {"embedder": info["backbone"].get("embedder"),
                     "embedder_kwargs": info["backbone"].get("embedder_kwargs", {}),
                     "mirror_tta": bool(info["backbone"].get("mirror_tta", True))}
        if kind == "chips":
            embedding["chip"] = {"size": 150, "padding": 0.25, "layout": "N, 3 (RGB), 150, 150",
                                 "values": "0..255", "landmarks": "dlib 5-point shape predictor"}
            embedding["note"] = ("chips = dlib.get_face_chip(crop, 5-point fit) "
                                 "(facerec.embed.DlibChipper); features = unit(unit(net(chip)) + "
                                 "unit(net(mirror(chip)))) inside the model")
            exp.update(input="chips", input_shape=["N", 3, 150, 150],
                       outputs=["logits", "prototype_cosine", "features", "embedding"])
        else:
            embedding["note"] = ("features = unit(unit(embed(crop)) + unit(embed(mirror(crop)))) "
                                 "(facerec.model.embed_pil), computed outside the ONNX model")
            exp.update(input="features", input_shape=["N", dim],
                       outputs=["logits", "prototype_cosine"])
        exp["embedding"] = embedding
    info["export"] = exp
    return info


def onnx_model_bytes(clf, opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX model of a :class:`facerec.model.FaceClassifier`, metadata included."""
    import io

    import onnx
    import torch

    graph = _graph(clf)
    info = _export_info(clf, opset)
    exp = info["export"]
    if exp["kind"] in ("full", "chips"):
        example = torch.zeros(2, *exp["input_shape"][1:])
    else:
        example = torch.zeros(2, int(info["backbone"]["dim"]))
    buf = io.BytesIO()
    dyn = {name: {0: "N"} for name in [exp["input"], *exp["outputs"]]}
    kwargs = dict(input_names=[exp["input"]], output_names=exp["outputs"], dynamic_axes=dyn,
                  opset_version=int(opset), do_constant_folding=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            # the TorchScript exporter: no extra dependency (the dynamo one needs onnxscript)
            torch.onnx.export(graph, (example,), buf, dynamo=False, **kwargs)
        except TypeError:  # torch < 2.5 has no ``dynamo`` argument
            buf = io.BytesIO()
            torch.onnx.export(graph, (example,), buf, **kwargs)
    model = onnx.load_from_string(buf.getvalue())
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    entry = model.metadata_props.add()
    entry.key, entry.value = "labels", json.dumps(info["labels"])
    model.producer_name = "facerec"
    model.producer_version = exp["facerec_version"]
    model.doc_string = (f"facerec {exp['kind']} classifier ({info['backbone']['name']}, "
                        f"{len(info['labels'])} people); see metadata_props['facerec']")
    return model.SerializeToString()


# --------------------------------------------------------------------------------------- runtime
def timm_transform(preprocess: dict):
    """Eval preprocessing of a crop for a timm backbone, the same as
    :meth:`facerec.model.FaceClassifier.transform`: PIL crop -> normalised (3, S, S) tensor."""
    from torchvision import transforms as T

    size = int(preprocess["input_size"])
    return T.Compose([T.Resize((size, size)), T.ToTensor(),
                      T.Normalize(preprocess["mean"], preprocess["std"])])


def _providers(device) -> list:
    import onnxruntime as ort

    dev = str(device or "cpu")
    if dev.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(dev.split(":", 1)[1]) if ":" in dev else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxClassifier:
    """A facerec ONNX model on onnxruntime. ``source``: a ``.onnx`` file from ``facerec export``, or
    a facerec checkpoint (exported in memory first). ``labels``, ``threshold``, ``info`` and ``kind``
    (``"full"`` or ``"head"``) come from the model's metadata."""

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
                from facerec.model import load_checkpoint

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
        self._embedder = None
        self._chipper = None

    @property
    def embedder(self):
        if self._embedder is None:
            from facerec.embed import get_embedder

            emb = self.info["export"]["embedding"]
            self._embedder = get_embedder(emb["embedder"], **(emb.get("embedder_kwargs") or {}))
        return self._embedder

    @property
    def chipper(self):
        """dlib's landmark fit and chip cutter (no network) for ``chips`` models."""
        if self._chipper is None:
            from facerec.embed import DlibChipper

            kwargs = self.info["export"]["embedding"].get("embedder_kwargs") or {}
            self._chipper = DlibChipper(margin=float(kwargs.get("margin", 0.2)))
        return self._chipper

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, prototype_cosine) for model inputs: images (full) or unit features (head)."""
        out = self.session.run(["logits", "prototype_cosine"],
                               {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return out[0], out[1]

    def embed_crops(self, crops: Sequence[Any]) -> np.ndarray:
        """Head models: unit features (N, D) of PIL crops with the frozen embedder (NaN rows where
        the crop could not be embedded)."""
        from facerec.model import embed_pil

        emb = self.info["export"]["embedding"]
        return embed_pil(self.embedder, list(crops), bool(emb.get("mirror_tta", True)))

    def run_crops(self, crops: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits (N, K), prototype_cosine (N, K), ok (N,)) for PIL face crops."""
        k = len(self.labels)
        if not crops:
            return np.zeros((0, k)), np.zeros((0, k)), np.zeros(0, bool)
        if self.kind == "chips":  # numpy, PIL, dlib's landmarks and onnxruntime: no torch
            return self._run_chips(list(crops))
        from facerec.model import _to_pil

        crops = [_to_pil(c) for c in crops]
        if self.kind == "head":
            z = self.embed_crops(crops)
            ok = np.isfinite(z).all(axis=1)
            z = np.where(ok[:, None], z, 0.0).astype(np.float32)
            logits, proto = self.run(z)
            return logits, proto, ok
        if self._transform is None:
            self._transform = timm_transform(self.info["preprocess"])
        import torch

        x = torch.stack([self._transform(c) for c in crops]).numpy()
        logits, proto = [], []
        for s in range(0, len(x), 64):
            lo, pr = self.run(x[s:s + 64])
            logits.append(lo)
            proto.append(pr)
        return np.concatenate(logits), np.concatenate(proto), np.ones(len(crops), bool)


    def _run_chips(self, crops: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``chips`` models: dlib cuts the chips, the model does the rest (32 chips a run)."""
        k = len(self.labels)
        chips, rows, _ = self.chipper.chips(crops)
        logits = np.zeros((len(crops), k), dtype=np.float32)
        proto = np.zeros((len(crops), k), dtype=np.float32)
        ok = np.zeros(len(crops), bool)
        if rows:
            x = np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)
            for s in range(0, len(x), 32):
                lo, pr = self.run(x[s:s + 32])
                logits[rows[s:s + 32]], proto[rows[s:s + 32]] = lo, pr
            ok[rows] = True
        return logits, proto, ok


# ---------------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: str
    kind: str              # "full", "chips" (dlib_face: network + head) or "head"
    backbone: str
    input: str
    input_shape: list
    outputs: list
    size_bytes: int
    max_abs_diff: float | None   # torch vs onnxruntime on a test input
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _verify(clf, data: bytes) -> float:
    """Largest |torch - onnxruntime| over logits and prototype cosines on a random input."""
    import torch

    model = OnnxClassifier(data)
    graph = _graph(clf)
    gen = torch.Generator().manual_seed(0)
    if model.kind == "full":
        size = int(model.info["preprocess"]["input_size"])
        x = torch.randn(3, 3, size, size, generator=gen)
    elif model.kind == "chips":
        x = torch.rand(3, 3, 150, 150, generator=gen) * 255
    else:
        x = torch.nn.functional.normalize(
            torch.randn(3, int(model.info["backbone"]["dim"]), generator=gen), dim=1)
    with torch.no_grad():
        ref = graph(x)
    logits, proto = model.run(x.numpy())
    return float(max(np.abs(logits - ref[0].numpy()).max(), np.abs(proto - ref[1].numpy()).max()))


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, *,
                opset: int = DEFAULT_OPSET, verify: bool = True) -> ExportResult:
    """Export a facerec checkpoint to ONNX (default ``out``: the checkpoint with ``.onnx``)."""
    from facerec.model import load_checkpoint

    t0 = time.perf_counter()
    clf = load_checkpoint(checkpoint)
    target = Path(out) if out else Path(checkpoint).with_suffix(".onnx")
    if target.is_dir():
        raise FacerecError(f"--out {target} is a folder: give a file name such as model.onnx")
    if target.resolve() == Path(checkpoint).resolve():
        raise FacerecError(f"--out {target} is the checkpoint itself: give another file name")
    try:
        data = onnx_model_bytes(clf, opset)
    except FacerecError:
        raise
    except Exception as exc:  # noqa: BLE001 - an operator the exporter does not support, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FacerecError(f"cannot export {clf.backbone_name} to ONNX (opset {opset}): "
                           f"{first[:200]}") from None
    diff = _verify(clf, data) if verify else None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        raise FacerecError(f"cannot write {target}: {exc.strerror or exc}") from None
    exp = _export_info(clf, opset)["export"]
    return ExportResult(path=str(target), kind=exp["kind"], backbone=clf.backbone_name,
                        input=exp["input"], input_shape=exp["input_shape"],
                        outputs=exp["outputs"], size_bytes=len(data), max_abs_diff=diff,
                        seconds=time.perf_counter() - t0)


def print_export_summary(result: ExportResult, file=None) -> None:
    import sys

    out = file or sys.stdout
    what = {"full": "the whole classifier",
            "chips": "the whole classifier from the aligned face chip on (dlib's face ResNet "
                     "included; dlib only fits landmarks and cuts the chip)",
            }.get(result.kind, "the classification head (the embedding is computed outside the "
                               "model)")
    shape = "x".join(str(v) for v in result.input_shape)
    print(f"Exported {what} of {result.backbone} to {result.path} "
          f"({result.size_bytes / 1e6:.1f} MB)", file=out)
    print(f"  input {result.input} [{shape}] -> outputs {', '.join(result.outputs)}", file=out)
    if result.max_abs_diff is not None:
        print(f"  checked with onnxruntime: max |torch - onnx| = {result.max_abs_diff:.2e}", file=out)
    print(f"  use it: facerec predict --checkpoint_path {result.path} --image_path PHOTO", file=out)
