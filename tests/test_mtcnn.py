"""Our MTCNN: weights from the mtcnn package's files, parity with facenet-pytorch, batching."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facerec.detection.mtcnn import MTCNN, _area_resize, _area_resize_whole, _integral, load_networks, weights_dir


def _array(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB")))


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return MTCNN("cpu")


@pytest.fixture(scope="module")
def sample_photos(data_dir: Path) -> list[Path]:
    celebs = sorted((data_dir / "celebrities" / "val").glob("*/*.jpg"))[::5]
    wider = sorted((data_dir / "detection" / "images").glob("*/*.jpg"))[:: 61][:4]
    group = [data_dir / "edge-cases" / "multi_face" / "dlib_pascal_2008_007676.jpg"]
    return celebs + wider + group


def test_weights_load_without_importing_mtcnn_or_tensorflow():
    code = ("import sys; from facerec.detection.mtcnn import load_networks; load_networks(); "
            "assert 'mtcnn' not in sys.modules and 'tensorflow' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    assert {p.name for p in weights_dir().glob("*.lz4")} >= {"pnet.lz4", "rnet.lz4", "onet.lz4"}


def test_area_resize_equals_interpolate_area():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 37, 51), dtype=torch.uint8, generator=gen)
    integral = _integral(image.permute(1, 2, 0))
    rows = torch.tensor([[0, 37], [3, 20], [10, 12]])
    cols = torch.tensor([[0, 51], [5, 40], [7, 9]])
    for size in (24, 48, 7):
        got = _area_resize(integral, rows, cols, size, size).permute(0, 3, 1, 2)
        for k in range(len(rows)):
            crop = image[None, :, rows[k, 0]:rows[k, 1], cols[k, 0]:cols[k, 1]].float()
            want = torch.nn.functional.interpolate(crop, size=(size, size), mode="area")[0]
            assert torch.allclose(got[k], want, atol=1e-4)
    for size in ((20, 30), (37, 51), (50, 70)):  # whole image, down and up
        want = torch.nn.functional.interpolate(image[None].float(), size=size, mode="area")
        got = _area_resize_whole(integral, *size).permute(2, 0, 1)[None]
        assert torch.allclose(got, want, atol=1e-4)


def test_networks_match_facenet_pytorch_layers():
    fnp = pytest.importorskip("facenet_pytorch.models.mtcnn")
    ours = load_networks()
    theirs = (fnp.PNet(), fnp.RNet(), fnp.ONet())
    torch.manual_seed(0)
    with torch.no_grad():
        x = torch.randn(2, 3, 31, 45)
        assert torch.allclose(ours[0](x)[1], theirs[0](x)[1][:, 1], atol=1e-6)
        x = torch.randn(4, 3, 24, 24)
        assert torch.allclose(ours[1](x)[0], theirs[1](x)[0], atol=1e-6)
        x = torch.randn(4, 3, 48, 48)
        o, t = ours[2](x), theirs[2](x)
        assert torch.allclose(o[1], t[1], atol=1e-6) and torch.allclose(o[2], t[2][:, 1], atol=1e-6)


def test_detections_match_facenet_pytorch(mtcnn, sample_photos):
    """Same weights, same settings: same faces (boxes within 2 px, scores within 1e-3)."""
    facenet = pytest.importorskip("facenet_pytorch")
    reference = facenet.MTCNN(keep_all=True, device="cpu", min_face_size=20,
                              thresholds=[0.6, 0.7, 0.7], factor=0.709)
    compared = 0
    for path in sample_photos:
        image = Image.open(path).convert("RGB")
        boxes, scores, points = reference.detect(image, landmarks=True)
        ours = mtcnn.detect([_array(path)])[0]
        if boxes is None:
            assert len(ours.boxes) == 0, path
            continue
        assert len(ours.boxes) == len(boxes), path
        distance = np.abs(boxes[:, None, :] - ours.boxes[None]).max(2)
        match = distance.argmin(1)
        assert distance[np.arange(len(boxes)), match].max() < 2.0, path
        assert np.abs(scores - ours.scores[match]).max() < 1e-3, path
        assert np.abs(points - ours.landmarks[match]).max() < 2.0, path
        compared += len(boxes)
    assert compared >= 15


def test_batch_of_mixed_sizes_equals_one_by_one(mtcnn, sample_photos):
    arrays = [_array(p) for p in sample_photos[:5]]
    together = mtcnn.detect(arrays)
    for array, batched in zip(arrays, together):
        alone = mtcnn.detect([array])[0]
        assert len(alone.boxes) == len(batched.boxes)
        np.testing.assert_allclose(alone.boxes, batched.boxes, atol=1e-3)
        np.testing.assert_allclose(alone.scores, batched.scores, atol=1e-5)


def test_regression_on_real_photos(mtcnn, data_dir):
    """Known answers on shared photos: a portrait, a group photo, a photo without people."""
    portrait = mtcnn.detect([_array(next((data_dir / "celebrities/val/madonna").glob("*.jpg")))])[0]
    assert len(portrait.boxes) >= 1 and portrait.scores[0] > 0.95
    group = mtcnn.detect([_array(data_dir / "edge-cases/multi_face/dlib_pascal_2008_004176.jpg")])[0]
    assert len(group.boxes) == 7
    assert group.landmarks.shape == (7, 5, 2)
    for b, pts in zip(group.boxes, group.landmarks):  # landmarks lie inside their face box
        assert (pts[:, 0] >= b[0] - 2).all() and (pts[:, 0] <= b[2] + 2).all()
    nothing = mtcnn.detect([_array(data_dir / "edge-cases/no_face/dlib_eagle.jpg")])[0]
    assert len(nothing.boxes) == 0


def test_tiny_and_blank_images(mtcnn):
    blank = torch.full((100, 80, 3), 128, dtype=torch.uint8)
    tiny = torch.zeros((10, 10, 3), dtype=torch.uint8)  # smaller than one P-Net window
    results = mtcnn.detect([blank, tiny])
    assert [len(r.boxes) for r in results] == [0, 0]
