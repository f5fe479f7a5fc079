"""Enrol without retraining vs retrain, on lfw-dev (the protocol of bench/recognition.py).

    .venv/bin/python bench/enroll_lfw.py            # results in bench/results/enroll/

People sorted by name; every 5th (index % 5 == 4: 19 people) is an impostor, never enrolled. Each of
the 77 others has 6 enrolment photos (the first 6 by name) and is tested on the rest. Crops are made
as in bench/recognition.py (MTCNN, the face nearest the centre, 160 px, margin 0.2).

- **retrain**: ``facerec train`` (dlib_face, 100 epochs max, the 6 photos per person as train, no
  val) on all 77 people at once.
- **enroll**: ``facerec train`` the same way on half of them (even positions among the 77: 39
  people), then ``facerec enroll`` (:func:`facerec.inference.enroll.enroll`, the CLI's code, ``--pick
  center``) each of the other 38 from their 6 *photos*, one after the other (38 checkpoints in a
  chain); the threshold is recalibrated at each step.

Both final checkpoints are scored on the same test photos (genuine: the other photos of the 77;
impostor: every photo of the 19): closed-set top-1, FPIR and FNIR at the checkpoint's own
threshold, and TPIR at FPIR = 1% (threshold set on the impostors: an oracle, the same for both).
Also: seconds per enrolment (load + detect + embed + recalibrate + save; a shared, noisy CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from recognition import (ENROLL, IMPOSTOR_EVERY, make_crops, open_set_metrics,  # noqa: E402
                         train_in_subprocess, write_labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "enroll"))
    ap.add_argument("--max_epochs", type=int, default=100)
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    os.environ["FACEREC_CACHE_DIR"] = str(cache)

    root = data / "lfw-dev"
    people = sorted(d.name for d in root.iterdir() if d.is_dir())
    photos, labels, is_imp, rank = [], [], [], []
    for i, person in enumerate(people):
        for j, f in enumerate(sorted((root / person).glob("*.jpg"))):
            photos.append(f)
            labels.append(person)
            is_imp.append(i % IMPOSTOR_EVERY == IMPOSTOR_EVERY - 1)
            rank.append(j)
    is_imp, rank = np.array(is_imp), np.array(rank)
    crops = [work / "crops" / lab / p.name for p, lab in zip(photos, labels)]
    t0 = time.perf_counter()
    crop_stats = make_crops(photos, crops, choose="centre")
    crop_stats["seconds"] = time.perf_counter() - t0
    enrolled = ~is_imp & (rank < ENROLL)
    known = sorted({lab for lab, e in zip(labels, enrolled) if e})
    base = known[0::2]       # trained
    later = known[1::2]      # enrolled afterwards

    def dataset(name: str, members: list[str]) -> Path:
        ds = work / f"dataset-{name}"
        shutil.rmtree(ds, ignore_errors=True)
        for c, lab, e in zip(crops, labels, enrolled):
            if e and lab in members:
                (ds / "train" / lab).mkdir(parents=True, exist_ok=True)
                shutil.copy2(c, ds / "train" / lab / c.name)
        write_labels(ds, members)
        return ds

    runs = {}
    for name, members in (("retrain", known), ("half", base)):
        ds = dataset(name, members)
        runs[name] = train_in_subprocess({"data_path": str(ds), "name": f"enrollbench-{name}",
                                          "runs_dir": str(work / "runs"), "progress": False,
                                          "max_epochs": args.max_epochs}, work, name)

    from facerec.inference.enroll import enroll

    ckpt = runs["half"]["best_checkpoint"]
    times = []
    chain_dir = work / "chain"
    shutil.rmtree(chain_dir, ignore_errors=True)
    chain_dir.mkdir()
    for k, person in enumerate(later):
        ph = [p for p, lab, e in zip(photos, labels, enrolled) if e and lab == person]
        t0 = time.perf_counter()
        r = enroll(ckpt, person, ph, pick="center", out=chain_dir / f"step{k + 1:02d}.ckpt",
                   device="cpu")
        times.append(time.perf_counter() - t0)
        ckpt = r.checkpoint
        print(f"enrolled {person}: {r.faces_used} faces, threshold {r.threshold:.4f}, "
              f"{times[-1]:.1f}s", flush=True)

    # score both on the same test crops (features through the embedding cache)
    import torch

    from facerec.recognition.embed import get_embedder
    from facerec.recognition.features import combine_views, embed_crop_files
    from facerec.recognition.model import load_checkpoint

    test_idx = np.where((~is_imp & (rank >= ENROLL)) | is_imp)[0]
    test_crops = [crops[i] for i in test_idx]
    raw = embed_crop_files(test_crops, get_embedder("dlib_face"), cache=cache / "embeddings",
                           progress=False)
    z = torch.from_numpy(combine_views(raw[:, 0], raw[:, 1])[:, -1])
    out = {"protocol": {"people": len(people), "known": len(known), "trained_first": len(base),
                        "enrolled_after": len(later), "impostor_people": int(sum(
                            i % IMPOSTOR_EVERY == IMPOSTOR_EVERY - 1 for i in range(len(people)))),
                        "photos_per_person": ENROLL, "genuine_test": int((~is_imp[test_idx]).sum()),
                        "impostor_test": int(is_imp[test_idx].sum())},
           "crops": crop_stats}
    for name, path in (("retrain_all", runs["retrain"]["best_checkpoint"]),
                       ("train_half_enroll_half", ckpt),
                       ("train_half_only", runs["half"]["best_checkpoint"])):
        clf = load_checkpoint(path)
        index = {p: i for i, p in enumerate(clf.labels)}
        true = np.array([index.get(labels[i], -1) for i in test_idx])
        imp = true < 0  # impostors, and (for train_half_only) the people it never saw
        idx, score, _, acc = clf.predict_features(z)
        m = open_set_metrics(true, idx.numpy(), np.nan_to_num(score.numpy(), nan=-1.0),
                             acc.numpy(), imp)
        m["threshold"] = clf.threshold
        m["people"] = len(clf.labels)
        out[name] = m
    out["enroll_seconds_per_person"] = {"mean": float(np.mean(times)),
                                        "median": float(np.median(times)),
                                        "min": float(np.min(times)), "max": float(np.max(times))}
    out["retrain_wall_seconds"] = runs["retrain"]["wall_seconds"]
    out["retrain_epochs"] = runs["retrain"]["epochs"]
    text = json.dumps(out, indent=1)
    print(text)
    (work / "enroll-lfw.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
