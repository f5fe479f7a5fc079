"""Face embeddings shared by ``annotate``, ``split``, ``train`` and ``predict``.

One interface, :class:`Embedder`, and a registry so that another model can be added later by name::

    emb = get_embedder("dlib_face")                  # dlib's 128-d ResNet face descriptor
    vecs = emb.embed_images([crop1, crop2])          # (2, 128) float32
    vecs = embed_files(paths, emb)                   # same, cached by crop content hash

Every embedder declares the crop it is made for as ``crop`` (a
:class:`~facerec.cropspec.CropSpec`). The built-in models, one file each, registered lazily:
``dlib_face`` (:mod:`facerec.recognition.dlib_face`), ``sface`` (OpenCV Zoo's SFace 2021dec,
:mod:`facerec.recognition.sface`: 112 px crops aligned on the ArcFace template, compared by
cosine) and their ensemble ``sface+dlib_face`` (:mod:`facerec.recognition.sface_dlib`).

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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from facerec.cropspec import CropSpec
from facerec.defaults import DEFAULT_BACKBONE
from facerec.errors import FacerecError
from facerec.registry import Registry

__all__ = [
    "Embedder",
    "EmbeddingCache",
    "FaceQuality",
    "EmbedStats",
    "available_embedders",
    "default_cache_dir",
    "embed_files",
    "get_embedder",
    "register_embedder",
]

DEFAULT_EMBEDDER = DEFAULT_BACKBONE  # the frozen face model new work uses (facerec.defaults)


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
_INSTANCES_LOCK = threading.RLock()  # reentrant: an ensemble builds its members
#: class decorator: make an :class:`Embedder` subclass available to :func:`get_embedder`
register_embedder = EMBEDDERS.register
available_embedders = EMBEDDERS.names
#: the class registered as NAME (its class attributes, without loading a model)
embedder_class = EMBEDDERS.get
# the built-in models, one file each, imported when first asked for by name
EMBEDDERS.register_lazy("dlib_face", "facerec.recognition.dlib_face:DlibFaceEmbedder")
EMBEDDERS.register_lazy("sface", "facerec.recognition.sface:SFaceEmbedder")
EMBEDDERS.register_lazy("sface+dlib_face", "facerec.recognition.sface_dlib:SFaceDlibEmbedder")


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
def lazy_torch_net(embedder: Any, loader: str) -> Any:
    """``embedder``'s torch network, built at first use by ``loader`` ("module:function",
    imported then: an embedder's module loads no torch until it embeds) on its ``torch_device``
    and cached in its ``_net`` (thread-safe, under its ``_net_lock``): float16 on CUDA unless
    its ``_half`` says otherwise, channels-last, in eval mode; sets its ``dtype``."""
    if embedder._net is None:
        with embedder._net_lock:
            if embedder._net is None:
                import importlib

                import torch

                module, function = loader.split(":")
                net = getattr(importlib.import_module(module), function)()
                net = net.to(embedder.torch_device)
                half = embedder._half if embedder._half is not None \
                    else embedder.torch_device.type == "cuda"
                embedder.dtype = torch.float16 if half else torch.float32
                embedder._net = net.to(dtype=embedder.dtype,
                                       memory_format=torch.channels_last).eval()
    return embedder._net


class Embedder(abc.ABC):
    """Maps RGB face crops to fixed-size vectors where distance means "different person".

    Subclasses set ``name``, ``dim``, ``version`` (part of the cache key: bump it when the output
    changes), ``metric`` and ``same_person_threshold`` (the distance below which two faces are
    usually the same person), and implement :meth:`embed_raw`. What the rest of facerec needs to
    know of a model is said here, by class attributes, never by testing its name:

    * ``crop``: the crop new work should cut for it (size, margin, alignment; the detector is
      chosen separately), see :mod:`facerec.cropspec`;
    * ``prior_threshold``: the cosine-to-prototype threshold of a model with a single person
      (nobody to calibrate against); ``verify_threshold``: the 1:1 cosine-distance threshold
      without a checkpoint (both measured on lfw-dev by the benches named where they are set);
    * ``finetune_levels``: how many of its last levels ``train --finetune N`` can train (0: none);
    * ``settings``: its constructor's options that a checkpoint may record, with their types and
      ranges (a checkpoint's ``embedder_kwargs`` are checked against them);
    * :meth:`input_cutter` / :meth:`torch_network`: the input its network takes and the network
      itself, for an ONNX export of the whole classifier (without them the head alone is);
    * ``composite``: made of other registered embedders (``sface+dlib_face``): never inferred as
      the model of a folder of crops (:func:`facerec.recognition.backbones.backbone_for_crops`),
      only chosen by name.
    """

    name: str = ""
    dim: int = 0
    version: str = "1"
    metric: str = "euclidean"
    same_person_threshold: float = 0.6
    crop: CropSpec = CropSpec()
    prior_threshold: float | None = None
    verify_threshold: float | None = None
    finetune_levels: int = 0
    #: option -> (type, lowest, highest) of the options a checkpoint may record
    settings: dict[str, tuple[type, float, float]] = {}
    #: side of the square RGB uint8 input of :meth:`torch_network` (0: no whole-model export)
    network_input_size: int = 0
    #: an ensemble of other embedders (see the class docstring)
    composite: bool = False

    def options(self) -> dict:
        """This instance's values of its ``settings`` (what a checkpoint records)."""
        return {key: getattr(self, key) for key in self.settings if hasattr(self, key)}

    @classmethod
    def input_cutter(cls, settings: dict) -> Callable[[Sequence[Any]], tuple[list, list[int]]]:
        """A function from face crops to the inputs of :meth:`torch_network`, without torch (an
        ONNX export runs on it alone): (HxWx3 uint8 arrays, the indices of the crops they come
        from; a crop that cannot be used has none). ``settings``: the embedder's options."""
        raise NotImplementedError(f"{cls.name} has no exportable network")

    def torch_network(self, tail: Any = None):
        """The network (CPU, float32, eval) mapping (N, 3, S, S) RGB 0..255 floats to raw
        embeddings; ``tail``: fine-tuned last levels (``finetune_levels`` > 0)."""
        raise NotImplementedError(f"{self.name} has no exportable network")

    @classmethod
    def finetune_tail(cls, levels: int, pretrained: bool = False):
        """The module of the last ``levels`` levels (``train --finetune``): the model's own
        weights with ``pretrained``, else to be loaded from a checkpoint."""
        raise NotImplementedError(f"{cls.name} has no levels to fine-tune")

    def trunk(self, inputs: np.ndarray, upto: int, mirror: bool = True) -> np.ndarray:
        """The activations entering level ``upto`` for :meth:`network_input`'s arrays: (N, 2 or
        1, C, H, W) float32 on the CPU (crop and mirror image with ``mirror``)."""
        raise NotImplementedError(f"{self.name} has no levels to fine-tune")

    @property
    def cache_id(self) -> str:
        return f"{self.name}-v{self.version}"

    # Distances used by annotate/split, scaled from ``same_person_threshold`` unless a subclass
    # measured better ones (the dlib values come from bench/annotate.py). Annotate and split
    # measure them as euclidean distances between the vectors ``embed_files`` returns (for an
    # embedder of unit vectors, sqrt(2 x cosine distance)), whatever ``metric`` is.
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

    @property
    def album_distance(self) -> float:
        """Max distance of an album crop to the mean of the album's main cluster to keep it."""
        return self.same_person_threshold

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
        image = open_image(Path(image).read_bytes())
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


def open_image(data: bytes) -> Image.Image:
    """An upright RGB image from encoded bytes (EXIF orientation applied)."""
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


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
    return embed_bytes(_FORK_EMBEDDER, datas, boxes, mirror)


def embed_bytes(emb: Embedder, datas: list[bytes], boxes: list, mirror: bool = False):
    """(vectors, metas) of encoded crops (``boxes``: face boxes in crop pixels or None each), as
    :func:`embed_files` computes a batch of cache misses; an undecodable crop gets a NaN row and
    an ``error`` in its meta."""
    images: list[Any] = []
    bad: dict[int, str] = {}
    for i, data in enumerate(datas):
        try:
            images.append(open_image(data))
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
                stats: EmbedStats | None = None, mirror: bool = False, engine: Any = None):
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
    ``engine``: computes the cache misses elsewhere instead (``--engine ray``): called as
    ``engine(embedder, [(bytes, box), ...], mirror)``, it yields ``(indices, vectors, metas)``
    as :func:`embed_bytes` returns them, in any order; what it yields is cached as it comes.
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
    keys, datas, unread = _read_files(paths, boxes, on_error)
    wanted = [k for k in keys if k]
    found = store.get_many(emb.cache_id, wanted)
    if mirror:  # a crop counts as cached only with both views
        mirrors = store.get_many(_mirror_id(emb), wanted)
        found = {k: (np.stack([v, mirrors[k][0]]), m) for k, (v, m) in found.items()
                 if k in mirrors}
    stats.cached = sum(1 for k in wanted if k in found)
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key and key not in found:
            first.setdefault(key, i)
    if first:
        t0 = time.perf_counter()
        work = _Work(emb, store, datas, {k: boxes[i] if boxes is not None else None
                                         for k, i in first.items()}, mirror, found, engine)
        work.run(list(first), batch_size, workers, progress)
        stats.computed = len(first)
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


def _read_files(paths: list[Path], boxes: Sequence[Any] | None, on_error: str
                ) -> tuple[list[str], dict[str, bytes], dict[int, str]]:
    """(cache key per file ("" when unreadable), bytes per key, why each unreadable file
    failed); with ``on_error="raise"`` an unreadable file raises."""
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
    return keys, datas, unread


@dataclass
class _Work:
    """The cache misses of one :func:`embed_files` call: computed in batches (in forked worker
    processes when that helps), stored in the cache and in ``found``."""

    emb: Embedder
    store: EmbeddingCache
    datas: dict[str, bytes]
    boxes: dict[str, Any]
    mirror: bool
    found: dict
    engine: Any = None

    def args(self, batch: list[str]) -> tuple[list[bytes], list]:
        return [self.datas[k] for k in batch], [self.boxes[k] for k in batch]

    def run(self, todo: list[str], batch_size: int, workers: int | None, progress: bool) -> None:
        if self.engine is not None:
            bar = _progress(len(todo), f"embedding ({self.emb.name})", progress)
            try:
                items = [(self.datas[k], self.boxes[k]) for k in todo]
                for indices, vecs, metas in self.engine(self.emb, items, self.mirror):
                    self.keep([todo[i] for i in indices], vecs, metas)
                    bar.update(len(indices))
            finally:
                bar.close()
            return
        batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
        if not getattr(self.emb, "uses_processes", True):
            workers = 1
        elif workers is None:
            workers = min(4, os.cpu_count() or 1) if len(todo) > 64 else 1
        workers = max(1, min(int(workers), len(batches)))
        bar = _progress(len(todo), f"embedding ({self.emb.name})", progress)
        try:
            done = self._in_workers(batches, workers, bar) if workers > 1 and _can_fork() else set()
            for j, batch in enumerate(batches):
                if j not in done:
                    self.keep(batch, *embed_bytes(self.emb, *self.args(batch), self.mirror))
                    bar.update(len(batch))
        finally:
            bar.close()

    def _in_workers(self, batches: list[list[str]], workers: int, bar) -> set[int]:
        """The batches done by forked workers (fork, not spawn: works from any caller without
        a __main__ guard; the children only run dlib, numpy and PIL). A broken pool leaves the
        rest to this process."""
        import multiprocessing as mp
        from concurrent.futures.process import BrokenProcessPool

        global _FORK_EMBEDDER
        _FORK_EMBEDDER = self.emb
        done: set[int] = set()
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                futures = [pool.submit(_worker_embed, *self.args(b), self.mirror) for b in batches]
                for j, (batch, fut) in enumerate(zip(batches, futures)):
                    self.keep(batch, *fut.result())
                    done.add(j)
                    bar.update(len(batch))
        except (BrokenProcessPool, OSError):
            pass
        finally:
            _FORK_EMBEDDER = None
        return done

    def keep(self, batch: list[str], vecs, metas) -> None:
        _store_batch(self.store, self.emb, batch, vecs, metas, self.found, self.mirror)


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
