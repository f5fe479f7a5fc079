"""The detector seam (issue 10): detectors are a registry, like embedders. A second detector
registered by name is used by detect, annotate and predict without changing them, and the
checkpoint names the detector its crops were made with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import _checkpoints
from facerec.detection import detect
from facerec.cli import main
from facerec.cropspec import read_processed_spec
from facerec.detection.detect import Face
from facerec.errors import FacerecError
from facerec.images import LoadedImage, as_rgb_image


class CentreDetector:
    """A fake detector: the centre square of every image of at least ``min_side`` pixels is a face
    (score 0.5 on its own scale); anything smaller looks face-like (0.5) when taken as a crop."""

    name = "centre"
    default_min_score = 0.6  # annotate rejects its faces by default
    face_threshold = 0.4

    def __init__(self, device="auto", min_face_size=20, max_side=1600, min_side=200):
        self.min_side = int(min_side)
        self.calls = {"detect": 0, "score": 0}

    def settings(self) -> dict:
        return {"min_side": self.min_side}

    def detect_batch(self, images) -> list[list[Face]]:
        self.calls["detect"] += 1
        out = []
        for image in images:
            im = image if isinstance(image, LoadedImage) else as_rgb_image(image)
            side = min(im.width, im.height) / 2
            box = ((im.width - side) / 2, (im.height - side) / 2, side, side)
            x, y = box[0] + side / 2, box[1] + side / 2
            marks = [(x - side / 4, y - side / 6), (x + side / 4, y - side / 6), (x, y),
                     (x - side / 6, y + side / 4), (x + side / 6, y + side / 4)]
            out.append([Face(box, 0.5, marks)] if min(im.width, im.height) >= self.min_side
                       else [])
        return out

    def score_crops(self, crops, margin) -> np.ndarray:
        self.calls["score"] += 1
        return np.full(len(crops), 0.5)


@pytest.fixture
def centre(monkeypatch):
    """``centre`` registered for this test only."""
    monkeypatch.setattr(detect.DETECTORS, "_classes", dict(detect.DETECTORS._classes))
    detect.register_detector("centre")(CentreDetector)
    return CentreDetector


def _photos(raw: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        (raw / "alice").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), np.uint8)).save(raw / "alice" / f"{i}.jpg")
    return raw


def test_registry_builds_mtcnn_by_name_and_refuses_unknown_names():
    assert "mtcnn" in detect.available_detectors()
    det = detect.get_detector("mtcnn", device="cpu", thresholds=(0.6, 0.7, 0.8))
    assert isinstance(det, detect.FaceDetector) and isinstance(det, detect.Detector)
    assert det.face_threshold == pytest.approx(0.8)
    rebuilt = detect.get_detector(det.name, device="cpu", **det.settings())
    assert rebuilt.settings() == det.settings()
    with pytest.raises(FacerecError, match=r"unknown detector 'nope' \(available: .*mtcnn"):
        detect.get_detector("nope")


def test_a_registered_detector_runs_detect_and_annotate(centre, tmp_path, monkeypatch):
    from facerec.annotate import annotate

    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path / "cache"))
    processed = tmp_path / "processed"
    raw = _photos(tmp_path / "raw")
    # by default detect cuts at the detector's operating point (0.6): its 0.5 faces are not faces
    assert detect.detect_folder(raw, tmp_path / "strict", detector="centre",
                                progress=False).faces == 0
    assert read_processed_spec(tmp_path / "strict").detector["min_score"] == 0.6
    summary = detect.detect_folder(raw, processed, detector="centre", min_score=0.0,
                                   progress=False)
    assert summary.faces == 3
    spec = read_processed_spec(processed)
    assert spec.detector == {"name": "centre", "min_side": 200, "min_score": 0.0}
    # annotate's default score threshold is the recording detector's, on its scale
    result = annotate(processed, dry_run=True, progress=False)
    assert result.rejected == {"low detector score": 3}
    again = annotate(processed, dry_run=True, min_score=0.5, progress=False)
    assert "low detector score" not in again.rejected


def _with_detector(ckpt: Path, target: Path, detector: dict) -> Path:
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    data["facerec"]["preprocess"]["crop"]["detector"] = detector
    torch.save(data, target)
    return target


def test_predict_builds_the_detector_its_checkpoint_names(centre, tmp_path, celebrities):
    from facerec.inference.predict import Predictor

    ckpt = _with_detector(_checkpoints.checkpoint("dlib", celebrities), tmp_path / "c.ckpt",
                          {"name": "centre", "min_side": 200, "min_score": 0.45})
    p = Predictor(ckpt, device="cpu")
    photo = sorted((celebrities / "val" / "madonna").glob("*.jpg"))[0]
    face, = p.predict_image(photo).faces
    assert isinstance(p.detector, CentreDetector)
    assert (face.source, face.detection_score) == ("detected", 0.5)
    # a small image it finds nothing in is a face crop when its score_crops says so
    crop = _checkpoints.held_out_crops(celebrities)[0][0]
    face, = p.predict_image(Image.open(crop)).faces
    assert (face.source, face.detection_score) == ("whole_image", 0.5)
    assert p.detector.calls == {"detect": 2, "score": 1}


def test_unknown_detector_in_a_checkpoint_is_one_line(capsys, tmp_path, celebrities):
    from facerec.inference.predict import Predictor

    ckpt = _with_detector(_checkpoints.checkpoint("dlib", celebrities), tmp_path / "c.ckpt",
                          {"name": "retinaface"})
    with pytest.raises(FacerecError, match="made with an unknown detector 'retinaface'"):
        Predictor(ckpt, device="cpu")
    crop = _checkpoints.held_out_crops(celebrities)[0][0]
    rc = main(["predict", "--checkpoint_path", str(ckpt), "--image_path", str(crop)])
    _, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "unknown detector 'retinaface'" in err
    # crops mode needs no detector
    assert Predictor(ckpt, device="cpu", mode="crops").predict_image(crop).faces
