"""Recognition benchmark of ``facerec train`` (closed set and open set), with a fixed protocol.

    .venv/bin/python bench/recognition.py                 # both parts, results in bench/results/
    .venv/bin/python bench/recognition.py --only lfw      # or: --only celebrities
    .venv/bin/python bench/recognition.py --only lfw --finetune 0,1,2   # train --finetune N each

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


# ------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "recognition"))
    ap.add_argument("--only", choices=("lfw", "celebrities"))
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
