"""Calibrate and measure ``facerec verify``'s default 1:1 threshold on lfw-dev pairs.

    .venv/bin/python bench/verify_lfw.py                       # dlib_face (MTCNN, 160 px box crops)
    .venv/bin/python bench/verify_lfw.py --embedder sface      # or sface+dlib_face

Every photo of ``../shared/data/lfw-dev`` (96 people) goes through verify's own code path:
MTCNN (``--detector``, default mtcnn: the detector the thresholds were measured with), the face
nearest the centre (``--pick center``: LFW photos are centred on their person and often show
others), cropped as the embedder declares (its ``crop``: 160 px with a 20% margin for
``dlib_face``, 112 px aligned for ``sface``), embedded (crop + mirror, unit mean). Every pair of
photos is a trial: same person (genuine) or not (impostor).

Reported:
- the threshold on all pairs: the largest cosine distance with <= 1% false accepts
  (:func:`facerec.inference.verify.pair_threshold`), and its false-accept / false-reject rates there;
- honest rates: the people are split in two halves (even / odd index by name); the threshold set on
  one half is measured on the other, both ways;
- the rates at the embedder's constant ``verify_threshold`` (e.g.
  :data:`facerec.recognition.dlib_face.DlibFaceEmbedder.verify_threshold`);
- seconds per photo (detect + embed) on this machine (noisy on a shared CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def features(data: Path, work: Path, embedder: str = "dlib_face", detector: str = "mtcnn"
             ) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(unit features, person index, people, stats); cached in ``work/features.npz``
    (``features-<embedder>[-<detector>].npz`` for another embedder or detector)."""
    tail = "" if embedder == "dlib_face" else f"-{embedder}"
    tail += "" if detector == "mtcnn" else f"-{detector}"
    cache = work / f"features{tail}.npz"
    root = data / "lfw-dev"
    people = sorted(d.name for d in root.iterdir() if d.is_dir())
    if cache.is_file():
        f = np.load(cache, allow_pickle=False)
        return f["z"], f["y"], people, json.loads(str(f["stats"]))
    from facerec.detection.detect import get_detector
    from facerec.recognition.embed import get_embedder
    from facerec.inference.enroll import faces_of_photos
    from facerec.recognition.features import embed_pil

    photos, labels = [], []
    for i, person in enumerate(people):
        for p in sorted((root / person).glob("*.jpg")):
            photos.append(p)
            labels.append(i)
    det = get_detector(detector, device="cpu")
    emb = get_embedder(embedder)
    t0 = time.perf_counter()
    found = faces_of_photos(photos, det, crop=emb.crop, pick="center", batch_size=16)
    t1 = time.perf_counter()
    ok = [k for k, f in enumerate(found) if f.crop is not None]
    z = np.full((len(photos), emb.dim), np.nan)
    z[ok] = embed_pil(emb, [found[k].crop for k in ok], True)
    t2 = time.perf_counter()
    stats = {"photos": len(photos), "no_face": len(photos) - len(ok),
             "detect_seconds_per_photo": (t1 - t0) / len(photos),
             "embed_seconds_per_face": (t2 - t1) / max(1, len(ok))}
    keep = np.isfinite(z).all(axis=1)
    stats["not_embedded"] = int(len(ok) - keep.sum())
    z, y = z[keep], np.array(labels)[keep]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, z=z, y=y, stats=json.dumps(stats))
    return z, y, people, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "verify"))
    ap.add_argument("--embedder", default="dlib_face")
    ap.add_argument("--detector", default="mtcnn")
    args = ap.parse_args()
    from facerec.inference.verify import TARGET_FAR, default_pair_threshold, pair_rates, pair_threshold

    os.environ.setdefault("FACEREC_CACHE_DIR", str(Path(args.work) / "cache"))
    z, y, people, stats = features(Path(args.data), Path(args.work), args.embedder, args.detector)
    out: dict = {"embedder": args.embedder, "detector": args.detector, "photos": stats, "people": len(people), "faces": int(len(y)),
                 "target_far": TARGET_FAR}
    t_all = pair_threshold(z, y, TARGET_FAR)
    out["all_pairs"] = {"threshold": t_all, **pair_rates(z, y, t_all)}
    halves = {}
    for name, a in (("even->odd", 0), ("odd->even", 1)):
        cal, test = (y % 2 == a), (y % 2 != a)
        t = pair_threshold(z[cal], y[cal], TARGET_FAR)
        halves[name] = {"threshold": t, **pair_rates(z[test], y[test], t)}
    out["cross_people"] = halves
    t_def = default_pair_threshold(args.embedder)
    if t_def is not None:
        out["default_threshold"] = {"threshold": t_def, **pair_rates(z, y, t_def)}
    # the face_recognition library's rule (euclidean 0.6 on single raw descriptors) is not
    # comparable here: our features are unit means of the crop and its mirror
    text = json.dumps(out, indent=1)
    print(text)
    tail = "" if args.embedder == "dlib_face" else f"-{args.embedder}"
    tail += "" if args.detector == "mtcnn" else f"-{args.detector}"
    (Path(args.work) / f"verify-lfw{tail}.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
