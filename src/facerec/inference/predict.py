"""``facerec predict``: who is in a photo, a face crop or a folder of them; ``unknown`` for strangers.

Library API::

    from facerec.inference.predict import Predictor
    predictor = Predictor("runs/NAME/version_0/checkpoints/epoch=E-step=S.ckpt")   # or model.onnx
    result = predictor.predict_image("group.jpg")             # ImageResult
    for face in result.faces:
        print(face.box, face.label, face.confidence)          # [x, y, w, h], name or "unknown", cosine
    for result in predictor.predict_paths(["photos/"], progress=True):   # folders: recursive
        ...

How an image is read (:meth:`Predictor.predict_paths`):

1. It is loaded with :func:`facerec.images.load_image` (EXIF orientation, any mode, HEIC); a file
   that cannot be read gives an :class:`ImageResult` with ``error`` set, never an exception.
2. Every face is found with the detector that found the training faces (the checkpoint's crop
   spec names it, :func:`facerec.detection.detect.get_detector`: MTCNN, batched, CUDA when available) and
   cropped exactly as ``facerec detect`` crops for training (:func:`facerec.detection.cropping.crop_faces`, a
   160-pixel square with the checkpoint's crop margin, 0.2 by default).
3. An image in which no face is found and whose sides are both at most ``crop_max_side`` (400)
   pixels is taken to be an already cropped face (the tutorial's crops), *if* the detector
   accepts it as one (``score_crops``: MTCNN's last stage, O-Net, on the image's centre); a
   small photo of a dog still has no face.
   ``mode="crops"`` skips detection and takes every image as one crop (what ``facerec evaluate``
   does on a dataset from ``facerec split``).
4. All crops of a batch are classified at once: ``label`` is the person, or ``"unknown"`` when the
   ``confidence`` (cosine between the face's feature and the person's prototype, see
   :mod:`facerec.recognition.model`) is below the threshold stored in the checkpoint (or given).

Runtimes (:mod:`facerec.recognition.runtime`): ``"torch"`` (the checkpoint through
:func:`facerec.recognition.model.load_checkpoint`) or ``"onnx"`` (onnxruntime on a model written by ``facerec
export``; a ``.ckpt`` is exported in memory first). With the ``dlib_face`` backbone the ONNX model
holds dlib's face ResNet too: dlib only cuts the chip.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec.cropspec import CropSpec
from facerec.defaults import MAX_SIDE, MIN_FACE_SIZE, PREDICT_MAX_SIDE, resolve_device
from facerec.detection.cropping import CROP_MAX_SIDE
from facerec.errors import FacerecError
from facerec.images import IMAGE_EXTS
from facerec.manifest import sha256_file
from facerec.safeio import META_DIR, atomic_write, check_output_location, display_path, folder_lock

__all__ = [
    "CROP_MAX_SIDE",
    "IMAGE_EXTS",
    "FaceResult",
    "ImageResult",
    "Predictor",
    "collect_images",
    "main_face",
    "print_results",
    "write_csv",
    "save_annotated",
    "annotated_paths",
]

CSV_COLUMNS = ("image", "face", "x", "y", "w", "h", "label", "confidence", "candidate",
               "probability", "detection_score", "source", "error")


# ------------------------------------------------------------------------------------------ results
def _num(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


@dataclass
class FaceResult:
    """One face of an image. ``box`` = [x, y, w, h] in the upright image's pixels; ``label`` is a
    person or ``"unknown"``; ``confidence`` the cosine to the candidate's prototype (the unit of the
    threshold; None when the crop could not be embedded); ``candidate`` the best known person even
    when the label is unknown; ``probability`` the head's softmax probability of the candidate;
    ``detection_score`` MTCNN's; ``source`` ``"detected"`` or ``"whole_image"`` (taken as a crop)."""

    box: tuple[float, float, float, float]
    label: str
    confidence: float | None
    candidate: str
    probability: float | None
    detection_score: float | None
    source: str = "detected"

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box], "label": self.label,
                "confidence": _num(self.confidence, 4), "candidate": self.candidate,
                "probability": _num(self.probability, 4),
                "detection_score": _num(self.detection_score, 4), "source": self.source}


@dataclass
class ImageResult:
    """The faces of one image (left to right), or why it could not be read (``error``)."""

    image: str
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    width: int | None = None
    height: int | None = None
    #: the upright RGB image, only with ``keep_images=True`` (for drawing); not serialised
    pil: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"image": self.image, "faces": [f.to_dict() for f in self.faces],
                "error": self.error, "width": self.width, "height": self.height}


def main_face(result: ImageResult, pick: str = "largest") -> FaceResult | None:
    """The face a labelled photo is about: ``"largest"`` box, or the one nearest the ``"center"``."""
    if not result.faces:
        return None
    if pick == "largest":
        return max(result.faces, key=lambda f: f.box[2] * f.box[3])
    if pick == "center":
        cx, cy = (result.width or 0) / 2, (result.height or 0) / 2
        return min(result.faces, key=lambda f: (f.box[0] + f.box[2] / 2 - cx) ** 2
                   + (f.box[1] + f.box[3] / 2 - cy) ** 2)
    raise ValueError(f"pick must be 'largest' or 'center', not {pick!r}")


# -------------------------------------------------------------------------------------- inputs
def collect_images(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, str, Path | None]]:
    """(file, shown name, root folder or None) for every input: files as given, folders searched
    recursively for image files (hidden files skipped). Missing paths raise :class:`FacerecError`."""
    from facerec.images import iter_files

    out: list[tuple[Path, str, Path | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = [f for f in iter_files(p) if f.suffix.lower() in IMAGE_EXTS]
            if not files:
                raise FacerecError(f"no images found in {display_path(p)} (looked for "
                                   f"{', '.join(sorted(e[1:] for e in IMAGE_EXTS))})")
            out += [(f, display_path(f), p) for f in files]
        elif os.path.lexists(p):  # a broken link or a loop is reported by the loader, per file
            out.append((p, display_path(p), None))
        else:
            raise FacerecError(f"image not found: {display_path(p)}")
    if not out:
        raise FacerecError("no image given")
    return out


# ------------------------------------------------------------------------------------- predictor
class Predictor:
    """Detect, crop and classify faces with a facerec checkpoint (or an exported ONNX model).

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda:1``... for the detector and the
    classifier (and the dlib_face network). ``runtime``: ``"torch"`` or ``"onnx"``; a ``.onnx``
    file always runs on onnxruntime. ``threshold`` overrides the checkpoint's unknown threshold
    (-1 turns ``unknown`` off). ``mode``: ``"auto"`` (detect faces; small face-like images without a
    detected face are crops) or ``"crops"`` (every image is one face crop, no detection).
    ``timings`` accumulates seconds per stage: load, detect, embed, classify.
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", runtime: str = "torch",
                 threshold: float | None = None, mode: str = "auto", batch_size: int = 16,
                 min_face_size: int = MIN_FACE_SIZE, max_side: int | None = MAX_SIDE,
                 crop_max_side: int = CROP_MAX_SIDE, detector: Any = None) -> None:
        from facerec.recognition.loader import load_runtime
        from facerec.recognition.runtime import RUNTIMES

        if runtime not in RUNTIMES:
            raise FacerecError(f"unknown runtime {runtime!r}: use torch or onnx")
        if mode not in ("auto", "crops"):
            raise FacerecError(f"unknown mode {mode!r}: use auto or crops")
        path = Path(checkpoint)
        if not path.is_file():
            raise FacerecError(f"checkpoint not found: {path}")
        self.checkpoint = str(path)
        self.device = resolve_device(device)
        t0 = time.perf_counter()
        self.runtime = load_runtime(path, runtime, self.device)
        self.timings: dict[str, float] = {"load": time.perf_counter() - t0, "detect": 0.0,
                                          "embed": 0.0, "classify": 0.0}
        self.counts = {"images": 0, "faces": 0, "errors": 0}
        self.labels: list[str] = self.runtime.labels
        self.info: dict = self.runtime.info
        # crop new faces exactly as the training crops were made (the checkpoint's crop spec)
        self.crop = CropSpec.from_preprocess(self.info.get("preprocess"))
        self.crop_size, self.crop_margin, self.align = self.crop.size, self.crop.margin, self.crop.align
        self.threshold_override = None if threshold is None else float(threshold)
        self.mode = mode
        self.batch_size = max(1, int(batch_size))
        self.min_face_size = int(min_face_size)
        self.max_side = max_side or None
        self.crop_max_side = int(crop_max_side or 0)
        self._detector = detector
        if detector is None and mode == "auto":  # the detector that found its training faces
            from facerec.detection.detect import detector_class

            try:
                detector_class(self.crop.detector_name)
            except FacerecError as exc:
                raise FacerecError(f"{display_path(path)}: its training crops were made with an "
                                   f"{exc}") from None

    # ---- properties
    @property
    def runtime_name(self) -> str:
        return self.runtime.name

    @property
    def stored_threshold(self) -> float | None:
        return self.runtime.threshold

    @property
    def threshold(self) -> float | None:
        """The threshold in use: the override, else the checkpoint's (None: nobody is unknown)."""
        return self.threshold_override if self.threshold_override is not None \
            else self.stored_threshold

    @property
    def detector(self):
        """The detector the checkpoint's crops were made with (its ``preprocess.crop``)."""
        if self._detector is None:
            from facerec.detection.detect import get_detector

            t0 = time.perf_counter()
            self._detector = get_detector(self.crop.detector_name, device=self.device,
                                          min_face_size=self.min_face_size, max_side=self.max_side)
            self.timings["load"] += time.perf_counter() - t0
        return self._detector

    def warm_up(self) -> None:
        """Load the detector and the embedder now (the first prediction is then not slower)."""
        from PIL import Image

        img = Image.new("RGB", (self.crop_size, self.crop_size), (128, 128, 128))
        if self.mode == "auto":
            self.detector.detect(img)
        self.runtime.features([img])

    # ---- classification
    def classify_crops(self, crops: Sequence[Any], threshold: float | None = None
                       ) -> list[tuple[str, float, str, float]]:
        """(label, confidence, candidate, probability) for face crops (PIL images)."""
        return self.classify_features(crops, threshold)[1]

    def classify_features(self, crops: Sequence[Any], threshold: float | None = None
                          ) -> tuple[Any, list[tuple[str, float, str, float]]]:
        """The runtime's features of the crops too (:meth:`Runtime.features`; None for none)."""
        crops = list(crops)
        if not crops:
            return None, []
        t0 = time.perf_counter()
        z = self.runtime.features(crops)
        t1 = time.perf_counter()
        t = self.threshold if threshold is None else threshold
        idx, score, prob, known = self.runtime.decide(z, t)
        self.timings["embed"] += t1 - t0
        self.timings["classify"] += time.perf_counter() - t1
        from facerec.recognition.decision import UNKNOWN

        out = []
        for i in range(len(crops)):
            cand = self.labels[int(idx[i])]
            out.append((cand if bool(known[i]) else UNKNOWN, float(score[i]), cand, float(prob[i])))
        return z, out

    # ---- images
    def predict_image(self, image: Any, name: str | None = None) -> ImageResult:
        """Faces of one image: a path (errors raise :class:`FacerecError`), a PIL image or an
        HxWx3 uint8 array."""
        if isinstance(image, (str, os.PathLike)):
            result = list(self.predict_paths([image]))[0]
            if result.error:
                raise FacerecError(f"cannot read {image}: {result.error}")
            return result
        from facerec.images import as_rgb_image

        loaded = as_rgb_image(image)
        return self.predict_loaded([(name or "<image>", loaded, None)])[0]

    def predict_paths(self, paths: Iterable[str | os.PathLike], *, progress: bool = False,
                      keep_images: bool = False) -> Iterator[ImageResult]:
        """One :class:`ImageResult` per image file, in order, for files and folders (recursive).

        Images are read two at a time in the background while the previous batch is detected and
        classified. ``keep_images`` keeps each upright image on ``result.pil`` (for drawing)."""
        items = collect_images(list(paths))
        from facerec.images import ImageLoadError, load_image

        def load(path: Path):
            t0 = time.perf_counter()
            try:
                return load_image(path, PREDICT_MAX_SIDE), None, time.perf_counter() - t0
            except ImageLoadError as exc:
                return None, str(exc), time.perf_counter() - t0
            except OSError as exc:  # e.g. a folder vanished while reading
                return None, f"unreadable: {exc.strerror or exc}", time.perf_counter() - t0

        bar = None
        if progress and len(items) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), unit="photo", desc="predict", file=sys.stderr,
                       dynamic_ncols=True)
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        pool = ThreadPoolExecutor(max_workers=2)
        try:
            pending = [pool.submit(load, p) for p, _, _ in batches[0]] if batches else []
            for b, batch in enumerate(batches):
                current = pending
                pending = ([pool.submit(load, p) for p, _, _ in batches[b + 1]]
                           if b + 1 < len(batches) else [])
                loaded = [f.result() for f in current]
                work = []
                for (_, shown, _), (img, err, secs) in zip(batch, loaded):
                    self.timings["load"] += secs
                    work.append((shown, img, err))
                for result in self.predict_loaded(work, keep_images=keep_images):
                    if bar is not None:
                        bar.update(1)
                    yield result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()

    def face_crops(self, images: Sequence[Any], whole_images: bool = True) -> list[list[Any]]:
        """The faces of loaded images, cut as the checkpoint's training crops were
        (:func:`facerec.detection.cropping.crop_faces`), left to right; ``whole_images``: a small
        face-like image without a detected face is itself one crop (mode ``crops``: every image
        is)."""
        from facerec.detection.cropping import crop_faces, operating_point

        if self.mode == "crops":
            from facerec.detection.cropping import FaceCrop

            return [[FaceCrop(im.image, (0.0, 0.0, float(im.width), float(im.height)), None,
                              None, np.eye(2, 3), "whole_image")] for im in images]
        t0 = time.perf_counter()
        found = crop_faces(images, self.detector, self.crop,
                           min_score=operating_point(self.crop, self.detector),
                           crop_max_side=self.crop_max_side if whole_images else 0)
        self.timings["detect"] += time.perf_counter() - t0
        return [sorted(faces, key=lambda f: (f.box[0], f.box[1])) for faces in found]

    def predict_loaded(self, work: list[tuple[str, Any, str | None]], keep_images: bool = False
                       ) -> list[ImageResult]:
        """One :class:`ImageResult` per ``(name, LoadedImage or None, error or None)``: the
        images loaded elsewhere (:func:`facerec.images.load_image`), detected in one batch and
        all their faces embedded in one (``facerec serve`` batches requests here, the Ray
        engine its blocks); a None image gives its error."""
        results = [ImageResult(image=name, error=err,
                               width=None if img is None else img.width,
                               height=None if img is None else img.height,
                               pil=img.image if (keep_images and img is not None) else None)
                   for name, img, err in work]
        ok = [i for i, (_, img, _) in enumerate(work) if img is not None]
        self.counts["images"] += len(work)
        self.counts["errors"] += len(work) - len(ok)
        found = self.face_crops([work[i][1] for i in ok]) if ok else []
        faces = [(i, face) for i, crops in zip(ok, found) for face in crops]
        preds = self.classify_crops([face.crop for _, face in faces])
        for (i, face), (label, score, cand, prob) in zip(faces, preds):
            results[i].faces.append(FaceResult(
                box=face.box, label=label, confidence=score if math.isfinite(score) else None,
                candidate=cand, probability=prob if math.isfinite(prob) else None,
                detection_score=face.score, source=face.source))
        self.counts["faces"] += len(faces)
        return results


# -------------------------------------------------------------------------------------- output
def format_result(result: ImageResult, prefix: bool) -> list[str]:
    """Text lines for one image: ``Predicted class: NAME`` for one face (the tutorial's line), one
    line per face with its box and confidence for several."""
    head = f"{result.image}: " if prefix else ""
    if result.error:
        return []
    if not result.faces:
        return [f"{head}No face found"]
    if len(result.faces) == 1:
        return [f"{head}Predicted class: {result.faces[0].label}"]
    lines = []
    n = len(result.faces)
    for k, f in enumerate(result.faces, 1):
        box = ", ".join(str(int(round(v))) for v in f.box)
        conf = "n/a" if f.confidence is None else f"{f.confidence:.3f}"
        lines.append(f"{head}Predicted class: {f.label} (face {k} of {n}, box [{box}], "
                     f"confidence {conf})")
    return lines


def print_results(results: Iterable[ImageResult], prefix: bool, file=None,
                  errors_to=None) -> None:
    """Print as results arrive; unreadable images go to ``errors_to`` (stderr)."""
    out = file or sys.stdout
    err = errors_to or sys.stderr
    for r in results:
        if r.error:
            print(f"facerec predict: skipped {r.image}: {r.error}", file=err, flush=True)
        for line in format_result(r, prefix):
            print(line, file=out, flush=True)


def write_csv(results: Iterable[ImageResult], target) -> None:
    """One row per face (:data:`CSV_COLUMNS`); an image without faces, or unreadable, gets one row
    with an empty ``face`` column (and ``error`` set for the latter)."""
    own = isinstance(target, (str, os.PathLike))
    handle = open(target, "w", newline="", encoding="utf-8") if own else target
    try:
        w = csv.writer(handle)
        w.writerow(CSV_COLUMNS)
        for r in results:
            if not r.faces:
                w.writerow([r.image, "", "", "", "", "", "", "", "", "", "", "", r.error or ""])
            for k, f in enumerate(r.faces):
                d = f.to_dict()
                w.writerow([r.image, k, *d["box"], d["label"],
                            "" if d["confidence"] is None else d["confidence"], d["candidate"],
                            "" if d["probability"] is None else d["probability"],
                            "" if d["detection_score"] is None else d["detection_score"],
                            d["source"], ""])
    finally:
        if own:
            handle.close()


def label_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_faces(image, faces: Sequence[FaceResult]):
    """A copy of ``image`` with a box and ``name confidence`` per face (green: known person,
    orange: unknown)."""
    from PIL import ImageDraw

    from facerec.recognition.decision import UNKNOWN

    im = image.convert("RGB").copy()
    draw = ImageDraw.Draw(im)
    side = min(im.size)
    width = max(2, side // 250)
    font = label_font(max(11, side // 40))
    for f in faces:
        x, y, w, h = f.box
        colour = (255, 140, 0) if f.label == UNKNOWN else (40, 200, 60)
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        text = f.label if f.confidence is None else f"{f.label} {f.confidence:.2f}"
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l, b - t
        ty = y - th - 2 * width if y - th - 2 * width >= 0 else y + h
        draw.rectangle([x, ty, x + tw + 2 * width, ty + th + 2 * width], fill=colour)
        draw.text((x + width - l, ty + width - t), text, fill=(0, 0, 0), font=font)
    return im


def annotated_paths(out_dir: Path, items: Sequence[tuple[Path, str, Path | None]]
                    ) -> dict[str, Path]:
    """Where ``--save_annotated`` writes each input (by shown name): its path relative to the
    folder it was found in (the file name for single files), made unique: names that two inputs
    share get a short hash of the input's full path. Names are made printable; formats PIL cannot
    write become ``.jpg``."""
    import hashlib

    def rel_of(file: Path, root: Path | None) -> Path:
        rel = Path(display_path(file.relative_to(root) if root is not None else file.name))
        if rel.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"):
            rel = rel.with_name(rel.name + ".jpg")
        return rel

    rels = {shown: rel_of(file, root) for file, shown, root in items}
    taken: dict[Path, int] = {}
    for rel in rels.values():
        taken[rel] = taken.get(rel, 0) + 1
    targets = {}
    for file, shown, _ in items:
        rel = rels[shown]
        if taken[rel] > 1:
            tag = hashlib.sha1(os.fsencode(os.path.abspath(file))).hexdigest()[:8]
            rel = rel.with_name(f"{rel.stem}_{tag}{rel.suffix}")
        targets[shown] = out_dir / rel
    return targets


class AnnotatedWriter:
    """Writes ``--save_annotated`` images into one folder, never replacing a file it did not write.

    The folder must not overlap an input (checked by the caller). What it wrote is appended to
    ``<folder>/.facerec/annotated.jsonl`` (``{"name", "sha256"}``, the last line for a name wins),
    so a rerun refreshes its own images; a file that was there before, or that someone changed
    since, is left alone with a warning."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.record = out_dir / META_DIR / "annotated.jsonl"
        self.ours: dict[str, str] = {}
        try:
            lines = self.record.read_text("utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                self.ours[entry["name"]] = entry["sha256"]
            except (ValueError, KeyError, TypeError):  # a line torn by a kill: not ours then
                continue

    def _is_ours(self, target: Path, rel: str) -> bool:
        return (target.is_file() and not target.is_symlink()
                and self.ours.get(rel) == sha256_file(target))

    def write(self, result: ImageResult, target: Path) -> None:
        if result.pil is None:
            return
        rel = target.relative_to(self.out_dir).as_posix()
        if os.path.lexists(target) and not self._is_ours(target, rel):
            print(f"facerec predict: not replacing {display_path(target)} (facerec did not write "
                  "it, or it changed since)", file=sys.stderr)
            return
        save_annotated(result, target)
        self.ours[rel] = sha256_file(target)
        self.record.parent.mkdir(parents=True, exist_ok=True)
        with open(self.record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"name": rel, "sha256": self.ours[rel]}) + "\n")


def save_annotated(result: ImageResult, target: Path) -> None:
    """Write ``result.pil`` with its faces drawn to ``target`` (atomically; folders are created)."""
    if result.pil is None:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    im = draw_faces(result.pil, result.faces)
    fmt = Image.registered_extensions().get(target.suffix.lower(), "JPEG")
    kwargs = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    atomic_write(target, lambda tmp: im.save(tmp, format=fmt, **kwargs))


def results_json(results: Sequence[ImageResult]) -> str:
    """The ``--json`` document: ``[{"image": PATH, "faces": [{"box": [x, y, w, h], "label": NAME,
    "confidence": C, ...}], "error": null, ...}]`` (see docs/predict.md)."""
    return json.dumps([r.to_dict() for r in results], indent=1)


def timing_summary(predictor: Predictor, seconds: float) -> str:
    t = predictor.timings
    c = predictor.counts
    rate = c["images"] / seconds if seconds > 0 else float("nan")
    return (f"{c['images']} image(s), {c['faces']} face(s), {c['errors']} unreadable in "
            f"{seconds:.2f}s ({rate:.1f} images/s): load {t['load']:.2f}s, detect "
            f"{t['detect']:.2f}s, embed {t['embed']:.2f}s, classify {t['classify']:.3f}s "
            f"[{predictor.runtime_name}, {predictor.device}]")


def run_predict(checkpoint: str, image_paths: Sequence[str], *, threshold: float | None = None,
                device: str = "auto", runtime: str = "torch", as_json: bool = False,
                csv_path: str | None = None, annotate_dir: str | None = None,
                mode: str = "auto", batch_size: int = 16, progress: bool = True,
                timing: bool = False, out=None) -> list[ImageResult]:
    """What ``facerec predict`` does (see the CLI help); returns the results."""
    out = out or sys.stdout
    started = time.perf_counter()
    items = collect_images(image_paths)  # missing paths fail before the model loads
    single = len(items) == 1 and items[0][2] is None
    if annotate_dir:
        check_output_location(annotate_dir, image_paths, "--save_annotated folder")
    if csv_path:
        check_output_location(csv_path, image_paths, "--csv file")
    predictor = Predictor(checkpoint, device=device, runtime=runtime, threshold=threshold,
                          mode=mode, batch_size=batch_size)
    with contextlib.ExitStack() as stack:
        if annotate_dir:
            stack.enter_context(folder_lock(annotate_dir, "predict --save_annotated"))
            writer = AnnotatedWriter(Path(annotate_dir))
            targets = annotated_paths(Path(annotate_dir), items)
        results: list[ImageResult] = []
        for r in predictor.predict_paths([p for p, _, _ in items], progress=progress and not single,
                                         keep_images=annotate_dir is not None):
            if single and r.error:
                raise FacerecError(f"cannot read {r.image}: {r.error}")
            if annotate_dir and not r.error:
                writer.write(r, targets[r.image])
            r.pil = None
            results.append(r)
            if not as_json:
                print_results([r], prefix=not single, file=out)
    if as_json:
        for r in results:
            if r.error:
                print(f"facerec predict: skipped {r.image}: {r.error}", file=sys.stderr)
        print(results_json(results), file=out)
    if csv_path:
        atomic_write(csv_path, lambda tmp: write_csv(results, tmp))
    bad = [r for r in results if r.error]
    if bad and not single:
        print(f"facerec predict: {len(bad)} of {len(results)} image(s) could not be read "
              f"(listed above); the others were predicted", file=sys.stderr)
    if timing:
        print(f"facerec predict: {timing_summary(predictor, time.perf_counter() - started)}",
              file=sys.stderr)
    return results
