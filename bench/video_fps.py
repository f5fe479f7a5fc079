"""Video throughput and track purity of ``facerec predict`` on a synthetic 1080p clip.

    .venv/bin/python bench/video_fps.py --checkpoint_path CKPT     # results in bench/results/video/

Default checkpoint: the "retrain" model of bench/enroll_lfw.py (77 lfw-dev people, dlib_face). The
clip (1920x1080, 25 fps, H.264 when available, ``--seconds`` long) is made with PyAV from lfw-dev
photos (single-face test photos, never enrolled) scaled x2.5 (faces of ~250 px): two known people walk towards each other and cross (one
occludes the other), one leaves and comes back, and an impostor (a person the model never saw)
stands still and zooms in. Ground truth is exact (tests/_videos.py).

Reported: sampled frames per second of wall time for decode + detect + embed + classify + track at
``--fps`` 5 (this CPU, shared with other jobs: noisy), and decoded frames/s; track purity (share of
each track's faces that belong to its majority person, pooled over faces), the number of tracks per
person, and whether each track's label is right (impostor: ``unknown``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))


def default_checkpoint() -> str | None:
    runs = REPO / "bench" / "results" / "enroll" / "train-retrain.json"
    if runs.is_file():
        return json.loads(runs.read_text())["best_checkpoint"]
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "video"))
    ap.add_argument("--checkpoint_path", default=None)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fps", type=float, default=5.0)
    args = ap.parse_args()
    from PIL import Image

    import _videos
    from facerec.recognition.model import load_checkpoint
    from facerec.inference.predict import Predictor
    from facerec.inference.video import predict_video

    ckpt = args.checkpoint_path or default_checkpoint()
    if not ckpt:
        raise SystemExit("give --checkpoint_path (or run bench/enroll_lfw.py first)")
    os.environ.setdefault("FACEREC_CACHE_DIR", str(Path(args.work) / "cache"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lfw = Path(args.data) / "lfw-dev"
    labels = load_checkpoint(ckpt).labels
    people = sorted(d.name for d in lfw.iterdir() if d.is_dir())
    known = [p for p in people if p in labels][:2]
    stranger = [p for p in people if p not in labels][0]

    from facerec.detection.detect import FaceDetector

    det = FaceDetector(device="cpu")

    def photo(person: str, first: int) -> Image.Image:
        """The first photo from index ``first`` on with exactly one face (LFW photos often show
        other people too, who would be extra tracks inside the same layer)."""
        files = sorted((lfw / person).glob("*.jpg"))
        for f in files[first:] + files[:first]:
            if len(det.detect(f)) == 1:
                return Image.open(f).convert("RGB")
        raise SystemExit(f"no single-face photo of {person}")

    s = args.seconds
    layers = [
        _videos.Layer(known[0], photo(known[0], 6), [(0, s)],
                      lambda t: (100 + 1100 * t / s, 300, 2.5)),
        _videos.Layer(known[1], photo(known[1], 6), [(0, 0.15 * s), (0.35 * s, s)],
                      lambda t: (1400 - 1100 * t / s, 330, 2.5)),
        _videos.Layer(stranger, photo(stranger, 0), [(0.2 * s, 0.9 * s)],
                      lambda t: (800, 0, 1.2 + 0.3 * t / s)),
    ]
    clip = work / "clip-1080p.mp4"
    if not clip.is_file() or clip.stat().st_mtime < Path(__file__).stat().st_mtime:
        clip.unlink(missing_ok=True)
        import av

        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        _videos.encode(clip, layers, s, fps=25, size=(1920, 1080), codec=codec)
    predictor = Predictor(ckpt, device="cpu", batch_size=8)
    predictor.warm_up()
    t0 = time.perf_counter()
    res = predict_video(predictor, str(clip), fps=args.fps)
    wall = time.perf_counter() - t0
    faces = correct_faces = 0
    per_person: dict[str, int] = {}
    tracks = []
    for tr in res.tracks:
        truth = [_videos.truth_at(layers, d.time, d.box) or "none" for d in tr.detections]
        major = max(set(truth), key=truth.count)
        faces += len(truth)
        correct_faces += truth.count(major)
        per_person[major] = per_person.get(major, 0) + 1
        label = tr.vote()[0]
        want = "unknown" if major == stranger else major
        tracks.append({"track": tr.id, "truth": major, "label": label, "right": label == want,
                       "frames": len(truth), "start": tr.start, "end": tr.end,
                       "purity": truth.count(major) / len(truth)})
    t = predictor.timings
    out = {"checkpoint": ckpt, "clip": {"size": [1920, 1080], "fps": 25, "seconds": s},
           "sample_fps": args.fps, "frames_decoded": res.frames_decoded,
           "frames_sampled": res.frames_sampled, "faces_embedded": res.faces_embedded,
           "wall_seconds": wall,
           "sampled_frames_per_second": res.frames_sampled / wall,
           "decoded_frames_per_second": res.frames_decoded / wall,
           "stage_seconds": {k: round(t[k], 2) for k in ("detect", "embed", "classify")},
           "track_purity": correct_faces / max(faces, 1), "tracks_per_person": per_person,
           "tracks_labelled_right": sum(x["right"] for x in tracks), "tracks": tracks,
           "link_distance": res.link_distance, "torch_threads": __import__("torch").get_num_threads()}
    text = json.dumps(out, indent=1)
    print(text)
    (work / "video-1080p.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
