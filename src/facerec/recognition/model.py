"""The face classifier: backbones, cosine head, prototypes, the "unknown" threshold, checkpoints.

Stable API (used by ``train``, ``sweep``, ``predict``, ``evaluate``, ``export``)::

    from facerec.recognition.model import load_checkpoint
    clf = load_checkpoint("runs/NAME/version_0/checkpoints/epoch=E-step=S.ckpt")   # FaceClassifier
    labels, scores = clf.predict_crops([crop1, crop2])          # "unknown" below clf.threshold
    labels, scores = clf.predict_crops(crops, threshold=0.9)    # override the stored threshold
    preds = clf.classify_crops(crops)                           # [Prediction]: label, score, ...
    clf.labels, clf.threshold, clf.backbone_name, clf.info      # what the checkpoint says

How a face is classified (:meth:`FaceClassifier.predict_features`):

1. The backbone maps a face crop to a unit-length feature ``z``. ``dlib_face`` (and any embedder of
   :mod:`facerec.recognition.embed`) is frozen: its descriptor of the crop and of its mirror image, averaged
   (test-time augmentation). With ``finetune`` N > 0 (``dlib_face`` only), its last N levels are
   the checkpoint's own (``FaceClassifier.tail``): the embedder runs dlib's first levels, then
   them. A timm model (``resnet18``, ``efficientnet_b0``, ...) is fine-tuned.
2. The head, a cosine classifier (logits = scale * cos(z, w_c)), picks the most likely person.
3. The open-set ``score`` is the cosine similarity between ``z`` and that person's *prototype*: the
   mean feature of their training faces (frozen backbones) or the head's class weight (trained
   backbones). Below ``threshold`` the answer is ``unknown``.
4. The threshold is calibrated when training (:func:`calibrate_threshold`): each person is held out
   in turn and the scores their faces get against everyone else's prototype are the impostor
   scores; the threshold is the lowest one whose false-positive identification rate (FPIR) stays
   under the target (1%) with 99% confidence, resampling *people* (a look-alike produces many high
   impostor scores at once, so people, not photos, are the unit of chance). With a frozen backbone the hold-out is exact (prototypes are plain
   means); with a trained backbone it is an estimate, since the features were trained on everyone.

Checkpoints are Lightning checkpoints with a ``"facerec"`` entry (:data:`FORMAT_KEY` = 1, labels,
backbone and its settings, preprocessing, threshold, calibration, facerec version) and load with
``torch.load(path, weights_only=True)``. :func:`load_checkpoint` rejects anything else with a
one-line :class:`~facerec.errors.FacerecError`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.cropspec import CropSpec
from facerec.errors import FacerecError
from facerec.images import as_rgb_image
from facerec.recognition.runtime import decide, eval_transform
from facerec.safeio import display_path, first_line

__all__ = [
    "FORMAT",
    "FORMAT_KEY",
    "UNKNOWN",
    "DEFAULT_BACKBONE",
    "CosineHead",
    "FaceClassifier",
    "Prediction",
    "backbone_kind",
    "build_model_config",
    "calibrate_threshold",
    "load_checkpoint",
    "read_checkpoint",
    "embed_crop_files",
]

FORMAT = 1
FORMAT_KEY = "facerec_format"
UNKNOWN = "unknown"
DEFAULT_BACKBONE = "dlib_face"
#: open-set threshold used when a dataset has a single person (nobody to calibrate against): the
#: cosine to the person's prototype. dlib_face: measured on LFW-dev pairs (~0.6% false accepts,
#: ~0.5% false rejects), the analogue of face_recognition's 0.6 euclidean tolerance.
PRIOR_THRESHOLDS = {"dlib_face": 0.93}
FALLBACK_PRIOR_THRESHOLD = 0.9


# ------------------------------------------------------------------------------------- backbones
def _embedders() -> list[str]:
    from facerec.recognition.embed import available_embedders

    return available_embedders()


def backbone_kind(name: str) -> str:
    """``"embedder"`` (a frozen :mod:`facerec.recognition.embed` model) or ``"timm"``; unknown names raise."""
    if not isinstance(name, str) or not name:
        raise FacerecError(f"unknown backbone {name!r}")
    if name in _embedders():
        return "embedder"
    import timm

    arch = name.split(".", 1)[0]
    if timm.is_model(name) or timm.is_model(arch):
        return "timm"
    close = timm.list_models(f"*{arch[:6]}*")[:4] if len(arch) >= 3 else []
    hint = f"; close timm names: {', '.join(close)}" if close else ""
    raise FacerecError(
        f"unknown backbone {name!r}: use {' or '.join(_embedders())} (frozen face embedding) or "
        f"a timm model name such as resnet18, resnet200d, efficientnet_b0{hint}")


def create_timm_model(name: str, pretrained: bool = False) -> nn.Module:
    """A timm feature extractor (``num_classes=0``); ImageNet weights with ``pretrained``."""
    import timm

    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0)
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:  # noqa: BLE001 - no network, no weights for this model, hub errors
        reason = error_summary(exc)
        if "LocalEntryNotFound" in type(exc).__name__ or "connection" in reason.lower():
            reason = "not in the Hugging Face cache and cannot be downloaded (no network?)"
        raise FacerecError(
            f"cannot load ImageNet weights for {name}: {reason}; train without "
            "--pretrained (random init), or fill the Hugging Face cache on a machine with "
            "network and copy it here") from None


def build_model_config(labels: Sequence[str], backbone: str = DEFAULT_BACKBONE, *,
                       pretrained: bool = False, image_size: int | None = None,
                       scale: float = 16.0, margin: float = 0.1, dropout: float = 0.0,
                       embedder_kwargs: dict | None = None, mirror_tta: bool = True,
                       crop: CropSpec | None = None, timm_model: nn.Module | None = None,
                       finetune: int = 0) -> dict:
    """Everything needed to rebuild a :class:`FaceClassifier` (stored in every checkpoint).

    ``crop``: how the training crops were made (``preprocess.crop``, see :mod:`facerec.cropspec`);
    predict crops new faces the same way. ``finetune``: how many of ``dlib_face``'s last residual
    levels are trained (0: frozen); their weights are ``tail.*`` in the state dict. Plain JSON-able
    values only, so checkpoints load with ``weights_only=True``.
    """
    from facerec._version import __version__

    labels = [str(x) for x in labels]
    kind = backbone_kind(backbone)
    finetune = int(finetune or 0)
    if finetune and backbone != "dlib_face":
        raise FacerecError(f"--finetune {finetune}: only the dlib_face backbone has levels to "
                           f"unfreeze ({backbone} is " + ("trained end to end already)"
                                                          if kind == "timm" else "frozen)"))
    if finetune:
        from facerec.recognition.dlib_net import LEVELS

        if not 0 < finetune <= len(LEVELS):
            raise FacerecError(f"--finetune {finetune}: dlib_face has {len(LEVELS)} residual "
                               f"levels (use 0 to {len(LEVELS)})")
    bb: dict[str, Any] = {"name": backbone, "kind": kind}
    crop = crop or CropSpec()
    # crop_margin: kept beside the spec for readers of checkpoints from before it existed
    pre: dict[str, Any] = {"crop": crop.to_dict(), "crop_margin": float(crop.margin)}
    if kind == "embedder":
        from facerec.recognition.embed import get_embedder

        emb = get_embedder(backbone, **(embedder_kwargs or {}))
        kwargs = dict(embedder_kwargs or {})
        for attr in ("margin", "num_jitters"):
            if hasattr(emb, attr):
                kwargs.setdefault(attr, getattr(emb, attr))
        bb.update(embedder=backbone, embedder_kwargs=kwargs, dim=int(emb.dim),
                  mirror_tta=bool(mirror_tta), trainable=finetune > 0, finetune=finetune,
                  embedder_version=str(getattr(emb, "version", "")))
        pre.update(input="face crop (RGB)", mirror_tta=bool(mirror_tta))
    else:
        import timm

        model = timm_model if timm_model is not None else create_timm_model(backbone, False)
        data_cfg = timm.data.resolve_model_data_config(model)
        size = int(image_size or 160)
        bb.update(dim=int(model.num_features), pretrained=bool(pretrained), trainable=True,
                  timm_version=timm.__version__)
        pre.update(input_size=size, mean=[float(v) for v in data_cfg["mean"]],
                   std=[float(v) for v in data_cfg["std"]], interpolation="bilinear")
    return {
        FORMAT_KEY: FORMAT,
        "facerec_version": __version__,
        "labels": labels,
        "unknown_label": UNKNOWN,
        "backbone": bb,
        "head": {"type": "cosine", "scale": float(scale), "margin": float(margin),
                 "dropout": float(dropout)},
        "preprocess": pre,
        "threshold": None,
        "calibration": {},
    }


# ------------------------------------------------------------------------------------------ head
class CosineHead(nn.Module):
    """Normalised linear classifier: logits = scale * cos(z, w_c), minus ``margin`` on the true
    class while training (CosFace). Suited to few images per person: every class weight is a
    direction, so a person with 4 photos is not dwarfed by one with 400."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0, margin: float = 0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * (1.0 / math.sqrt(dim)))
        self.scale = float(scale)
        self.margin = float(margin)

    def cosine(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, z: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(z)
        if target is not None and self.margin:
            cos = cos - self.margin * F.one_hot(target, cos.shape[1]).to(cos.dtype)
        return self.scale * cos

    @torch.no_grad()
    def imprint(self, prototypes: torch.Tensor) -> None:
        """Initialise each class weight at its prototype (weight imprinting)."""
        self.weight.copy_(F.normalize(prototypes.to(self.weight), dim=1))


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
        if bb["kind"] == "timm":
            self.backbone = timm_model if timm_model is not None else create_timm_model(bb["name"])
        else:
            self.backbone = None
        # --finetune N: dlib_face's last N levels (weights from the state dict, or from the
        # training code at the start of a run); the frozen first levels come from the embedder
        self.tail: nn.Module | None = None
        if int(bb.get("finetune") or 0) > 0:
            from facerec.recognition.dlib_net import DlibTail

            self.tail = DlibTail(int(bb["finetune"]))
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
        if self._embedder is None:
            from facerec.recognition.embed import get_embedder

            bb = self.config["backbone"]
            # on the classifier's device (load_checkpoint's map_location)
            emb = get_embedder(bb["embedder"], device=str(self.prototypes.device),
                               **bb.get("embedder_kwargs", {}))
            # fine-tuned: the same chips through the network with this checkpoint's last levels
            self._embedder = emb.with_tail(self.tail) if self.tail is not None else emb
        return self._embedder

    def dlib_network(self) -> nn.Module:
        """dlib_face's whole network (CPU, float32, eval) as this classifier uses it: dlib's
        weights, with the fine-tuned last levels when there are (the ONNX export's network)."""
        from facerec.recognition.dlib_net import load_dlib_resnet

        net = load_dlib_resnet()
        return (net.with_tail(self.tail) if self.tail is not None else net).float().eval()

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


# ------------------------------------------------------------------------------- frozen embedders
def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (v / n).astype(np.float32)


def combine_views(orig: np.ndarray, mirror: np.ndarray | None) -> np.ndarray:
    """The views a frozen backbone offers per crop, unit length: (N, 3, D) = crop, mirror, mean
    (the mean is the test-time feature); (N, 1, D) without a mirror."""
    o = _unit(np.asarray(orig, dtype=np.float32))
    if mirror is None:
        return o[:, None, :]
    m = _unit(np.asarray(mirror, dtype=np.float32))
    return np.stack([o, m, _unit(o + m)], axis=1)


def embed_pil(embedder, images: Sequence[Any], mirror_tta: bool = True) -> np.ndarray:
    """Test-time unit features (N, D) of PIL crops with a frozen embedder (NaN rows on failure):
    the unit mean of the crop's and its mirror image's embeddings, both computed in one batch
    (:meth:`facerec.recognition.embed.Embedder.embed_views`)."""
    if not mirror_tta:
        return combine_views(embedder.embed_images(list(images)), None)[:, -1]
    views, _ = embedder.embed_views(list(images))
    return combine_views(views[:, 0], views[:, 1])[:, -1]


def embed_crop_files(paths: Sequence[str | os.PathLike], embedder, *, mirror: bool = True,
                     cache: Any = None, progress: bool = True) -> np.ndarray:
    """Raw embeddings of crop files and of their mirror images: (N, 2, D) (or (N, 1, D) without
    ``mirror``), NaN where a crop could not be embedded. Both views are computed in one batch and
    cached by the crop's sha256 (the mirror under the embedder's cache id + ``-mirror``), so a
    rerun costs a cache lookup."""
    from facerec.recognition.embed import EmbeddingCache, embed_files

    store = cache if isinstance(cache, EmbeddingCache) else (
        EmbeddingCache(cache) if cache not in (None, True, False) else EmbeddingCache())
    paths = [Path(p) for p in paths]
    if not mirror:
        return embed_files(paths, embedder, cache=store, progress=progress, on_error="nan")[:, None]
    out = embed_files(paths, embedder, cache=store, progress=progress, on_error="nan", mirror=True)
    # a crop whose mirror failed keeps its own embedding for both views
    bad = ~np.isfinite(out[:, 1]).all(axis=1)
    out[bad, 1] = out[bad, 0]
    return out


# ----------------------------------------------------------------------------------- calibration
def _fpir_upper(t: float, groups: list[np.ndarray], draws: np.ndarray, sizes: np.ndarray,
                confidence: float) -> tuple[float, float]:
    """(pooled FPIR, its ``confidence`` upper bound over people resampled) at threshold t."""
    hits = np.array([(g >= t).sum() for g in groups], dtype=np.float64)
    pooled = hits.sum() / max(sizes.sum(), 1)
    if draws.size == 0:
        return pooled, pooled
    boot = (draws @ hits) / np.maximum(draws @ sizes, 1)
    return pooled, float(np.quantile(boot, confidence))


def calibrate_threshold(features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                        prototypes: torch.Tensor | np.ndarray, *,
                        proto_sums: np.ndarray | None = None, proto_counts: np.ndarray | None = None,
                        member: np.ndarray | None = None, predicted: np.ndarray | None = None,
                        target_fpir: float = 0.01, confidence: float = 0.99, bootstrap: int = 1000,
                        seed: int = 0, prior: float | None = None) -> dict:
    """Open-set threshold on the cosine-to-prototype score, by holding each person out in turn.

    ``features`` (N, D) unit rows with ``labels`` (N,); ``prototypes`` (K, D) unit rows. Impostor
    scores: each face against every *other* person's prototype (the best one). Genuine scores:
    each face against its own prototype, recomputed without the face itself when it is a
    ``member`` of the prototype (``proto_sums``/``proto_counts`` are the unnormalised sums and
    counts). ``predicted``: the head's labels, to count misidentified genuine faces.
    The threshold is the lowest at which the FPIR is <= ``target_fpir`` with ``confidence``, people
    being resampled (``bootstrap`` draws). With fewer than two people there are no impostors and
    ``prior`` is used. Returns a JSON-able dict (``threshold``, ``est_fpir``, ``est_fnir``, ...).
    """
    z = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    P = np.asarray(prototypes, dtype=np.float64)
    keep = np.isfinite(z).all(axis=1)
    z, y = z[keep], y[keep]
    if member is not None:
        member = np.asarray(member, bool)[keep]
    if predicted is not None:
        predicted = np.asarray(predicted)[keep]
    k = P.shape[0]
    n = len(z)
    base = {"method": "hold-out-person", "target_fpir": float(target_fpir),
            "confidence": float(confidence), "n_faces": int(n), "n_people": int(k)}
    if n == 0:
        return {**base, "threshold": float(prior if prior is not None else FALLBACK_PRIOR_THRESHOLD),
                "method": "prior", "reason": "no faces to calibrate on"}
    S = z @ P.T  # (n, k)
    genuine = S[np.arange(n), y].copy()
    if member is not None and proto_sums is not None and proto_counts is not None:
        sums = np.asarray(proto_sums, dtype=np.float64)
        counts = np.asarray(proto_counts, dtype=np.float64)
        m = member & (counts[y] > 1)
        loo = sums[y[m]] - z[m]
        loo /= np.maximum(np.linalg.norm(loo, axis=1, keepdims=True), 1e-12)
        genuine[m] = (z[m] * loo).sum(axis=1)
        # a face that is its person's only example has no held-out genuine score
        single = member & (counts[y] <= 1)
        genuine[single] = np.nan
    correct = np.ones(n, bool) if predicted is None else (predicted == y)
    if k < 2:
        t = float(prior if prior is not None else FALLBACK_PRIOR_THRESHOLD)
        g = genuine[np.isfinite(genuine)]
        return {**base, "threshold": t, "method": "prior",
                "reason": "a single person: no impostors to calibrate on",
                "est_fnir": float(np.mean(g < t)) if len(g) else None, "n_genuine": int(len(g))}
    Si = S.copy()
    Si[np.arange(n), y] = -np.inf
    impostor = Si.max(axis=1)
    people = np.unique(y)
    groups = [np.sort(impostor[y == p]) for p in people]
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    rng = np.random.default_rng(seed)
    if len(people) >= 2 and bootstrap > 0:
        picks = rng.integers(0, len(people), size=(bootstrap, len(people)))
        draws = np.zeros((bootstrap, len(people)))
        np.add.at(draws, (np.repeat(np.arange(bootstrap), len(people)), picks.ravel()), 1.0)
    else:
        draws = np.zeros((0, len(people)))
    cands = np.unique(np.concatenate([impostor, [impostor.max() + 1e-6]]))
    cands = np.minimum(cands + 1e-6, 1.0 + 1e-6)
    lo, hi = 0, len(cands) - 1  # the last candidate (above every impostor) always qualifies
    while lo < hi:
        mid = (lo + hi) // 2
        if _fpir_upper(cands[mid], groups, draws, sizes, confidence)[1] <= target_fpir:
            hi = mid
        else:
            lo = mid + 1
    t = float(cands[lo])
    pooled, upper = _fpir_upper(t, groups, draws, sizes, confidence)
    ok = np.isfinite(genuine)
    fnir = float(np.mean(~((genuine[ok] >= t) & correct[ok]))) if ok.any() else None
    return {**base, "threshold": t, "est_fpir": float(pooled), "est_fpir_upper": float(upper),
            "est_fnir": fnir, "n_impostor": int(n), "n_genuine": int(ok.sum()),
            "impostor_max": float(impostor.max()),
            "genuine_median": float(np.median(genuine[ok])) if ok.any() else None}


# ------------------------------------------------------------------------------------- checkpoints
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def error_summary(exc: BaseException, limit: int = 200) -> str:
    """One whole, printable line saying why ``exc`` happened: terminal escapes removed (a file
    can carry them into an error), the line that names the cause preferred over a preamble (torch's
    "Weights only load failed. In PyTorch 2.6 ..." is followed by the unsupported global), a
    heading ending in ':' joined to what follows, and a long line shortened at a word boundary
    with '...' rather than cut mid-word."""
    text = _ANSI.sub("", str(exc))
    lines = [first_line(Exception(line), limit=10 ** 6) for line in text.splitlines()
             if line.strip()]
    if not lines:
        return type(exc).__name__
    cause = next((line for line in lines if re.search(r"unsupported global|GLOBAL ", line, re.I)),
                 None)
    line = cause or lines[0]
    if cause is None and line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1].strip()}"
    line = line.strip()
    if len(line) <= limit:
        return line
    cut = line[: limit - 4]
    space = max(cut.rfind(" "), cut.rfind(","))
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + " ..."


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict of a facerec checkpoint (``weights_only=True``), validated."""
    p = Path(path)
    if not p.is_file():
        raise FacerecError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors, unsafe globals
        raise FacerecError(f"{display_path(p)} is not a facerec checkpoint (cannot load it "
                           f"safely: {error_summary(exc)})") from None
    info = ckpt.get("facerec") if isinstance(ckpt, dict) else None
    if not isinstance(info, dict) or FORMAT_KEY not in info:
        raise FacerecError(f"{p} is not a facerec checkpoint (no facerec metadata: trained "
                           "elsewhere?); train one with `facerec train`")
    fmt = info.get(FORMAT_KEY)
    if not isinstance(fmt, int) or fmt > FORMAT:
        from facerec._version import __version__

        raise FacerecError(f"{p} has checkpoint format {fmt!r}, newer than this facerec "
                           f"{__version__} reads ({FORMAT}): upgrade facerec")
    if "state_dict" not in ckpt or not info.get("labels"):
        raise FacerecError(f"{p} is an incomplete facerec checkpoint (no weights or labels)")
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> FaceClassifier:
    """A ready-to-use :class:`FaceClassifier` (eval mode) from a facerec checkpoint."""
    ckpt = read_checkpoint(path)
    info = dict(ckpt["facerec"])
    try:
        backbone_kind(info["backbone"]["name"])
    except FacerecError as exc:
        raise FacerecError(f"{path}: {exc}") from None
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FaceClassifier(info)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise FacerecError(f"{display_path(path)}: weights do not match the stored model "
                           f"({error_summary(exc)})") from None
    if info.get("threshold") is not None:
        model.threshold = float(info["threshold"])
    return model.to(map_location).eval()
