"""facerec: build your own face-recognition model from your own photos.

Pipeline stages, one module each: ``detect`` -> ``annotate`` -> ``split`` -> ``datastore`` ->
``train`` -> ``sweep`` -> ``predict``. The main classes and functions are re-exported here
(``from facerec import FaceDetector``); stage functions that share their module's name
(``facerec.training.train``, ``facerec.annotate.annotate``...) are imported from their module.
Heavy modules are imported lazily so that ``import facerec`` and ``facerec --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from facerec._version import __version__

# public name -> module that defines it
_LAZY = {
    "FaceDetector": "facerec.detect",
    "Face": "facerec.detect",
    "detect_folder": "facerec.detect",
    "load_image": "facerec.images",
    "ImageLoadError": "facerec.images",
    "get_embedder": "facerec.embed",
    "embed_files": "facerec.embed",
    "split_dataset": "facerec.split",
    "Datastore": "facerec.datastore",
    "resolve_data_path": "facerec.datastore",
    "TrainConfig": "facerec.training",
    "load_checkpoint": "facerec.model",
    "Predictor": "facerec.predict",
    "run_pipeline": "facerec.pipeline",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from facerec.datastore import Datastore, resolve_data_path
    from facerec.detect import Face, FaceDetector, detect_folder
    from facerec.embed import embed_files, get_embedder
    from facerec.images import ImageLoadError, load_image
    from facerec.model import load_checkpoint
    from facerec.pipeline import run_pipeline
    from facerec.predict import Predictor
    from facerec.split import split_dataset
    from facerec.training import TrainConfig


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facerec' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
