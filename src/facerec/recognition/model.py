"""The face classifier: a backbone's unit features, a cosine head, prototypes, the "unknown" rule.

Stable API (used by ``train``, ``sweep``, ``predict``, ``evaluate``, ``export``)::

    from facerec.recognition.model import load_checkpoint
    clf = load_checkpoint("runs/NAME/version_0/checkpoints/epoch=E-step=S.ckpt")   # FaceClassifier
    labels, scores = clf.predict_crops([crop1, crop2])          # "unknown" below clf.threshold
    labels, scores = clf.predict_crops(crops, threshold=0.9)    # override the stored threshold
    preds = clf.classify_crops(crops)                           # [Prediction]: label, score, ...
    clf.labels, clf.threshold, clf.backbone_name, clf.info      # what the checkpoint says

How a face is classified (:meth:`FaceClassifier.predict_features`):

1. The backbone (:mod:`facerec.recognition.backbones`) maps a face crop to a unit feature ``z``:
   a frozen face embedder gives the mean of its embeddings of the crop and of its mirror image
   (test-time augmentation); with ``finetune`` N > 0 its last N levels are the checkpoint's own
   (``FaceClassifier.tail``); a timm model (``resnet18``, ...) is trained end to end.
2. The head (:class:`~facerec.recognition.head.CosineHead`, logits = scale * cos(z, w_c)) picks
   the most likely person.
3. The open-set ``score`` is the cosine between ``z`` and that person's *prototype*: the mean
   feature of their training faces (frozen backbones) or the head's class weight (trained ones).
   Below ``threshold`` the answer is ``unknown`` (:func:`facerec.recognition.decision.decide`).
4. The threshold is calibrated when training (:mod:`facerec.recognition.calibration`).

Checkpoints (their keys, validation and writing) belong to :mod:`facerec.recognition.checkpoint`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.cropspec import CropSpec
from facerec.defaults import DEFAULT_BACKBONE
from facerec.errors import FacerecError
from facerec.images import as_rgb_image
from facerec.recognition.backbones import backbone_for, backbone_of, eval_transform
from facerec.recognition.checkpoint import FORMAT, FORMAT_KEY, Checkpoint
from facerec.recognition.decision import UNKNOWN, decide
from facerec.recognition.features import embed_pil
from facerec.recognition.head import CosineHead
from facerec.safeio import display_path, error_summary

__all__ = ["UNKNOWN", "FaceClassifier", "Prediction", "build_model_config", "load_checkpoint"]


def build_model_config(labels: Sequence[str], backbone: str = DEFAULT_BACKBONE, *,
                       pretrained: bool = False, image_size: int | None = None,
                       scale: float = 16.0, margin: float = 0.1, dropout: float = 0.0,
                       mirror_tta: bool = True, crop: CropSpec | None = None,
                       timm_model: nn.Module | None = None, finetune: int = 0) -> dict:
    """Everything needed to rebuild a :class:`FaceClassifier` (stored in every checkpoint).

    ``crop``: how the training crops were made (``preprocess.crop``, see :mod:`facerec.cropspec`);
    predict crops new faces the same way, and a frozen embedder takes its geometry (the context
    around the face box) from it. ``finetune``: how many of the embedder's last levels are
    trained (0: frozen); their weights are ``tail.*`` in the state dict. Plain JSON-able values
    only, so checkpoints load with ``weights_only=True``.
    """
    from facerec._version import __version__

    kind = backbone_for(backbone, finetune)
    crop = crop or CropSpec()
    bb, extra = kind.config(crop=crop, pretrained=pretrained, image_size=image_size,
                            mirror_tta=mirror_tta, timm_model=timm_model)
    # crop_margin: kept beside the spec for readers of checkpoints from before it existed
    pre: dict[str, Any] = {"crop": crop.to_dict(), "crop_margin": float(crop.margin), **extra}
    return {
        FORMAT_KEY: FORMAT,
        "facerec_version": __version__,
        "labels": [str(x) for x in labels],
        "unknown_label": UNKNOWN,
        "backbone": bb,
        "head": {"type": "cosine", "scale": float(scale), "margin": float(margin),
                 "dropout": float(dropout)},
        "preprocess": pre,
        "threshold": None,
        "calibration": {},
    }


# -------------------------------------------------------------------------------------- classifier
@dataclass
class Prediction:
    """One classified crop. ``label`` is ``"unknown"`` when ``score < threshold``; ``candidate`` is
    the best known person either way. ``score``: cosine to the candidate's prototype (the unit of
    the threshold); ``probability``: the head's softmax probability of the candidate."""

    label: str
    score: float
    candidate: str
    probability: float
    known: bool


class FaceClassifier(nn.Module):
    """Backbone (timm, or a frozen embedder outside the module) + cosine head + prototypes.

    Built from a config of :func:`build_model_config`; buffers ``prototypes`` (K, D, unit rows) and
    ``threshold`` travel in the state dict. ``forward`` takes images (timm) or embedder features.
    """

    def __init__(self, config: dict, timm_model: nn.Module | None = None):
        super().__init__()
        self.config = config
        bb = config["backbone"]
        self.labels: list[str] = list(config["labels"])
        dim, k = int(bb["dim"]), len(self.labels)
        #: the kind of backbone (facerec.recognition.backbones): what the features come from
        self.kind = backbone_of(bb)
        self.backbone = self.kind.network(config, timm_model)
        # --finetune N: the embedder's last N levels (weights from the state dict, or from the
        # training code at the start of a run); the frozen first levels come from the embedder
        self.tail: nn.Module | None = self.kind.tail(config)
        hc = config["head"]
        self.dropout = nn.Dropout(float(hc.get("dropout", 0.0)))
        self.head = CosineHead(dim, k, scale=hc["scale"], margin=hc["margin"])
        self.register_buffer("prototypes", torch.zeros(k, dim))
        thr = config.get("threshold")
        self.register_buffer("threshold_buf", torch.tensor(float("nan") if thr is None else thr))
        self._embedder = None

    # ---- properties
    @property
    def backbone_name(self) -> str:
        return self.config["backbone"]["name"]

    @property
    def trainable_backbone(self) -> bool:
        return self.backbone is not None

    @property
    def finetune(self) -> int:
        """How many of dlib_face's last levels were fine-tuned (0: the frozen network)."""
        return 0 if self.tail is None else len(self.tail.levels)

    def train(self, mode: bool = True) -> FaceClassifier:
        # a fine-tuned embedder holds a copy of the tail: after more training it would be stale
        if self.tail is not None:
            self._embedder = None
        return super().train(mode)

    @property
    def threshold(self) -> float:
        return float(self.threshold_buf)

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.threshold_buf.fill_(float(value))

    @property
    def info(self) -> dict:
        """The checkpoint's ``facerec`` entry (labels, backbone, preprocessing, calibration...)."""
        out = dict(self.config)
        out["threshold"] = self.threshold
        return out

    # ---- features
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length features: backbone(images) for timm, the given embeddings otherwise."""
        if self.tail is not None and x.ndim >= 4:
            return self.tail_features(x)
        z = self.backbone(x) if self.backbone is not None else x
        return F.normalize(z.float(), dim=1)

    def tail_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unit features from the activations entering the fine-tuned levels: (N, C, H, W) (one
        view: a training sample), or (N, V, C, H, W) with V = 2 (crop, mirror: the test-time
        feature, the unit mean of both, as :func:`combine_views`) or 1."""
        assert self.tail is not None
        if x.ndim == 4:
            return F.normalize(self.tail(x).float(), dim=1)
        n, v = x.shape[:2]
        z = F.normalize(self.tail(x.flatten(0, 1)).float(), dim=1).view(n, v, -1)
        return F.normalize(z.sum(dim=1), dim=1)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)), target)

    def set_prototypes(self, prototypes: torch.Tensor) -> None:
        self.prototypes.copy_(F.normalize(prototypes.to(self.prototypes), dim=1))

    def head_prototypes(self) -> torch.Tensor:
        return F.normalize(self.head.weight.detach(), dim=1)

    # ---- crops -> features
    @property
    def embedder(self):
        """The frozen embedder of the features (on the classifier's device); fine-tuned: the
        same inputs through the network with this checkpoint's last levels."""
        if self._embedder is None:
            emb = self.kind.embedder(self.config["backbone"], device=self.prototypes.device)
            self._embedder = emb.with_tail(self.tail) if self.tail is not None else emb
        return self._embedder

    def export_network(self) -> nn.Module:
        """The frozen embedder's whole network (CPU, float32, eval) as this classifier uses it,
        with the fine-tuned last levels when there are: what the ONNX export holds."""
        emb = self.kind.embedder(self.config["backbone"], device="cpu")
        return emb.torch_network(self.tail)

    def transform(self):
        """Eval preprocessing of a crop for timm backbones (PIL -> normalised tensor)."""
        pre = self.config["preprocess"]
        return eval_transform(pre["input_size"], pre["mean"], pre["std"])

    @torch.no_grad()
    def embed_crops(self, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
        """Unit features (N, D) of face crops (PIL images, RGB arrays or paths); NaN rows where a
        frozen embedder could not embed a crop."""
        images = [as_rgb_image(im).image for im in images]
        if not images:
            return torch.zeros(0, int(self.config["backbone"]["dim"]))
        if self.backbone is None:
            return torch.from_numpy(embed_pil(self.embedder, images,
                                              self.config["backbone"].get("mirror_tta", True)))
        was_training = self.training
        self.eval()
        tf = self.transform()
        device = next(self.parameters()).device
        out = []
        for s in range(0, len(images), batch_size):
            x = torch.stack([tf(im) for im in images[s:s + batch_size]]).to(device)
            out.append(self.features(x).cpu())
        self.train(was_training)
        return torch.cat(out)

    # ---- decisions
    @torch.no_grad()
    def head_outputs(self, z: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, prototype cosines, ok) of unit features, numpy: the ONNX model's outputs
        (a feature that is not finite, a crop that could not be embedded, is not ok)."""
        z = z.to(self.prototypes.device).float()
        ok = torch.isfinite(z).all(dim=1)
        z = torch.where(ok[:, None], z, torch.zeros_like(z))
        return (self.head(z).cpu().numpy(), (z @ self.prototypes.T).cpu().numpy(),
                ok.cpu().numpy())

    @torch.no_grad()
    def predict_features(self, z: torch.Tensor, threshold: float | None = None):
        """(candidate index (N,), score (N,), probability (N,), known (N,) bool) for unit features:
        :func:`facerec.recognition.runtime.decide` (the rule of every runtime), as tensors."""
        out = decide(*self.head_outputs(z), self.threshold if threshold is None else threshold)
        return tuple(torch.from_numpy(a).to(self.prototypes.device) for a in out)

    def classify_crops(self, images: Sequence[Any], threshold: float | None = None,
                       batch_size: int = 64) -> list[Prediction]:
        """One :class:`Prediction` per crop, honouring the stored (or given) threshold."""
        z = self.embed_crops(images, batch_size=batch_size)
        if len(z) == 0:
            return []
        idx, score, prob, known = self.predict_features(z, threshold)
        out = []
        for i in range(len(z)):
            cand = self.labels[int(idx[i])]
            out.append(Prediction(label=cand if bool(known[i]) else UNKNOWN,
                                  score=float(score[i]), candidate=cand,
                                  probability=float(prob[i]), known=bool(known[i])))
        return out

    def predict_crops(self, images: Sequence[Any], threshold: float | None = None,
                      batch_size: int = 64) -> tuple[list[str], list[float]]:
        """(labels, confidences): a label per crop (``"unknown"`` below the threshold) and its
        score (cosine to the person's prototype, the unit of the threshold; NaN if unembeddable)."""
        preds = self.classify_crops(images, threshold=threshold, batch_size=batch_size)
        return [p.label for p in preds], [p.score for p in preds]


# ------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: Any, map_location: str | torch.device = "cpu") -> FaceClassifier:
    """A ready-to-use :class:`FaceClassifier` (eval mode) from a facerec checkpoint (a path, or
    a :class:`~facerec.recognition.checkpoint.Checkpoint` already read)."""
    ckpt = path if isinstance(path, Checkpoint) else Checkpoint.read(path)
    shown = display_path(ckpt.path) if ckpt.path is not None else "checkpoint"
    info = dict(ckpt.info)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = FaceClassifier(info)
    except FacerecError as exc:
        raise FacerecError(f"{shown}: {exc}") from None
    try:
        model.load_state_dict(ckpt.state)
    except RuntimeError as exc:
        raise FacerecError(f"{shown}: weights do not match the stored model "
                           f"({error_summary(exc)})") from None
    if ckpt.threshold is not None:
        model.threshold = ckpt.threshold
    return model.to(map_location).eval()
