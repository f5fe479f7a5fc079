"""Face crops: the geometry shared by detect (cropping) and the embedding/predict stages.

Every crop is described by a 2x3 affine matrix that maps original-image pixels to crop pixels, so
landmarks or boxes can be moved between the two (the manifest stores it as ``crop_transform``).

* box crop: a square centred on the detector box, side = max(w, h) * (1 + margin);
* aligned crop: the similarity transform (rotation, uniform scale, translation; Umeyama's
  least-squares estimate) that maps the 5 MTCNN landmarks onto the canonical 5-point template used
  by ArcFace (112 x 112), scaled to the crop size and zoomed out by (1 + margin).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# left eye, right eye, nose tip, mouth left, mouth right in a 112 x 112 face (ArcFace / insightface)
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2x3) mapping points ``src`` onto ``dst`` [N, 2]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    var = (s ** 2).sum() / len(src)
    scale = (sigma * sign).sum() / var if var > 0 else 1.0
    translation = mu_d - scale * rotation @ mu_s
    return np.hstack([scale * rotation, translation[:, None]])


def crop_transform(box: Sequence[float], landmarks: Sequence[Sequence[float]] | None, size: int,
                   margin: float) -> np.ndarray:
    """2x3 affine original -> crop pixels: aligned on ``landmarks`` when given, else a box crop."""
    if landmarks is not None:
        template = (TEMPLATE_112 / 112.0 - 0.5) / (1.0 + margin) * size + size / 2.0
        return umeyama(np.asarray(landmarks), template)
    x, y, w, h = box
    side = max(w, h) * (1.0 + margin)
    side = max(round(side), 1)
    x0 = round(x + w / 2 - side / 2)
    y0 = round(y + h / 2 - side / 2)
    scale = size / side
    return np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])


def warp_crop(image: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """Apply a crop transform. Antialiased when shrinking; outside the photo is black."""
    matrix = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if abs(matrix[0, 1]) < 1e-12 and abs(matrix[1, 0]) < 1e-12:
        # axis-aligned box crop: crop (pads outside) then a proper antialiased resize
        x0 = -matrix[0, 2] / matrix[0, 0]
        y0 = -matrix[1, 2] / matrix[1, 1]
        side = size / scale
        region = image.crop((round(x0), round(y0), round(x0 + side), round(y0 + side)))
        return region.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    reduce = int(1 / scale / 1.5) if scale < 0.5 else 1
    if reduce > 1:  # shrink first so the affine warp does not alias
        image = image.reduce(reduce)
        matrix = matrix @ np.diag([reduce, reduce, 1.0])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    return image.transform((size, size), Image.Transform.AFFINE, inverse.ravel().tolist(),
                           resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def to_crop_coords(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Original-image points [N, 2] to crop pixels with a crop transform."""
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
