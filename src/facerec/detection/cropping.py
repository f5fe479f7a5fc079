"""Find the faces of photos and cut them as a crop spec says: the one place that does it.

``facerec detect`` (training crops), ``predict`` (photos, folders, the web UI), video frames,
``enroll`` and ``verify`` all call :func:`crop_faces`, so a face is cut the same way wherever a
model meets it: the recipe is the :class:`~facerec.cropspec.CropSpec` the crops of its training
were made with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from facerec.cropspec import CropSpec
from facerec.detection.align import crop_transform, warp_crop
from facerec.images import LoadedImage, as_rgb_image

__all__ = ["CROP_MAX_SIDE", "FaceCrop", "crop_face", "crop_faces", "operating_point"]

#: an image with no face found whose sides are both at most this many pixels may itself be a
#: face crop (the tutorial's crops, a thumbnail): it is one when the detector scores it as a face
CROP_MAX_SIDE = 400


@dataclass
class FaceCrop:
    """One face of an image, cut by a crop spec. ``box`` = [x, y, w, h] and ``landmarks`` in the
    image's pixels (upright, original size); ``matrix``: the 2x3 affine from those pixels to the
    crop's; ``source``: ``"detected"``, or ``"whole_image"`` for an image taken as a crop."""

    crop: Image.Image
    box: tuple[float, float, float, float]
    score: float | None
    landmarks: list[tuple[float, float]] | None
    matrix: np.ndarray
    source: str = "detected"

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


def crop_face(image: Image.Image, face: Any, size: int, margin: float,
              align: bool = False) -> tuple[Image.Image, np.ndarray]:
    """Cut one face (``box``, ``landmarks``) from the original image: (crop, 2x3 affine original
    -> crop). Box crops are squares centred on the box, with side max(w, h) * (1 + margin);
    aligned crops map the 5 landmarks onto a canonical template (see
    :mod:`facerec.detection.align`). Areas outside the photo are black."""
    matrix = crop_transform(face.box, face.landmarks if align else None, size, margin)
    return warp_crop(image, matrix, size), matrix


def operating_point(spec: CropSpec, detector: Any) -> float:
    """The score from which a detection is a face, the same for every stage (the one face rule):
    the ``min_score`` the crops of ``spec`` were cut at, else the detector's
    ``default_min_score`` (crop specs from before it was recorded, or recorded as 0)."""
    recorded = float(spec.detector.get("min_score") or 0.0)
    return recorded if recorded > 0 else float(detector.default_min_score)


def _whole(image: Image.Image, score: float) -> FaceCrop:
    w, h = image.size
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return FaceCrop(image, (0.0, 0.0, float(w), float(h)), float(score), None, identity,
                    "whole_image")


def crop_faces(images: Sequence[Any], detector: Any, spec: CropSpec, *, min_score: float = 0.0,
               crop_max_side: int = 0) -> list[list[FaceCrop]]:
    """The faces of each image (a path, PIL image, array or :class:`LoadedImage`), detected in
    one batch and cut as ``spec`` says, in the detector's order. Faces scoring below
    ``min_score`` are left out. With ``crop_max_side``, an image without a face whose sides are
    at most that many pixels is itself one crop if the detector scores it as a face
    (``score_crops`` at ``face_threshold``): a face crop given as a photo."""
    loaded = [im if isinstance(im, LoadedImage) else as_rgb_image(im) for im in images]
    found = detector.detect_batch(loaded) if loaded else []
    out: list[list[FaceCrop]] = []
    small: list[int] = []
    for k, (im, faces) in enumerate(zip(loaded, found)):
        # boxes are in original pixels; a downscaled copy is cut through the same transform
        to_copy = np.diag([im.scale, im.scale, 1.0])
        crops = []
        for face in faces:
            if face.score < min_score:
                continue
            matrix = crop_transform(face.box, face.landmarks if spec.align else None, spec.size,
                                    spec.margin)
            crop = warp_crop(im.image, matrix @ np.linalg.inv(to_copy), spec.size)
            crops.append(FaceCrop(crop, tuple(float(v) for v in face.box), float(face.score),
                                  [tuple(map(float, p)) for p in face.landmarks], matrix))
        if not crops and crop_max_side and max(im.width, im.height) <= crop_max_side:
            small.append(k)
        out.append(crops)
    if small:
        pictures = [loaded[k].image for k in small]
        scores = detector.score_crops(pictures, spec.margin)
        for k, picture, score in zip(small, pictures, scores):
            if score >= detector.face_threshold:
                out[k].append(_whole(picture, float(score)))
    return out
