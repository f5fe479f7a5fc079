"""facerec: build your own face-recognition model from your own photos.

The package follows the pipeline: ``detection/`` (stage 1) -> ``annotate`` -> ``split`` ->
``datastore`` -> ``training/`` (train, sweep, launch) -> ``inference/`` (predict, evaluate,
enroll, verify, video), on the shared ``recognition/`` model (embedders, classifier, runtimes,
export), with ``serve/``, ``pipeline`` and ``cli`` on top (docs/ARCHITECTURE.md). The main
classes and functions are re-exported here for users (``from facerec import FaceDetector``);
facerec's own modules never import from this file. Heavy modules are imported lazily so that
``import facerec`` and ``facerec --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from facerec._version import __version__

# public name -> module that defines it
_LAZY = {
    "FaceDetector": "facerec.detection.detect",
    "Face": "facerec.detection.detect",
    "detect_folder": "facerec.detection.detect",
    "load_image": "facerec.images",
    "ImageLoadError": "facerec.images",
    "get_embedder": "facerec.recognition.embed",
    "embed_files": "facerec.recognition.embed",
    "split_dataset": "facerec.split",
    "Datastore": "facerec.datastore",
    "resolve_data_path": "facerec.datastore",
    "TrainConfig": "facerec.training",
    "load_checkpoint": "facerec.recognition.model",
    "Predictor": "facerec.inference.predict",
    "run_pipeline": "facerec.pipeline",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from facerec.datastore import Datastore, resolve_data_path
    from facerec.detection.detect import Face, FaceDetector, detect_folder
    from facerec.recognition.embed import embed_files, get_embedder
    from facerec.images import ImageLoadError, load_image
    from facerec.recognition.model import load_checkpoint
    from facerec.pipeline import run_pipeline
    from facerec.inference.predict import Predictor
    from facerec.split import split_dataset
    from facerec.training import TrainConfig


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facerec' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
