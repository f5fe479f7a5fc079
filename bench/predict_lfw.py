"""LFW-dev end to end through ``facerec predict`` on the full photos, with the training benchmark's
protocol (bench/recognition.py), so the numbers compare with its crop-based ones.

    .venv/bin/python bench/predict_lfw.py            # results in bench/results/predict/lfw.json

Protocol (imported from bench/recognition.py, not restated): people sorted by name, every 5th
(index % 5 == 4) never enrolled and only an impostor; the others enrol their first 6 photos (5
train + 1 val crops of the face nearest the centre, as recognition.py makes them) and are tested on
the rest. ``facerec train`` (defaults, dlib_face) on those crops; then ``facerec predict --json
--threshold 0`` on the *full* test photos (genuine and impostor): MTCNN finds every face and each
photo is scored by the face nearest its centre (LFW's labelled person).

Reported: closed-set top-1 (genuine photos whose centre face is labelled as the right person with
``--threshold 0``); FPIR and FNIR at the threshold stored in the checkpoint (a face is accepted when
its confidence is at least that threshold: the decision ``facerec predict`` makes without
``--threshold``; checked on the output); TPIR at FPIR 1% (threshold set on the impostor photos, as
recognition.py does). A photo with no face found counts as rejected (and as wrong for top-1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "src"))

import recognition as protocol  # noqa: E402  (bench/recognition.py: the training benchmark)


def facerec(args: list[str], work: Path, env: dict, log: str) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "facerec.cli", *args], cwd=work, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / f"{log}.log").write_text(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"facerec {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout, proc.stderr


def centre_face(result: dict) -> dict | None:
    faces = result["faces"]
    if not faces:
        return None
    cx, cy = result["width"] / 2, result["height"] / 2
    return min(faces, key=lambda f: (f["box"][0] + f["box"][2] / 2 - cx) ** 2
               + (f["box"][1] + f["box"][3] / 2 - cy) ** 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "predict" / "lfw"))
    args = ap.parse_args()
    root = Path(args.data) / "lfw-dev"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["FACEREC_CACHE_DIR"] = str(work / "cache")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")

    people = sorted(d.name for d in root.iterdir() if d.is_dir())
    enrol_photos, enrol_crops, test = [], [], []
    known = []
    for i, person in enumerate(people):
        impostor = i % protocol.IMPOSTOR_EVERY == protocol.IMPOSTOR_EVERY - 1
        if not impostor:
            known.append(person)
        for j, photo in enumerate(sorted((root / person).glob("*.jpg"))):
            if not impostor and j < protocol.ENROLL:
                split = "val" if j >= protocol.ENROLL - protocol.ENROLL_VAL else "train"
                enrol_photos.append(photo)
                enrol_crops.append(work / "dataset" / split / person / photo.name)
            else:
                test.append((photo, person if not impostor else None))
    t0 = time.perf_counter()
    shutil.rmtree(work / "dataset", ignore_errors=True)
    crop_stats = protocol.make_crops(enrol_photos, enrol_crops, choose="centre")
    protocol.write_labels(work / "dataset", known)
    crop_seconds = time.perf_counter() - t0

    shutil.rmtree(work / "runs", ignore_errors=True)
    train_s, out, _ = facerec(["train", "--data_path", "dataset", "--runs_dir", "runs", "--name",
                               "lfw", "--quiet"], work, env, "train")
    ckpt = next(line.split(": ", 1)[1] for line in out.splitlines()
                if line.startswith("Best checkpoint: "))
    import torch

    stored = torch.load(work / ckpt, map_location="cpu", weights_only=True)["facerec"]["threshold"]

    photos_dir = work / "test-photos"
    shutil.rmtree(photos_dir, ignore_errors=True)
    for photo, person in test:
        target = photos_dir / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(photo)
    predict_s, out, err = facerec(["predict", "--checkpoint_path", ckpt, "--image_path",
                                   str(photos_dir), "--threshold", "0", "--json", "--quiet",
                                   "--timing", "--device", "cpu"], work, env, "predict")
    results = {Path(r["image"]).name: r for r in json.loads(out)}
    index = {p: k for k, p in enumerate(sorted(known))}
    true, pred, score, label_ok, faces, no_face = [], [], [], [], [], 0
    for photo, person in test:
        r = results[photo.name]
        assert r["error"] is None, r
        f = centre_face(r)
        faces.append(len(r["faces"]))
        true.append(index[person] if person else -1)
        if f is None:
            no_face += 1
            pred.append(-2)
            score.append(-np.inf)
            label_ok.append(False)
            continue
        pred.append(index[f["candidate"]])
        conf = -np.inf if f["confidence"] is None else f["confidence"]
        score.append(conf)
        label_ok.append(f["label"] == person)
        # the decision at --threshold 0, as printed
        assert (f["label"] == f["candidate"]) == (conf >= 0), f
    true, pred, score = np.array(true), np.array(pred), np.array(score, dtype=float)
    impostor = true == -1
    accept = score >= stored  # what `facerec predict` without --threshold answers
    m = protocol.open_set_metrics(true, pred, score, accept, impostor)
    genuine = ~impostor
    report = {
        "protocol": {"people": len(people), "enrolled_people": len(known),
                     "impostor_people": len(people) - len(known),
                     "enrol_photos": len(enrol_photos), "genuine_test_photos": int(genuine.sum()),
                     "impostor_test_photos": int(impostor.sum())},
        "closed_set_top1_threshold_0": float(np.mean(np.array(label_ok)[genuine])),
        "closed_set_top1_best_guess": m["top1"],
        "stored_threshold": stored,
        "fpir_at_stored_threshold": m["fpir"],
        "fnir_at_stored_threshold": m["fnir"],
        "tpir_at_fpir_1pct": m["tpir_at_fpir_1pct"],
        "photos_without_face": no_face,
        "photos_with_several_faces": int(sum(n > 1 for n in faces)),
        "faces_classified": int(sum(faces)),
        "seconds": {"enrol_crops": crop_seconds, "train": train_s, "predict": predict_s},
        "predict_timing_line": err.strip().splitlines()[-1],
        "enrol_crop_stats": crop_stats,
        "checkpoint": ckpt,
    }
    ref = REPO / "bench" / "results" / "recognition" / "recognition-lfw.json"
    if ref.is_file():
        ours = json.loads(ref.read_text())["lfw"]["ours"]
        ours = ours.get("5+1", ours)  # the 5 train + 1 val variant: the same training as here
        report["training_benchmark_on_crops"] = {k: ours.get(k) for k in (
            "top1", "fpir", "fnir", "tpir_at_fpir_1pct", "threshold")}
    (work.parent / "lfw.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
