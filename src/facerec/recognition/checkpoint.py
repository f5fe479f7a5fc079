"""The facerec checkpoint: the one module that knows its keys, reads, validates and writes it.

A checkpoint is a Lightning ``.ckpt`` (a dict saved by ``torch.save``) with:

* ``"facerec"`` (:data:`INFO_KEY`): ``facerec_format`` (:data:`FORMAT`), ``facerec_version``,
  ``labels``, ``backbone`` (``name``, ``kind``, ``dim``, and per kind: ``embedder_kwargs``,
  ``mirror_tta``, ``finetune`` / ``pretrained``...), ``head`` (``scale``, ``margin``,
  ``dropout``), ``preprocess`` (``crop``: the :class:`~facerec.cropspec.CropSpec` of its training
  crops; timm: ``input_size``, ``mean``, ``std``), ``threshold`` (the unknown threshold, a cosine
  to a prototype, or None), ``calibration``, and after enroll/forget ``enrollment``;
* ``"state_dict"``: ``model.head.weight`` (K, D), ``model.prototypes`` (K, D),
  ``model.threshold_buf`` and the backbone's own weights;
* ``"facerec_gallery"`` (:data:`GALLERY_KEY`, optional): the features the threshold was
  calibrated on (``features`` (N, D) float32, ``labels`` (N,) int64, ``source``), which
  enroll/forget recalibrate on.

Checkpoints load with ``torch.load(weights_only=True)`` (no code runs), then every field is
checked (types, shapes, ranges) before anything uses it: a damaged or crafted checkpoint is one
:class:`~facerec.errors.FacerecError` line, never a traceback or a hang.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerec.crops import check_person_name  # the name rule (re-exported: __all__)
from facerec.cropspec import CropSpec
from facerec.errors import FacerecError
from facerec.safeio import display_path, error_summary

__all__ = ["FORMAT", "FORMAT_KEY", "INFO_KEY", "GALLERY_KEY", "Checkpoint", "Gallery",
           "check_person_name", "gallery_entry", "new_checkpoint_path", "write_new_checkpoint"]

FORMAT = 1
FORMAT_KEY = "facerec_format"
INFO_KEY = "facerec"
GALLERY_KEY = "facerec_gallery"


@dataclass
class Gallery:
    """The calibration features stored in a checkpoint: unit rows ``features`` (N, D) float32,
    ``labels`` (N,) int64 indices into the labels, and where they came from (``source``)."""

    features: np.ndarray
    labels: np.ndarray
    source: str = ""


def gallery_entry(features: Any, labels: Any, source: str) -> dict:
    """The checkpoint's :data:`GALLERY_KEY` value (plain tensors: ``weights_only``-safe)."""
    import torch

    return {"features": torch.as_tensor(np.asarray(features, dtype=np.float32)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)), "source": str(source)}


# ------------------------------------------------------------------------------------- validation
class _Invalid(Exception):
    """A field of the checkpoint is wrong (the message names it)."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _Invalid(what)


def _number(value: Any, what: str, low: float, high: float, kind: type = float) -> float:
    _need(isinstance(value, (int, float)) and not isinstance(value, bool)
          and (kind is float or float(value).is_integer()), f"{what} must be a number")
    _need(math.isfinite(float(value)) and low <= float(value) <= high,
          f"{what} must be between {low:g} and {high:g} (it is {value!r})")
    return value


def _check_labels(labels: Any) -> list[str]:
    from facerec.recognition.decision import UNKNOWN

    _need(isinstance(labels, list) and len(labels) > 0, "labels must be a non-empty list")
    for name in labels:
        try:
            check_person_name(name, "label")
        except FacerecError as exc:
            raise _Invalid(str(exc)) from None
    _need(len(set(labels)) == len(labels), "labels must not repeat")
    _need(UNKNOWN not in labels, f"labels must not include {UNKNOWN!r}")
    return labels


def _check_backbone(bb: Any) -> None:
    from facerec.recognition.backbones import BACKBONE_KINDS
    from facerec.recognition.embed import EMBEDDERS

    _need(isinstance(bb, dict), "backbone must be a mapping")
    _need(isinstance(bb.get("name"), str) and 0 < len(bb["name"]) <= 200,
          "backbone.name must be a model name")
    _need(bb.get("kind") in BACKBONE_KINDS, f"backbone.kind must be one of "
          f"{', '.join(BACKBONE_KINDS.names())} (it is {bb.get('kind')!r})")
    _number(bb.get("dim"), "backbone.dim", 1, 1 << 16, int)
    if bb["kind"] != "embedder":
        return
    _need(bb["name"] in EMBEDDERS, f"backbone {bb['name']!r} is not a face embedder this facerec "
          f"has (available: {', '.join(EMBEDDERS.names())})")
    cls = EMBEDDERS.get(bb["name"])
    _need(int(bb["dim"]) == cls.dim, f"backbone.dim is {bb['dim']}, {cls.name} gives {cls.dim}")
    kwargs = bb.get("embedder_kwargs", {})
    _need(isinstance(kwargs, dict), "backbone.embedder_kwargs must be a mapping")
    for key, value in kwargs.items():
        _need(key in cls.settings, f"backbone.embedder_kwargs.{key} is not an option of "
              f"{cls.name} (options: {', '.join(sorted(cls.settings)) or 'none'})")
        kind, low, high = cls.settings[key]
        _number(value, f"backbone.embedder_kwargs.{key}", low, high, kind)
    _need(isinstance(bb.get("mirror_tta", True), bool), "backbone.mirror_tta must be true or false")
    _number(bb.get("finetune") or 0, "backbone.finetune", 0, cls.finetune_levels, int)


def _check_preprocess(pre: Any, kind: str) -> None:
    _need(isinstance(pre, dict), "preprocess must be a mapping")
    if "crop" in pre:
        crop = pre["crop"]
        _need(isinstance(crop, dict), "preprocess.crop must be a mapping")
        _number(crop.get("size", 160), "preprocess.crop.size", 8, 4096, int)
        _number(crop.get("margin", 0.2), "preprocess.crop.margin", 0, 4)
        _need(isinstance(crop.get("align", False), bool), "preprocess.crop.align must be true or "
              "false")
        det = crop.get("detector", {"name": "mtcnn"})
        _need(isinstance(det, dict) and isinstance(det.get("name", "mtcnn"), str),
              "preprocess.crop.detector must be a mapping with a name")
    if "crop_margin" in pre:
        _number(pre["crop_margin"], "preprocess.crop_margin", 0, 4)
    if kind == "timm":
        _number(pre.get("input_size"), "preprocess.input_size", 8, 4096, int)
        for key in ("mean", "std"):
            values = pre.get(key)
            _need(isinstance(values, list) and len(values) == 3, f"preprocess.{key} must be 3 "
                  "numbers")
            for v in values:
                _number(v, f"preprocess.{key}", 1e-6 if key == "std" else -10, 10)


def _check_info(info: Any) -> None:
    _check_labels(info.get("labels"))
    _check_backbone(info.get("backbone"))
    head = info.get("head")
    _need(isinstance(head, dict), "head must be a mapping")
    _number(head.get("scale"), "head.scale", 1e-3, 1e4)
    _number(head.get("margin", 0.0), "head.margin", -1, 1)
    _number(head.get("dropout", 0.0), "head.dropout", 0, 1)
    _check_preprocess(info.get("preprocess"), info["backbone"]["kind"])
    if info.get("threshold") is not None:
        _number(info["threshold"], "threshold", -1.0, 1.0 + 1e-6)
    _need(isinstance(info.get("calibration", {}), dict), "calibration must be a mapping")
    enrollment = info.get("enrollment", {})
    _need(isinstance(enrollment, dict) and isinstance(enrollment.get("enrolled", []), list)
          and isinstance(enrollment.get("history", []), list),
          "enrollment must hold the lists enrolled and history")


def _check_tensors(raw: dict, k: int, dim: int) -> None:
    import torch

    state = raw.get("state_dict")
    _need(isinstance(state, dict), "state_dict must be a mapping of tensors")
    _need(all(isinstance(key, str) and isinstance(v, torch.Tensor) for key, v in state.items()),
          "state_dict must map names to tensors")
    for key, shape in (("model.head.weight", (k, dim)), ("model.prototypes", (k, dim)),
                       ("model.threshold_buf", ())):
        _need(key in state, f"state_dict has no {key}")
        _need(tuple(state[key].shape) == shape and state[key].is_floating_point(),
              f"state_dict.{key} must be a float tensor of shape {list(shape)} "
              f"(it is {list(state[key].shape)})")
    _need(bool(torch.isfinite(state["model.head.weight"]).all()),
          "state_dict.model.head.weight holds non-finite numbers")
    gallery = raw.get(GALLERY_KEY)
    if gallery is None:
        return
    _need(isinstance(gallery, dict), f"{GALLERY_KEY} must be a mapping")
    z, y = gallery.get("features"), gallery.get("labels")
    _need(isinstance(z, torch.Tensor) and z.ndim == 2 and z.shape[1] == dim
          and z.is_floating_point(), f"{GALLERY_KEY}.features must be a float tensor (N, {dim})")
    _need(isinstance(y, torch.Tensor) and y.shape == (z.shape[0],) and not y.is_floating_point(),
          f"{GALLERY_KEY}.labels must be N integers")
    _need(len(y) == 0 or (int(y.min()) >= 0 and int(y.max()) < k),
          f"{GALLERY_KEY}.labels must index the {k} labels")
    _need(isinstance(gallery.get("source", ""), str), f"{GALLERY_KEY}.source must be text")


def validate(raw: Any, name: str = "checkpoint") -> dict:
    """``raw`` (what ``torch.load`` returned) if it is a facerec checkpoint whose every field is
    well-formed; otherwise a one-line :class:`FacerecError` naming the field."""
    info = raw.get(INFO_KEY) if isinstance(raw, dict) else None
    if not isinstance(info, dict) or FORMAT_KEY not in info:
        raise FacerecError(f"{name} is not a facerec checkpoint (no facerec metadata: trained "
                           "elsewhere?); train one with `facerec train`")
    fmt = info.get(FORMAT_KEY)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > FORMAT:
        from facerec._version import __version__

        raise FacerecError(f"{name} has checkpoint format {fmt!r}, newer than this facerec "
                           f"{__version__} reads ({FORMAT}): upgrade facerec")
    if "state_dict" not in raw or not info.get("labels"):
        raise FacerecError(f"{name} is an incomplete facerec checkpoint (no weights or labels)")
    try:
        _check_info(info)
        _check_tensors(raw, len(info["labels"]), int(info["backbone"]["dim"]))
    except _Invalid as exc:
        raise FacerecError(f"{name} is a damaged facerec checkpoint: {exc}") from None
    return raw


# ---------------------------------------------------------------------------------------- reading
class Checkpoint:
    """A validated facerec checkpoint (``raw`` is the loaded dict; the properties read it)."""

    def __init__(self, raw: dict, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.raw = validate(raw, display_path(path) if path is not None else "checkpoint")

    @classmethod
    def read(cls, path: str | os.PathLike) -> Checkpoint:
        """Load ``path`` safely (``weights_only=True``) and validate it."""
        import torch

        p = Path(path)
        if not p.is_file():
            raise FacerecError(f"checkpoint not found: {display_path(p)}")
        try:
            raw = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle/zip errors, unsafe globals
            raise FacerecError(f"{display_path(p)} is not a facerec checkpoint (cannot load it "
                               f"safely: {error_summary(exc)})") from None
        return cls(raw, p)

    # ---- the facerec entry
    @property
    def info(self) -> dict:
        return self.raw[INFO_KEY]

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def backbone(self) -> dict:
        return self.info["backbone"]

    @property
    def crop(self) -> CropSpec:
        """How its training crops were made (so new faces are cropped the same way)."""
        return CropSpec.from_preprocess(self.info.get("preprocess"))

    @property
    def threshold(self) -> float | None:
        t = self.info.get("threshold")
        return float(t) if t is not None and math.isfinite(float(t)) else None

    @property
    def calibration(self) -> dict:
        return dict(self.info.get("calibration") or {})

    # ---- tensors
    @property
    def state(self) -> dict:
        """The classifier's weights (``model.`` prefix removed)."""
        return {k[len("model."):]: v for k, v in self.raw["state_dict"].items()
                if k.startswith("model.")}

    @property
    def head_weight(self) -> np.ndarray:
        return self.raw["state_dict"]["model.head.weight"].detach().float().numpy()

    @property
    def prototypes(self) -> np.ndarray:
        return self.raw["state_dict"]["model.prototypes"].detach().float().numpy()

    @property
    def gallery(self) -> Gallery | None:
        """The calibration features, or None (checkpoints from before they were stored)."""
        g = self.raw.get(GALLERY_KEY)
        if g is None:
            return None
        return Gallery(np.asarray(g["features"], dtype=np.float32),
                       np.asarray(g["labels"], dtype=np.int64), str(g.get("source", "")))

    # ---- writing
    def write_new(self, path: str | os.PathLike) -> Path:
        """Write this checkpoint at ``path``, which must not exist (see
        :func:`write_new_checkpoint`)."""
        return write_new_checkpoint(self.raw, Path(path))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "person"


def new_checkpoint_path(old: str | os.PathLike, tag: str) -> Path:
    """``<stem>-<tag>.ckpt`` beside ``old``, or ``<stem>-<tag>-2.ckpt``... when that exists.
    ``tag`` is made file-name safe. Repeated enrolments do not pile up suffixes:
    ``-enroll-carol-enroll-dave`` reads fine."""
    old = Path(old)
    base = old.parent / f"{old.stem}-{_slug(tag)}"
    candidate = base.with_suffix(".ckpt")
    n = 2
    while candidate.exists():
        candidate = old.parent / f"{base.name}-{n}.ckpt"
        n += 1
    return candidate


def _process_umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux), else by the
    classic set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_new_checkpoint(raw: dict, path: Path) -> Path:
    """Save ``raw`` at ``path`` without ever replacing an existing file: written to a temporary
    file in the same folder, then hard-linked into place (fails if the name is taken meanwhile);
    where hard links are not supported, created with O_EXCL. The file gets the permissions of
    any new file under the process umask (like training's checkpoints), not the temporary
    file's private 0600."""
    import torch

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".facerec-", suffix=".ckpt.tmp", dir=path.parent)
    except OSError as exc:
        raise FacerecError(f"cannot write a checkpoint in {display_path(path.parent)}: "
                           f"{exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_process_umask())
        with os.fdopen(fd, "wb") as handle:
            torch.save(raw, handle)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FacerecError(f"{display_path(path)} appeared while writing; not overwritten, "
                               "rerun") from None
        except OSError:  # no hard links here (some network/FUSE file systems)
            with open(path, "xb") as dst, open(tmp, "rb") as src:
                dst.write(src.read())
    except FileExistsError:
        raise FacerecError(f"{display_path(path)} exists; not overwritten, rerun") from None
    except OSError as exc:
        raise FacerecError(f"cannot write {display_path(path)}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return path
