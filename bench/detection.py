#!/usr/bin/env python
"""Detection benchmark: facerec's MTCNN and YuNet against their references, side by side, in one run.

Detectors (all on the CPU, same torch thread count; OpenCV gets the same thread count):

* ``facerec``: our MTCNN, and ``facenet-pytorch``: its MTCNN, both with the original tutorial's
  settings (min_face_size 20, thresholds 0.6/0.7/0.7, factor 0.709);
* ``yunet``: our YuNet (detection/yunet.py), every candidate down to score 0.02, no size filter;
  ``opencv-yunet``: OpenCV's ``cv2.FaceDetectorYN`` on the same ONNX file and settings (photos
  read with ``cv2.imread``, downscaled like ours to ``max_side`` 1600 with ``cv2.resize``).

Reported:

* quality: WIDER FACE AP (easy / medium / hard) on ``$FACEREC_TEST_DATA/detection`` following the
  protocol of its README (IoU >= 0.5 with the +1-pixel convention, ignore regions, VOC all-point AP);
  for the YuNets also with only the detections at or above ``--min_score`` (default 0.3, YuNet's
  default score threshold) and, ours, at or above 20 px (the CLI's ``--min_face_size``);
* speed at 1024 px (the WIDER photos are 1024 px wide), per ``--threads`` setting: ms per photo from
  file path to faces, min and median over ``--repeats`` passes; the detectors alternate photo by
  photo so that background load hits them alike;
* 12-MP photos/s: the first ``--big`` photos upscaled to 4032 x 3024 (12-MP phone photos), saved as
  JPEG, at the last ``--threads`` setting;
* peak memory: max RSS of a fresh process detecting the 12-MP set, per detector;
* facerec's detectors only: photos of celebrities/ with at least one face, faces on
  edge-cases/no_face, face counts on edge-cases/multi_face against manifest.csv (all faces, and
  those at or above the detector's ``default_min_score``).

    python bench/detection.py [--threads 1 2] [--repeats 3] [--limit 0] [--big 8] [--min_score 0.3]
                              [--out bench/results/detection.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEREC_TEST_DATA", REPO.parent / "shared" / "data"))
SETTINGS = dict(min_face_size=20, thresholds=(0.6, 0.7, 0.7), factor=0.709)
#: YuNet, ours and OpenCV's: every candidate (AP needs the low scores too), no size filter
YUNET_SETTINGS = dict(min_face_size=0, score_threshold=0.02, nms_threshold=0.3, top_k=5000,
                      max_side=1600)
#: name in the report -> make_detector's key
DETECTORS = {"facerec": "facerec", "facenet-pytorch": "facenet", "yunet": "yunet",
             "opencv-yunet": "opencv"}


# ------------------------------------------------------------------------------------ detectors
def make_detector(name: str):
    """A function path -> (boxes [K,4] x1y1x2y2, scores [K]) for 'facerec' (our MTCNN),
    'facenet' (facenet-pytorch's MTCNN), 'yunet' (ours) or 'opencv' (OpenCV's YuNet)."""
    if name in ("facerec", "yunet"):
        from facerec.detection.detect import get_detector

        detector = (get_detector("mtcnn", device="cpu", **SETTINGS) if name == "facerec"
                    else get_detector("yunet", device="cpu", **YUNET_SETTINGS))

        def run(path):
            faces = detector.detect(path)
            boxes = np.array([f.corners for f in faces]).reshape(-1, 4)
            return boxes, np.array([f.score for f in faces])
        return run
    if name == "opencv":
        return make_opencv_yunet()
    from facenet_pytorch import MTCNN
    from PIL import Image

    mtcnn = MTCNN(keep_all=True, device="cpu", min_face_size=SETTINGS["min_face_size"],
                  thresholds=list(SETTINGS["thresholds"]), factor=SETTINGS["factor"])

    def run(path):
        image = Image.open(path).convert("RGB")
        boxes, scores = mtcnn.detect(image)
        if boxes is None:
            return np.zeros((0, 4)), np.zeros(0)
        return boxes, scores
    return run


def make_opencv_yunet():
    """OpenCV's FaceDetectorYN on the ONNX file facerec's YuNet reads, as an OpenCV user runs it."""
    import cv2

    from facerec.weights import wheel_file

    s = YUNET_SETTINGS
    model = cv2.FaceDetectorYN.create(str(wheel_file("yunet")), "", (320, 320),
                                      s["score_threshold"], s["nms_threshold"], s["top_k"])

    def run(path):
        image = cv2.imread(str(path))
        scale = min(1.0, s["max_side"] / max(image.shape[:2]))
        if scale < 1.0:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_LINEAR)
        model.setInputSize((image.shape[1], image.shape[0]))
        _, faces = model.detect(image)
        if faces is None:
            return np.zeros((0, 4)), np.zeros(0)
        boxes = faces[:, :4].astype(np.float64) / scale
        boxes[:, 2:] += boxes[:, :2]
        return boxes, faces[:, 14].astype(np.float64)
    return run


def set_threads(threads: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


# ---------------------------------------------------------------------------------- WIDER FACE AP
def iou_plus1(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of one x1y1x2y2 box with gt boxes, WIDER's +1-pixel convention."""
    ix1 = np.maximum(box[0], gts[:, 0])
    iy1 = np.maximum(box[1], gts[:, 1])
    ix2 = np.minimum(box[2], gts[:, 2])
    iy2 = np.minimum(box[3], gts[:, 3])
    inter = np.clip(ix2 - ix1 + 1, 0, None) * np.clip(iy2 - iy1 + 1, 0, None)
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1)
    return inter / (area + areas - inter)


def wider_ap(predictions: dict[str, tuple[np.ndarray, np.ndarray]], annotations: list[dict],
             subset: str) -> float:
    records = []  # (score, is_tp) for every non-ignored detection
    positives = 0
    for image in annotations:
        faces = image["faces"]
        gts = np.array([[f["box"][0], f["box"][1], f["box"][0] + f["box"][2], f["box"][1] + f["box"][3]]
                        for f in faces], dtype=np.float64).reshape(-1, 4)
        counted = np.array([bool(f.get(subset)) and not f.get("ignore") for f in faces], dtype=bool)
        positives += int(counted.sum())
        boxes, scores = predictions[image["file"]]
        found = np.zeros(len(faces), dtype=bool)
        for k in np.argsort(-scores, kind="stable"):
            if len(gts) == 0:
                records.append((scores[k], False))
                continue
            ious = iou_plus1(boxes[k], gts)
            j = int(ious.argmax())
            if ious[j] >= 0.5:
                if not counted[j]:
                    continue  # matched an ignore region: neither TP nor FP
                if not found[j]:
                    found[j] = True
                    records.append((scores[k], True))
                    continue
            records.append((scores[k], False))
    if not records or positives == 0:
        return 0.0
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([r[1] for r in records])
    fp = np.cumsum([not r[1] for r in records])
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, 1e-12)
    # PASCAL VOC all-point interpolation
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


# ------------------------------------------------------------------------------------- helpers
def make_big_copies(paths: list[Path], folder: Path) -> list[Path]:
    from PIL import Image

    out = []
    for path in paths:
        target = folder / f"{path.stem}_12mp.jpg"
        Image.open(path).convert("RGB").resize((4032, 3024), Image.BICUBIC).save(target, quality=92)
        out.append(target)
    return out


def select(predictions: dict, min_score: float = 0.0, min_side: float = 0.0) -> dict:
    """Only the detections at or above ``min_score`` whose box is at least ``min_side`` px (its
    longer side): what ``--min_score`` / ``--min_face_size`` would have kept."""
    out = {}
    for key, (boxes, scores) in predictions.items():
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (scores >= min_score) & (side >= min_side)
        out[key] = (boxes[keep], scores[keep])
    return out


def timed_side_by_side(paths: list[Path], detectors: dict) -> tuple[dict, dict]:
    """Alternate the detectors photo by photo; return (predictions, seconds) per detector."""
    predictions = {name: {} for name in detectors}
    seconds = {name: 0.0 for name in detectors}
    for path in paths:
        for name, run in detectors.items():
            start = time.perf_counter()
            predictions[name][path] = run(path)
            seconds[name] += time.perf_counter() - start
    return predictions, seconds


def peak_memory(name: str, paths: list[Path], threads: int) -> float:
    """Peak RSS (MiB) of a fresh process that detects ``paths`` with detector ``name``."""
    code = (
        "import sys, json; sys.path.insert(0, %r);"
        "from detection import make_detector, set_threads; set_threads(%d);"
        "run = make_detector(%r);"
        "[run(p) for p in json.loads(sys.argv[1])];"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
        "print(int(hwm.split()[1]) / 1024)"
    ) % (str(Path(__file__).parent), threads, name)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report the parent's
    out = subprocess.run([sys.executable, "-c", code, json.dumps([str(p) for p in paths])],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def facerec_checks(name: str) -> dict:
    """Detection sanity on the shared real photos, for facerec's detector ``name`` with its default
    settings: (all faces it returns, those at or above its ``default_min_score``)."""
    from facerec.detection.detect import get_detector

    detector = get_detector(name, device="cpu")
    cut = detector.default_min_score

    def count(path):
        faces = detector.detect(path)
        return len(faces), sum(f.score >= cut for f in faces)

    celebs = sorted((DATA / "celebrities").glob("*/*/*.jpg"))
    with_face = sum(count(p)[1] > 0 for p in celebs)
    no_face = {p.name: count(p) for p in sorted((DATA / "edge-cases/no_face").glob("*.jpg"))}
    multi = {}
    with open(DATA / "edge-cases/manifest.csv") as handle:
        for row in csv.DictReader(handle):
            if row["category"] == "multi_face":
                multi[row["file"]] = (row["expected_faces"], *count(DATA / "edge-cases" / row["file"]))
    return {"default_min_score": cut,
            "celebrities_with_face_at_default_min_score": f"{with_face}/{len(celebs)}",
            "no_face_faces_all_and_at_default_min_score": [sum(v[0] for v in no_face.values()),
                                                           sum(v[1] for v in no_face.values())],
            "no_face": no_face, "multi_face_expected_all_at_default_min_score": multi}


def ms_summary(passes: list[float]) -> dict:
    return {"ms_per_photo_min": round(min(passes), 1),
            "ms_per_photo_median": round(float(np.median(passes)), 1), "passes": len(passes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per thread setting")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N WIDER photos")
    parser.add_argument("--big", type=int, default=8, help="how many photos to test at 12 MP")
    parser.add_argument("--min_score", type=float, default=0.3,
                        help="the YuNets' AP also with only the detections at or above this")
    parser.add_argument("--only", nargs="+", choices=list(DETECTORS), default=list(DETECTORS),
                        help="run only these detectors")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "detection.json"))
    args = parser.parse_args()

    annotations = json.loads((DATA / "detection" / "annotations.json").read_text())["images"]
    if args.limit:
        annotations = annotations[: args.limit]
    paths = [DATA / "detection" / image["file"] for image in annotations]
    set_threads(args.threads[0])
    detectors = {name: make_detector(DETECTORS[name]) for name in args.only}
    for run in detectors.values():  # warm up (model load, allocator)
        run(paths[0])

    report: dict = {"threads": args.threads, "photos": len(paths), "settings": SETTINGS,
                    "yunet_settings": YUNET_SETTINGS}
    # quality: the first timed pass at the first thread setting
    passes: dict = {t: {name: [] for name in detectors} for t in args.threads}
    predictions, seconds = timed_side_by_side(paths, detectors)
    for name in detectors:
        passes[args.threads[0]][name].append(1000 * seconds[name] / len(paths))
    report["wider"] = {}
    subsets = ("easy", "medium", "hard")
    for name in detectors:
        preds = {image["file"]: predictions[name][p] for image, p in zip(annotations, paths)}
        entry = {f"AP_{s}": round(wider_ap(preds, annotations, s), 4) for s in subsets}
        if "yunet" in name:
            kept = select(preds, args.min_score)
            entry.update({f"AP_{s}_min_score_{args.min_score:g}": round(wider_ap(kept, annotations, s), 4)
                          for s in subsets})
        if name == "yunet":
            kept = select(preds, 0.0, 20)
            entry.update({f"AP_{s}_min_face_size_20": round(wider_ap(kept, annotations, s), 4)
                          for s in subsets})
        report["wider"][name] = entry

    # speed at 1024 px, min and median over the passes
    for threads in args.threads:
        set_threads(threads)
        while len(next(iter(passes[threads].values()))) < args.repeats:
            _, seconds = timed_side_by_side(paths, detectors)
            for name in detectors:
                passes[threads][name].append(1000 * seconds[name] / len(paths))
    report["speed_1024px"] = {}
    for threads in args.threads:
        entry = {name: ms_summary(passes[threads][name]) for name in detectors}
        if {"yunet", "facerec"} <= set(detectors):
            entry["yunet_speedup_vs_facerec_mtcnn_median"] = round(
                entry["facerec"]["ms_per_photo_median"] / entry["yunet"]["ms_per_photo_median"], 1)
        if {"yunet", "opencv-yunet"} <= set(detectors):
            entry["yunet_speedup_vs_opencv_median"] = round(
                entry["opencv-yunet"]["ms_per_photo_median"] / entry["yunet"]["ms_per_photo_median"], 2)
        report["speed_1024px"][f"{threads}_threads"] = entry

    threads = args.threads[-1]
    with tempfile.TemporaryDirectory() as tmp:
        big = make_big_copies(paths[: args.big], Path(tmp))
        _, seconds = timed_side_by_side(big, detectors)
        report["12mp"] = {"threads": threads}
        for name in detectors:
            report["12mp"][name] = {"photos_per_s": round(len(big) / seconds[name], 2),
                                    "peak_rss_mib": round(peak_memory(DETECTORS[name], big, threads))}
    report["facerec_checks"] = {name: facerec_checks(name) for name in ("mtcnn", "yunet")
                                if {"mtcnn": "facerec"}.get(name, name) in detectors}
    report["bench_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
