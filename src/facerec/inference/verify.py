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
        z, info = self.features_of(paths)
        for face in info:
            if face.get("error"):
                raise FacerecError(f"{face['path']}: {face['error']}")
        return z, info

    def features_of(self, paths: list[str | os.PathLike], batch_size: int = 16
                    ) -> tuple[np.ndarray, list[dict]]:
        """Unit features (N, D) of one face per photo (detected and embedded in batches; a NaN
        row where a photo has no usable face) and how each face was found (``error`` says why
        there is none)."""
        from facerec.inference.enroll import faces_of_photos

        for p in paths:
            if Path(p).is_dir():
                raise FacerecError(f"{p} is a folder: verify compares single photos")
        found = faces_of_photos(list(paths), self.detector, crop=self.crop, pick=self.pick,
                                batch_size=batch_size)
        rows = [i for i, f in enumerate(found) if f.crop is not None]
        crops = [found[i].crop for i in rows]
        z = np.full((len(found), self.dim), np.nan)
        if crops and self.clf is not None:
            z[rows] = self.clf.embed_crops(crops).numpy().astype(np.float64)
        elif crops:
            from facerec.recognition.features import embed_pil

            z[rows] = embed_pil(self.embedder, crops, True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            z /= np.linalg.norm(z, axis=1, keepdims=True)
        info = []
        for f, row in zip(found, z):
            face = {"path": f.path}
            if f.crop is None:
                face["error"] = f.reason
            elif not np.isfinite(row).all():
                face["error"] = "the face could not be embedded"
            else:
                face.update(box=[round(v, 1) for v in f.box], source=f.source,
                            faces_in_photo=f.n_faces)
            info.append(face)
        return z, info

    @property
    def dim(self) -> int:
        return int(self.clf.prototypes.shape[1]) if self.clf is not None else int(self.embedder.dim)

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


# ------------------------------------------------------------------------------------------ pairs
_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "different", "diff", "n", "f"}


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str, bool | None]]:
    """The pairs of a CSV or TSV file, one ``path_a,path_b[,same]`` per line (tab-separated when
    the first line has a tab; a first line naming no existing file is a header;
    ``#`` lines and blank lines are skipped). Relative paths are relative to the file's folder.
    ``same``: 1/0, true/false, yes/no, same/different; absent: None."""
    import csv

    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FacerecError(f"pairs file not found: {src}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FacerecError(f"cannot read pairs file {src}: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise FacerecError(f"{src} holds no pairs (one 'path_a,path_b[,same]' per line)")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=delimiter)]
    def resolved(cell: str) -> Path:
        return Path(cell) if Path(cell).is_absolute() else src.parent / cell

    first = rows[0]
    if len(rows) > 1 and len(first) >= 2 and not any(os.path.lexists(resolved(c))
                                                      for c in first[:2]):
        rows = rows[1:]  # a header line (its "paths" are column names)
    pairs = []
    for n, row in enumerate(rows, 1):
        if len(row) not in (2, 3) or not row[0] or not row[1]:
            raise FacerecError(f"{src}: pair {n} is not 'path_a{delimiter}path_b[{delimiter}same]': "
                               f"{delimiter.join(row)[:120]!r}")
        same = None
        if len(row) == 3:
            word = row[2].lower()
            if word not in _TRUE | _FALSE:
                raise FacerecError(f"{src}: pair {n}: same must be 1/0, true/false, yes/no or "
                                   f"same/different, not {row[2][:40]!r}")
            same = word in _TRUE
        a, b = (str(resolved(p)) for p in row[:2])
        pairs.append((a, b, same))
    labelled = {same is None for _, _, same in pairs}
    if len(labelled) > 1:
        raise FacerecError(f"{src}: some pairs say whether they are the same person and some do "
                           "not: label all of them or none")
    return pairs


def _tenfold_accuracy(d: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """The LFW protocol: the pairs in ``folds`` consecutive folds; for each, the threshold that is
    most accurate on the other folds is scored on it. (mean, standard deviation)."""
    parts = np.array_split(np.arange(len(d)), min(folds, len(d)))
    scores = []
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        if not len(train) or not len(test):
            continue
        cands = np.unique(d[train])
        acc = [(np.mean((d[train] <= t) == same[train]), t) for t in cands]
        t = max(acc)[1]
        scores.append(np.mean((d[test] <= t) == same[test]))
    return float(np.mean(scores)), float(np.std(scores))


def pairs_summary(d: np.ndarray, same: np.ndarray | None, threshold: float,
                  source: str) -> dict:
    """The summary of ``verify --pairs``: counts and threshold; with labels, the accuracy at the
    threshold, the 10-fold accuracy (LFW protocol) and the TAR at FAR 1%."""
    ok = np.isfinite(d)
    out: dict = {"pairs": int(len(d)), "compared": int(ok.sum()), "failed": int((~ok).sum()),
                 "threshold": round(float(threshold), 5), "threshold_source": source,
                 "metric": "cosine distance"}
    if same is None or not ok.any():
        return out
    d, same = d[ok], same[ok].astype(bool)
    out.update(genuine_pairs=int(same.sum()), impostor_pairs=int((~same).sum()),
               accuracy=round(float(np.mean((d <= threshold) == same)), 5))
    if same.any() and (~same).any():
        out["far"] = round(float(np.mean(d[~same] <= threshold)), 5)
        out["frr"] = round(float(np.mean(d[same] > threshold)), 5)
        imp = np.sort(d[~same])
        k = int(np.floor(TARGET_FAR * len(imp)))  # accept d < imp[k]: at most k impostors
        t_far = imp[k] if k < len(imp) else np.inf
        out["tar_at_far_1pct"] = round(float(np.mean(d[same] < t_far)), 5)
        mean, std = _tenfold_accuracy(d, same)
        out["tenfold_accuracy"], out["tenfold_std"] = round(mean, 5), round(std, 5)
    return out


def verify_pairs(pairs_file: str | os.PathLike, verifier: Verifier) -> dict:
    """``facerec verify --pairs FILE``: every photo embedded once (in batches), every pair's
    cosine distance and decision at the verifier's 1:1 threshold, and the summary
    (:func:`pairs_summary`). A photo without a usable face fails its pairs (``error``), not the
    run."""
    pairs = read_pairs(pairs_file)
    photos = list(dict.fromkeys(p for a, b, _ in pairs for p in (a, b)))
    missing = [p for p in photos if not os.path.lexists(p)]
    if missing:
        raise FacerecError(f"{len(missing)} photo(s) of {pairs_file} not found (first: "
                           f"{missing[0]})")
    z, info = verifier.features_of(photos)
    row = {p: i for i, p in enumerate(photos)}
    t, source = verifier.pair_threshold()
    out, distances = [], []
    for a, b, same in pairs:
        za, zb = z[row[a]], z[row[b]]
        d = float(1.0 - za @ zb)
        distances.append(d)
        item = {"a": a, "b": b, "distance": round(d, 5) if np.isfinite(d) else None,
                "same": bool(d <= t) if np.isfinite(d) else None}
        if same is not None:
            item["label"] = same
        errors = [f"{info[row[p]]['path']}: {info[row[p]]['error']}" for p in (a, b)
                  if info[row[p]].get("error")]
        if errors:
            item["error"] = "; ".join(errors)
        out.append(item)
    labels = None if pairs[0][2] is None else np.array([s for _, _, s in pairs], bool)
    return {"pairs": out, "summary": pairs_summary(np.array(distances), labels, t, source)}


def print_pairs(report: dict, file=None) -> None:
    """``verify --pairs`` as text: one line per pair, then the summary."""
    out = file or sys.stdout
    for p in report["pairs"]:
        if p.get("error"):
            print(f"{p['a']}\t{p['b']}\tskipped: {p['error']}", file=out)
            continue
        label = "" if "label" not in p else f"\t(labelled {'same' if p['label'] else 'different'})"
        print(f"{p['a']}\t{p['b']}\t{'same' if p['same'] else 'different'}\t"
              f"distance {p['distance']:.4f}{label}", file=out)
    s = report["summary"]
    print(f"{s['compared']} of {s['pairs']} pair(s) compared at threshold {s['threshold']:.4f} "
          f"({s['threshold_source']})", file=out)
    if "accuracy" in s:
        extra = ""
        if "tenfold_accuracy" in s:
            extra = (f"; 10-fold accuracy {s['tenfold_accuracy']:.2%} +- {s['tenfold_std']:.2%}; "
                     f"TAR {s['tar_at_far_1pct']:.2%} at FAR 1%; at the threshold FAR "
                     f"{s['far']:.2%}, FRR {s['frr']:.2%}")
        print(f"Accuracy at the threshold: {s['accuracy']:.2%}{extra}", file=out)


def run_verify(paths: list[str], *, checkpoint: str | None = None, threshold: float | None = None,
               backbone: str = DEFAULT_BACKBONE, pick: str | None = None, as_json: bool = False,
               top: int = 10, device: str = "auto", pairs: str | None = None, out=None):
    """What ``facerec verify`` does: 1:1 with two photos, 1:N with one and a checkpoint, or every
    pair of a ``--pairs`` file (:func:`verify_pairs`)."""
    out = out or sys.stdout
    if pairs is not None:
        if paths:
            raise FacerecError("give photos or --pairs FILE, not both")
        v = Verifier(checkpoint, backbone=backbone, threshold=threshold, pick=pick, device=device)
        report = verify_pairs(pairs, v)
        if as_json:
            print(json.dumps(report, indent=1), file=out)
        else:
            print_pairs(report, out)
        return report
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
