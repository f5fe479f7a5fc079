"""``facerec export``: a checkpoint as an ONNX model that onnxruntime runs without facerec's torch code.

Library API::

    from facerec.recognition.export import export_onnx
    result = export_onnx("runs/NAME/version_0/checkpoints/best.ckpt", "model.onnx")

The model runs on onnxruntime with :class:`facerec.recognition.runtime.OnnxClassifier` (``facerec predict
--checkpoint_path model.onnx``); this module only writes it, and checks it against torch.

What is exported depends on the backbone:

* a timm backbone (``resnet18``, ...): the whole classifier, ``image`` (N, 3, S, S), the crop
  resized to S x S and normalised with the stored mean/std -> ``logits`` (N, K) = scale * cosine to
  the head's class weights, ``prototype_cosine`` (N, K) = cosine to each person's prototype (the
  open-set score), ``features`` (N, D) unit feature;
* ``dlib_face``: the whole classifier from the aligned face chip on, dlib's face ResNet included
  (:mod:`facerec.recognition.dlib_net`): ``chips`` (N, 3, 150, 150), RGB 0..255 as ``dlib.get_face_chip``
  cuts them -> ``logits``, ``prototype_cosine``, ``features`` (N, 128) the unit mean of the
  descriptors of the chip and its mirror image (computed in the graph, one batch), and
  ``embedding`` (N, 128) the chip's raw dlib descriptor. Only the chip itself (dlib's 5-point
  landmark fit and ``get_face_chip``, :class:`facerec.recognition.embed.DlibChipper`) is made outside the model;
  no torch and no dlib network are needed to run it;
* another frozen embedder (not a torch model): the head only, ``features`` (N, D) -> ``logits``,
  ``prototype_cosine``; the runtime computes the features itself. (Models exported
  from ``dlib_face`` checkpoints by facerec < 0.2 are of this kind and still run.)

The decision is :func:`facerec.recognition.runtime.decide`, as on torch: the candidate is ``argmax(logits)``,
its score ``prototype_cosine[candidate]``, ``unknown`` below the threshold. The model carries
everything needed to use it in its ONNX metadata: ``metadata_props["facerec"]`` is the
checkpoint's ``facerec`` entry (labels, threshold, preprocessing, backbone) plus ``export`` (kind,
input and output names, facerec version).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import FacerecError
from facerec.recognition.runtime import METADATA_KEY

__all__ = ["ExportResult", "export_onnx", "onnx_model_bytes", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17


# ------------------------------------------------------------------------------------------ graphs
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
            self.net = clf.export_network()  # the embedder's weights, or the --finetune ones
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

    module = {"full": Full, "chips": Chips, "head": Head}[clf.kind.export_kind]()
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
    kind = clf.kind.export_kind
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
            side = int(clf.kind.embedder_cls.network_input_size)
            embedding["chip"] = {"size": side, "layout": f"N, 3 (RGB), {side}, {side}",
                                 "values": "0..255",
                                 "cut_by": f"{embedding['embedder']}'s input_cutter"}
            embedding["note"] = ("chips = the embedder's network input cut from the crop "
                                 "(facerec.recognition.embed.Embedder.input_cutter; dlib_face: "
                                 "dlib.get_face_chip after its 5-point fit); features = "
                                 "unit(unit(net(chip)) + unit(net(mirror(chip)))) inside the model")
            exp.update(input="chips", input_shape=["N", 3, side, side],
                       outputs=["logits", "prototype_cosine", "features", "embedding"])
        else:
            embedding["note"] = ("features = unit(unit(embed(crop)) + unit(embed(mirror(crop)))) "
                                 "(facerec.recognition.features.embed_pil), computed outside the ONNX model")
            exp.update(input="features", input_shape=["N", dim],
                       outputs=["logits", "prototype_cosine"])
        exp["embedding"] = embedding
    info["export"] = exp
    return info


def onnx_model_bytes(clf, opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX model of a :class:`facerec.recognition.model.FaceClassifier`, metadata included."""
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

    from facerec.recognition.onnx_runtime import OnnxClassifier

    model = OnnxClassifier(data)
    graph = _graph(clf)
    gen = torch.Generator().manual_seed(0)
    if model.kind == "full":
        size = int(model.info["preprocess"]["input_size"])
        x = torch.randn(3, 3, size, size, generator=gen)
    elif model.kind == "chips":
        side = int(model.info["export"]["input_shape"][-1])
        x = torch.rand(3, 3, side, side, generator=gen) * 255
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
    from facerec.recognition.model import load_checkpoint

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
    from facerec.hints import command_line

    print("  use it: " + command_line("predict", "PHOTO", "--checkpoint_path", str(result.path)),
          file=out)
