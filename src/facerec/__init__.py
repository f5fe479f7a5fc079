"""facerec: build your own face-recognition model from your own photos.

Pipeline stages, one module each: ``detect`` -> ``annotate`` -> ``split`` -> ``datastore`` ->
``train`` -> ``sweep`` -> ``predict``. Heavy modules are imported lazily so that
``import facerec`` and ``facerec --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "FaceDetector": "facerec.detect",
    "Face": "facerec.detect",
    "detect_folder": "facerec.detect",
    "load_image": "facerec.images",
    "ImageLoadError": "facerec.images",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from facerec.detect import Face, FaceDetector, detect_folder
    from facerec.images import ImageLoadError, load_image


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facerec' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
