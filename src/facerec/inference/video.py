"""Video in ``facerec predict``: who appears in a clip, a webcam or an RTSP stream, and when.

Library API::

    from facerec.inference.predict import Predictor
    from facerec.inference.video import predict_video
    result = predict_video(Predictor("best.ckpt"), "clip.mp4", fps=5)      # VideoResult
    for track in result.tracks:
        print(track.start, track.end, track.label, track.confidence, len(track.detections))

How a video is read (:func:`predict_video`):

1. PyAV decodes it (any container/codec FFmpeg reads: ``.mp4 .mov .mkv .webm .avi``..., a webcam,
   an ``rtsp://`` or ``http://`` URL). ``fps`` frames per second are kept (by timestamp, so a
   variable frame rate is fine). A packet that fails to demux or decode in the middle of a file is
   reported in ``decode_errors`` and skipped; decoding goes on with the next one. So is a frame
   above :data:`MAX_FRAME_PIXELS` (the memory budget of one decode, :data:`facerec.images.
   MAX_DECODE_BYTES`): FFmpeg refuses it before allocating it (its ``max_pixels``), and a frame
   that a decoder still returns is checked before it is converted.
2. Kept frames go through the detector in batches (``batch_size`` frames, and at most
   :data:`BATCH_PIXELS` pixels) and every face is cropped and classified exactly as in a photo
   (:class:`facerec.inference.predict.Predictor`).
3. Faces are linked into tracks frame to frame (:class:`Tracker`): a face joins the track whose
   last box overlaps it and whose mean feature is close to its own, by a minimum-cost assignment
   (scipy's Hungarian solver) on ``(1 - IoU) + distance / link_distance``. ``link_distance`` is the
   1:1 verification threshold of the checkpoint (:mod:`facerec.inference.verify`): two faces further apart
   than that are different people, so a track never takes a second person even when boxes cross.
   A track not seen for ``max_gap`` seconds ends; a person who comes back starts a new track.
4. Each track is labelled by a confidence-weighted vote over its faces: every face votes for its
   label (the person, or ``unknown`` below the checkpoint's threshold, as for photos) with its
   confidence as weight. The track's confidence is the mean confidence of the faces that voted
   for the winner.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import FacerecError
from facerec.images import MAX_DECODE_BYTES

__all__ = ["VIDEO_EXTS", "Detection", "Track", "Tracker", "VideoResult", "is_video",
           "predict_video", "run_video"]

VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"})
DEFAULT_FPS = 5.0
#: a face linked by its box alone to a face of the frame before reuses that face's embedding
#: (recognition is not run again) for at most this many seconds (reuse_links)
EMBED_EVERY = 1.0
LINK_IOU = 0.6    # the overlap of an unambiguous link...
CLEAR_IOU = 0.1   # ...that no other face comes near...
LOOK_ALIKE = 0.9  # ...and whose crops still look alike (look_of): not a cut to another person
#: consecutive demux/decode failures after which a file is given up as unreadable
MAX_CONSECUTIVE_ERRORS = 50
#: the largest frame decoded (8K UHD is 33.2 MP): a decoded frame, its RGB array and its image
#: take about 10 bytes per pixel, within one decode's memory budget
MAX_FRAME_PIXELS = MAX_DECODE_BYTES // 12
#: the most pixels of sampled frames held at once before they go through the model
BATCH_PIXELS = MAX_DECODE_BYTES // 8


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


# ---------------------------------------------------------------------------------------- results
def _r(v: float | None, digits: int) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else round(float(v), digits)


@dataclass
class Detection:
    """One face in one sampled frame."""

    time: float
    box: tuple[float, float, float, float]
    label: str
    confidence: float | None
    candidate: str
    detection_score: float | None
    feature: np.ndarray | None = field(default=None, repr=False)
    track: int = 0
    embedded: bool = True   # False: the embedding of the same face a frame before (reuse_links)
    anchor: float = 0.0     # time of the frame whose embedding this face's answer comes from
    thumb: np.ndarray | None = field(default=None, repr=False)  # see look_of

    def to_dict(self) -> dict:
        return {"time": round(self.time, 3), "box": [round(float(v), 1) for v in self.box],
                "label": self.label, "confidence": _r(self.confidence, 4),
                "candidate": self.candidate, "detection_score": _r(self.detection_score, 4),
                "embedded": self.embedded}


@dataclass
class Track:
    """Faces of one person over consecutive sampled frames."""

    id: int
    detections: list[Detection] = field(default_factory=list)
    feature_sum: np.ndarray | None = field(default=None, repr=False)

    @property
    def start(self) -> float:
        return self.detections[0].time

    @property
    def end(self) -> float:
        return self.detections[-1].time

    @property
    def last_box(self):
        return self.detections[-1].box

    def add(self, d: Detection) -> None:
        d.track = self.id
        self.detections.append(d)
        if d.feature is not None and np.isfinite(d.feature).all():
            self.feature_sum = d.feature.copy() if self.feature_sum is None \
                else self.feature_sum + d.feature

    def mean_feature(self) -> np.ndarray | None:
        if self.feature_sum is None:
            return None
        return self.feature_sum / max(np.linalg.norm(self.feature_sum), 1e-12)

    def vote(self) -> tuple[str, float | None, dict[str, float], str]:
        """(label, confidence, vote share per label, most likely known person)."""
        votes: dict[str, float] = {}
        cand: dict[str, float] = {}
        for d in self.detections:
            w = d.confidence if d.confidence is not None and math.isfinite(d.confidence) else 0.0
            w = max(w, 1e-6)  # an unembeddable face still counts, barely
            votes[d.label] = votes.get(d.label, 0.0) + w
            cand[d.candidate] = cand.get(d.candidate, 0.0) + w
        label = max(votes, key=lambda k: (votes[k], k != "unknown"))
        confs = [d.confidence for d in self.detections if d.label == label
                 and d.confidence is not None and math.isfinite(d.confidence)]
        total = sum(votes.values())
        share = {k: round(v / total, 4) for k, v in sorted(votes.items(), key=lambda kv: -kv[1])}
        return label, (float(np.mean(confs)) if confs else None), share, max(cand, key=cand.get)

    def to_dict(self, with_detections: bool = True) -> dict:
        label, conf, share, cand = self.vote()
        out = {"track": self.id, "start": round(self.start, 3), "end": round(self.end, 3),
               "label": label, "confidence": _r(conf, 4), "frames": len(self.detections),
               "candidate": cand, "votes": share}
        if with_detections:
            out["detections"] = [d.to_dict() for d in self.detections]
        return out


def iou(a, b) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def look_of(crop: Any) -> np.ndarray:
    """A face crop's look in 256 numbers: its 16x16 grey thumbnail, zero mean, unit norm. Two
    crops of one face a frame apart correlate above 0.95; crops of two people rarely above
    0.75 (lfw-dev box crops: 99th percentile 0.74, highest 0.84 of 3,107 pairs)."""
    from PIL import Image

    grey = np.asarray(crop.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float64)
    grey = grey.ravel() - grey.mean()
    return grey / max(float(np.linalg.norm(grey)), 1e-9)


def reuse_links(previous: list[Detection], frames: list[tuple[float, list]],
                embed_every: float) -> list[Any]:
    """Which faces need the embedder. ``frames``: (time, [(box, look), ...]) of consecutive
    sampled frames (looks from :func:`look_of`); ``previous``: the detections of the frame just
    before them. One entry per face, in order: None (embed it), an earlier face's index in this
    flat order, or a ``previous`` detection, whose embedding it reuses.

    A face reuses the embedding of a face of the frame before when the link is unambiguous: their
    boxes overlap by :data:`LINK_IOU` or more, no other face of either frame overlaps them by
    :data:`CLEAR_IOU`, their crops look alike (:data:`LOOK_ALIKE`: a cut to another person in
    the same place is embedded) and that embedding is less than ``embed_every`` seconds old (so
    every track is recognised anew at least that often; 0: embed every face)."""
    links: list[Any] = []
    prev = [(d.box, d.thumb, d, d.anchor) for d in previous]
    for t, faces in frames:
        current = []
        for j, (box, look) in enumerate(faces):
            link = None
            if embed_every > 0 and prev:
                overlaps = [iou(p[0], box) for p in prev]
                best = int(np.argmax(overlaps))
                second = sorted(overlaps)[-2] if len(overlaps) > 1 else 0.0
                rival = max((iou(prev[best][0], b) for k, (b, _) in enumerate(faces) if k != j),
                            default=0.0)
                alike = prev[best][1] is not None and float(prev[best][1] @ look) >= LOOK_ALIKE
                if (overlaps[best] >= LINK_IOU and second < CLEAR_IOU and rival < CLEAR_IOU
                        and alike and t - prev[best][3] < embed_every):
                    link = prev[best]
            links.append(None if link is None else link[2])
            current.append((box, look, len(links) - 1, t if link is None else link[3]))
        prev = current
    return links


class Tracker:
    """Links the faces of successive sampled frames into :class:`Track` objects (module doc, 3).

    ``link_distance``: cosine distance above which two faces are different people (None: boxes
    only). ``min_iou``: overlap that links faces without features. ``max_gap``: seconds a track
    survives unseen."""

    def __init__(self, link_distance: float | None, min_iou: float = 0.3, max_gap: float = 1.0):
        self.link_distance = link_distance
        self.min_iou = float(min_iou)
        self.max_gap = float(max_gap)
        self.tracks: list[Track] = []
        self._active: list[Track] = []

    def update(self, t: float, dets: list[Detection]) -> None:
        from scipy.optimize import linear_sum_assignment

        self._active = [tr for tr in self._active if t - tr.end <= self.max_gap + 1e-9]
        big = 1e6
        cost = np.full((len(self._active), len(dets)), big)
        for i, tr in enumerate(self._active):
            mf = tr.mean_feature()
            for j, d in enumerate(dets):
                ov = iou(tr.last_box, d.box)
                have = mf is not None and d.feature is not None and np.isfinite(d.feature).all()
                if have and self.link_distance is not None:
                    dist = float(1.0 - mf @ d.feature)
                    if dist > self.link_distance:
                        continue  # another person, however the boxes lie
                    cost[i, j] = (1.0 - ov) + dist / self.link_distance
                elif ov >= self.min_iou:
                    cost[i, j] = 2.0 * (1.0 - ov)
        taken = set()
        if cost.size:
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] < big:
                    self._active[i].add(dets[j])
                    taken.add(j)
        for j, d in enumerate(dets):
            if j not in taken:
                tr = Track(id=len(self.tracks) + 1)
                tr.add(d)
                self.tracks.append(tr)
                self._active.append(tr)


@dataclass
class VideoResult:
    """Tracks of one video (or stream) and how it was read."""

    video: str
    fps: float
    video_fps: float | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    frames_decoded: int = 0
    frames_sampled: int = 0
    faces_embedded: int = 0   # faces recognised anew; the others followed by their box
    decode_errors: list[dict] = field(default_factory=list)
    threshold: float | None = None
    link_distance: float | None = None
    tracks: list[Track] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"video": self.video, "fps": self.fps, "video_fps": _r(self.video_fps, 3),
                "duration": _r(self.duration, 3), "width": self.width, "height": self.height,
                "frames_decoded": self.frames_decoded, "frames_sampled": self.frames_sampled,
                "faces_embedded": self.faces_embedded,
                "decode_errors": self.decode_errors, "threshold": _r(self.threshold, 4),
                "link_distance": _r(self.link_distance, 4),
                "tracks": [t.to_dict() for t in self.tracks], "error": self.error}


# ---------------------------------------------------------------------------------------- decoding
def open_source(source: str) -> Any:
    """``av.open`` for a file, a URL (rtsp://, http://...) or a webcam (``0``, ``/dev/video0``)."""
    import av

    options: dict[str, str] = {}
    fmt = None
    if source.isdigit():  # a webcam index
        if sys.platform.startswith("linux"):
            source, fmt = f"/dev/video{source}", "v4l2"
        elif sys.platform == "darwin":
            fmt = "avfoundation"
        else:
            source, fmt = f"video={source}", "dshow"
    elif source.startswith("/dev/video"):
        fmt = "v4l2"
    if source.startswith("rtsp://"):
        options["rtsp_transport"] = "tcp"  # UDP loses packets on most networks
    try:
        return av.open(source, format=fmt, options=options, timeout=(10.0, 10.0))
    except (av.error.FFmpegError, OSError) as exc:
        raise FacerecError(f"cannot open {source}: {_first(exc)}") from None


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP"


#: added to an EINVAL decode error: FFmpeg says only "Invalid argument" for a frame above its
#: max_pixels
_BUDGET_HINT = f" (a broken packet, or a frame above the {_mp(MAX_FRAME_PIXELS)} limit)"


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def sample_frames(container, fps: float, errors: list[dict], counts: dict,
                  max_seconds: float | None = None) -> Iterator[tuple[float, Any]]:
    """(time in seconds, RGB array) of ``fps`` frames per second. Demux/decode failures are
    appended to ``errors`` and skipped; ``counts["decoded"]`` counts every decoded frame."""
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    # FFmpeg refuses a frame above the budget before allocating it (a decode error, skipped)
    stream.codec_context.options = {**stream.codec_context.options,
                                    "max_pixels": str(MAX_FRAME_PIXELS)}
    step = 1.0 / fps
    next_t = None
    started = time.monotonic()
    consecutive = 0
    last_t = 0.0
    finished = False
    while not finished:
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    pt = float(packet.pts * packet.time_base) if packet.pts is not None \
                        and packet.time_base is not None else None
                    hint = _BUDGET_HINT if getattr(exc, "errno", None) == errno.EINVAL else ""
                    errors.append({"time": _r(pt, 3), "error": _first(exc) + hint})
                    consecutive += 1
                    if consecutive > MAX_CONSECUTIVE_ERRORS:
                        return
                    continue
                consecutive = 0
                for frame in frames:
                    counts["decoded"] += 1
                    t = frame.time if frame.time is not None else time.monotonic() - started
                    if frame.width * frame.height > MAX_FRAME_PIXELS:  # never converted
                        errors.append({"time": _r(t, 3), "error": f"frame {frame.width}x"
                                       f"{frame.height} is above the {_mp(MAX_FRAME_PIXELS)} "
                                       "limit per frame"})
                        continue
                    last_t = t
                    first = counts.setdefault("first_time", t)
                    if max_seconds is not None and t - first > max_seconds:
                        return
                    if next_t is None or t >= next_t - 1e-6:
                        # after a gap (seek, dropped packets) restart the grid at this frame
                        next_t = (t if next_t is None or t - next_t > step else next_t) + step
                        yield t, frame.to_ndarray(format="rgb24")
            finished = True
        except av.error.EOFError:
            finished = True
        except av.error.FFmpegError as exc:
            # a broken packet while demuxing: note it, carry on from where the demuxer is
            errors.append({"time": _r(last_t, 3), "error": _first(exc)})
            consecutive += 1
            if consecutive > MAX_CONSECUTIVE_ERRORS:
                return


class AnnotatedWriter:
    """``--save_annotated out.mp4``: the sampled frames with each face's box and its track's label
    so far, at the sampling rate (H.264 when FFmpeg has it, else MPEG-4 Part 2)."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        import av

        self.path = path
        try:
            self.container = av.open(str(path), mode="w")
        except (av.error.FFmpegError, OSError) as exc:
            raise FacerecError(f"cannot write {path}: {_first(exc)}") from None
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = max(1, round(fps))
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, image, faces) -> None:
        import av

        from facerec.inference.predict import draw_faces

        im = draw_faces(image, faces)
        w, h = self.stream.width, self.stream.height
        if im.size != (w, h):
            im = im.crop((0, 0, w, h))
        frame = av.VideoFrame.from_image(im)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


# --------------------------------------------------------------------------------------- prediction
def link_distance_for(predictor) -> float | None:
    """The tracker's appearance gate: the checkpoint's 1:1 threshold (see :mod:`facerec.inference.verify`);
    None with the ONNX runtime (it gives no features: boxes only)."""
    if predictor.runtime_name != "torch":
        return None
    from facerec.inference.verify import checkpoint_pair_threshold

    return checkpoint_pair_threshold(predictor.runtime.checkpoint, predictor.runtime.clf)[0]


def _recognise(predictor, batch: list[tuple[float, Any]], found: list[list[Any]],
               last_frame: list[Detection], embed_every: float) -> list[list[Detection]]:
    """The detections of each frame of ``batch`` (its faces ``found``): the faces that
    :func:`reuse_links` cannot link embedded and classified in one call, the others answered
    as the face they are linked to."""
    looks = [[look_of(f.crop) for f in faces] for faces in found]
    links = reuse_links(last_frame, [(t, list(zip([f.box for f in faces], frame_looks)))
                                     for (t, _), faces, frame_looks in zip(batch, found, looks)],
                        embed_every)
    flat = [(k, face) for k, faces in enumerate(found) for face in faces]
    flat_looks = [look for frame_looks in looks for look in frame_looks]
    todo = [n for n, link in enumerate(links) if link is None]
    z, preds = predictor.classify_features([flat[n][1].crop for n in todo])
    feats = None  # the tracker's appearance features: the torch runtime's unit features
    if todo and predictor.runtime_name == "torch":
        feats = np.asarray(z.cpu().numpy(), dtype=np.float64)
    fresh = {n: i for i, n in enumerate(todo)}
    dets: list[Detection] = []
    for n, ((k, face), link) in enumerate(zip(flat, links)):
        t = float(batch[k][0])
        if link is None:
            label, s, cand, _ = preds[fresh[n]]
            d = Detection(time=t, box=tuple(float(v) for v in face.box), label=label,
                          confidence=s if math.isfinite(s) else None, candidate=cand,
                          detection_score=float(face.score),
                          feature=None if feats is None else feats[fresh[n]], anchor=t,
                          thumb=flat_looks[n])
        else:
            src = dets[link] if isinstance(link, int) else link
            d = Detection(time=t, box=tuple(float(v) for v in face.box), label=src.label,
                          confidence=src.confidence, candidate=src.candidate,
                          detection_score=float(face.score), feature=src.feature,
                          embedded=False, anchor=src.anchor, thumb=flat_looks[n])
        dets.append(d)
    per_frame: list[list[Detection]] = [[] for _ in batch]
    for (k, _), d in zip(flat, dets):
        per_frame[k].append(d)
    return per_frame


def predict_video(predictor, source: str, *, fps: float = DEFAULT_FPS, annotate: Path | None = None,
                  max_seconds: float | None = None, progress: bool = False,
                  embed_every: float = EMBED_EVERY) -> VideoResult:
    """Tracks of one video file or stream (module doc). Never raises for decode errors inside the
    file; a file that cannot be opened at all raises :class:`FacerecError`. ``embed_every``: the
    longest a face followed by its box alone goes without being recognised anew (0: always)."""
    from PIL import Image

    from facerec.inference.predict import FaceResult

    if not fps or fps <= 0:
        raise FacerecError(f"--fps must be > 0, not {fps}")
    t_start = time.perf_counter()
    container = open_source(source)
    if not container.streams.video:
        container.close()
        raise FacerecError(f"{source} has no video stream")
    stream = container.streams.video[0]
    res = VideoResult(video=source, fps=float(fps),
                      video_fps=float(stream.average_rate) if stream.average_rate else None,
                      duration=(float(container.duration) / 1e6 if container.duration else None),
                      width=stream.codec_context.width or None,
                      height=stream.codec_context.height or None,
                      threshold=predictor.threshold)
    res.link_distance = link_distance_for(predictor)
    tracker = Tracker(res.link_distance, max_gap=max(1.0, 2.5 / fps))
    counts = {"decoded": 0}
    writer: AnnotatedWriter | None = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = int(res.duration * fps) + 1 if res.duration else None
        bar = tqdm(total=total, unit="frame", desc="video", file=sys.stderr, dynamic_ncols=True)

    last_frame: list[Detection] = []  # the faces of the frame before the next batch

    def flush(batch: list[tuple[float, Any]]) -> None:
        nonlocal writer
        images = [Image.fromarray(a) for _, a in batch]
        found = predictor.face_crops(images, whole_images=False)
        where = [(k, face) for k, faces in enumerate(found) for face in faces]
        per_frame = _recognise(predictor, batch, found, last_frame, embed_every)
        res.faces_embedded += sum(d.embedded for dets in per_frame for d in dets)
        last_frame[:] = per_frame[-1] if per_frame else []
        for k, dets in enumerate(per_frame):
            tracker.update(batch[k][0], dets)
            if annotate is not None:
                if writer is None:
                    writer = AnnotatedWriter(annotate, fps, images[k].width, images[k].height)
                drawn = []
                for d in dets:
                    label, conf, _, _ = tracker.tracks[d.track - 1].vote()
                    drawn.append(FaceResult(box=d.box, label=label, confidence=conf,
                                            candidate=d.candidate, probability=None,
                                            detection_score=d.detection_score))
                writer.write(images[k], drawn)
        res.frames_sampled += len(batch)
        predictor.counts["images"] += len(batch)
        predictor.counts["faces"] += len(where)
        if bar is not None:
            bar.update(len(batch))

    batch: list[tuple[float, Any]] = []
    try:
        for t, arr in sample_frames(container, fps, res.decode_errors, counts, max_seconds):
            if res.width is None:
                res.height, res.width = arr.shape[:2]
            batch.append((t, arr))
            if len(batch) >= predictor.batch_size \
                    or sum(a.shape[0] * a.shape[1] for _, a in batch) >= BATCH_PIXELS:
                flush(batch)
                batch = []
    except KeyboardInterrupt:  # a live source runs until Ctrl-C: report what was seen
        print("facerec predict: stopped; reporting the tracks so far", file=sys.stderr)
    finally:
        if batch:
            flush(batch)
        container.close()
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
    res.frames_decoded = counts["decoded"]
    res.tracks = tracker.tracks
    res.seconds = time.perf_counter() - t_start
    if res.frames_decoded == 0 and res.decode_errors:
        res.error = f"no frame could be decoded ({res.decode_errors[0]['error']})"
    return res


def format_video(res: VideoResult, prefix: bool) -> list[str]:
    """Text lines: one per track, ``Track N: NAME from S to E (K frames, confidence C)``."""
    head = f"{res.video}: " if prefix else ""
    if res.error:
        return []
    if not res.tracks:
        return [f"{head}No face found"]
    lines = []
    for tr in res.tracks:
        label, conf, _, _ = tr.vote()
        c = "n/a" if conf is None else f"{conf:.3f}"
        lines.append(f"{head}Track {tr.id}: {label} from {tr.start:.2f}s to {tr.end:.2f}s "
                     f"({len(tr.detections)} frames, confidence {c})")
    return lines


def run_video(checkpoint: str, sources: list[str], *, fps: float = DEFAULT_FPS,
              threshold: float | None = None, device: str = "auto", runtime: str = "torch",
              as_json: bool = False, annotate_path: str | None = None, batch_size: int = 8,
              max_seconds: float | None = None, progress: bool = True, timing: bool = False,
              out=None, embed_every: float = EMBED_EVERY) -> list[VideoResult]:
    """What ``facerec predict`` does for videos, webcams and streams."""
    import json

    from facerec.inference.predict import Predictor

    out = out or sys.stdout
    files = [s for s in sources if "://" not in s and not s.isdigit() and not s.startswith("/dev/")]
    for s in files:
        if not Path(s).is_file():
            raise FacerecError(f"video not found: {s}")
    annotate = Path(annotate_path) if annotate_path else None
    if annotate is not None:
        if len(sources) > 1:
            raise FacerecError("--save_annotated with videos takes one video at a time")
        if annotate.suffix.lower() not in VIDEO_EXTS:
            raise FacerecError(f"--save_annotated for a video is a video file name (out.mp4), "
                               f"not {annotate}")
        if annotate.exists():
            raise FacerecError(f"{annotate} exists; it is never overwritten")
        if any(Path(s).resolve() == annotate.resolve() for s in files):
            raise FacerecError("--save_annotated must not be the input video")
        if not annotate.parent.is_dir():
            raise FacerecError(f"output folder not found: {annotate.parent}")
    predictor = Predictor(checkpoint, device=device, runtime=runtime, threshold=threshold,
                          batch_size=batch_size)
    results = []
    started = time.perf_counter()
    for s in sources:
        r = predict_video(predictor, s, fps=fps, annotate=annotate, max_seconds=max_seconds,
                          progress=progress and sys.stderr.isatty(), embed_every=embed_every)
        for e in r.decode_errors:
            at = "" if e["time"] is None else f" at {e['time']:.2f}s"
            print(f"facerec predict: {s}: skipped undecodable data{at}: {e['error']}",
                  file=sys.stderr)
        if r.error:
            print(f"facerec predict: skipped {s}: {r.error}", file=sys.stderr)
        if not as_json:
            for line in format_video(r, prefix=len(sources) > 1):
                print(line, file=out, flush=True)
        results.append(r)
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=1), file=out)
    if len(results) == 1 and results[0].error:
        raise FacerecError(f"cannot read {sources[0]}: {results[0].error}")
    if timing:
        secs = time.perf_counter() - started
        n = sum(r.frames_sampled for r in results)
        t = predictor.timings
        embedded = sum(r.faces_embedded for r in results)
        print(f"facerec predict: {n} sampled frame(s) in {secs:.2f}s ({n / secs:.2f} frames/s): "
              f"{embedded} face(s) recognised anew, detect {t['detect']:.2f}s, embed "
              f"{t['embed']:.2f}s, classify "
              f"{t['classify']:.3f}s [{predictor.runtime_name}, {predictor.device}]",
              file=sys.stderr)
    return results
