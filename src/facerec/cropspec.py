"""The crop recipe: how a face becomes the crop a model is trained on, carried from detect to predict.

A model only works on crops made the way its training crops were made (size, context margin,
5-point alignment, and the detector and settings that found the faces). That recipe is a
:class:`CropSpec`, the one place that holds its defaults, and it travels with the data:

* ``facerec detect`` writes it to ``processed/.facerec/crop.json`` (and refuses to mix recipes in
  one folder);
* ``facerec split`` copies it into ``dataset/labels.json`` under ``"crop"`` (so it also travels
  through a datastore);
* ``facerec train`` stores it in the checkpoint (``preprocess.crop``) and so in ONNX exports;
* ``facerec predict`` / ``evaluate`` crop new faces with it.

Light module: no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facerec.defaults import LEGACY_DETECTOR
from facerec.errors import FacerecError

DEFAULT_SIZE = 160
DEFAULT_MARGIN = 0.2
SPEC_FILE = "crop.json"  # under <processed>/.facerec/


@dataclass(frozen=True)
class CropSpec:
    """How crops are made: ``size`` px square, ``margin`` context around the box (fraction of its
    side), ``align`` (5-point similarity alignment instead of a box crop) and the ``detector``
    with its settings (``{"name": "mtcnn", ...}``)."""

    size: int = DEFAULT_SIZE
    margin: float = DEFAULT_MARGIN
    align: bool = False
    # the dataclass defaults are the recipe of crops made before recipes were recorded
    detector: dict[str, Any] = field(default_factory=lambda: {"name": LEGACY_DETECTOR})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CropSpec:
        data = data or {}
        return cls(size=int(data.get("size", DEFAULT_SIZE)),
                   margin=float(data.get("margin", DEFAULT_MARGIN)),
                   align=bool(data.get("align", False)),
                   # recorded before the detector was: MTCNN, the only one then
                   detector=dict(data.get("detector") or {"name": LEGACY_DETECTOR}))

    @classmethod
    def from_preprocess(cls, pre: dict[str, Any] | None) -> CropSpec:
        """The spec of a checkpoint's ``preprocess`` entry; checkpoints from before the spec was
        recorded only stored ``crop_margin`` (their crops were 160 px box crops)."""
        pre = pre or {}
        if "crop" in pre:
            return cls.from_dict(pre["crop"])
        return cls(margin=float(pre.get("crop_margin", DEFAULT_MARGIN)))

    @property
    def detector_name(self) -> str:
        return str(self.detector.get("name", LEGACY_DETECTOR))

    def describe(self) -> str:
        how = "aligned" if self.align else f"box crops, margin {self.margin:g}"
        return f"{self.size} px {how} ({self.detector_name})"


def write_processed_spec(processed: str | os.PathLike, spec: CropSpec, has_crops: bool) -> None:
    """Record ``spec`` for ``processed/``; refuse a different recipe where crops already exist
    (a folder of mixed crops would train a model that no single recipe matches)."""
    from facerec.safeio import META_DIR, atomic_write

    path = Path(processed) / META_DIR / SPEC_FILE
    old = read_processed_spec(processed)
    if old is not None and has_crops and _recipe(old) != _recipe(spec):
        raise FacerecError(
            f"{processed} holds crops made as {old.describe()}; these settings make "
            f"{spec.describe()}: use another --out folder (or the same --size/--margin/--align)")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(spec.to_dict(), indent=1), "utf-8"))


def _recipe(spec: CropSpec) -> tuple:
    """What makes two crops comparable (detector thresholds may change between runs)."""
    return spec.size, round(spec.margin, 6), spec.align, spec.detector_name


def read_processed_spec(processed: str | os.PathLike) -> CropSpec | None:
    """The spec ``facerec detect`` recorded for ``processed/`` (None for folders made before)."""
    from facerec.safeio import META_DIR

    try:
        return CropSpec.from_dict(json.loads((Path(processed) / META_DIR / SPEC_FILE).read_text("utf-8")))
    except (FileNotFoundError, NotADirectoryError):  # no folder yet: detect says why
        return None
    except ValueError as exc:
        raise FacerecError(f"{processed}/{META_DIR}/{SPEC_FILE} is damaged ({exc}): rerun "
                           "`facerec detect`") from None


def read_dataset_spec(labels: dict[str, Any]) -> CropSpec:
    """The spec stored in a dataset's ``labels.json`` (the default recipe for older datasets)."""
    return CropSpec.from_dict(labels.get("crop"))
