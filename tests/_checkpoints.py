"""Real checkpoints for the predict/evaluate/export tests, trained once per test session.

The dataset is made from real crops of ``celebrities`` (the detected crops of
:mod:`_facecrops`, the largest face of each photo): 3 people, per person 1 test crop, 1 val crop and
the rest (3-4) train. Two checkpoints are trained with the real :func:`facerec.training.train`: the
default frozen ``dlib_face`` backbone (a few epochs, seconds) and a tiny ``resnet18`` (48 px input,
1 epoch) for the timm code paths and the whole-model ONNX export.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import _facecrops

_BUILT: dict[str, Path] = {}


def dataset(celebrities: Path) -> Path:
    """``dataset/{train,val,test}/<person>/`` + ``labels.json`` (read only: do not modify)."""
    if "dataset" in _BUILT:
        return _BUILT["dataset"]
    processed = _facecrops.template("albums", celebrities)
    truth = _facecrops.truth(processed)
    root = _facecrops._root() / "predict-dataset"
    shutil.rmtree(root, ignore_errors=True)
    for person in _facecrops.PEOPLE:
        crops = sorted(p for p in (processed / person).glob("*.jpg")
                       if truth.get(p.name, (None, False)) == (person, True))
        for i, crop in enumerate(crops):
            split = "test" if i == 0 else "val" if i == 1 else "train"
            target = root / split / person / crop.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(crop, target)
    (root / "labels.json").write_text(json.dumps({"labels": sorted(_facecrops.PEOPLE)}))
    _BUILT["dataset"] = root
    return root


def checkpoint(kind: str, celebrities: Path) -> Path:
    """Best checkpoint of a real training run: ``kind`` = "dlib", "dlib_ft1" (``--finetune 1``)
    or "timm"."""
    if kind in _BUILT:
        return _BUILT[kind]
    from facerec.training import train

    data = dataset(celebrities)
    runs = _facecrops._root() / "predict-runs"
    options = {"dlib": dict(backbone="dlib_face", max_epochs=6),
               # --finetune 1 with a high backbone rate, so that 3 epochs visibly move the tail
               "dlib_ft1": dict(backbone="dlib_face", max_epochs=3, finetune=1, backbone_lr=1e-3,
                                batch_size=4),
               "timm": dict(backbone="resnet18", image_size=48, max_epochs=1, batch_size=8,
                            num_workers=0)}[kind]
    old = os.environ.get("FACEREC_CACHE_DIR")
    os.environ["FACEREC_CACHE_DIR"] = str(_facecrops.cache_dir())
    try:
        result = train(data_path=str(data), runs_dir=str(runs), name=kind, progress=False,
                       patience=0, test=False, accelerator="cpu", **options)
    finally:
        if old is None:
            os.environ.pop("FACEREC_CACHE_DIR", None)
        else:
            os.environ["FACEREC_CACHE_DIR"] = old
    _BUILT[kind] = Path(result.best_checkpoint)
    return _BUILT[kind]


def held_out_crops(celebrities: Path) -> list[tuple[Path, str]]:
    """(crop, person) of the dataset's test split."""
    root = dataset(celebrities) / "test"
    return [(p, p.parent.name) for p in sorted(root.glob("*/*.jpg"))]
