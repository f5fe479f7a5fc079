"""``facerec predict`` on real checkpoints (trained once per session, see tests/_checkpoints.py)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import _checkpoints
from facerec.cli import main
from facerec.recognition.model import UNKNOWN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dlib_ckpt(celebrities: Path) -> Path:
    return _checkpoints.checkpoint("dlib", celebrities)


@pytest.fixture(scope="module")
def crops(celebrities: Path) -> list[tuple[Path, str]]:
    return _checkpoints.held_out_crops(celebrities)


@pytest.fixture(scope="module")
def predictor(dlib_ckpt: Path):
    from facerec.inference.predict import Predictor

    return Predictor(dlib_ckpt, device="cpu")


@pytest.fixture(scope="module")
def edge(data_dir: Path) -> Path:
    return data_dir / "edge-cases"


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------ crops
def test_crop_gives_the_tutorial_line(capsys, dlib_ckpt, crops):
    crop, person = crops[0]
    rc, out, err = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", crop)
    assert rc == 0, err
    assert out == f"Predicted class: {person}\n"


def test_crops_are_recognised(predictor, crops):
    results = list(predictor.predict_paths([c for c, _ in crops]))
    assert [r.error for r in results] == [None] * len(crops)
    for r, (_, person) in zip(results, crops):
        assert len(r.faces) == 1, r
        assert r.faces[0].candidate == person
        assert r.faces[0].source == "detected"  # MTCNN finds the face inside the crop
        assert 0 < r.faces[0].confidence <= 1


def test_tight_crop_without_detection_is_a_whole_image_face(predictor, crops):
    """A small image in which MTCNN finds nothing is read as a crop if O-Net says it is a face."""
    from PIL import Image

    from facerec.detection.detect import FaceDetector

    crop, person = crops[0]
    im = Image.open(crop).convert("RGB")
    tight = im.crop((20, 20, 140, 140))  # the face fills the image: MTCNN needs context
    nothing = FaceDetector(device="cpu", min_face_size=200)  # finds no face in a 120 px image
    from facerec.inference.predict import Predictor

    p = Predictor(predictor.checkpoint, device="cpu", detector=nothing)
    r = p.predict_image(tight)
    assert len(r.faces) == 1 and r.faces[0].source == "whole_image"
    assert r.faces[0].box == (0.0, 0.0, 120.0, 120.0)
    assert r.faces[0].candidate == person
    # a small image that is not a face stays without faces
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), np.uint8))
    assert p.predict_image(noise).faces == []


def test_crops_mode_skips_detection(dlib_ckpt, crops):
    from facerec.inference.predict import Predictor

    p = Predictor(dlib_ckpt, device="cpu", mode="crops")
    r = p.predict_image(crops[0][0])
    assert len(r.faces) == 1 and r.faces[0].source == "whole_image"
    assert r.faces[0].candidate == crops[0][1]
    assert p._detector is None


# ---------------------------------------------------------------------------------- full photos
def test_photo_with_several_faces(capsys, dlib_ckpt, edge):
    photo = edge / "multi_face" / "face_recognition_two_people.jpg"
    rc, out, err = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", photo)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for k, line in enumerate(lines, 1):
        assert line.startswith("Predicted class: ")
        assert f"(face {k} of 2, box [" in line and "confidence 0." in line
    # nobody of the 3 people (Obama and Biden): unknown at the calibrated threshold
    assert all(line.startswith(f"Predicted class: {UNKNOWN} ") for line in lines)


def test_json_schema(capsys, dlib_ckpt, edge, crops):
    photo = edge / "multi_face" / "dlib_pascal_2008_001322.jpg"  # 3 faces
    rc, out, err = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", photo, crops[0][0],
                        "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [d["image"] for d in doc] == [str(photo), str(crops[0][0])]
    assert len(doc[0]["faces"]) == 3 and len(doc[1]["faces"]) == 1
    labels = {"ben_afflek", "elton_john", "jerry_seinfeld", UNKNOWN}
    for d in doc:
        assert d["error"] is None and d["width"] > 0 and d["height"] > 0
        for f in d["faces"]:
            assert set(f) >= {"box", "label", "confidence"}
            assert len(f["box"]) == 4 and all(isinstance(v, (int, float)) for v in f["box"])
            assert f["label"] in labels and isinstance(f["confidence"], float)
            assert f["box"][2] > 10 and f["box"][3] > 10
            assert f["source"] == "detected" and f["detection_score"] > 0.7
    xs = [f["box"][0] for f in doc[0]["faces"]]
    assert xs == sorted(xs)  # faces left to right
    assert doc[1]["faces"][0]["label"] == crops[0][1]


def test_no_face_photos(capsys, dlib_ckpt, edge, tmp_path):
    folder = tmp_path / "no_face"
    folder.mkdir()
    for name in ("dlib_hubble_deep_field.jpg", "dlib_giraffe_zebra.jpg"):  # 311x259 is "small"
        shutil.copy(edge / "no_face" / name, folder / name)
    rc, out, err = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", folder, "--json",
                        "--quiet")
    assert rc == 0, err
    doc = json.loads(out)
    assert len(doc) == 2 and all(d["faces"] == [] and d["error"] is None for d in doc)
    rc, out, _ = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path",
                      folder / "dlib_hubble_deep_field.jpg")
    assert rc == 0 and out == "No face found\n"


# ---------------------------------------------------------------------------------- folders
def test_folder_with_a_corrupt_file(capsys, dlib_ckpt, crops, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(crops[0][0], folder / "a.jpg")
    shutil.copy(crops[1][0], folder / "sub" / "b.jpg")
    (folder / "broken.jpg").write_bytes(crops[0][0].read_bytes()[:300])  # truncated JPEG
    (folder / "notes.txt").write_text("not an image: ignored in folders")
    csv_path = tmp_path / "out.csv"
    rc, out, err = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", folder,
                        "--csv", csv_path, "--quiet")
    assert rc == 3  # partial success: broken.jpg could not be read (notes.txt is no image)
    lines = out.splitlines()
    assert f"{folder / 'a.jpg'}: Predicted class: {crops[0][1]}" in lines
    assert f"{folder / 'sub' / 'b.jpg'}: Predicted class: {crops[1][1]}" in lines
    assert len(lines) == 2
    assert f"skipped {folder / 'broken.jpg'}: truncated" in err or \
        f"skipped {folder / 'broken.jpg'}: corrupt" in err
    assert "notes.txt" not in out + err
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["image"] for r in rows] == [str(folder / p) for p in ("a.jpg", "broken.jpg",
                                                                     "sub/b.jpg")]
    assert rows[1]["error"] and rows[1]["face"] == ""
    assert rows[0]["label"] == crops[0][1] and float(rows[0]["confidence"]) > 0
    assert [float(rows[0][k]) for k in ("w", "h")] > [50.0, 50.0]


def test_save_annotated(capsys, dlib_ckpt, edge, tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    photo = folder / "two.jpg"
    shutil.copy(edge / "multi_face" / "face_recognition_two_people.jpg", photo)
    out_dir = tmp_path / "annotated"
    rc, _, err = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", folder,
                      "--save_annotated", out_dir, "--quiet")
    assert rc == 0, err
    drawn = out_dir / "two.jpg"
    assert drawn.is_file()
    a = np.asarray(Image.open(photo).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(drawn).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape
    # boxes are drawn in orange (unknown): many pixels change a lot, most stay close
    changed = (np.abs(a - b).max(axis=2) > 80).mean()
    assert 0.002 < changed < 0.2


def test_high_threshold_gives_unknown(capsys, dlib_ckpt, crops):
    rc, out, _ = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", crops[0][0],
                      "--threshold", "1.01")
    assert rc == 0 and out == f"Predicted class: {UNKNOWN}\n"
    rc, out, _ = _run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", crops[0][0],
                      "--threshold", "1.01", "--json")
    face = json.loads(out)[0]["faces"][0]
    assert face["label"] == UNKNOWN and face["candidate"] == crops[0][1]


def test_library_threshold_matches_classifier(predictor, crops):
    """The predictor's decision is FaceClassifier.predict_crops' on the same crops."""
    from facerec.recognition.model import load_checkpoint

    results = list(predictor.predict_paths([c for c, _ in crops]))
    clf = load_checkpoint(predictor.checkpoint)
    assert predictor.threshold == pytest.approx(clf.threshold)
    _, scores = clf.predict_crops([c for c, _ in crops])
    # the predictor re-crops the detected face: close to, not exactly, the training crop's score
    for r, s in zip(results, scores):
        assert r.faces[0].confidence == pytest.approx(s, abs=0.03)


# ------------------------------------------------------------------------------------ bad input
def _one_line_error(rc, out, err, *words):
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("facerec predict: error: ")
    for w in words:
        assert w in lines[0]


def test_bad_checkpoints(capsys, tmp_path, crops, dlib_ckpt):
    crop = crops[0][0]
    rand = tmp_path / "random.ckpt"
    rand.write_bytes(np.random.default_rng(1).bytes(2000))
    _one_line_error(*_run(capsys, "--checkpoint_path", rand, "--image_path", crop),
                    "not a facerec checkpoint")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, other)
    _one_line_error(*_run(capsys, "--checkpoint_path", other, "--image_path", crop),
                    "not a facerec checkpoint", "no facerec metadata")
    newer = tmp_path / "newer.ckpt"
    ck = torch.load(dlib_ckpt, map_location="cpu", weights_only=True)
    ck["facerec"]["facerec_format"] = 99
    torch.save(ck, newer)
    _one_line_error(*_run(capsys, "--checkpoint_path", newer, "--image_path", crop),
                    "format 99", "upgrade facerec")
    _one_line_error(*_run(capsys, "--checkpoint_path", tmp_path / "missing.ckpt", "--image_path",
                          crop), "checkpoint not found")
    fake_onnx = tmp_path / "model.onnx"
    fake_onnx.write_bytes(b"\x08\x07garbage")
    _one_line_error(*_run(capsys, "--checkpoint_path", fake_onnx, "--image_path", crop),
                    "not a usable ONNX model")


def test_bad_images(capsys, tmp_path, dlib_ckpt):
    _one_line_error(*_run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path",
                          tmp_path / "nope.jpg"), "image not found")
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    _one_line_error(*_run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", bad),
                    "cannot read", "not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(*_run(capsys, "--checkpoint_path", dlib_ckpt, "--image_path", empty),
                    "no images found")


# ------------------------------------------------------------------------------------ seed script
def test_seed_predict_py(dlib_ckpt, crops):
    crop, person = crops[1]
    proc = subprocess.run([sys.executable, str(REPO / "predict.py"), "--checkpoint_path",
                           str(dlib_ckpt), "--image_path", str(crop)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Predicted class: {person}\n"


# ----------------------------------------------------------------------------------------- timm
def test_timm_checkpoint(celebrities, crops, edge):
    from facerec.inference.predict import Predictor

    p = Predictor(_checkpoints.checkpoint("timm", celebrities), device="cpu", threshold=-1)
    results = list(p.predict_paths([crops[0][0], edge / "multi_face" /
                                    "face_recognition_two_people.jpg"]))
    assert len(results[0].faces) == 1 and len(results[1].faces) == 2
    for r in results:
        for f in r.faces:
            assert f.label == f.candidate and f.candidate in p.labels  # threshold -1: never unknown
            assert -1 <= f.confidence <= 1
    assert p.timings["detect"] > 0 and p.timings["embed"] > 0
