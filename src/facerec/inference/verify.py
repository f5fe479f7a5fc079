"""``facerec verify``: are two photos the same person (1:1), or who of the enrolled people is this (1:N)?

Library API::

    from facerec.inference.verify import Verifier
    v = Verifier()                                   # the dlib_face embedder, default threshold
    r = v.verify("a.jpg", "b.jpg")                   # PairResult: same, distance, threshold
    v = Verifier("best.ckpt")                        # the checkpoint's backbone and calibration
    ranked = v.identify("a.jpg")                     # IdentifyResult: every person, nearest first

The unit is the **cosine distance** (1 - cosine similarity) between the unit features a face gets
for recognition (``dlib_face``: the mean of the descriptors of the crop and its mirror image, as in
training and ``predict``). Each photo gives one face, chosen as ``facerec enroll`` chooses it (the
largest when it is clearly the largest, else ``pick``).

Thresholds:

- 1:1 without a checkpoint: the embedder's ``verify_threshold``
  (:func:`default_pair_threshold`), measured by ``bench/verify_lfw.py`` on every pair of
  ``lfw-dev`` photos (the largest distance at which at most 1% of different-person pairs are
  accepted; the rates it gives are in docs/enroll-verify.md).
- 1:1 with a checkpoint: the same rule (:func:`pair_threshold`) on the faces the checkpoint was
  calibrated on (its stored gallery), so a timm checkpoint gets a threshold in its own feature space.
- 1:N: the checkpoint's own unknown threshold (cosine to a person's prototype), as a distance.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facerec.defaults import DEFAULT_BACKBONE
from facerec.errors import FacerecError

__all__ = ["TARGET_FAR", "IdentifyResult", "PairResult", "Verifier", "default_pair_threshold",
           "checkpoint_pair_threshold", "pair_threshold", "pair_rates"]

#: the false-accept rate the thresholds are set at
TARGET_FAR = 0.01


def default_pair_threshold(backbone: str) -> float | None:
    """The 1:1 cosine-distance threshold of a face embedder without a checkpoint (its
    ``verify_threshold``, from bench/verify_lfw.py on all lfw-dev pairs, <= 1% false accepts);
    None for other backbones."""
    from facerec.recognition.embed import EMBEDDERS

    return EMBEDDERS.get(backbone).verify_threshold if backbone in EMBEDDERS else None


def pair_threshold(z: np.ndarray, y: np.ndarray, target_far: float = TARGET_FAR,
                   max_pairs: int = 2_000_000, seed: int = 0) -> float | None:
    """The largest cosine distance at which at most ``target_far`` of the different-person pairs
    of unit features ``z`` (labels ``y``) are accepted; None with fewer than two people. Above
    ``max_pairs`` impostor pairs a random subset is used (the quantile barely moves)."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y)
    ok = np.isfinite(z).all(axis=1)
    z, y = z[ok], y[ok]
    if len(np.unique(y)) < 2:
        return None
    i, j = np.triu_indices(len(z), k=1)
    diff = y[i] != y[j]
    i, j = i[diff], j[diff]
    if len(i) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(i), max_pairs, replace=False)
        i, j = i[pick], j[pick]
    d = np.sort(1.0 - (z[i] * z[j]).sum(axis=1))
    k = int(math.floor(target_far * len(d)))  # accept d < d[k]: at most k impostor pairs
    return float(d[k]) - 1e-9 if k < len(d) else float(d[-1])


def checkpoint_pair_threshold(ckpt, clf) -> tuple[float | None, str]:
    """(1:1 cosine-distance threshold for a checkpoint's features, where it comes from): the
    pairs of its stored calibration faces at <= :data:`TARGET_FAR` false accepts, else its
    embedder's default, else its unknown threshold as a distance; (None, "") without any."""
    g = ckpt.gallery
    t = pair_threshold(g.features, g.labels) if g is not None else None
    if t is not None:
        return t, (f"checkpoint: pairs of its {len(g.labels)} calibration faces, "
                   f"<= {TARGET_FAR:.0%} false accepts")
    t = default_pair_threshold(clf.backbone_name)
    if t is not None:
        return t, f"default for {clf.backbone_name} (lfw-dev pairs, <= {TARGET_FAR:.0%} false accepts)"
    if np.isfinite(clf.threshold):
        return 1.0 - clf.threshold, "checkpoint's unknown threshold (no pair calibration)"
    return None, ""


def pair_rates(z: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """False-accept rate (different people, distance <= threshold), false-reject rate (same person,
    distance > threshold) and accuracy on balanced classes over every pair of ``z``."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y)
    ok = np.isfinite(z).all(axis=1)
    z, y = z[ok], y[ok]
    i, j = np.triu_indices(len(z), k=1)
    d = 1.0 - (z[i] * z[j]).sum(axis=1)
    same = y[i] == y[j]
    far = float(np.mean(d[~same] <= threshold)) if (~same).any() else float("nan")
    frr = float(np.mean(d[same] > threshold)) if same.any() else float("nan")
    return {"far": far, "frr": frr, "balanced_accuracy": 1.0 - (far + frr) / 2,
            "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum())}


@dataclass
class PairResult:
    a: str
    b: str
    same: bool
    distance: float
    threshold: float
    threshold_source: str
    faces: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "same": self.same, "distance": round(self.distance, 5),
                "threshold": round(self.threshold, 5), "threshold_source": self.threshold_source,
                "metric": "cosine distance", "faces": self.faces}


@dataclass
class IdentifyResult:
    image: str
    best: str
    threshold: float
    matches: list[dict]
    face: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"image": self.image, "best": self.best, "threshold": round(self.threshold, 5),
                "metric": "cosine distance to the person's prototype", "matches": self.matches,
                "face": self.face}


class Verifier:
    """Features of one face per photo, and the thresholds to compare them (see the module doc)."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, *,
                 backbone: str = DEFAULT_BACKBONE, threshold: float | None = None,
                 pick: str | None = None, device: str = "auto"):
        from facerec.defaults import resolve_device
        from facerec.detection.detect import get_detector

        self.pick = pick
        self.threshold_override = threshold
        self.device = resolve_device(device)
        self.clf = None
        self.ckpt = None
        if checkpoint is not None:
            from facerec.recognition.checkpoint import Checkpoint
            from facerec.recognition.model import load_checkpoint

            self.ckpt = Checkpoint.read(checkpoint)
            self.clf = load_checkpoint(self.ckpt, map_location=self.device)
            self.backbone = self.clf.backbone_name
            # faces are cropped as the checkpoint's training crops were (its CropSpec)
            spec = self.ckpt.crop
        else:
            from facerec.recognition.backbones import backbone_for

            kind = backbone_for(backbone)
            spec = kind.new_work_crop()  # the crops `facerec detect` makes for this model
            self.embedder = kind.embedder(crop=spec, device=self.device)
            self.backbone = backbone
        self.crop = spec
        self.detector = get_detector(spec.detector_name, device=self.device)

    # ---- features
    def faces(self, paths: list[str | os.PathLike]) -> tuple[np.ndarray, list[dict]]:
        """Unit features (N, D) of one face per photo, and how each face was found. A photo
        without a usable face raises :class:`FacerecError` (verify needs every face)."""
        from facerec.inference.enroll import faces_of_photos

        for p in paths:
            if Path(p).is_dir():
                raise FacerecError(f"{p} is a folder: verify compares single photos")
        found = faces_of_photos(list(paths), self.detector, crop=self.crop, pick=self.pick)
        for f in found:
            if f.crop is None:
                raise FacerecError(f"{f.path}: {f.reason}")
        crops = [f.crop for f in found]
        if self.clf is not None:
            z = self.clf.embed_crops(crops).numpy().astype(np.float64)
        else:
            from facerec.recognition.features import embed_pil

            z = embed_pil(self.embedder, crops, True).astype(np.float64)
        for f, row in zip(found, z):
            if not np.isfinite(row).all():
                raise FacerecError(f"{f.path}: the face could not be embedded")
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        info = [{"box": [round(v, 1) for v in f.box], "source": f.source, "faces_in_photo":
                 f.n_faces} for f in found]
        return z, info

    # ---- thresholds
    def pair_threshold(self) -> tuple[float, str]:
        """(cosine-distance threshold for 1:1, where it comes from)."""
        if self.threshold_override is not None:
            return float(self.threshold_override), "--threshold"
        if self.ckpt is not None:
            t, source = checkpoint_pair_threshold(self.ckpt, self.clf)
        else:
            t = default_pair_threshold(self.backbone)
            source = f"default for {self.backbone} (lfw-dev pairs, <= {TARGET_FAR:.0%} false accepts)"
        if t is not None:
            return t, source
        raise FacerecError(f"no calibrated verification threshold for {self.backbone}: give "
                           "--threshold (a cosine distance)")

    def identify_threshold(self) -> float:
        if self.threshold_override is not None:
            return float(self.threshold_override)
        t = self.clf.threshold
        return 1.0 - t if math.isfinite(t) else float("inf")

    # ---- decisions
    def verify(self, a: str | os.PathLike, b: str | os.PathLike) -> PairResult:
        z, info = self.faces([a, b])
        d = float(1.0 - z[0] @ z[1])
        t, source = self.pair_threshold()
        return PairResult(a=str(a), b=str(b), same=d <= t, distance=d, threshold=t,
                          threshold_source=source, faces={"a": info[0], "b": info[1]})

    def identify(self, a: str | os.PathLike) -> IdentifyResult:
        if self.clf is None:
            raise FacerecError("one photo: give a second photo to compare with, or "
                               "--checkpoint_path to rank the enrolled people (1:N)")
        from facerec.recognition.decision import UNKNOWN

        z, info = self.faces([a])
        protos = self.clf.prototypes.detach().cpu().numpy().astype(np.float64)
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)
        d = 1.0 - protos @ z[0]
        t = self.identify_threshold()
        order = np.argsort(d, kind="stable")
        matches = [{"rank": r + 1, "name": self.clf.labels[i], "distance": round(float(d[i]), 5),
                    "match": bool(d[i] <= t)} for r, i in enumerate(order)]
        best = matches[0]["name"] if matches and matches[0]["match"] else UNKNOWN
        return IdentifyResult(image=str(a), best=best, threshold=t, matches=matches, face=info[0])


def run_verify(paths: list[str], *, checkpoint: str | None = None, threshold: float | None = None,
               backbone: str = DEFAULT_BACKBONE, pick: str | None = None, as_json: bool = False,
               top: int = 10, device: str = "auto", out=None) -> PairResult | IdentifyResult:
    """What ``facerec verify`` does: 1:1 with two photos, 1:N with one and a checkpoint."""
    out = out or sys.stdout
    if len(paths) not in (1, 2):
        raise FacerecError("give two photos (1:1), or one photo and --checkpoint_path (1:N)")
    for p in paths:
        if not Path(p).exists():
            raise FacerecError(f"image not found: {p}")
    if len(paths) == 1 and checkpoint is None:
        raise FacerecError("one photo: give a second photo to compare with, or --checkpoint_path "
                           "to rank the enrolled people (1:N)")
    v = Verifier(checkpoint, backbone=backbone, threshold=threshold, pick=pick, device=device)
    if len(paths) == 2:
        r = v.verify(paths[0], paths[1])
        if as_json:
            print(json.dumps(r.to_dict(), indent=1), file=out)
        else:
            rel = "<=" if r.same else ">"
            print(f"Same person: {'yes' if r.same else 'no'} (distance {r.distance:.4f} {rel} "
                  f"threshold {r.threshold:.4f}; {r.threshold_source})", file=out)
        return r
    r = v.identify(paths[0])
    if as_json:
        print(json.dumps(r.to_dict(), indent=1), file=out)
    else:
        for m in r.matches[:top]:
            print(f"{m['rank']:>3}. {m['name']}  distance {m['distance']:.4f}"
                  f"{'  match' if m['match'] else ''}", file=out)
        print(f"Best match: {r.best} (threshold {r.threshold:.4f})", file=out)
    return r
