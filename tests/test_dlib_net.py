"""dlib's face ResNet in torch (facerec.recognition.dlib_net): the file reader, parity with dlib's own network
on real chips, the chips themselves, and clear errors for wrong files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import _facecrops
from facerec.crops import list_images
from facerec.recognition.dlib_net import (
    DlibResNet,
    default_model_path,
    load_dlib_resnet,
    read_dlib_net,
)
from facerec.recognition.dlib_face import dlib_models_dir
from facerec.recognition.embed import get_embedder
from facerec.errors import FacerecError

#: the issue's bound on |ours - dlib| per descriptor component
PARITY_TOLERANCE = 1e-4


def _lfw_photos(data_dir: Path, people: int = 24) -> list[Path]:
    """The first photo of each of ``people`` lfw-dev people (250x250, face in the middle)."""
    folders = sorted(p for p in (data_dir / "lfw-dev").iterdir() if p.is_dir())[:people]
    return [sorted(f.glob("*.jpg"))[0] for f in folders]


@pytest.fixture(scope="module")
def dlib_net():
    import dlib

    return dlib.face_recognition_model_v1(str(dlib_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))


@pytest.fixture(scope="module")
def real_chips(data_dir: Path, celebrities: Path) -> dict[str, np.ndarray]:
    """150x150 chips of real faces, by source: celebrity crops from ``facerec detect``, lfw-dev
    photos, and faces that dlib's own detector finds in the edge-case group photos."""
    import dlib

    emb = get_embedder("dlib_face")
    crops = list_images(_facecrops.template("loose", celebrities))[:16]
    out = {"celebrities": np.stack([emb.chip(Image.open(p)) for p in crops]),
           "lfw-dev": np.stack([emb.chip(Image.open(p)) for p in _lfw_photos(data_dir)])}
    hog = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(dlib_models_dir() / "shape_predictor_5_face_landmarks.dat"))
    edge = []
    for photo in sorted((data_dir / "edge-cases" / "multi_face").glob("*.jpg"))[:4]:
        img = np.asarray(Image.open(photo).convert("RGB"))
        for rect in list(hog(img, 1))[:4]:
            edge.append(dlib.get_face_chip(img, shape(img, rect), size=150, padding=0.25))
    assert edge, "no face found in the edge-case photos"
    out["edge-cases"] = np.stack(edge)
    return out


def test_reader_finds_every_layer_of_the_architecture():
    net_file = read_dlib_net(default_model_path())
    kinds = [layer.kind for layer in net_file.layers]
    assert net_file.loss == "loss_metric_2" and net_file.input_size == (150, 150)
    np.testing.assert_allclose(net_file.input_mean, (122.782, 117.001, 104.298), atol=1e-3)
    assert kinds.count("con_4") == 29 and kinds.count("affine_") == 29 and kinds[-1] == "fc_2"
    filters = [layer.settings["filters"] for layer in net_file.layers if layer.kind == "con_4"]
    assert filters[0] == 32 and filters[-1] == 256 and sorted(set(filters)) == [32, 64, 128, 256]
    strided = [layer.settings["stride_y"] for layer in net_file.layers if layer.kind == "con_4"]
    assert strided.count(2) == 5  # the stem and the first block of four levels
    n_params = sum(p.numel() for p in DlibResNet.from_dlib_file(default_model_path()).parameters())
    assert 5_500_000 < n_params < 5_700_000  # 22.4 MB of float32 in the file


def test_descriptors_match_dlib_on_real_chips(real_chips, dlib_net):
    """The issue's parity bound, on chips from all three data sets, and on their mirror images
    (the second view predict and train use)."""
    emb = get_embedder("dlib_face", device="cpu")
    worst = {}
    for source, chips in real_chips.items():
        ours = emb.embed_chips(chips, mirror=True)
        ref = np.asarray([np.asarray(v) for v in dlib_net.compute_face_descriptor(list(chips))])
        ref_mirror = np.asarray([np.asarray(v) for v in dlib_net.compute_face_descriptor(
            [np.ascontiguousarray(c[:, ::-1]) for c in chips])])
        worst[source] = float(max(np.abs(ours[:, 0] - ref).max(),
                                  np.abs(ours[:, 1] - ref_mirror).max()))
        assert np.linalg.norm(ref, axis=1).min() > 0.1  # real descriptors, not zeros
    print(f"\nmax |ours - dlib| per source: {worst}")
    assert max(worst.values()) <= PARITY_TOLERANCE, worst


def test_batching_does_not_change_descriptors(real_chips):
    """One chip alone, or in a batch of any size, gives the same descriptor."""
    chips = real_chips["lfw-dev"][:9]
    emb = get_embedder("dlib_face", device="cpu")
    batched = emb.embed_chips(chips)
    alone = np.concatenate([emb.embed_chips(chips[i:i + 1]) for i in range(len(chips))])
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_chip_is_dlibs_chip(data_dir):
    """What the network sees is dlib's get_face_chip of dlib's 5-point fit, for PIL, greyscale and
    array inputs alike (mean |difference| <= 1 grey level; in fact identical)."""
    import dlib

    emb = get_embedder("dlib_face")
    shape = dlib.shape_predictor(str(dlib_models_dir() / "shape_predictor_5_face_landmarks.dat"))
    worst = 0.0
    for photo in _lfw_photos(data_dir, 6):
        pil = Image.open(photo)
        for image in (pil, pil.convert("L"), np.asarray(pil.convert("RGB"))):
            rgb = np.asarray(Image.fromarray(np.asarray(image)).convert("RGB"))
            x0, y0, x1, y1 = emb.default_box(rgb.shape[1], rgb.shape[0])
            rect = dlib.rectangle(round(x0), round(y0), round(x1), round(y1))
            ref = dlib.get_face_chip(rgb, shape(rgb, rect), size=150, padding=0.25)
            chips, rows, _ = emb.chipper.chips([image])
            assert rows == [0] and chips[0].shape == (150, 150, 3)
            worst = max(worst, float(np.abs(chips[0].astype(int) - ref.astype(int)).mean()))
    print(f"\nworst mean |chip - dlib chip|: {worst} grey levels")
    assert worst <= 1.0


def test_cached_conversion_gives_the_same_network(tmp_path, monkeypatch, real_chips):
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path))
    first = load_dlib_resnet()
    cached = list((tmp_path / "models").glob("dlib_resnet-*.pt"))
    assert len(cached) == 1
    # the cached file is plain tensors: it loads with weights_only=True
    assert torch.load(cached[0], weights_only=True).keys() == first.state_dict().keys()
    second = load_dlib_resnet()
    x = torch.from_numpy(real_chips["lfw-dev"][:2]).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        torch.testing.assert_close(second(x), first(x))


def test_wrong_files_give_one_line_errors(tmp_path):
    with pytest.raises(FacerecError, match="dlib face model not found"):
        load_dlib_resnet(tmp_path / "missing.dat", cache=False)
    other = tmp_path / "landmarks.dat"  # a real dlib file, but not a network
    shutil.copy(dlib_models_dir() / "shape_predictor_5_face_landmarks.dat", other)
    with pytest.raises(FacerecError, match="not a dlib network file|not the face-recognition"):
        load_dlib_resnet(other, cache=False)
    detector = tmp_path / "mmod.dat"  # a dlib network of another kind (a detector)
    shutil.copy(dlib_models_dir() / "mmod_human_face_detector.dat", detector)
    with pytest.raises(FacerecError, match="not the face-recognition ResNet"):
        load_dlib_resnet(detector, cache=False)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(default_model_path().read_bytes()[:100_000])
    with pytest.raises(FacerecError, match="truncated"):
        load_dlib_resnet(truncated, cache=False)
    for exc_path in (other, detector, truncated):
        try:
            load_dlib_resnet(exc_path, cache=False)
        except FacerecError as exc:
            assert "\n" not in str(exc)
