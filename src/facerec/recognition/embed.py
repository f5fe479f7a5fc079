"""Face embeddings shared by ``annotate``, ``split``, ``train`` and ``predict``.

One interface, :class:`Embedder`, and a registry so that another model can be added later by name::

    emb = get_embedder("dlib_face")                  # dlib's 128-d ResNet face descriptor
    vecs = emb.embed_images([crop1, crop2])          # (2, 128) float32
    vecs = embed_files(paths, emb)                   # same, cached by crop content hash

The dlib backbone works on 150x150 "face chips" that dlib aligns itself from a 5-point landmark fit
(two corners of each eye and the base of the nose); the network is dlib's ResNet ported to PyTorch
(:mod:`facerec.recognition.dlib_net`), batched, on CUDA when available; ``embed_views`` embeds each chip and its
mirror image in one batch. The fit runs inside a face rectangle on the crop:
the MTCNN box mapped into the crop when the caller knows it (``boxes=``), else the box that
``facerec detect`` leaves in the middle of every crop (``margin`` around it, default 0.2). Given the
MTCNN landmarks too (``landmarks=``, crop pixels), the fit is checked against them: a fit whose eyes
land far from MTCNN's is flagged (:class:`FaceQuality`), which is how ``annotate`` spots crops that
are unlikely to be faces or too poor to use.

Embeddings are cached in one SQLite file per embedder (``~/.cache/facerec/embeddings/`` or
``$FACEREC_CACHE_DIR/embeddings/``), keyed by the sha256 of the crop file's bytes, so a rerun on
1,000 crops costs a fraction of a second.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from facerec.errors import FacerecError
from facerec.registry import Registry

__all__ = [
    "Embedder",
    "DlibFaceEmbedder",
    "EmbeddingCache",
    "FaceQuality",
    "EmbedStats",
    "available_embedders",
    "default_cache_dir",
    "embed_files",
    "get_embedder",
    "register_embedder",
]

DEFAULT_EMBEDDER = "dlib_face"


# ---------------------------------------------------------------------------------------- quality
@dataclass
class FaceQuality:
    """How trustworthy one embedding is. ``ok`` is False when the crop should not be used.

    - ``error``: the crop could not be read or embedded (the embedding is NaN).
    - ``fit_error``: distance between the fitted eye centres and the detector's (MTCNN) eye
      landmarks, as a fraction of the detector's inter-ocular distance (None without landmarks).
    - ``eye_distance``: inter-ocular distance of the fit, in crop pixels.
    - ``geometry_ok``: the 5 fitted points form a plausible face (eyes apart, nose below them,
      points inside the crop).
    """

    ok: bool = True
    error: str | None = None
    fit_error: float | None = None
    eye_distance: float | None = None
    geometry_ok: bool = True
    reasons: list[str] = field(default_factory=list)


@dataclass
class EmbedStats:
    """What one :func:`embed_files` call did (``seconds`` counts only the computed ones)."""

    total: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_face(self) -> float | None:
        return self.seconds / self.computed if self.computed else None


# --------------------------------------------------------------------------------------- registry
EMBEDDERS = Registry("embedder")
_INSTANCES: dict[tuple, Embedder] = {}
_INSTANCES_LOCK = threading.Lock()
#: class decorator: make an :class:`Embedder` subclass available to :func:`get_embedder`
register_embedder = EMBEDDERS.register
available_embedders = EMBEDDERS.names


def get_embedder(name: str = DEFAULT_EMBEDDER, device: str = "auto", **kwargs: Any) -> Embedder:
    """The embedder registered as ``name`` (models are loaded once per process and reused)."""
    if isinstance(name, Embedder):
        return name
    cls = EMBEDDERS.get(name)
    key = (name, device, tuple(sorted(kwargs.items())))
    with _INSTANCES_LOCK:
        if key not in _INSTANCES:
            _INSTANCES[key] = cls(device=device, **kwargs)
        return _INSTANCES[key]


# ------------------------------------------------------------------------------------------- base
class Embedder(abc.ABC):
    """Maps RGB face crops to fixed-size vectors where distance means "different person".

    Subclasses set ``name``, ``dim``, ``version`` (part of the cache key: bump it when the output
    changes), ``metric`` and ``same_person_threshold`` (the distance below which two faces are
    usually the same person), and implement :meth:`embed_with_quality`.
    """

    name: str = ""
    dim: int = 0
    version: str = "1"
    metric: str = "euclidean"
    same_person_threshold: float = 0.6

    @property
    def cache_id(self) -> str:
        return f"{self.name}-v{self.version}"

    # Distances used by annotate/split, scaled from ``same_person_threshold`` unless a subclass
    # measured better ones (the dlib values come from bench/annotate.py).
    @property
    def cluster_threshold(self) -> float:
        """Ward-linkage merge distance for clustering faces by person."""
        return self.same_person_threshold / 0.6

    @property
    def member_distance(self) -> float:
        """Max mean distance of a cluster member to the other members."""
        return self.same_person_threshold * 0.65 / 0.6

    @property
    def suggest_distance(self) -> float:
        """Max mean distance to a known person's nearest crops to suggest a crop for them."""
        return self.same_person_threshold * 0.55 / 0.6

    @property
    def duplicate_distance(self) -> float:
        """Below this, two crops are taken for the same photo (re-sized or re-cropped)."""
        return self.same_person_threshold * 0.25 / 0.6

    def embed_images(self, images: Sequence[Any], landmarks: Sequence[Any] | None = None,
                     boxes: Sequence[Any] | None = None) -> np.ndarray:
        """Embeddings of RGB crops (PIL images or HxWx3 uint8 arrays): float32 (N, dim).

        A crop that cannot be embedded gives a row of NaN (see :meth:`embed_with_quality`).
        """
        vecs, _ = self.embed_with_quality(images, landmarks=landmarks, boxes=boxes)
        return vecs

    def embed_with_quality(self, images: Sequence[Any], landmarks: Sequence[Any] | None = None,
                           boxes: Sequence[Any] | None = None
                           ) -> tuple[np.ndarray, list[FaceQuality]]:
        """Embeddings (float32 (N, dim), NaN rows for failures) and one :class:`FaceQuality` each.

        ``landmarks[i]``: None or 5 (x, y) points in crop pixels (left eye, right eye, nose, mouth
        left, mouth right, as MTCNN); they only inform the quality check, never the embedding, so
        a crop embeds the same with or without them. ``boxes[i]``: None or the face box
        [x0, y0, x1, y1] in crop pixels (default: where ``facerec detect`` puts it).
        """
        vecs, metas = self.embed_raw(images, boxes=boxes)
        quality = [self.assess(meta, landmarks[i] if landmarks is not None else None)
                   for i, meta in enumerate(metas)]
        return vecs, quality

    @abc.abstractmethod
    def embed_raw(self, images: Sequence[Any], boxes: Sequence[Any] | None = None
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Embeddings and, per image, a JSON-able ``meta`` dict kept in the cache beside the
        vector and read by :meth:`assess` (``{"error": reason}`` when the image failed)."""

    def embed_views(self, images: Sequence[Any], boxes: Sequence[Any] | None = None
                    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Embeddings of each crop and of its mirror image: (N, 2, dim), and the crops' metas.

        This default embeds the mirrored crops separately; embedders that can mirror their own
        input (dlib_face mirrors the aligned chip) do both in one batch."""
        vecs, metas = self.embed_raw(images, boxes=boxes)
        mirrored = [ImageOps.mirror(_as_pil(im)) for im in images]
        flipped_boxes = None
        if boxes is not None:
            flipped_boxes = []
            for im, box in zip(mirrored, boxes):
                flipped_boxes.append(None if box is None else
                                     (im.width - box[2], box[1], im.width - box[0], box[3]))
        mvecs, _ = self.embed_raw(mirrored, boxes=flipped_boxes)
        return np.stack([vecs, mvecs], axis=1), metas

    def assess(self, meta: dict[str, Any], landmarks: Any = None) -> FaceQuality:
        """Quality of one embedding from its ``meta`` (override to add model-specific checks)."""
        if meta.get("error"):
            return FaceQuality(ok=False, error=meta["error"], geometry_ok=False,
                               reasons=[meta.get("reason", "could not embed")])
        return FaceQuality()

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pairwise distances (len(a), len(b)) in this embedder's metric."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if self.metric == "cosine":
            a = a / np.linalg.norm(a, axis=1, keepdims=True)
            b = b / np.linalg.norm(b, axis=1, keepdims=True)
            return 1.0 - a @ b.T
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.sqrt(np.maximum(d2, 0.0))


def to_rgb_array(image: Any) -> np.ndarray:
    """HxWx3 uint8 C-contiguous array from a PIL image, an array (grey, RGB, RGBA) or a path."""
    if isinstance(image, (str, os.PathLike)):
        image = _open_image(Path(image).read_bytes())
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image, got an array of shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.dtype.kind == "f" and arr.max() <= 1.0 else 1.0), 0, 255)
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def _as_pil(image: Any) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(to_rgb_array(image))


def _open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


# ------------------------------------------------------------------------------------------- dlib
def dlib_models_dir() -> Path:
    """Folder holding the dlib model files of ``face_recognition_models`` (located, never imported:
    importing it needs ``pkg_resources``)."""
    from facerec.weights import WHEEL_FILES

    return WHEEL_FILES["dlib_shape5"].located().parent


class DlibChipper:
    """dlib's 5-point landmark fit and aligned face chip (``dlib.get_face_chip``, 150x150, padding
    0.25): what dlib's face ResNet is fed. dlib only; no network (ONNX runtimes use it alone).

    The fit runs inside a face rectangle on the crop: the given box, else the box ``facerec
    detect`` leaves in the middle of every crop (``margin`` of context around it).
    """

    chip_size = 150
    chip_padding = 0.25

    def __init__(self, margin: float = 0.2) -> None:
        import dlib

        self.margin = float(margin)
        from facerec.weights import wheel_file

        path = wheel_file("dlib_shape5")
        try:
            self._shape = dlib.shape_predictor(str(path))
        except RuntimeError as exc:  # corrupt or another kind of file
            raise FacerecError(f"cannot load dlib landmark model {path}: {exc}") from exc
        self._dlib = dlib
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe

    def default_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The face box ``facerec detect`` leaves in a crop: centred, 1/(1+margin) of its side
        (detect crops a square of side max(w, h) * (1 + margin) around the box)."""
        fw, fh = width / (1 + self.margin), height / (1 + self.margin)
        return ((width - fw) / 2, (height - fh) / 2, (width + fw) / 2, (height + fh) / 2)

    def fit_landmarks(self, img: np.ndarray, box: Sequence[float] | None = None):
        """dlib ``full_object_detection`` (5 points) fitted inside ``box`` (default: centred box)."""
        h, w = img.shape[:2]
        x0, y0, x1, y1 = box if box is not None else self.default_box(w, h)
        rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
        with self._lock:
            return self._shape(img, rect)

    def chip(self, image: Any, box: Any = None) -> np.ndarray:
        """The aligned 150x150 RGB uint8 chip of one crop."""
        img = to_rgb_array(image)
        shape = self.fit_landmarks(img, box)
        return self._dlib.get_face_chip(img, shape, size=self.chip_size, padding=self.chip_padding)

    def chips(self, images: Sequence[Any], boxes: Sequence[Any] | None = None
              ) -> tuple[list[np.ndarray], list[int], list[dict[str, Any]]]:
        """(chips, the indices of the images they come from, a meta dict per image: the fitted
        points and the image size, or ``{"error": ...}`` for an image that could not be used)."""
        chips: list[np.ndarray] = []
        rows: list[int] = []
        metas: list[dict[str, Any]] = [{} for _ in images]
        for i, image in enumerate(images):
            try:
                img = to_rgb_array(image)
                shape = self.fit_landmarks(img, boxes[i] if boxes is not None else None)
                chips.append(self._dlib.get_face_chip(img, shape, size=self.chip_size,
                                                      padding=self.chip_padding))
                metas[i] = {"points": [[p.x, p.y] for p in shape.parts()],
                            "size": [int(img.shape[1]), int(img.shape[0])]}
                rows.append(i)
            except Exception as exc:  # noqa: BLE001 - unreadable/odd input: NaN row, see meta
                metas[i] = {"error": f"{type(exc).__name__}: {exc}", "reason": "could not embed"}
        return chips, rows, metas


@register_embedder("dlib_face")
class DlibFaceEmbedder(Embedder):
    """dlib's 128-d ResNet face descriptor (99.38% on LFW; same person below ~0.6 euclidean).

    dlib-bin fits the 5 landmarks and cuts the aligned 150x150 chip (``dlib.get_face_chip``); the
    network itself is our PyTorch port (:mod:`facerec.recognition.dlib_net`, the same descriptors to ~1e-6),
    batched (``batch_size`` chips per forward pass), channels-last, on ``device`` (``auto``: CUDA
    when available, in float16 there). ``margin`` is the context ``facerec detect`` left around the
    face box in each crop (used when no box is given); ``num_jitters`` > 0 averages that many
    jittered copies of each chip (``dlib.jitter_image``; slower, a bit better).
    """

    name = "dlib_face"
    dim = 128
    # 2: landmark fit in the box detect leaves (1/(1+margin) of the crop)
    # 3: the torch network; the mirror view is the mirrored chip (one batch with the chip)
    version = "3"
    metric = "euclidean"
    same_person_threshold = 0.6
    chip_size = 150
    chip_padding = 0.25
    #: a fit whose eye centres are further than this (x inter-ocular distance) from MTCNN's fails
    max_fit_error = 0.45
    #: torch parallelises one batch over the cores itself: no worker processes in embed_files
    uses_processes = False
    #: "" for dlib's network; "-ft<N>-<digest of the weights>" for a fine-tuned copy (with_tail)
    _tuned_id = ""

    def __init__(self, device: str = "auto", margin: float = 0.2, num_jitters: int = 0,
                 batch_size: int = 64, half: bool | None = None) -> None:
        self.chipper = DlibChipper(margin=margin)
        self.margin = self.chipper.margin
        self.num_jitters = int(num_jitters)
        self.batch_size = max(1, int(batch_size))
        self._half = half
        self._net = None
        self._net_lock = threading.Lock()
        from facerec.defaults import resolve_device

        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)

    @property
    def cache_id(self) -> str:
        extra = "" if (self.margin, self.num_jitters) == (0.2, 0) else f"-m{self.margin:g}-j{self.num_jitters}"
        # a fine-tuned network's descriptors are keyed by its weights: never mixed with dlib's
        return f"{self.name}-v{self.version}{extra}{self._tuned_id}"

    def with_tail(self, tail: Any) -> DlibFaceEmbedder:
        """This embedder (same landmarks, chips, batching, device) with the last levels of its
        network replaced by a copy of ``tail`` (a :class:`facerec.recognition.dlib_net.DlibTail`, from
        ``facerec train --finetune``). Its cache id names the weights' digest."""
        import copy

        import torch

        from facerec.recognition.dlib_net import load_dlib_resnet

        self.net  # noqa: B018 - loads the base network: sets the dtype used below
        clone = copy.copy(self)  # shares the landmark model
        clone._net_lock = threading.Lock()
        net = load_dlib_resnet().with_tail(tail)
        clone._net = net.to(self.torch_device, dtype=self.dtype,
                            memory_format=torch.channels_last).eval()
        digest = hashlib.sha256()
        for key, value in sorted(tail.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().float().cpu().numpy().tobytes())
        clone._tuned_id = f"-ft{len(tail.levels)}-{digest.hexdigest()[:16]}"
        return clone

    def trunk(self, chips: np.ndarray, upto: int, mirror: bool = True) -> np.ndarray:
        """The activations entering level ``upto`` of dlib's network for 150x150 RGB uint8 chips:
        (N, 2, C, H, W) with ``mirror`` (chip, mirror image), else (N, 1, C, H, W); float32 on
        the CPU. What ``facerec train --finetune`` computes once per crop."""
        import torch

        net = self.net
        chips = np.asarray(chips, dtype=np.uint8).reshape(-1, self.chip_size, self.chip_size, 3)
        step = max(1, self.batch_size // (2 if mirror else 1))
        out = []
        with torch.inference_mode():
            for s in range(0, len(chips), step):
                x = torch.from_numpy(chips[s:s + step]).to(self.torch_device).permute(0, 3, 1, 2)
                n = len(x)
                if mirror:
                    x = torch.cat([x, x.flip(3)])
                x = x.to(self.dtype, memory_format=torch.channels_last)
                a = net.trunk(x, upto).float().contiguous().cpu()
                out.append(torch.stack([a[:n], a[n:]], 1) if mirror else a[:, None])
        return torch.cat(out).numpy()

    @property
    def net(self):
        """The torch network on this embedder's device (loaded at first use)."""
        if self._net is None:
            with self._net_lock:
                if self._net is None:
                    import torch

                    from facerec.recognition.dlib_net import load_dlib_resnet

                    net = load_dlib_resnet().to(self.torch_device)
                    half = self._half if self._half is not None else self.torch_device.type == "cuda"
                    self.dtype = torch.float16 if half else torch.float32
                    self._net = net.to(dtype=self.dtype, memory_format=torch.channels_last).eval()
        return self._net

    def default_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        return self.chipper.default_box(width, height)

    def fit_landmarks(self, img: np.ndarray, box: Sequence[float] | None = None):
        return self.chipper.fit_landmarks(img, box)

    def chip(self, image: Any, box: Any = None) -> np.ndarray:
        """dlib's aligned 150x150 face chip for one crop (what the network sees)."""
        return self.chipper.chip(image, box)

    def embed_chips(self, chips: np.ndarray | Sequence[np.ndarray], mirror: bool = False
                    ) -> np.ndarray:
        """Descriptors of 150x150 RGB uint8 chips: (N, 128), or (N, 2, 128) with ``mirror`` (each
        chip and its left-right mirror image, computed in the same batches)."""
        chips = np.asarray(chips, dtype=np.uint8).reshape(-1, self.chip_size, self.chip_size, 3)
        if len(chips) == 0:
            return np.zeros((0, 2, self.dim) if mirror else (0, self.dim), dtype=np.float32)
        if self.num_jitters > 0:  # dlib's jittering (random crops, flips, scales), averaged
            import dlib

            return np.asarray([self._forward(np.asarray(dlib.jitter_image(
                np.ascontiguousarray(c), self.num_jitters)), mirror).mean(axis=0)
                for c in chips], dtype=np.float32)
        return self._forward(chips, mirror)

    def _forward(self, chips: np.ndarray, mirror: bool) -> np.ndarray:
        import torch

        net = self.net
        views = 2 if mirror else 1
        step = max(1, self.batch_size // views)  # a batch holds whole (chip, mirror) pairs
        out = []
        with torch.inference_mode():
            for s in range(0, len(chips), step):
                x = torch.from_numpy(chips[s:s + step]).to(self.torch_device)
                x = x.permute(0, 3, 1, 2)  # NHWC bytes viewed as NCHW: already channels-last
                if mirror:
                    x = torch.cat([x, x.flip(3)])
                x = x.to(self.dtype, memory_format=torch.channels_last)
                y = net(x).float().cpu().numpy()
                out.append(np.stack([y[:len(y) // 2], y[len(y) // 2:]], axis=1) if mirror
                           else y)
        return np.concatenate(out).astype(np.float32)

    def embed_raw(self, images, boxes=None):
        vecs, metas = self._embed(images, boxes, mirror=False)
        return vecs, metas

    def embed_views(self, images, boxes=None):
        return self._embed(images, boxes, mirror=True)

    def _embed(self, images, boxes, mirror: bool):
        n = len(images)
        shape = (n, 2, self.dim) if mirror else (n, self.dim)
        vecs = np.full(shape, np.nan, dtype=np.float32)
        chips, rows, metas = self.chipper.chips(images, boxes)
        if rows:
            vecs[rows] = self.embed_chips(np.stack(chips), mirror=mirror)
        return vecs, metas

    def assess(self, meta, landmarks=None):
        """Checks the 5-point fit: plausible geometry, and agreement with MTCNN's eyes if given.

        dlib's points: 0-1 and 2-3 are the corners of each eye, 4 the base of the nose.
        """
        if meta.get("error") or "points" not in meta:
            return super().assess(meta if meta.get("error") else {"error": "no landmark fit"})
        pts = np.asarray(meta["points"], dtype=np.float64)
        width, height = meta["size"]
        eye_a, eye_b, nose = pts[0:2].mean(0), pts[2:4].mean(0), pts[4]
        iod = float(np.linalg.norm(eye_a - eye_b))
        q = FaceQuality(eye_distance=iod)
        side = min(width, height)
        mid = (eye_a + eye_b) / 2
        axis = (eye_b - eye_a) / max(iod, 1e-6)
        normal = np.array([-axis[1], axis[0]])
        nose_drop = abs(float((nose - mid) @ normal))
        inside = bool(np.all(pts >= -0.1 * side) and np.all(pts[:, 0] <= width * 1.1)
                      and np.all(pts[:, 1] <= height * 1.1))
        if iod < 0.12 * side or iod > 0.8 * side or nose_drop < 0.25 * iod or not inside:
            q.geometry_ok = False
            q.reasons.append("implausible landmark fit")
        if landmarks is not None:
            lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
            if lm.shape[0] >= 2 and np.all(np.isfinite(lm[:2])):
                ref_iod = max(float(np.linalg.norm(lm[0] - lm[1])), 1e-6)
                # which eye dlib lists first differs from MTCNN's order: take the better pairing
                e1 = max(np.linalg.norm(eye_a - lm[0]), np.linalg.norm(eye_b - lm[1]))
                e2 = max(np.linalg.norm(eye_a - lm[1]), np.linalg.norm(eye_b - lm[0]))
                q.fit_error = float(min(e1, e2) / ref_iod)
                if q.fit_error > self.max_fit_error:
                    q.reasons.append("landmark fit disagrees with the detector")
        q.ok = not q.reasons
        return q


# ------------------------------------------------------------------------------------------ cache
def default_cache_dir() -> Path:
    """``embeddings/`` under facerec's cache root (:func:`facerec.cache.cache_root`)."""
    from facerec.cache import cache_root

    return cache_root() / "embeddings"


class EmbeddingCache:
    """Embeddings keyed by crop content: one SQLite file per embedder (``<cache_id>.sqlite``).

    SQLite in WAL mode with a busy timeout lets several processes read and write the same cache.
    A cache that cannot be opened (read-only disk...) degrades to an in-memory one.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self._conns: dict[str, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def _conn(self, cache_id: str) -> sqlite3.Connection:
        with self._lock:
            conn = self._conns.get(cache_id)
            if conn is None:
                try:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    conn = sqlite3.connect(self.folder / f"{cache_id}.sqlite", timeout=60,
                                           check_same_thread=False)
                    conn.execute("PRAGMA journal_mode=WAL")
                except (OSError, sqlite3.Error):
                    conn = sqlite3.connect(":memory:", check_same_thread=False)
                conn.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, "
                             "vec BLOB, meta TEXT)")
                conn.commit()
                self._conns[cache_id] = conn
            return conn

    def get_many(self, cache_id: str, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, dict]]:
        """``{key: (vector, meta)}`` for the keys that are stored."""
        conn = self._conn(cache_id)
        found: dict[str, tuple[np.ndarray, dict]] = {}
        uniq = list(dict.fromkeys(keys))
        for start in range(0, len(uniq), 500):
            chunk = uniq[start:start + 500]
            q = f"SELECT key, dim, vec, meta FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
            with self._lock:
                try:
                    rows = conn.execute(q, chunk).fetchall()
                except sqlite3.Error:  # unreadable cache: recompute
                    rows = []
            for key, dim, blob, meta in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.size == dim:
                    found[key] = (vec.copy(), json.loads(meta))
        return found

    def put_many(self, cache_id: str, items: Iterable[tuple[str, np.ndarray, dict]]) -> None:
        rows = [(k, int(np.asarray(v).size), np.asarray(v, dtype=np.float32).tobytes(), json.dumps(m))
                for k, v, m in items]
        if not rows:
            return
        conn = self._conn(cache_id)
        with self._lock:
            try:
                with conn:
                    conn.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)", rows)
            except sqlite3.Error:  # a full or read-only disk must not lose the computed work
                pass

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()


class _NoCache(EmbeddingCache):
    def __init__(self) -> None:  # noqa: D107 - nothing stored
        self.folder = None

    def get_many(self, cache_id, keys):
        return {}

    def put_many(self, cache_id, items):
        return None


def _resolve_cache(cache: Any) -> EmbeddingCache:
    if cache is False:
        return _NoCache()
    if cache is None or cache is True:
        return EmbeddingCache()
    if isinstance(cache, EmbeddingCache):
        return cache
    return EmbeddingCache(cache)


def _box_digest(box: Any) -> str:
    if box is None:
        return ""
    return ":" + hashlib.sha1(np.round(np.asarray(box, dtype=np.float64), 1).tobytes()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ embed_files
_FORK_EMBEDDER: Embedder | None = None  # the parent's model, inherited by forked workers


def _worker_embed(datas: list[bytes], boxes: list, mirror: bool = False):
    """Process-pool worker: decode and embed one batch with the model inherited from the parent."""
    assert _FORK_EMBEDDER is not None
    return _embed_bytes(_FORK_EMBEDDER, datas, boxes, mirror)


def _embed_bytes(emb: Embedder, datas: list[bytes], boxes: list, mirror: bool = False):
    images: list[Any] = []
    bad: dict[int, str] = {}
    for i, data in enumerate(datas):
        try:
            images.append(_open_image(data))
        except Exception as exc:  # noqa: BLE001 - reported per file
            bad[i] = f"unreadable image ({type(exc).__name__}: {exc})"
            images.append(np.zeros((8, 8, 3), dtype=np.uint8))
    vecs, metas = (emb.embed_views if mirror else emb.embed_raw)(images, boxes=boxes)
    for i, reason in bad.items():
        vecs[i] = np.nan
        metas[i] = {"error": reason, "reason": "unreadable image"}
    return vecs, metas


def _can_fork() -> bool:
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods()


def embed_files(paths: Sequence[str | os.PathLike], embedder: Embedder | str = DEFAULT_EMBEDDER,
                cache: EmbeddingCache | str | os.PathLike | bool | None = None, progress: bool = True,
                batch_size: int = 64, landmarks: Sequence[Any] | None = None,
                boxes: Sequence[Any] | None = None, return_quality: bool = False,
                on_error: str = "raise", workers: int | None = None,
                stats: EmbedStats | None = None, mirror: bool = False):
    """Embeddings of crop files, float32 (N, dim), computed in batches and cached by content.

    ``mirror``: also the embedding of each crop's mirror image, (N, 2, dim) (crop, mirror), both
    computed in one batch (:meth:`Embedder.embed_views`) and cached (the mirror under the cache id
    + ``-mirror``).
    ``cache``: an :class:`EmbeddingCache`, a folder, None (default folder) or False (no cache).
    ``landmarks``: optional MTCNN landmarks per file in crop pixels (quality check only);
    ``boxes``: optional face boxes per file in crop pixels (see :meth:`Embedder.embed_with_quality`).
    ``on_error``: "raise" (a :class:`FacerecError` naming the file) or "nan" (NaN row; see quality).
    ``workers``: processes for the cache misses (default: up to 4 CPU cores when there are more than
    64 misses; always 1 for embedders that parallelise a batch themselves, ``uses_processes`` False). ``stats``: an :class:`EmbedStats` filled with counts and the seconds spent computing.
    Returns the array, or ``(array, [FaceQuality])`` with ``return_quality=True``.
    """
    if on_error not in ("raise", "nan"):
        raise ValueError("on_error must be 'raise' or 'nan'")
    emb = get_embedder(embedder) if isinstance(embedder, str) else embedder
    store = _resolve_cache(cache)
    stats = stats if stats is not None else EmbedStats()
    paths = [Path(p) for p in paths]
    n = len(paths)
    stats.total = n
    vecs = np.full((n, 2, emb.dim) if mirror else (n, emb.dim), np.nan, dtype=np.float32)
    if n == 0:
        return (vecs, []) if return_quality else vecs

    keys: list[str] = []
    datas: dict[str, bytes] = {}
    unread: dict[int, str] = {}
    for i, p in enumerate(paths):
        try:
            data = p.read_bytes()
        except OSError as exc:
            if on_error == "raise":
                raise FacerecError(f"cannot read {p}: {exc.strerror or exc}") from exc
            unread[i] = f"cannot read file ({exc.strerror or exc})"
            keys.append("")
            continue
        key = hashlib.sha256(data).hexdigest() + _box_digest(boxes[i] if boxes is not None else None)
        keys.append(key)
        datas.setdefault(key, data)

    wanted = [k for k in keys if k]
    found = store.get_many(emb.cache_id, wanted)
    if mirror:  # a crop counts as cached only with both views
        mirrors = store.get_many(_mirror_id(emb), wanted)
        found = {k: (np.stack([v, mirrors[k][0]]), m) for k, (v, m) in found.items()
                 if k in mirrors}
    todo = [k for k in dict.fromkeys(wanted) if k not in found]
    first = {k: keys.index(k) for k in todo}
    stats.cached = sum(1 for k in wanted if k in found)

    if todo:
        t0 = time.perf_counter()
        batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]

        def args_for(batch):
            return ([datas[k] for k in batch],
                    [boxes[first[k]] if boxes is not None else None for k in batch])

        if not getattr(emb, "uses_processes", True):
            workers = 1
        elif workers is None:
            workers = min(4, os.cpu_count() or 1) if len(todo) > 64 else 1
        workers = max(1, min(int(workers), len(batches)))
        bar = _progress(len(todo), f"embedding ({emb.name})", progress)
        try:
            done: set[int] = set()
            if workers > 1 and _can_fork():
                import multiprocessing as mp
                from concurrent.futures.process import BrokenProcessPool

                # fork (not spawn): works from any caller without a __main__ guard; the children
                # only run dlib, numpy and PIL. A broken pool falls back to this process.
                global _FORK_EMBEDDER
                _FORK_EMBEDDER = emb
                try:
                    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                        futures = [pool.submit(_worker_embed, *args_for(b), mirror)
                                   for b in batches]
                        for j, (batch, fut) in enumerate(zip(batches, futures)):
                            _store_batch(store, emb, batch, *fut.result(), found, mirror)
                            done.add(j)
                            bar.update(len(batch))
                except (BrokenProcessPool, OSError):
                    pass
                finally:
                    _FORK_EMBEDDER = None
            for j, batch in enumerate(batches):
                if j not in done:
                    _store_batch(store, emb, batch,
                                 *_embed_bytes(emb, *args_for(batch), mirror), found, mirror)
                    bar.update(len(batch))
        finally:
            bar.close()
        stats.computed = len(todo)
        stats.seconds = time.perf_counter() - t0

    quality: list[FaceQuality] = []
    for i, key in enumerate(keys):
        if i in unread:
            quality.append(FaceQuality(ok=False, error=unread[i], geometry_ok=False,
                                       reasons=["unreadable image"]))
            continue
        vec, meta = found[key]
        vecs[i] = vec
        quality.append(emb.assess(meta, landmarks[i] if landmarks is not None else None))
    failed = [i for i, q in enumerate(quality) if q.error]
    stats.failed = len(failed)
    if failed and on_error == "raise":
        i = failed[0]
        raise FacerecError(f"cannot embed {paths[i]}: {quality[i].error}")
    return (vecs, quality) if return_quality else vecs


def _mirror_id(emb: Embedder) -> str:
    return f"{emb.cache_id}-mirror"


def _store_batch(store, emb, batch, vecs, metas, found, mirror: bool = False) -> None:
    items = []
    for key, vec, meta in zip(batch, vecs, metas):
        found[key] = (np.asarray(vec, dtype=np.float32), meta)
        if not meta.get("error"):  # failures are retried on the next run
            items.append((key, vec, meta))
    if mirror:
        store.put_many(emb.cache_id, [(k, v[0], m) for k, v, m in items])
        store.put_many(_mirror_id(emb), [(k, v[1], {}) for k, v, m in items])
    else:
        store.put_many(emb.cache_id, items)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="face", dynamic_ncols=True)
