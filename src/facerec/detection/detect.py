"""Stage 1, detect: find every face in a folder of photos, crop it, record it in a manifest.

Library API::

    from facerec import FaceDetector
    faces = FaceDetector().detect("photo.jpg")        # list[Face], boxes in original pixels
    detector = get_detector("mtcnn", thresholds=(0.6, 0.7, 0.8))   # a detector by name
    detect_folder("raw/", "processed/", detector=detector)          # the `facerec detect` stage

Detectors are a registry of :class:`Detector` entries (:func:`register_detector`), like the
embedders of :mod:`facerec.recognition.embed`; MTCNN (:class:`FaceDetector`) is the only one. The crop spec
records which one found the faces, and predict builds the one its checkpoint names.

Output of :func:`detect_folder` (documented in docs/ARCHITECTURE.md, a stable format):

* ``processed/[<album>/]<stem>_<8 hex>_<i>.jpg``: one crop per face; ``<album>`` is the photo's
  first-level folder under RAW_DIR (one folder per person when the user sorted albums);
* ``processed/manifest.jsonl``: one JSON object per source file, see :func:`manifest_record`.

The stage is resumable and crash-safe: crops are written to a temporary name and renamed, each
photo's manifest line is appended (and flushed) only after its crops exist, a torn last line is
dropped on the next run, and a rerun skips photos already recorded with the same content hash.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from facerec.detection.cropping import FaceCrop, crop_faces
from facerec.cropspec import DEFAULT_MARGIN, CropSpec, read_processed_spec, write_processed_spec
from facerec.defaults import DEFAULT_DETECTOR, MAX_SIDE, MIN_FACE_SIZE, resolve_device
from facerec.errors import FacerecError, InvalidInputError
from facerec.registry import Registry
from facerec.images import (ImageLoadError, LoadedImage, as_rgb_image, entry_problem, iter_files,
                            load_image, read_file)
from facerec.manifest import MANIFEST, read_manifest
from facerec.safeio import (atomic_write, atomic_write_jsonl, check_output_location, display_path,
                            folder_lock, remove_temporaries)

@dataclass
class Face:
    """One detected face, in the original image's pixels."""

    box: tuple[float, float, float, float]  # x, y, w, h
    score: float
    landmarks: list[tuple[float, float]]  # left eye, right eye, nose, mouth left, mouth right

    @property
    def corners(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.box
        return x, y, x + w, y + h

    def to_dict(self) -> dict:
        return {"box": [round(v, 2) for v in self.box], "score": round(self.score, 6),
                "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks]}


# --------------------------------------------------------------------------------------- detectors
@runtime_checkable
class Detector(Protocol):
    """What the stages need from a face detector; entries are registered by name.

    ``get_detector(name, device=..., **settings)`` builds one. Every entry takes ``device``,
    ``min_face_size`` and ``max_side`` (predict passes them) besides settings of its own; its
    ``settings()`` are recorded in the crop spec (``detector``, see :mod:`facerec.cropspec`) and
    rebuild it: ``get_detector(d.name, **d.settings())``. Scores are on the detector's own scale:
    ``default_min_score`` (class attribute) is where ``facerec annotate`` rejects a crop by
    default, ``face_threshold`` where :meth:`score_crops` calls a crop a face.
    """

    name: str
    default_min_score: float
    face_threshold: float

    def settings(self) -> dict[str, Any]: ...

    def detect_batch(self, images: Iterable) -> list[list[Face]]:
        """Faces per image (path, PIL, HxWx3 uint8 or :class:`LoadedImage`), original pixels."""

    def score_crops(self, crops: Sequence[Image.Image], margin: float) -> np.ndarray:
        """How face-like each image is as a crop with ``margin`` around the face box."""


DETECTORS = Registry("detector")
#: class decorator: make a :class:`Detector` available to :func:`get_detector` as NAME
register_detector = DETECTORS.register
available_detectors = DETECTORS.names
#: the class registered as NAME (its class attributes, without loading a model)
detector_class = DETECTORS.get
# the other entries, one module each, imported when first asked for by name
DETECTORS.register_lazy("yunet", "facerec.detection.yunet:YuNetDetector")


def get_detector(name: str | Detector = DEFAULT_DETECTOR, **settings: Any) -> Detector:
    """A new detector registered as ``name`` with ``settings`` (a :class:`Detector` as is)."""
    if not isinstance(name, str):
        return name
    cls = detector_class(name)
    accepted = _settings_of(cls)
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        # settings are flags of the same name: say whose flag it is (--thresholds is mtcnn's)
        owners = [n for n in DETECTORS.names() if n != name
                  and unknown[0] in _settings_of(detector_class(n))]
        whose = f"is an {' / '.join(owners)} setting" if owners else "is no detector's setting"
        raise InvalidInputError(f"--{unknown[0]} {whose}: the {name} detector has no such setting "
                                f"(its settings: {', '.join(accepted)})")
    return cls(**settings)


def _settings_of(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def detection_copy(image: Any, max_side: int | None) -> LoadedImage:
    """What a detector runs on: ``image`` (a path, a :class:`LoadedImage`, a PIL image or an
    array) as an upright RGB copy at most ``max_side`` pixels long (a path is decoded at that
    size), keeping the original size and the scale so that boxes map back to it."""
    if isinstance(image, LoadedImage):
        loaded = image
    elif isinstance(image, (str, os.PathLike)):
        return load_image(image, max_side)
    else:
        loaded = as_rgb_image(image)
    side = max(loaded.image.size)
    if max_side and side > max_side:
        scale = max_side / side
        size = (max(1, round(loaded.image.width * scale)), max(1, round(loaded.image.height * scale)))
        small = loaded.image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return LoadedImage(small, loaded.width, loaded.height, loaded.scale * scale)
    return loaded


@register_detector("mtcnn")
class FaceDetector:
    """MTCNN face detector (P-, R-, O-Net) in PyTorch, batched, CUDA when available.

    ``max_side``: larger photos are detected on a copy downscaled to this longest side (JPEGs are
    decoded at reduced size, which is cheap); boxes and landmarks are always returned in the
    original image's pixels. ``None`` or 0 detects at full resolution. Faces smaller than
    ``min_face_size`` pixels *of the detection copy* are not searched for. Scores are O-Net's face
    probability.
    """

    name = "mtcnn"
    default_min_score = 0.9

    def __init__(self, device: str | torch.device = "auto", min_face_size: int = MIN_FACE_SIZE,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 max_side: int | None = MAX_SIDE) -> None:
        from facerec.detection.mtcnn import MTCNN

        if len(thresholds) != 3:
            raise ValueError("thresholds must be three numbers (P-Net, R-Net, O-Net)")
        self.device = resolve_device(device)
        self.max_side = max_side or None
        self.mtcnn = MTCNN(self.device, min_face_size, tuple(thresholds), factor)
        self.face_threshold = self.mtcnn.thresholds[2]

    def settings(self) -> dict[str, Any]:
        m = self.mtcnn
        return {"min_face_size": int(m.min_face_size), "thresholds": list(m.thresholds),
                "factor": float(m.factor), "max_side": self.max_side}

    def _prepare(self, image) -> LoadedImage:
        return detection_copy(image, self.max_side)

    def detect(self, image) -> list[Face]:
        """Faces in one image (a path, PIL image or HxWx3 uint8 array), highest score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Iterable) -> list[list[Face]]:
        """Faces in several images at once (one pass of each network over the whole batch)."""
        prepared = [self._prepare(image) for image in images]
        if not prepared:
            return []
        arrays = [torch.from_numpy(np.array(p.image, dtype=np.uint8)) for p in prepared]
        results = self.mtcnn.detect(arrays)
        faces = []
        for p, det in zip(prepared, results):
            # original pixel = detection pixel / scale (x and y are scaled alike)
            sx = p.width / p.image.width
            sy = p.height / p.image.height
            boxes = det.boxes * np.array([sx, sy, sx, sy])
            landmarks = det.landmarks * np.array([sx, sy])
            faces.append([
                Face((float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])), float(s),
                     [(float(x), float(y)) for x, y in pts])
                for b, s, pts in zip(boxes, det.scores, landmarks)
            ])
        return faces

    def score_crops(self, crops: Sequence[Image.Image], margin: float = DEFAULT_MARGIN) -> np.ndarray:
        """O-Net's face probability of each image's centre, read as a crop of ``facerec detect``
        (the face box = the crop without its ``margin``) and as a tight crop; the higher."""
        patches = []
        for im in crops:
            w, h = im.size
            for m in (margin, 0.0):
                side = max(w, h) / (1.0 + m)
                x0, y0 = round((w - side) / 2), round((h - side) / 2)
                box = (x0, y0, x0 + max(1, round(side)), y0 + max(1, round(side)))
                patch = im.crop(box).resize((48, 48), Image.Resampling.BOX)
                patches.append(np.asarray(patch, dtype=np.float32))
        x = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).to(self.mtcnn.device)
        x = ((x - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            score = self.mtcnn.onet(x)[2].float().cpu().numpy()
        return score.reshape(len(crops), 2).max(axis=1)


# ------------------------------------------------------------------------------------------ crops


# --------------------------------------------------------------------------------------- manifest


def _safe_stem(stem: str, limit: int = 48) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "photo"
    return stem[:limit]


def crop_name(relpath: str, index: int) -> str:
    """Crop file name, unique across photos: sanitised stem + hash of the relative path + index."""
    # surrogateescape: a name that is not valid UTF-8 hashes as its original bytes
    digest = hashlib.sha1(relpath.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{_safe_stem(Path(relpath).stem)}_{digest}_{index}.jpg"


def crop_folder(relpath: str) -> str:
    """Album folder of a photo: its first-level folder under RAW_DIR ('' for loose photos)."""
    parts = Path(relpath).parts
    return parts[0] if len(parts) > 1 else ""


def manifest_record(relpath: str, sha256: str | None, width: int | None, height: int | None,
                    faces: list[dict], error: str | None, size: int | None = None,
                    mtime_ns: int | None = None) -> dict:
    """One manifest line. ``faces`` items: box [x, y, w, h], score, landmarks [[x, y] x 5],
    crop (path relative to processed/), crop_box [x0, y0, x1, y1] and crop_transform (2x3 affine
    from original pixels to crop pixels). ``size``/``mtime_ns``: the file's, for quick resumes.

    A path that is not valid UTF-8 is kept losslessly (Python's surrogate escapes, written by
    ``json.dumps`` as ``\\udcXX``; ``os.fsencode(path)`` gives the original bytes back) and gets a
    readable ``path_readable`` beside it (undecodable bytes as ``\\xNN``)."""
    record = {"path": relpath, "sha256": sha256, "width": width, "height": height,
              "faces": faces, "error": error, "size": size, "mtime_ns": mtime_ns}
    if display_path(relpath) != relpath:
        record["path_readable"] = display_path(relpath)
    return record


# ------------------------------------------------------------------------------------- the stage


@dataclass
class DetectSummary:
    raw_dir: str
    out_dir: str
    files: int = 0
    photos_read: int = 0
    already_done: int = 0
    faces: int = 0
    photos_without_faces: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    crops: str = ""  # the recipe, in words: "112 px aligned (yunet)"


def check_dirs(raw_dir: Path, out_dir: Path) -> None:
    """The input folder exists and is a folder; the output folder does not overlap it and is
    writable (created if needed). Raises :class:`FacerecError` (one line)."""
    if not raw_dir.exists():
        raise FacerecError(f"input folder not found: {raw_dir}")
    if not raw_dir.is_dir():
        raise FacerecError(f"input is not a folder: {raw_dir}")
    check_output_location(out_dir, [raw_dir], "output folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".facerec-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FacerecError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}") from None


@dataclass
class _Todo:
    path: Path
    rel: str
    stat: os.stat_result
    previous: dict | None  # its manifest record from an earlier run, if any


def _load(item: _Todo) -> tuple[LoadedImage | None, str | None, str | None]:
    """(image, error, sha256), reading the file once for both the hash and the decoding. A file
    whose content matches its previous record gives (None, None, sha256): nothing to redo."""
    try:
        data = read_file(item.path)
    except ImageLoadError as exc:
        return None, str(exc), None
    digest = hashlib.sha256(data).hexdigest()
    if item.previous is not None and item.previous.get("sha256") == digest:
        return None, None, digest
    try:
        return load_image(item.path, data=data), None, digest
    except ImageLoadError as exc:
        return None, str(exc), digest


def _prefetch(pool: ThreadPoolExecutor, batches: list[list[_Todo]]):
    """Yield (batch, loaded images) while the next batch decodes in the background (PIL releases
    the GIL), holding at most two batches in memory."""
    def submit(batch):
        return [pool.submit(_load, item) for item in batch]

    pending = submit(batches[0]) if batches else []
    for i, batch in enumerate(batches):
        current = pending
        pending = submit(batches[i + 1]) if i + 1 < len(batches) else []
        yield batch, [future.result() for future in current]


def unchanged(previous: dict | None, stat: os.stat_result) -> bool:
    """Same size and modification time as when it was recorded (the check rsync and git make):
    skip without reading. Records without a content hash (unreadable files) are always retried."""
    return (previous is not None and bool(previous.get("sha256"))
            and previous.get("size") == stat.st_size and previous.get("mtime_ns") == stat.st_mtime_ns)


def detect_folder(raw_dir: str | os.PathLike, out_dir: str | os.PathLike = "processed", *,
                  detector: Detector | str | None = None, size: int | None = None,
                  margin: float | None = None,
                  align: bool | None = None, min_score: float | None = None, batch_size: int = 8,
                  progress: bool = True, quality: int = 95) -> DetectSummary:
    """Detect and crop every face of every photo under ``raw_dir`` into ``out_dir``. Resumable.

    Every entry under ``raw_dir`` gets exactly one manifest record: links, FIFOs and other special
    files are recorded with the reason they were skipped (and never opened). One writer at a time
    per ``out_dir``; ``out_dir`` may not overlap ``raw_dir``. ``detector``: a :class:`Detector` or
    a registered name (default: :data:`facerec.defaults.DEFAULT_DETECTOR` with its default
    settings). ``min_score``: faces scoring below it are not cut (default: the detector's
    operating point, ``default_min_score``; predict applies the same rule). The crop recipe
    (``size``, ``margin``, ``align``; None = not given) is the one of the crops already in
    ``out_dir``, else the legacy 160 px box crop (margin 0.2); ``facerec detect`` and ``facerec
    run`` choose the recipe of the model the crops are for, the default model's for new work
    (:func:`facerec.recognition.backbones.detect_settings_for`: a later layer than this one)."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    check_dirs(raw_dir, out_dir)
    if size is None or margin is None or align is None:
        base = read_processed_spec(out_dir) or CropSpec()
        size = base.size if size is None else size
        margin = base.margin if margin is None else margin
        align = base.align if align is None else align
    with folder_lock(out_dir, "detect"):
        return _detect_folder(raw_dir, out_dir, detector, size, margin, align, min_score,
                              batch_size, progress, quality)


def crop_spec_for(detector: Detector, size: int, margin: float, align: bool,
                  min_score: float | None) -> CropSpec:
    """The crop spec ``facerec detect`` records for crops made with these settings (both
    engines). ``min_score`` None: the detector's operating point, ``default_min_score`` (the one
    face rule, as predict's); the spec's ``detector["min_score"]`` is the score crops are cut at."""
    if min_score is None:
        min_score = detector.default_min_score
    return CropSpec(size, margin, align, {"name": detector.name, **detector.settings(),
                                          "min_score": float(min_score)})


def _detect_folder(raw_dir: Path, out_dir: Path, detector: Detector | str | None, size: int,
                   margin: float, align: bool, min_score: float, batch_size: int, progress: bool,
                   quality: int) -> DetectSummary:
    started = time.perf_counter()
    detector = get_detector(detector or DEFAULT_DETECTOR)
    done = read_manifest(out_dir, repair=True)
    spec = crop_spec_for(detector, size, margin, align, min_score)
    min_score = spec.detector["min_score"]  # None given: the detector's operating point
    write_processed_spec(out_dir, spec, has_crops=any(r.get("faces") for r in done.values()))
    remove_temporaries(out_dir)
    files = list(iter_files(raw_dir, exclude=out_dir))
    if not files:
        raise FacerecError(f"input folder is empty: {display_path(raw_dir)}")
    summary = DetectSummary(display_path(raw_dir), display_path(out_dir), files=len(files),
                            crops=spec.describe())

    todo: list[_Todo] = []
    special: list[dict] = []  # entries that are not regular files: recorded, never opened
    for path in files:
        rel = path.relative_to(raw_dir).as_posix()
        stat, problem = entry_problem(path)
        previous = done.get(rel)
        if problem is not None:
            record = manifest_record(rel, None, None, None, [], str(problem))
            if record != previous:
                special.append(record)
            count_record(summary, record)
        elif unchanged(previous, stat):
            count_record(summary, previous, already_done=True)
        else:
            todo.append(_Todo(path, rel, stat, previous))

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="photo", desc="detect", disable=not progress or not todo,
               file=sys.stderr)
    manifest = os.open(out_dir / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        append_records(manifest, special)
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), max(1, batch_size))]
        for batch, loaded in _prefetch(pool, batches):
            ok = [(item, image) for item, (image, _, _) in zip(batch, loaded) if image is not None]
            found = crop_faces([image for _, image in ok], detector, spec,
                               min_score=min_score) if ok else []
            faces_of = {item.rel: faces for (item, _), faces in zip(ok, found)}
            for item, (image, error, digest) in zip(batch, loaded):
                stat = {"size": item.stat.st_size, "mtime_ns": item.stat.st_mtime_ns}
                if image is None and error is None:  # touched but same content: keep its record
                    record = {**item.previous, **stat}
                    count_record(summary, record, already_done=True)
                elif image is None:
                    record = manifest_record(item.rel, digest, None, None, [], error, **stat)
                    count_record(summary, record)
                else:
                    crops = _save_crops(faces_of[item.rel], item.rel, out_dir, quality)
                    record = manifest_record(item.rel, digest, image.width, image.height, crops,
                                             None, **stat)
                    summary.photos_read += 1
                    count_record(summary, record)
                append_records(manifest, [record])
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        os.close(manifest)
        bar.close()
    compact_manifest(out_dir)
    summary.seconds = time.perf_counter() - started
    return summary


def append_records(manifest: int, records: list[dict]) -> None:
    """Append whole manifest lines to the file descriptor ``manifest`` and make them durable
    before going on (a kill loses nothing done). A failed write (full disk) is cut back off, so
    the manifest is never left with a torn line."""
    if not records:
        return
    data = "".join(json.dumps(record) + "\n" for record in records).encode("utf-8")
    start = os.lseek(manifest, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(manifest, view):]
        os.fsync(manifest)
    except OSError:
        try:
            os.ftruncate(manifest, start)
        except OSError:  # the next run repairs a torn last line anyway (read_manifest(repair=True))
            pass
        raise


def count_record(summary: DetectSummary, record: dict, already_done: bool = False) -> None:
    """Each file counts once: read now, done before (and unchanged), or skipped with a reason."""
    if record.get("error"):
        reason = record["error"].split(":")[0]
        summary.skipped[reason] += 1
        summary.skipped_files.append((display_path(record["path"]), record["error"]))
        return
    if already_done:
        summary.already_done += 1
    if record["faces"]:
        summary.faces += len(record["faces"])
    else:
        summary.photos_without_faces += 1


def _save_crops(faces: list[FaceCrop], rel: str, out_dir: Path, quality: int) -> list[dict]:
    (out_dir / crop_folder(rel)).mkdir(parents=True, exist_ok=True)
    entries = []
    for i, face in enumerate(faces):
        entry = crop_entry(face, rel, i)
        atomic_write(out_dir / entry["crop"],
                     lambda tmp, crop=face.crop: crop.save(tmp, format="JPEG", quality=quality))
        entries.append(entry)
    return entries


def crop_entry(face: FaceCrop, rel: str, index: int) -> dict:
    """The manifest entry of face ``index`` of photo ``rel`` (see :func:`manifest_record`); its
    ``crop`` is where the crop is saved, relative to the output folder."""
    matrix, size = face.matrix, face.crop.width
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    corners = inverse @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]])
    entry = Face(face.box, face.score, face.landmarks).to_dict()
    entry["crop"] = (Path(crop_folder(rel)) / crop_name(rel, index)).as_posix()
    entry["crop_box"] = [round(float(v), 2) for v in (*corners.min(1), *corners.max(1))]
    entry["crop_transform"] = [[round(float(v), 6) for v in row] for row in matrix]
    return entry


def compact_manifest(out_dir: Path) -> None:
    """Rewrite the manifest with one line per path (sorted), atomically."""
    atomic_write_jsonl(out_dir / MANIFEST, read_manifest(out_dir))


def print_detect_summary(summary: DetectSummary, file=None) -> None:
    """The summary printed by ``facerec detect``."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    table = Table(title=f"facerec detect: {summary.raw_dir} -> {summary.out_dir}", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    table.add_row("crops", summary.crops)
    table.add_row("files", str(summary.files))
    table.add_row("photos read", str(summary.photos_read))
    table.add_row("already done (skipped)", str(summary.already_done))
    table.add_row("faces found", str(summary.faces))
    table.add_row("photos without faces", str(summary.photos_without_faces))
    for reason, count in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", str(count))
    table.add_row("seconds", f"{summary.seconds:.1f}")
    console.print(table)
    for rel, why in summary.skipped_files[:20]:
        console.print(f"  skipped {rel}: {why}")
    if len(summary.skipped_files) > 20:
        console.print(f"  ... and {len(summary.skipped_files) - 20} more (see manifest.jsonl)")
