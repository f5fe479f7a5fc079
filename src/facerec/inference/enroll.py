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
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerec.crops import check_person_name
from facerec.cropspec import CropSpec
from facerec.detection.cropping import CROP_MAX_SIDE
from facerec.errors import FacerecError
from facerec.recognition.backbones import backbone_of
from facerec.recognition.calibration import FALLBACK_PRIOR_THRESHOLD, calibrate_threshold
from facerec.recognition.checkpoint import (GALLERY_KEY, INFO_KEY, Checkpoint, gallery_entry,
                                            new_checkpoint_path, write_new_checkpoint)
from facerec.recognition.decision import UNKNOWN
from facerec.recognition.runtime import model_kind

__all__ = ["GALLERY_KEY", "EnrollResult", "PhotoFace", "enroll", "forget", "faces_of_photos",
           "new_checkpoint_path", "print_enroll_result", "threshold_line"]

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
                    pick: str | None = None, crop_max_side: int = CROP_MAX_SIDE,
                    batch_size: int = 8) -> list[PhotoFace]:
    """One :class:`PhotoFace` per image file under ``paths`` (files, folders searched recursively),
    cropped as ``facerec predict`` crops (:func:`facerec.detection.cropping.crop_faces`, with
    ``crop``: default, the legacy 160 px box crop). Unreadable files, photos without
    a face and ambiguous group photos get ``reason`` instead of a crop (never an exception)."""
    from facerec.detection.cropping import crop_faces, operating_point
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
        found = crop_faces([img for _, img in loaded], detector, crop,
                           min_score=operating_point(crop, detector),
                           crop_max_side=crop_max_side) if loaded else []
        for (r, img), faces in zip(loaded, found):
            r.n_faces = len(faces)
            face = _pick_face(faces, img.width, img.height, pick) if faces else None
            if not faces:
                r.reason = "no face found"
            elif face is None:
                r.reason = (f"{len(faces)} faces of similar size (a group photo?): say which "
                            "with --pick largest or --pick center, or crop the photo")
            else:
                r.crop, r.box, r.source = face.crop, face.box, face.source
        out += results
    return out


# ------------------------------------------------------------------------------------ checkpoints
def _unit_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


@dataclass
class EnrollResult:
    """What :func:`enroll` / :func:`forget` did. ``calibration``: the new threshold's record
    (:func:`facerec.recognition.calibration.calibrate_threshold`); ``turned_unknown``: stored
    faces of the other people that the old model recognised and the new one calls unknown (out
    of ``stored_faces``)."""

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
    turned_unknown: int = 0
    stored_faces: int = 0

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "name": self.name, "action": self.action,
                "labels": self.labels, "threshold": self.threshold,
                "previous_threshold": self.previous_threshold, "faces_used": self.faces_used,
                "photos": self.photos, "skipped": [list(s) for s in self.skipped],
                "warnings": self.warnings, "seconds": round(self.seconds, 3),
                "turned_unknown": self.turned_unknown, "stored_faces": self.stored_faces,
                "calibration": self.calibration}


class _Model:
    """The parts of a checkpoint that enroll/forget change, as numpy arrays."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.labels: list[str] = ckpt.labels
        self.weight = ckpt.head_weight.astype(np.float64)
        self.protos = ckpt.prototypes.astype(np.float64)
        self.frozen = backbone_of(ckpt.backbone).frozen
        self.dim = int(self.weight.shape[1])
        enr = dict(ckpt.info.get("enrollment") or {})
        self.enrolled: list[str] = list(enr.get("enrolled", []))  # prototypes that are plain means
        self.history: list[dict] = list(enr.get("history", []))
        g = ckpt.gallery
        self.gallery_source = g.source if g is not None else ""
        self.z, self.y = (g.features, g.labels) if g is not None else (None, None)

    def mean_based(self) -> np.ndarray:
        """Per class: is its prototype the plain mean of its gallery rows (exact hold-out)?"""
        return np.array([self.frozen or lab in self.enrolled for lab in self.labels], bool)

    def recognised(self, z: np.ndarray, y: np.ndarray, threshold: float | None) -> np.ndarray:
        """Which of the faces ``z`` (labels ``y``) this model recognises as their own person:
        nearest prototype right and its cosine at or above the threshold."""
        if not len(z):
            return np.zeros(0, bool)
        cos = _unit_rows(z) @ _unit_rows(self.protos).T
        best = cos.argmax(axis=1)
        ok = best == y
        if threshold is not None:
            ok &= cos[np.arange(len(z)), best] >= threshold
        return ok

    def store(self, threshold: float, calibration: dict) -> dict:
        """The checkpoint dict with this model's labels, weights, threshold and gallery."""
        raw = dict(self.ckpt.raw)
        sd = dict(raw["state_dict"])
        sd["model.head.weight"] = torch.from_numpy(self.weight.astype(np.float32))
        sd["model.prototypes"] = torch.from_numpy(_unit_rows(self.protos).astype(np.float32))
        sd["model.threshold_buf"] = torch.tensor(float(threshold))
        raw["state_dict"] = sd
        info = dict(raw[INFO_KEY])
        info["labels"] = list(self.labels)
        info["threshold"] = float(threshold)
        info["calibration"] = calibration
        info["enrollment"] = {"enrolled": list(self.enrolled), "history": self.history}
        raw[INFO_KEY] = info
        hp = raw.get("hyper_parameters")
        if isinstance(hp, dict) and isinstance(hp.get("model_config"), dict):
            raw["hyper_parameters"] = {**hp, "model_config": {**hp["model_config"],
                                                              "labels": list(self.labels)}}
        # the optimizer of the training run has the old number of classes: resuming training from
        # an enrolled checkpoint would fail on it, so it is not carried over
        for key in ("optimizer_states", "lr_schedulers"):
            raw.pop(key, None)
        if self.z is not None:
            raw[GALLERY_KEY] = gallery_entry(self.z, self.y, self.gallery_source or "enroll")
        else:
            raw.pop(GALLERY_KEY, None)
        return raw


def _recalibrate(m: _Model, old_threshold: float | None) -> tuple[float, dict, list[str]]:
    """Threshold and calibration record for the updated model: training's hold-out procedure on
    the stored gallery. Without a gallery (checkpoints from before it was stored) the old
    threshold is kept, with a warning."""
    old_cal = m.ckpt.calibration
    target = float(old_cal.get("target_fpir", 0.01))
    confidence = float(old_cal.get("confidence", 0.99))
    prior = backbone_of(m.ckpt.backbone).prior_threshold
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
    predicted = (_unit_rows(m.z) @ _unit_rows(m.weight).T).argmax(axis=1)
    cal = calibrate_threshold(m.z, m.y, _unit_rows(m.protos), proto_sums=sums, proto_counts=counts,
                              member=member, predicted=predicted, target_fpir=target,
                              confidence=confidence, prior=prior)
    cal["data"] = (f"{m.gallery_source or 'stored'} features + enrolled faces, each person held "
                   "out in turn (recalibrated by enroll/forget)")
    return float(cal["threshold"]), cal, warnings


def _read(checkpoint: str | os.PathLike) -> Checkpoint:
    p = Path(checkpoint)
    if not p.is_file():
        raise FacerecError(f"checkpoint not found: {p}")
    if model_kind(p) == "onnx":
        raise FacerecError(f"{p} is an ONNX export: enroll/forget change a .ckpt (then export it "
                           "again)")
    return Checkpoint.read(p)


def _check_name(name: str) -> str:
    name = check_person_name(str(name).strip(), "--name")
    if name == UNKNOWN:
        raise FacerecError(f"{UNKNOWN!r} is the label for strangers: choose another name")
    return name


#: a recalibration that makes more than this share of the stored faces of the other people
#: unknown is refused (without --force): it would silently break the people the model knew
MAX_TURNED_UNKNOWN = 0.01


def _embed_photos(predictor, photos: list, name: str, pick: str | None, batch_size: int
                  ) -> tuple[np.ndarray, list[PhotoFace], list[tuple[str, str]]]:
    """(unit features of the usable faces, every photo's face, the photos skipped and why)."""
    faces = faces_of_photos(list(photos), predictor.detector, crop=predictor.crop, pick=pick,
                            batch_size=batch_size)
    ambiguous = [f for f in faces if f.reason and "group photo" in f.reason]
    if ambiguous:
        listing = ", ".join(f.path for f in ambiguous[:3]) + (" ..." if len(ambiguous) > 3 else "")
        raise FacerecError(f"{len(ambiguous)} photo(s) show several faces of similar size "
                           f"({listing}): say which face is {name} with --pick largest or "
                           "--pick center, or leave them out")
    clf = predictor.runtime.clf
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
    return z, faces, skipped


def _refuse_known_faces(m: _Model, z: np.ndarray, name: str, threshold: float | None,
                        force: bool) -> list[str]:
    """Faces that the model already recognises as someone else: enrolling them under ``name``
    would teach it that one person is two (every face of that person then sits between two
    prototypes, and the recalibrated threshold rejects them all). Refused unless ``force``."""
    others = [i for i, lab in enumerate(m.labels) if lab != name]
    if threshold is None or not others or not len(z):
        return []
    cos = z @ _unit_rows(m.protos[others]).T
    best = cos.argmax(axis=1)
    hits = cos[np.arange(len(z)), best] >= threshold
    if not hits.any():
        return []
    who = [m.labels[others[b]] for b in best[hits]]
    top = max(set(who), key=who.count)
    message = (f"{int(hits.sum())} of {len(z)} face(s) given for {name} are recognised as "
               f"{top} (cosine {cos[hits].max():.4f} >= threshold {threshold:.4f})")
    if not force:
        raise FacerecError(f"{message}: enrolling them as {name} would confuse the two; leave "
                           f"those photos out, or pass --force if {name} is another person")
    return [f"{message}; enrolled anyway (--force)"]


def _add_faces(m: _Model, name: str, z: np.ndarray) -> str:
    """Add the unit features ``z`` to ``name``'s prototype (a new person: a new class, its
    prototype imprinted as its head weight); returns ``enrolled`` or ``extended``."""
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
    return action


def _stored_before(m: _Model, skip: str | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The stored gallery faces of everyone but ``skip``, and their labels as names."""
    if m.z is None:
        return np.zeros((0, m.dim)), np.zeros(0, np.int64), []
    keep = np.array([m.labels[y] != skip for y in m.y], bool)
    return m.z[keep].astype(np.float64), m.y[keep], [m.labels[y] for y in m.y[keep]]


def _turned_unknown(before: _Model, after: _Model, stored: tuple, old_t: float | None,
                    new_t: float, force: bool) -> int:
    """How many of the ``stored`` faces (of the other people) the old model recognised and the
    new one does not; more than :data:`MAX_TURNED_UNKNOWN` of them is refused without
    ``force``."""
    z, y_old, names = stored
    if not len(z):
        return 0
    y_new = np.array([after.labels.index(n) for n in names], np.int64)
    lost = before.recognised(z, y_old, old_t) & ~after.recognised(z, y_new, new_t)
    n = int(lost.sum())
    if n > MAX_TURNED_UNKNOWN * len(z) and not force:
        was = "none" if old_t is None else f"{old_t:.4f}"
        raise FacerecError(f"the recalibrated threshold ({was} -> {new_t:.4f}) would make {n} of "
                           f"the {len(z)} stored faces of the other people ({n / len(z):.1%}) "
                           "unknown: the new faces look too much like people the model knows. "
                           "Nothing was written; check the photos, or pass --force")
    return n


def _write(m: _Model, t: float, cal: dict, checkpoint, out, tag: str, photos=()) -> str:
    target = Path(out) if out else new_checkpoint_path(checkpoint, tag)
    _refuse_overwrite(target)
    for folder in (Path(x) for x in photos):
        if folder.is_dir() and target.resolve().is_relative_to(folder.resolve()):
            raise FacerecError(f"{target} is inside the photo folder {folder}: write the "
                               "checkpoint elsewhere (--out)")
    return str(write_new_checkpoint(m.store(t, cal), target))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def enroll(checkpoint: str | os.PathLike, name: str, photos: list[str | os.PathLike], *,
           pick: str | None = None, out: str | os.PathLike | None = None, device: str = "auto",
           batch_size: int = 8, force: bool = False) -> EnrollResult:
    """Add ``name`` (or extend them) from ``photos``; write and return the new checkpoint.

    Refused (one :class:`FacerecError`, nothing written) unless ``force``: faces that the model
    already recognises as another person, and a recalibration that would make more than
    :data:`MAX_TURNED_UNKNOWN` of the other people's stored faces unknown."""
    from facerec.inference.predict import Predictor

    t0 = time.perf_counter()
    name = _check_name(name)
    ckpt = _read(checkpoint)
    if not photos:
        raise FacerecError("no photos given")
    predictor = Predictor(checkpoint, device=device)
    z, faces, skipped = _embed_photos(predictor, photos, name, pick, batch_size)
    before, m = _Model(ckpt), _Model(ckpt)
    old_t = ckpt.threshold
    warnings = _refuse_known_faces(m, z, name, old_t, force)
    stored = _stored_before(m, skip=name)
    action = _add_faces(m, name, z)
    t, cal, more = _recalibrate(m, old_t)
    warnings += more
    turned = _turned_unknown(before, m, stored, old_t, t, force)
    m.history.append({"op": "enroll", "name": name, "faces": int(len(z)), "photos": len(faces),
                      "from": Path(checkpoint).name, "time": _now()})
    target = _write(m, t, cal, checkpoint, out, f"enroll-{name}", photos)
    return EnrollResult(checkpoint=target, name=name, action=action, labels=list(m.labels),
                        threshold=t, previous_threshold=old_t, calibration=cal,
                        faces_used=int(len(z)), photos=len(faces), skipped=skipped,
                        warnings=warnings, seconds=time.perf_counter() - t0,
                        turned_unknown=turned, stored_faces=len(stored[0]))


def _refuse_overwrite(target: Path) -> None:
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
    before = _Model(ckpt)
    stored = _stored_before(m, skip=name)
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
    old_t = ckpt.threshold
    t, cal, warnings = _recalibrate(m, old_t)
    # forgetting only removes impostors: it never needs refusing, but the count is reported
    turned = _turned_unknown(before, m, stored, old_t, t, force=True)
    m.history.append({"op": "forget", "name": name, "from": Path(checkpoint).name,
                      "time": _now()})
    target = _write(m, t, cal, checkpoint, out, f"forget-{name}")
    return EnrollResult(checkpoint=target, name=name, action="forgotten",
                        labels=list(m.labels), threshold=t, previous_threshold=old_t,
                        calibration=cal, warnings=warnings, seconds=time.perf_counter() - t0,
                        turned_unknown=turned, stored_faces=len(stored[0]))


def threshold_line(threshold: float, previous: float | None, cal: dict) -> str:
    """``Unknown threshold: T (...)``: what changed, and what the calibration measured."""
    if previous is None:
        change = "new"
    elif abs(threshold - previous) < 5e-5:
        change = "unchanged"
    else:
        change = f"was {previous:.4f}"
    method = cal.get("method", "")
    if method == "hold-out-person" and cal.get("est_fpir") is not None:
        n_faces, n_people = cal.get("n_faces"), cal.get("n_people")
        above = round(float(cal["est_fpir"]) * int(n_faces or 0))
        how = (f"calibrated on {n_faces} stored faces of {n_people} people, each person held "
               f"out in turn: {above} of {n_faces} impostor scores at or above it; FPIR upper "
               f"bound {float(cal['est_fpir_upper']):.2%} at "
               f"{float(cal.get('confidence', 0.99)):.0%} confidence, target "
               f"{float(cal.get('target_fpir', 0.01)):.0%}")
    elif method == "prior":
        how = f"a prior, not calibrated: {cal.get('reason', 'no other people')}"
    elif method == "kept":
        how = f"kept: {cal.get('reason', 'not recalibrated')}"
    else:
        how = method or "as stored"
    return f"Unknown threshold: {threshold:.4f} ({change}; {how})"


def print_enroll_result(r: EnrollResult, file=None) -> None:
    """The summary ``facerec enroll/forget`` prints; the last line is ``Saved checkpoint: PATH``."""
    out = file or sys.stdout
    err = sys.stderr
    command = "forget" if r.action == "forgotten" else "enroll"
    for path, reason in r.skipped:
        print(f"facerec enroll: skipped {path}: {reason}", file=err)
    for w in r.warnings:
        print(f"facerec {command}: warning: {w}", file=err)
    if r.action == "forgotten":
        print(f"Forgot {r.name}: {len(r.labels)} people remain", file=out)
    else:
        print(f"{'Enrolled' if r.action == 'enrolled' else 'Extended'} {r.name} from "
              f"{r.faces_used} face(s) of {r.photos} photo(s); {len(r.labels)} people", file=out)
    print(threshold_line(r.threshold, r.previous_threshold, r.calibration), file=out)
    if r.stored_faces:
        print(f"Stored faces of the others now unknown: {r.turned_unknown} of {r.stored_faces}",
              file=out)
    print(f"Saved checkpoint: {r.checkpoint}", file=out, flush=True)
