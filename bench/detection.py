#!/usr/bin/env python
"""Detection benchmark: facerec's MTCNN against facenet-pytorch's, side by side, in one run.

Both use the original tutorial's settings (min_face_size 20, thresholds 0.6/0.7/0.7, factor 0.709)
and the same torch thread count. Reported:

* quality: WIDER FACE AP (easy / medium / hard) on ``$FACEREC_TEST_DATA/detection`` following the
  protocol of its README (IoU >= 0.5 with the +1-pixel convention, ignore regions, VOC all-point AP);
* speed: photos/s from file path to faces, (a) the WIDER photos at native size, (b) the same photos
  upscaled to 4032 x 3024 (12-MP phone photos) saved as JPEG; the two detectors alternate photo by
  photo so that background load hits both alike;
* peak memory: max RSS of a fresh process detecting the 12-MP set, per detector;
* facerec only: photos of celebrities/ with at least one face, false positives on
  edge-cases/no_face, face counts on edge-cases/multi_face against manifest.csv.

    python bench/detection.py [--threads 2] [--limit 0] [--big 8] [--out bench/results/detection.json]
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


# ------------------------------------------------------------------------------------ detectors
def make_detector(name: str):
    """A function path -> (boxes [K,4] x1y1x2y2, scores [K]) for 'facerec' or 'facenet'."""
    if name == "facerec":
        from facerec import FaceDetector

        detector = FaceDetector(device="cpu", **SETTINGS)

        def run(path):
            faces = detector.detect(path)
            boxes = np.array([f.corners for f in faces]).reshape(-1, 4)
            return boxes, np.array([f.score for f in faces])
        return run
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
        "import sys, json, torch; sys.path.insert(0, %r);"
        "torch.set_num_threads(%d);"
        "from detection import make_detector; run = make_detector(%r);"
        "[run(p) for p in json.loads(sys.argv[1])];"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
        "print(int(hwm.split()[1]) / 1024)"
    ) % (str(Path(__file__).parent), threads, name)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report the parent's
    out = subprocess.run([sys.executable, "-c", code, json.dumps([str(p) for p in paths])],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def facerec_checks() -> dict:
    """Detection sanity on the shared real photos (facerec only)."""
    from facerec import FaceDetector

    detector = FaceDetector(device="cpu", **SETTINGS)
    celebs = sorted((DATA / "celebrities").glob("*/*/*.jpg"))
    with_face = sum(bool(detector.detect(p)) for p in celebs)
    no_face = {p.name: len(detector.detect(p)) for p in sorted((DATA / "edge-cases/no_face").glob("*.jpg"))}
    multi = {}
    with open(DATA / "edge-cases/manifest.csv") as handle:
        for row in csv.DictReader(handle):
            if row["category"] == "multi_face":
                multi[row["file"]] = (row["expected_faces"], len(detector.detect(DATA / "edge-cases" / row["file"])))
    return {"celebrities_with_face": f"{with_face}/{len(celebs)}",
            "no_face_false_positives": sum(no_face.values()), "no_face": no_face,
            "multi_face_expected_vs_found": multi}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N WIDER photos")
    parser.add_argument("--big", type=int, default=8, help="how many photos to test at 12 MP")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "detection.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    annotations = json.loads((DATA / "detection" / "annotations.json").read_text())["images"]
    if args.limit:
        annotations = annotations[: args.limit]
    paths = [DATA / "detection" / image["file"] for image in annotations]
    detectors = {"facerec": make_detector("facerec"), "facenet-pytorch": make_detector("facenet")}
    for run in detectors.values():  # warm up (model load, allocator)
        run(paths[0])

    report: dict = {"threads": args.threads, "photos": len(paths), "settings": SETTINGS}
    predictions, seconds = timed_side_by_side(paths, detectors)
    report["native"] = {}
    for name in detectors:
        preds = {image["file"]: predictions[name][p] for image, p in zip(annotations, paths)}
        report["native"][name] = {
            "photos_per_s": len(paths) / seconds[name],
            **{f"AP_{s}": wider_ap(preds, annotations, s) for s in ("easy", "medium", "hard")},
        }
    report["native"]["speedup"] = (report["native"]["facerec"]["photos_per_s"]
                                   / report["native"]["facenet-pytorch"]["photos_per_s"])

    with tempfile.TemporaryDirectory() as tmp:
        big = make_big_copies(paths[: args.big], Path(tmp))
        _, seconds = timed_side_by_side(big, detectors)
        report["12mp"] = {name: {"photos_per_s": len(big) / seconds[name],
                                 "peak_rss_mib": peak_memory(key, big, args.threads)}
                          for name, key in (("facerec", "facerec"), ("facenet-pytorch", "facenet"))}
        report["12mp"]["speedup"] = (report["12mp"]["facerec"]["photos_per_s"]
                                     / report["12mp"]["facenet-pytorch"]["photos_per_s"])
    report["facerec_checks"] = facerec_checks()
    report["bench_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
