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


def template_face_box(width: float, height: float, margin: float
                      ) -> tuple[float, float, float, float]:
    """Where the 112x112 template square lies in an aligned crop made with ``margin``
    (:func:`crop_transform`: the template, scaled to the crop, zoomed out by 1 + margin,
    centred): the centre square of side ``size / (1 + margin)``, as (x0, y0, x1, y1)."""
    fw, fh = width / (1 + margin), height / (1 + margin)
    return ((width - fw) / 2, (height - fh) / 2, (width + fw) / 2, (height + fh) / 2)


def warp_crop(image: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """Apply a crop transform. Antialiased when shrinking; outside the photo is black.

    Aligned (rotated) crops follow OpenCV's ``warpAffine`` (what ArcFace-style face models, and
    OpenCV's ``FaceRecognizerSF.alignCrop``, were made with): crop pixel (u, v) shows the original
    point ``matrix^-1 (u, v)``, pixel centres at whole coordinates (the convention of the
    landmarks ``to_crop_coords`` maps), sampled bilinearly. PIL's own convention puts pixel
    centres at +0.5, which shifts a crop that is zoomed by k by (k - 1) / 2 pixels; bicubic
    sampling (sharper) moved SFace's features too (cosine down to 0.92 against alignCrop's crops
    of small faces, 0.99 with this; tests/test_sface.py). Box crops are unchanged."""
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
        # reduced pixel j averages original pixels j*r .. j*r + r-1: its centre is j*r + (r-1)/2
        offset = (reduce - 1) / 2
        matrix = matrix @ np.array([[reduce, 0.0, offset], [0.0, reduce, offset], [0, 0, 1]])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    # only the region the crop reads, with 2 px more: PIL pads what lies outside the photo with
    # black, so pixels near the photo's border blend with black as OpenCV's constant border does
    # (PIL would leave them black), and a crop of a large photo reads a small image
    corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
    seen = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.floor(seen.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(seen.max(axis=0)).astype(int) + 3
    image = image.crop((int(x0), int(y0), int(x1), int(y1)))
    inverse[:, 2] -= (x0, y0)
    # PIL samples crop pixel x at the original centre inverse @ (x + 0.5) - 0.5: shift it so that
    # it samples inverse @ x
    inverse[:, 2] += 0.5 - 0.5 * inverse[:, :2].sum(axis=1)
    return image.transform((size, size), Image.Transform.AFFINE, inverse.ravel().tolist(),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def to_crop_coords(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Original-image points [N, 2] to crop pixels with a crop transform."""
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
