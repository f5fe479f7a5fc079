"""``facerec enroll`` / ``facerec forget``: add or remove a person without retraining.

Library API::

    from facerec.inference.enroll import enroll, forget
    r = enroll("best.ckpt", "carol", ["carol1.jpg", "carol/"])   # EnrollResult
    r.checkpoint          # the new checkpoint, written beside the old one (never over it)
    r = forget(r.checkpoint, "carol")

How a person is added (:func:`enroll`):

1. Each photo (a photo, a face crop, or a folder of them) gives one face: MTCNN, cropped exactly as
   ``facerec predict`` crops (:class:`facerec.inference.predict.Predictor`'s detector and crop settings). A
   photo with several faces is ambiguous unless its largest face is clearly the largest (at least
   :data:`DOMINANT_AREA_RATIO` times the area of the next one); ambiguous photos are refused unless
   ``pick`` says which face to take (``"largest"`` or ``"center"``).
2. The faces are embedded with the checkpoint's own backbone (the frozen ``dlib_face`` embedder
   through :func:`facerec.recognition.embed.get_embedder`, or the timm network).
3. The person's prototype is the mean of their features (a new person) or is extended with them;
   the cosine head gets the prototype as its class weight (weight imprinting).
4. The unknown threshold is recalibrated with :func:`facerec.recognition.model.calibrate_threshold`, the
   procedure training uses (each person held out in turn), on the features stored in the
   checkpoint under :data:`GALLERY_KEY` (training stores them; enroll/forget keep them up to date)
   plus the new faces.

Checkpoints written here load with ``weights_only=True`` like any other: the gallery is two plain
tensors. They are meant for predict / evaluate / export / verify; the optimizer state of the
training run is dropped (its shapes no longer match).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerec.cropspec import CropSpec
from facerec.errors import FacerecError

__all__ = ["GALLERY_KEY", "EnrollResult", "PhotoFace", "enroll", "forget", "faces_of_photos",
           "new_checkpoint_path", "write_new_checkpoint"]

#: top-level checkpoint entry with the calibration features: {"features": (N, D) float32,
#: "labels": (N,) int64 indices into the labels, "source": str}
GALLERY_KEY = "facerec_gallery"
#: a photo with several faces is taken to be of its largest face only when that face's box is at
#: least this many times the area of the next largest (a portrait with a face in the background);
#: otherwise the photo is ambiguous (a group photo) and needs --pick
DOMINANT_AREA_RATIO = 2.0


# ------------------------------------------------------------------------------------------ faces
@dataclass
class PhotoFace:
    """The face chosen in one input photo (``crop`` None and ``reason`` set when there is none)."""

    path: str
    crop: Any = None
    box: tuple[float, float, float, float] | None = None
    source: str = "detected"
    n_faces: int = 0
    reason: str | None = None


def _pick_face(faces: list, width: int, height: int, pick: str | None):
    """The face to use among several, or None when the photo is ambiguous (see ``pick``)."""
    if len(faces) == 1:
        return faces[0]
    by_area = sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)
    if pick == "center":
        return min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - width / 2) ** 2
                   + (f.box[1] + f.box[3] / 2 - height / 2) ** 2)
    first, second = by_area[0], by_area[1]
    if pick == "largest" or first.box[2] * first.box[3] >= \
            DOMINANT_AREA_RATIO * second.box[2] * second.box[3]:
        return first
    return None


def faces_of_photos(paths: list[str | os.PathLike], detector, *, crop: CropSpec | None = None,
                    pick: str | None = None,
                    crop_max_side: int = 400, batch_size: int = 8) -> list[PhotoFace]:
    """One :class:`PhotoFace` per image file under ``paths`` (files, folders searched recursively),
    cropped as ``facerec predict`` crops. Unreadable files, photos without a face and ambiguous
    group photos get ``reason`` instead of a crop (never an exception). ``crop``: how to crop
    (default: as ``facerec detect`` does by default)."""
    from facerec.detection.detect import crop_face
    from facerec.images import ImageLoadError, load_image
    from facerec.inference.predict import collect_images

    if pick not in (None, "largest", "center"):
        raise FacerecError(f"--pick must be largest or center, not {pick!r}")
    crop = crop or CropSpec()
    items = collect_images(paths)
    out: list[PhotoFace] = []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        loaded, results = [], []
        for path, shown, _ in chunk:
            r = PhotoFace(path=shown)
            results.append(r)
            try:
                loaded.append((r, load_image(path)))
            except ImageLoadError as exc:
                r.reason = f"cannot read: {exc}"
            except OSError as exc:
                r.reason = f"cannot read: {exc.strerror or exc}"
        found = detector.detect_batch([img for _, img in loaded]) if loaded else []
        small = []
        for (r, img), faces in zip(loaded, found):
            r.n_faces = len(faces)
            im = img.image
            if not faces:
                if crop_max_side and max(im.size) <= crop_max_side:
                    small.append((r, im))
                else:
                    r.reason = "no face found"
                continue
            face = _pick_face(faces, im.width, im.height, pick)
            if face is None:
                r.reason = (f"{len(faces)} faces of similar size (a group photo?): say which "
                            "with --pick largest or --pick center, or crop the photo")
                continue
            r.crop, _ = crop_face(im, face, crop.size, crop.margin, crop.align)
            r.box = tuple(float(v) for v in face.box)
        if small:  # predict's rule for "is this small image a face crop?"
            scores = detector.score_crops([im for _, im in small], crop.margin)
            for (r, im), score in zip(small, scores):
                if score >= detector.face_threshold:
                    r.crop, r.box, r.source = im, (0.0, 0.0, float(im.width), float(im.height)), \
                        "whole_image"
                else:
                    r.reason = "no face found"
        out += results
    return out


# ------------------------------------------------------------------------------------ checkpoints
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "person"


def new_checkpoint_path(old: str | os.PathLike, tag: str) -> Path:
    """``<stem>-<tag>.ckpt`` beside ``old``, or ``<stem>-<tag>-2.ckpt``... when that exists.
    Repeated enrolments do not pile up suffixes: ``-enroll-carol-enroll-dave`` reads fine."""
    old = Path(old)
    base = old.parent / f"{old.stem}-{tag}"
    candidate = base.with_suffix(".ckpt")
    n = 2
    while candidate.exists():
        candidate = old.parent / f"{base.name}-{n}.ckpt"
        n += 1
    return candidate


def write_new_checkpoint(ckpt: dict, path: Path) -> Path:
    """Save ``ckpt`` at ``path`` without ever replacing an existing file: written to a temporary
    file in the same folder, then hard-linked into place (fails if the name is taken meanwhile);
    where hard links are not supported, created with O_EXCL."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".facerec-", suffix=".ckpt.tmp", dir=path.parent)
    except OSError as exc:
        raise FacerecError(f"cannot write a checkpoint in {path.parent}: "
                           f"{exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(ckpt, handle)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FacerecError(f"{path} appeared while writing; not overwritten, rerun") from None
        except OSError:  # no hard links here (some network/FUSE file systems)
            with open(path, "xb") as dst, open(tmp, "rb") as src:
                dst.write(src.read())
    except FileExistsError:
        raise FacerecError(f"{path} exists; not overwritten, rerun") from None
    except OSError as exc:
        raise FacerecError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return path


def _gallery(ckpt: dict, k: int, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(features (N, D), labels (N,)) stored in the checkpoint, or None (older checkpoints)."""
    g = ckpt.get(GALLERY_KEY)
    if not isinstance(g, dict) or "features" not in g or "labels" not in g:
        return None
    z = np.asarray(g["features"], dtype=np.float32)
    y = np.asarray(g["labels"], dtype=np.int64)
    if z.ndim != 2 or z.shape[1] != dim or len(z) != len(y) or (len(y) and y.max() >= k):
        return None
    return z, y


def _unit_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


@dataclass
class EnrollResult:
    """What :func:`enroll` / :func:`forget` did."""

    checkpoint: str
    name: str
    action: str
    labels: list[str]
    threshold: float | None
    previous_threshold: float | None
    calibration: dict
    faces_used: int = 0
    photos: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "name": self.name, "action": self.action,
                "labels": self.labels, "threshold": self.threshold,
                "previous_threshold": self.previous_threshold, "faces_used": self.faces_used,
                "photos": self.photos, "skipped": [list(s) for s in self.skipped],
                "warnings": self.warnings, "seconds": round(self.seconds, 3),
                "calibration": self.calibration}


class _Model:
    """The parts of a checkpoint that enroll/forget change, as numpy arrays."""

    def __init__(self, ckpt: dict):
        from facerec.recognition.model import FORMAT_KEY

        info = ckpt["facerec"]
        if FORMAT_KEY not in info:
            raise FacerecError("not a facerec checkpoint")
        sd = ckpt["state_dict"]
        self.labels: list[str] = list(info["labels"])
        self.weight = sd["model.head.weight"].detach().float().numpy().astype(np.float64)
        self.protos = sd["model.prototypes"].detach().float().numpy().astype(np.float64)
        self.frozen = info["backbone"].get("kind") != "timm"
        self.dim = int(self.weight.shape[1])
        enr = dict(info.get("enrollment") or {})
        self.enrolled: list[str] = list(enr.get("enrolled", []))  # prototypes that are plain means
        self.history: list[dict] = list(enr.get("history", []))
        g = _gallery(ckpt, len(self.labels), self.dim)
        self.gallery_source = (ckpt.get(GALLERY_KEY) or {}).get("source", "") if g else ""
        self.z, self.y = g if g is not None else (None, None)

    def mean_based(self) -> np.ndarray:
        """Per class: is its prototype the plain mean of its gallery rows (exact hold-out)?"""
        return np.array([self.frozen or lab in self.enrolled for lab in self.labels], bool)

    def store(self, ckpt: dict, threshold: float, calibration: dict) -> None:
        sd = ckpt["state_dict"]
        sd["model.head.weight"] = torch.from_numpy(self.weight.astype(np.float32))
        sd["model.prototypes"] = torch.from_numpy(_unit_rows(self.protos).astype(np.float32))
        sd["model.threshold_buf"] = torch.tensor(float(threshold))
        info = dict(ckpt["facerec"])
        info["labels"] = list(self.labels)
        info["threshold"] = float(threshold)
        info["calibration"] = calibration
        info["enrollment"] = {"enrolled": list(self.enrolled), "history": self.history}
        ckpt["facerec"] = info
        hp = ckpt.get("hyper_parameters")
        if isinstance(hp, dict) and isinstance(hp.get("model_config"), dict):
            hp["model_config"] = {**hp["model_config"], "labels": list(self.labels)}
        # the optimizer of the training run has the old number of classes: resuming training from
        # an enrolled checkpoint would fail on it, so it is not carried over
        for key in ("optimizer_states", "lr_schedulers"):
            ckpt.pop(key, None)
        if self.z is not None:
            ckpt[GALLERY_KEY] = {"features": torch.from_numpy(self.z.astype(np.float32)),
                                 "labels": torch.from_numpy(self.y.astype(np.int64)),
                                 "source": self.gallery_source or "enroll"}
        else:
            ckpt.pop(GALLERY_KEY, None)


def _recalibrate(m: _Model, ckpt: dict, old_threshold: float | None) -> tuple[float, dict, list[str]]:
    """Threshold and calibration record for the updated model: training's hold-out procedure on
    the stored gallery. Without a gallery (checkpoints from before it was stored) the old
    threshold is kept, with a warning."""
    from facerec.recognition.model import FALLBACK_PRIOR_THRESHOLD, PRIOR_THRESHOLDS, calibrate_threshold

    info = ckpt["facerec"]
    old_cal = dict(info.get("calibration") or {})
    target = float(old_cal.get("target_fpir", 0.01))
    confidence = float(old_cal.get("confidence", 0.99))
    prior = PRIOR_THRESHOLDS.get(info["backbone"]["name"])
    warnings: list[str] = []
    if m.z is None or not len(m.y):
        t = old_threshold if old_threshold is not None else (prior or FALLBACK_PRIOR_THRESHOLD)
        warnings.append("this checkpoint does not store its calibration features (trained "
                        "before facerec stored them): the unknown threshold is kept as it was "
                        f"({t:.4f}); retrain once to enable recalibration")
        return float(t), {**old_cal, "threshold": float(t), "method": "kept",
                          "reason": "no stored calibration features"}, warnings
    k = len(m.labels)
    sums = np.zeros((k, m.dim))
    np.add.at(sums, m.y, m.z.astype(np.float64))
    counts = np.bincount(m.y, minlength=k).astype(np.float64)
    member = m.mean_based()[m.y]
    zt = torch.from_numpy(m.z.astype(np.float32))
    w = torch.from_numpy(_unit_rows(m.weight).astype(np.float32))
    predicted = (torch.nn.functional.normalize(zt, dim=1) @ w.T).argmax(1).numpy()
    cal = calibrate_threshold(m.z, m.y, _unit_rows(m.protos), proto_sums=sums, proto_counts=counts,
                              member=member, predicted=predicted, target_fpir=target,
                              confidence=confidence, prior=prior)
    cal["data"] = (f"{m.gallery_source or 'stored'} features + enrolled faces, each person held "
                   "out in turn (recalibrated by enroll/forget)")
    return float(cal["threshold"]), cal, warnings



def _read(checkpoint: str | os.PathLike) -> dict:
    from facerec.recognition.model import read_checkpoint
    from facerec.recognition.runtime import model_kind

    p = Path(checkpoint)
    if not p.is_file():
        raise FacerecError(f"checkpoint not found: {p}")
    if model_kind(p) == "onnx":
        raise FacerecError(f"{p} is an ONNX export: enroll/forget change a .ckpt (then export it "
                           "again)")
    return read_checkpoint(p)


def _old_threshold(ckpt: dict) -> float | None:
    t = ckpt["facerec"].get("threshold")
    return float(t) if t is not None and math.isfinite(float(t)) else None


def _check_name(name: str) -> str:
    from facerec.recognition.model import UNKNOWN

    name = str(name).strip()
    if not name:
        raise FacerecError("--name must not be empty")
    if name == UNKNOWN:
        raise FacerecError(f"{UNKNOWN!r} is the label for strangers: choose another name")
    if "/" in name or "\\" in name or name.startswith((".", "_")):
        raise FacerecError(f"{name!r} is not a usable person name (no slashes, not starting with "
                           "'.' or '_', as in dataset folders)")
    return name


def enroll(checkpoint: str | os.PathLike, name: str, photos: list[str | os.PathLike], *,
           pick: str | None = None, out: str | os.PathLike | None = None, device: str = "auto",
           batch_size: int = 8) -> EnrollResult:
    """Add ``name`` (or extend them) from ``photos``; write and return the new checkpoint."""
    from facerec.inference.predict import Predictor

    t0 = time.perf_counter()
    name = _check_name(name)
    ckpt = _read(checkpoint)
    if not photos:
        raise FacerecError("no photos given")
    predictor = Predictor(checkpoint, device=device)
    clf = predictor.runtime.clf
    faces = faces_of_photos(list(photos), predictor.detector, crop=predictor.crop, pick=pick,
                            batch_size=batch_size)
    ambiguous = [f for f in faces if f.reason and "group photo" in f.reason]
    if ambiguous:
        listing = ", ".join(f.path for f in ambiguous[:3]) + (" ..." if len(ambiguous) > 3 else "")
        raise FacerecError(f"{len(ambiguous)} photo(s) show several faces of similar size "
                           f"({listing}): say which face is {name} with --pick largest or "
                           "--pick center, or leave them out")
    skipped = [(f.path, f.reason) for f in faces if f.crop is None]
    usable = [f for f in faces if f.crop is not None]
    z = clf.embed_crops([f.crop for f in usable]).numpy().astype(np.float64) if usable \
        else np.zeros((0, clf.config["backbone"]["dim"]))
    ok = np.isfinite(z).all(axis=1)
    skipped += [(f.path, "the face could not be embedded") for f, good in zip(usable, ok)
                if not good]
    z = _unit_rows(z[ok]) if ok.any() else z[ok]
    if not len(z):
        raise FacerecError(f"no usable face of {name} in the {len(faces)} photo(s) given"
                           + (f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    m = _Model(ckpt)
    warnings: list[str] = []
    # a new person who already looks like someone known is worth a word before it causes confusion
    if name not in m.labels and len(m.labels):
        cos = z @ _unit_rows(m.protos).T
        best = cos.argmax(axis=1)
        thr = _old_threshold(ckpt)
        if thr is not None:
            hits = [m.labels[b] for b, c in zip(best, cos.max(axis=1)) if c >= thr]
            if hits and len(hits) * 2 >= len(z):
                who = max(set(hits), key=hits.count)
                warnings.append(f"{len(hits)} of {len(z)} face(s) are already recognised as "
                                f"{who}: is {name} the same person?")
    if name in m.labels:
        c = m.labels.index(name)
        n_old = int((m.y == c).sum()) if m.z is not None else 0
        if n_old and m.mean_based()[c]:
            # exact: the mean of all their features (store() normalises)
            m.protos[c] = m.z[m.y == c].astype(np.float64).sum(axis=0) + z.sum(axis=0)
        else:
            # a trained prototype (timm head weight) or no stored features: the old prototype
            # weighs as many faces as it was calibrated with, when known, else as the new faces
            m.protos[c] = _unit_rows(m.protos[c:c + 1])[0] * (n_old or len(z)) + z.sum(axis=0)
        norm = float(np.linalg.norm(m.weight[c]))
        moved = _unit_rows(m.weight[c:c + 1])[0] * (n_old or len(z)) + z.sum(axis=0)
        m.weight[c] = _unit_rows(moved[None])[0] * norm
        action = "extended"
    else:
        c = len(m.labels)
        m.labels.append(name)
        proto = _unit_rows(z.mean(axis=0, keepdims=True))
        m.protos = np.concatenate([m.protos, proto])
        # imprint: the head weight of the new class is the prototype, at the norm of the others
        # so that its logits are on the same scale
        m.weight = np.concatenate([m.weight, proto * np.linalg.norm(m.weight, axis=1).mean()])
        m.enrolled.append(name)
        action = "enrolled"
    if m.z is not None:
        m.z = np.concatenate([m.z, z.astype(np.float32)])
        m.y = np.concatenate([m.y, np.full(len(z), c, dtype=np.int64)])
    if m.frozen:
        # A trained head's class weights are discriminative directions, not class means: their
        # cosines to a face are lower than a prototype's, so an imprinted class beside trained ones
        # would win faces of known people (measured: it does). With a frozen backbone every class
        # therefore takes its prototype as its weight: the head becomes nearest-prototype, the
        # rule the open-set score already uses. (timm heads are their prototypes already.)
        m.weight = _unit_rows(m.protos) * float(np.linalg.norm(m.weight, axis=1).mean())
    old_t = _old_threshold(ckpt)
    t, cal, more = _recalibrate(m, ckpt, old_t)
    warnings += more
    m.history.append({"op": "enroll", "name": name, "faces": int(len(z)),
                      "photos": len(faces), "from": Path(checkpoint).name,
                      "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    m.store(ckpt, t, cal)
    target = Path(out) if out else new_checkpoint_path(checkpoint, f"enroll-{_slug(name)}")
    _refuse_overwrite(target, checkpoint)
    for folder in (Path(x) for x in photos):
        if folder.is_dir() and target.resolve().is_relative_to(folder.resolve()):
            raise FacerecError(f"{target} is inside the photo folder {folder}: write the "
                               "checkpoint elsewhere (--out)")
    write_new_checkpoint(ckpt, target)
    return EnrollResult(checkpoint=str(target), name=name, action=action, labels=list(m.labels),
                        threshold=t, previous_threshold=old_t, calibration=cal,
                        faces_used=int(len(z)), photos=len(faces), skipped=skipped,
                        warnings=warnings, seconds=time.perf_counter() - t0)


def _refuse_overwrite(target: Path, source: str | os.PathLike) -> None:
    if target.exists():
        raise FacerecError(f"{target} exists; it is never overwritten: choose another --out")
    if not target.parent.is_dir():
        raise FacerecError(f"output folder not found: {target.parent}")


def forget(checkpoint: str | os.PathLike, name: str, *, out: str | os.PathLike | None = None
           ) -> EnrollResult:
    """Remove ``name`` (their prototype, class weight and stored features); recalibrate; write
    and return the new checkpoint."""
    t0 = time.perf_counter()
    ckpt = _read(checkpoint)
    m = _Model(ckpt)
    if name not in m.labels:
        raise FacerecError(f"{name!r} is not in this checkpoint (people: "
                           f"{', '.join(m.labels[:20])}{' ...' if len(m.labels) > 20 else ''})")
    if len(m.labels) == 1:
        raise FacerecError(f"{name!r} is the only person in this checkpoint: nothing would remain")
    c = m.labels.index(name)
    keep = np.arange(len(m.labels)) != c
    m.labels.pop(c)
    m.weight, m.protos = m.weight[keep], m.protos[keep]
    if name in m.enrolled:
        m.enrolled.remove(name)
    if m.z is not None:
        rows = m.y != c
        m.z, m.y = m.z[rows], m.y[rows]
        m.y = np.where(m.y > c, m.y - 1, m.y)
    old_t = _old_threshold(ckpt)
    t, cal, warnings = _recalibrate(m, ckpt, old_t)
    m.history.append({"op": "forget", "name": name, "from": Path(checkpoint).name,
                      "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    m.store(ckpt, t, cal)
    target = Path(out) if out else new_checkpoint_path(checkpoint, f"forget-{_slug(name)}")
    _refuse_overwrite(target, checkpoint)
    write_new_checkpoint(ckpt, target)
    return EnrollResult(checkpoint=str(target), name=name, action="forgotten",
                        labels=list(m.labels), threshold=t, previous_threshold=old_t,
                        calibration=cal, warnings=warnings, seconds=time.perf_counter() - t0)


def print_enroll_result(r: EnrollResult, file=None) -> None:
    """The summary ``facerec enroll/forget`` prints; the last line is ``Saved checkpoint: PATH``."""
    out = file or sys.stdout
    err = sys.stderr
    for path, reason in r.skipped:
        print(f"facerec enroll: skipped {path}: {reason}", file=err)
    for w in r.warnings:
        print(f"facerec {'forget' if r.action == 'forgotten' else 'enroll'}: warning: {w}", file=err)
    if r.action == "forgotten":
        print(f"Forgot {r.name}: {len(r.labels)} people remain", file=out)
    else:
        print(f"{'Enrolled' if r.action == 'enrolled' else 'Extended'} {r.name} from "
              f"{r.faces_used} face(s) of {r.photos} photo(s); {len(r.labels)} people", file=out)
    prev = "none" if r.previous_threshold is None else f"{r.previous_threshold:.4f}"
    how = r.calibration.get("method", "")
    fpir = r.calibration.get("est_fpir_upper")
    extra = f", FPIR <= {fpir:.2%} at 99% confidence" if isinstance(fpir, float) else ""
    print(f"Unknown threshold: {r.threshold:.4f} (was {prev}; {how}{extra})", file=out)
    print(f"Saved checkpoint: {r.checkpoint}", file=out, flush=True)
