"""Backbones: where a classifier's features come from, one strategy per kind.

A checkpoint's ``backbone`` entry names its backbone (``name``) and its kind (``kind``); this
module is the only place that reads the kind. Everything that depends on it (how training feeds
the model, the default learning rate, how prototypes and the threshold are calibrated, what an
ONNX export holds, whether one person is enough) is a property of the :class:`Backbone` it maps
to::

    backbone = backbone_for("dlib_face")            # a frozen face embedder: FrozenEmbedder
    backbone = backbone_for("dlib_face", finetune=2)  # its last 2 levels trained: TunedEmbedder
    backbone = backbone_for("resnet18")             # any timm model, trained end to end
    backbone = backbone_of(checkpoint_info["backbone"])

Kinds are a registry (:data:`BACKBONE_KINDS`): ``"embedder"`` (the frozen face models of
:mod:`facerec.recognition.embed`, tuned when ``finetune`` > 0) and ``"timm"``. Adding a face model
is one file and one registry line in :mod:`facerec.recognition.embed`; adding a kind, one class
here.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from facerec.cropspec import CropSpec
from facerec.errors import FacerecError
from facerec.registry import Registry
from facerec.safeio import error_summary

__all__ = ["BACKBONE_KINDS", "Backbone", "FrozenEmbedder", "TunedEmbedder", "TimmBackbone",
           "available_backbones", "backbone_for", "backbone_of", "create_timm_model",
           "eval_transform"]

BACKBONE_KINDS = Registry("backbone kind")


class Backbone(abc.ABC):
    """One kind of backbone (see the module docstring). ``name`` is the model's name."""

    #: recorded in the checkpoint as ``backbone.kind``
    kind: ClassVar[str]
    #: what training feeds the model, one of :data:`facerec.training.data.SOURCES`' keys:
    #: ``features`` (cached embeddings of each crop and its mirror image), ``activations``
    #: (cached activations entering the tuned levels) or ``images`` (augmented crops)
    data: ClassVar[str]
    #: prototypes are the means of each person's features, so calibration can hold each face out
    #: exactly; otherwise they are the trained head's class weights (an estimate)
    prototypes_are_means: ClassVar[bool]
    #: a frozen network: enrolment may imprint new people as plain feature means
    frozen: ClassVar[bool]
    #: trains a person-vs-unknown model from a single person (on a prior threshold)
    single_person: ClassVar[bool]
    default_learning_rate: ClassVar[float]
    #: training's batches are tiny matrix products: one intra-op thread beats several
    single_thread_training: ClassVar[bool] = False
    #: the last incomplete training batch is dropped (batch norm fails on a batch of one)
    drops_last_batch: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # ---- checkpoint config
    @abc.abstractmethod
    def config(self, *, crop: CropSpec, pretrained: bool = False, image_size: int | None = None,
               mirror_tta: bool = True, timm_model: Any = None) -> tuple[dict, dict]:
        """The checkpoint's ``backbone`` entry and this kind's ``preprocess`` items."""

    @property
    def prior_threshold(self) -> float | None:
        """The unknown threshold of a single-person model (None: the generic fallback)."""
        return None

    # ---- modules of the classifier
    def create_network(self, pretrained: bool = False):
        """A new trainable network for training (None: the features come from a frozen model)."""
        return None

    def network(self, config: dict, timm_model: Any = None):
        """The trainable network of the classifier (None: features come from outside it)."""
        return None

    def tail(self, config: dict):
        """The fine-tuned last levels of a frozen network (None: none)."""
        return None

    @property
    def export_kind(self) -> str:
        """What ``facerec export`` writes: ``full`` (crop pixels in), ``chips`` (the embedder's
        network input in, the network inside) or ``head`` (features in)."""
        return "head"

    # ---- training
    def default_num_workers(self) -> int:
        return 0

    def learning_rate_multiplier(self, pretrained: bool) -> float:
        """The backbone's learning rate relative to the head's."""
        return 1.0

    def training_warnings(self, *, pretrained: bool, backbone_lr: float | None) -> list[str]:
        """Options that do not apply to this backbone, said once before training."""
        out = []
        if backbone_lr is not None:
            out.append("--backbone_lr ignored: it is the learning rate of --finetune's levels")
        return out


# ---------------------------------------------------------------------------------------- embedders
@BACKBONE_KINDS.register("embedder")
class FrozenEmbedder(Backbone):
    """A face embedder of :mod:`facerec.recognition.embed`, frozen: each crop (and its mirror
    image) is embedded once and cached, so an epoch only trains the head."""

    kind = "embedder"
    data = "features"
    prototypes_are_means = True
    frozen = True
    single_person = True
    default_learning_rate = 1e-2
    single_thread_training = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        from facerec.recognition.embed import embedder_class

        self.embedder_cls = embedder_class(name)

    @property
    def prior_threshold(self) -> float | None:
        return self.embedder_cls.prior_threshold

    @property
    def export_kind(self) -> str:
        return "chips" if self.embedder_cls.network_input_size else "head"

    def new_work_crop(self, detector: str | None = None) -> CropSpec:
        """The crop that new work cuts for this embedder (its ``crop``), found by ``detector``
        (default: :data:`facerec.defaults.DEFAULT_DETECTOR`)."""
        from facerec.defaults import DEFAULT_DETECTOR

        crop = self.embedder_cls.crop
        return CropSpec(crop.size, crop.margin, crop.align, {"name": detector or DEFAULT_DETECTOR})

    def embedder_kwargs(self, crop: CropSpec, given: dict | None = None) -> dict:
        """The embedder's options for crops made by ``crop``: its geometry (the context margin
        around the face box) comes from the crop spec, unless given."""
        kwargs = dict(given or {})
        if "margin" in self.embedder_cls.settings:
            kwargs.setdefault("margin", float(crop.margin))
        return kwargs

    def embedder(self, config: dict | None = None, *, crop: CropSpec | None = None,
                 device: Any = "auto"):
        """The embedder of a checkpoint's ``backbone`` entry (its recorded options), or for
        crops made by ``crop``; loaded once per process."""
        from facerec.recognition.embed import get_embedder

        kwargs = dict((config or {}).get("embedder_kwargs") or
                      self.embedder_kwargs(crop or CropSpec()))
        return get_embedder(self.name, device=str(device), **kwargs)

    def config(self, *, crop, pretrained=False, image_size=None, mirror_tta=True, timm_model=None):
        emb = self.embedder_cls
        bb = {"name": self.name, "kind": self.kind, "embedder": self.name,
              "embedder_kwargs": self.embedder_kwargs(crop), "dim": int(emb.dim),
              "mirror_tta": bool(mirror_tta), "trainable": False, "finetune": 0,
              "embedder_version": str(emb.version)}
        return bb, {"input": "face crop (RGB)", "mirror_tta": bool(mirror_tta)}

    def training_warnings(self, *, pretrained, backbone_lr):
        out = super().training_warnings(pretrained=pretrained, backbone_lr=backbone_lr)
        if pretrained:
            out.insert(0, f"--pretrained ignored: {self.name} is a frozen, already trained face "
                          "embedding")
        return out


class TunedEmbedder(FrozenEmbedder):
    """A frozen embedder whose last ``finetune`` levels train (``--finetune N``): their input
    activations are computed once per crop and mirror image, and each epoch runs only them."""

    data = "activations"
    frozen = False
    single_thread_training = False  # the tuned levels are convolutions: every core helps

    def __init__(self, name: str, finetune: int) -> None:
        super().__init__(name)
        levels = int(self.embedder_cls.finetune_levels)
        if not levels:
            raise FacerecError(f"--finetune {finetune}: {_tunable()} has levels to unfreeze "
                               f"({name} is frozen)")
        if not 0 < int(finetune) <= levels:
            raise FacerecError(f"--finetune {finetune}: {name} has {levels} residual levels (use "
                               f"0 to {levels})")
        self.finetune = int(finetune)

    @property
    def export_kind(self) -> str:
        return "chips"

    def config(self, *, crop, pretrained=False, image_size=None, mirror_tta=True, timm_model=None):
        bb, pre = super().config(crop=crop, mirror_tta=mirror_tta)
        bb.update(trainable=True, finetune=self.finetune)
        return bb, pre

    def tail(self, config: dict):
        return self.embedder_cls.finetune_tail(self.finetune)

    def initial_tail_state(self) -> dict:
        """The tuned levels' weights at the start of training: the embedder's own."""
        return self.embedder_cls.finetune_tail(self.finetune, pretrained=True).state_dict()

    def training_warnings(self, *, pretrained, backbone_lr):
        return super().training_warnings(pretrained=pretrained, backbone_lr=None)


# --------------------------------------------------------------------------------------------- timm
def create_timm_model(name: str, pretrained: bool = False):
    """A timm feature extractor (``num_classes=0``); ImageNet weights with ``pretrained``."""
    import timm

    if not (timm.is_model(name) or timm.is_model(name.split(".", 1)[0])):  # e.g. a checkpoint's
        raise FacerecError(f"unknown timm model {name!r} (not in timm {timm.__version__})")
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


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]):
    """A crop (PIL) as a timm backbone sees it at test time: resized to size x size, normalised."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((int(size), int(size))), T.ToTensor(), T.Normalize(mean, std)])


@BACKBONE_KINDS.register("timm")
class TimmBackbone(Backbone):
    """Any timm model (``resnet18``, ``resnet200d``, ``efficientnet_b0``...), trained end to end
    on augmented crops."""

    kind = "timm"
    data = "images"
    prototypes_are_means = False
    frozen = False
    single_person = False
    default_learning_rate = 1e-3
    drops_last_batch = True

    def config(self, *, crop, pretrained=False, image_size=None, mirror_tta=True, timm_model=None):
        import timm

        model = timm_model if timm_model is not None else create_timm_model(self.name, False)
        data_cfg = timm.data.resolve_model_data_config(model)
        bb = {"name": self.name, "kind": self.kind, "dim": int(model.num_features),
              "pretrained": bool(pretrained), "trainable": True, "timm_version": timm.__version__}
        pre = {"input_size": int(image_size or 160), "mean": [float(v) for v in data_cfg["mean"]],
               "std": [float(v) for v in data_cfg["std"]], "interpolation": "bilinear"}
        return bb, pre

    @property
    def export_kind(self) -> str:
        return "full"

    def create_network(self, pretrained: bool = False):
        return create_timm_model(self.name, pretrained=pretrained)

    def network(self, config: dict, timm_model: Any = None):
        return timm_model if timm_model is not None else create_timm_model(self.name)

    def default_num_workers(self) -> int:
        return min(4, max(0, (os.cpu_count() or 1) - 1))

    def learning_rate_multiplier(self, pretrained: bool) -> float:
        return 0.1 if pretrained else 1.0  # ImageNet features: move them gently


# ---------------------------------------------------------------------------------------- factory
def _embedder_names() -> list[str]:
    from facerec.recognition.embed import available_embedders

    return available_embedders()


def _tunable() -> str:
    """'only the X backbone' for the face embedders that ``--finetune`` can tune."""
    from facerec.recognition.embed import embedder_class

    names = [n for n in _embedder_names() if embedder_class(n).finetune_levels]
    return f"only the {' or '.join(names)} backbone" if names else "no backbone"


def available_backbones() -> list[str]:
    """The face embedders by name (timm's models are open-ended: any timm name)."""
    return _embedder_names()


def _recipe(crop: CropSpec) -> tuple:
    return int(crop.size), round(float(crop.margin), 6), bool(crop.align)


def backbone_for_crops(crop: CropSpec | None) -> str:
    """The face model crops made by ``crop`` were cut for: the default model
    (:data:`facerec.defaults.DEFAULT_BACKBONE`) when its crop recipe (size, margin, alignment)
    is this one, else the first embedder whose recipe is; ``dlib_face`` (which fits its own
    landmarks inside any face crop) for any other recipe. What annotate, split, train and run use
    when no ``--backbone`` is given, so a folder made by an older facerec keeps its model."""
    from facerec.defaults import DEFAULT_BACKBONE
    from facerec.recognition.embed import embedder_class

    crop = crop or CropSpec()
    names = [DEFAULT_BACKBONE, *[n for n in _embedder_names() if n != DEFAULT_BACKBONE]]
    for name in names:
        cls = embedder_class(name)
        if not getattr(cls, "composite", False) and _recipe(cls.crop) == _recipe(crop):
            return name
    return "dlib_face"


def detect_settings_for(processed: Any, detect: dict) -> dict:
    """``detect``'s choices (``facerec detect``/``run``'s options: ``detector``, ``size``,
    ``margin``, ``align``, ``backbone``; None = not given) completed for the folder
    ``processed``: what is given wins; else the recipe of the crops already there (so an older
    work folder resumes as it was made); else the crop of ``backbone`` (the default model) found
    by the default detector. Returns a copy with every key set."""
    from facerec.cropspec import read_processed_spec
    from facerec.defaults import DEFAULT_BACKBONE, DEFAULT_DETECTOR

    out = dict(detect)
    recorded = read_processed_spec(processed) if processed is not None else None
    if recorded is not None:
        base = recorded
    else:
        kind = backbone_for(out.get("backbone") or DEFAULT_BACKBONE)
        base = kind.new_work_crop() if isinstance(kind, FrozenEmbedder) else CropSpec(
            detector={"name": DEFAULT_DETECTOR})
    for key, value in (("size", base.size), ("margin", base.margin), ("align", base.align),
                       ("detector", base.detector_name)):
        if out.get(key) is None:
            out[key] = value
    return out


def backbone_for(name: str, finetune: int = 0) -> Backbone:
    """The backbone called ``name``: a face embedder (tuned with ``finetune`` > 0) or a timm
    model; anything else is a one-line error naming the choices."""
    if not isinstance(name, str) or not name:
        raise FacerecError(f"unknown backbone {name!r}")
    finetune = int(finetune or 0)
    if name in _embedder_names():
        return TunedEmbedder(name, finetune) if finetune else FrozenEmbedder(name)
    import timm

    arch = name.split(".", 1)[0]
    if timm.is_model(name) or timm.is_model(arch):
        if finetune:
            raise FacerecError(f"--finetune {finetune}: {_tunable()} has levels to unfreeze "
                               f"({name} is trained end to end already)")
        return TimmBackbone(name)
    close = timm.list_models(f"*{arch[:6]}*")[:4] if len(arch) >= 3 else []
    hint = f"; close timm names: {', '.join(close)}" if close else ""
    raise FacerecError(
        f"unknown backbone {name!r}: use {' or '.join(_embedder_names())} (frozen face embedding) "
        f"or a timm model name such as resnet18, resnet200d, efficientnet_b0{hint}")


def backbone_of(entry: dict) -> Backbone:
    """The backbone of a checkpoint's ``backbone`` entry (its ``kind`` and ``finetune``)."""
    cls = BACKBONE_KINDS.get(str(entry.get("kind")))
    finetune = int(entry.get("finetune") or 0)
    if cls is FrozenEmbedder and finetune:
        return TunedEmbedder(str(entry["name"]), finetune)
    return cls(str(entry["name"]))
