"""Video in facerec predict: synthetic clips built here from real photos, with known tracks."""

from __future__ import annotations

import json
from pathlib import Path

import _checkpoints
import _facecrops
import _videos
import numpy as np
import pytest
from PIL import Image

from facerec.cli import main
from facerec.inference.video import Detection, Tracker, is_video

KNOWN = "jerry_seinfeld"  # one of the test checkpoint's people


@pytest.fixture(autouse=True)
def _cache(monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))


@pytest.fixture(scope="module")
def ckpt(celebrities) -> Path:
    """The dlib test checkpoint, trained here (outside capsys: training prints)."""
    import os

    os.environ.setdefault("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))
    return _checkpoints.checkpoint("dlib", celebrities)


@pytest.fixture(scope="module")
def clip(celebrities, data_dir, tmp_path_factory):
    """A 6 s, 10 fps, 384x224 clip: KNOWN pans and zooms in for 0-2.5 s, leaves, comes back at
    4 s; a stranger (an lfw-dev photo) is on screen from 1 s to 5 s. Returns (path, layers)."""
    crops = {person: c for c, person in _checkpoints.held_out_crops(celebrities)}
    known = Image.open(crops[KNOWN]).convert("RGB")
    stranger = Image.open(data_dir / "lfw-dev" / "Adrien_Brody" / "Adrien_Brody_0001.jpg")
    stranger = stranger.convert("RGB").crop((50, 40, 200, 210))
    layers = [
        _videos.Layer(KNOWN, known, [(0.0, 2.5), (4.0, 6.0)],
                      lambda t: (8 + 20 * (t % 4), 30 - 3 * (t % 4), 0.75 + 0.05 * (t % 4))),
        _videos.Layer("stranger", stranger, [(1.0, 5.0)],
                      lambda t: (240 - 6 * t, 40, 0.7 + 0.03 * t)),
    ]
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    _videos.encode(path, layers, seconds=6.0, fps=10, size=(384, 224))
    return path, layers


def _run_json(capsys, argv) -> list[dict]:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_synthetic_clip_tracks_are_pure_and_labelled(clip, ckpt, capsys, tmp_path):
    path, layers = clip
    out_video = tmp_path / "annotated.mp4"
    [res] = _run_json(capsys, ["predict", "--checkpoint_path", str(ckpt), "--image_path", str(path),
                               "--fps", "2", "--json", "--save_annotated", str(out_video),
                               "--quiet"])
    assert res["video"] == str(path) and res["fps"] == 2.0 and res["decode_errors"] == []
    assert res["frames_decoded"] == 60 and res["frames_sampled"] == 12
    tracks = res["tracks"]
    assert tracks, res
    for tr in tracks:
        truth = [_videos.truth_at(layers, d["time"], d["box"]) for d in tr["detections"]]
        assert None not in truth, (tr, truth)
        assert len(set(truth)) == 1, f"impure track {tr['track']}: {truth}"  # purity 1
        assert tr["frames"] == len(tr["detections"])
        assert tr["start"] == tr["detections"][0]["time"] and tr["end"] == tr["detections"][-1]["time"]
        tr["truth"] = truth[0]
        # nobody is tracked through an absence: no track spans KNOWN's 2.5-4 s gap
        if truth[0] == KNOWN:
            assert not (tr["start"] < 2.5 and tr["end"] >= 4.0)
    mine = [t for t in tracks if t["truth"] == KNOWN]
    assert len(mine) == 2 and all(t["label"] == KNOWN for t in mine)
    assert mine[0]["start"] == 0.0 and mine[1]["start"] == 4.0
    strangers = [t for t in tracks if t["truth"] == "stranger"]
    assert len(strangers) == 1 and strangers[0]["label"] != KNOWN
    # every sampled face is in exactly one track
    assert sum(t["frames"] for t in tracks) >= 12
    # faces followed by their box are not embedded again, but every track was embedded anew
    # at least once a second (--embed_every 1)
    faces = sum(t["frames"] for t in tracks)
    assert 0 < res["faces_embedded"] < faces, (res["faces_embedded"], faces)
    for tr in tracks:
        embedded_at = [d["time"] for d in tr["detections"] if d["embedded"]]
        assert embedded_at and embedded_at[0] == tr["start"]
        gaps = np.diff(embedded_at + [tr["end"]])
        assert (gaps <= 1.0 + 1e-6).all(), (tr["track"], embedded_at)
    # the annotated video: one frame per sampled frame, same size
    import av

    with av.open(str(out_video)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 12 and (frames[0].width, frames[0].height) == (384, 224)
    # never overwritten
    assert main(["predict", "--checkpoint_path", str(ckpt), "--image_path", str(path),
                 "--save_annotated", str(out_video)]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_text_output_one_line_per_track(clip, ckpt, capsys):
    path, _ = clip
    assert main(["predict", "--checkpoint_path", str(ckpt), "--image_path", str(path),
                 "--fps", "1", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("Track ") for line in lines)
    assert any(f": {KNOWN} from 0.00s to " in line for line in lines)
    # --source reads the same way (a camera/URL in real use); --duration stops early
    [res] = _run_json(capsys, ["predict", "--checkpoint_path", str(ckpt), "--source", str(path),
                               "--fps", "1", "--duration", "2", "--json", "--quiet"])
    assert res["frames_sampled"] == 3 and res["tracks"]
    assert max(d["time"] for t in res["tracks"] for d in t["detections"]) <= 2.0


def test_mid_file_corruption_is_skipped(clip, ckpt, capsys, tmp_path):
    path, _ = clip
    data = bytearray(Path(path).read_bytes())
    # trash 20 KB in the middle of the media data: a few packets become undecodable
    mid = len(data) // 2
    data[mid:mid + 20000] = bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    assert main(["predict", "--checkpoint_path", str(ckpt), "--image_path", str(broken),
                 "--fps", "1", "--json", "--quiet"]) == 0
    cap = capsys.readouterr()
    [res] = json.loads(cap.out)
    assert res["decode_errors"] and all(e["error"] for e in res["decode_errors"])
    assert "skipped undecodable data at " in cap.err
    # frames after the damage are still read: the last sampled second is there
    times = [d["time"] for t in res["tracks"] for d in t["detections"]]
    assert times and max(times) >= 5.0
    assert res["frames_decoded"] > 30


def test_unreadable_video_is_one_line_exit_2(tmp_path, ckpt, capsys):
    bad = tmp_path / "notavideo.mp4"
    bad.write_bytes(b"hello" * 100)
    assert main(["predict", "--checkpoint_path", str(ckpt), "--image_path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err
    assert main(["predict", "--checkpoint_path", str(ckpt), "--image_path",
                 str(tmp_path / "missing.mp4")]) == 2
    capsys.readouterr()


def _det(t, box, feature):
    f = np.asarray(feature, dtype=np.float64)
    return Detection(time=t, box=box, label="x", confidence=0.9, candidate="x",
                     detection_score=0.99, feature=f / np.linalg.norm(f))


def test_tracker_keeps_crossing_people_apart():
    """Two faces whose boxes swap places between frames: the features decide, not the boxes."""
    a, b = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    tr = Tracker(link_distance=0.1, max_gap=1.0)
    tr.update(0.0, [_det(0.0, (0, 0, 50, 50), a), _det(0.0, (40, 0, 50, 50), b)])
    tr.update(0.2, [_det(0.2, (40, 0, 50, 50), a), _det(0.2, (0, 0, 50, 50), b)])
    assert len(tr.tracks) == 2
    for track in tr.tracks:
        feats = {tuple(np.round(d.feature, 3)) for d in track.detections}
        assert len(feats) == 1
    # a gap longer than max_gap starts a new track for the same face
    tr.update(2.0, [_det(2.0, (40, 0, 50, 50), a)])
    assert len(tr.tracks) == 3


def test_is_video():
    assert is_video("a/b.MP4") and is_video("x.mkv") and is_video("x.webm") and is_video("x.mov")
    assert not is_video("photo.jpg")


@pytest.mark.parametrize("suffix,codec", [(".mkv", "mpeg4"), (".webm", "libvpx-vp9"),
                                          (".mov", "libx264"), (".avi", "mpeg4")])
def test_containers_decode_and_sample_by_time(tmp_path, suffix, codec):
    """Every container the CLI treats as a video decodes, and --fps picks frames by timestamp."""
    import av

    from facerec.inference.video import open_source, sample_frames

    if codec not in av.codecs_available:
        pytest.skip(f"FFmpeg of this PyAV has no {codec}")
    path = tmp_path / f"tiny{suffix}"
    layers = [_videos.Layer("grey", Image.new("RGB", (16, 16), (250, 250, 250)), [(0, 2)],
                            lambda t: (4 + 10 * t, 8, 1.0))]
    _videos.encode(path, layers, seconds=2.0, fps=8, size=(64, 48), codec=codec)
    assert is_video(path)
    errors: list = []
    counts = {"decoded": 0}
    container = open_source(str(path))
    times = [t for t, frame in sample_frames(container, 2.0, errors, counts)]
    container.close()
    assert errors == [] and counts["decoded"] == 16
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=0.07)


def test_a_face_followed_by_its_box_is_not_embedded_again():
    """reuse_links: a face that clearly continues one of the frame before (overlap, nobody near,
    same look) reuses its embedding for up to embed_every seconds; a crowd, a cut to another
    face in the same place, or an old embedding means the embedder runs."""
    from facerec.inference.video import Detection, reuse_links

    rng = np.random.default_rng(0)

    def look():
        v = rng.normal(size=256)
        v -= v.mean()
        return v / np.linalg.norm(v)

    alice, bob = look(), look()
    prev = [Detection(0.0, (0, 0, 100, 100), "alice", 0.9, "alice", 0.99, thumb=alice, anchor=0.0)]
    frames = [(0.2, [((5, 5, 100, 100), alice)]),     # same place, same look: reuse prev
              (0.4, [((8, 5, 100, 100), alice)]),     # reuse the face before (index 0)
              (0.6, [((8, 5, 100, 100), bob)])]       # a cut to someone else: embed
    links = reuse_links(prev, frames, embed_every=1.0)
    assert links[0] is prev[0] and links[1] == 0 and links[2] is None
    # the embedding is at most embed_every old: at 1.0 s alice's (from 0.0) is renewed
    links = reuse_links(prev, [(0.5, [((5, 5, 100, 100), alice)]),
                               (1.0, [((5, 5, 100, 100), alice)])], embed_every=1.0)
    assert links == [prev[0], None]
    assert reuse_links(prev, [(0.2, [((5, 5, 100, 100), alice)])], embed_every=0) == [None]
    # two faces near each other: no unambiguous link
    crowd = [(0.2, [((5, 5, 100, 100), alice), ((60, 0, 100, 100), alice)])]
    assert reuse_links(prev, crowd, embed_every=1.0) == [None, None]
    # a face that moved away: embed
    assert reuse_links(prev, [(0.2, [((300, 0, 100, 100), alice)])], embed_every=1.0) == [None]
