"""``facerec train --backbone dlib_face --finetune N``: dlib's last levels trained, stored in the
checkpoint, and used by predict, evaluate, enroll/verify and the ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import _checkpoints
from facerec.errors import FacerecError


@pytest.fixture(scope="module")
def ft_ckpt(celebrities: Path) -> Path:
    return _checkpoints.checkpoint("dlib_ft1", celebrities)


@pytest.fixture(scope="module")
def frozen_ckpt(celebrities: Path) -> Path:
    return _checkpoints.checkpoint("dlib", celebrities)


def test_tail_shapes_match_the_network():
    from facerec.recognition.dlib_net import DlibResNet, DlibTail

    net = DlibResNet().eval()
    x = torch.rand(2, 3, 150, 150) * 255
    for n in (1, 2, 5):
        tail = DlibTail(n, net).eval()
        with torch.no_grad():
            assert torch.allclose(tail(net.trunk(x, tail.start)), net(x), atol=1e-5)
    with pytest.raises(FacerecError, match="residual levels"):
        DlibTail(6)


def test_finetune_needs_dlib_face():
    from facerec.recognition.model import build_model_config

    with pytest.raises(FacerecError, match="only the dlib_face backbone"):
        build_model_config(["a", "b"], "resnet18", finetune=1)
    with pytest.raises(FacerecError, match="residual levels"):
        build_model_config(["a", "b"], "dlib_face", finetune=9)


def test_checkpoint_stores_the_tuned_levels(ft_ckpt: Path):
    from facerec.recognition.dlib_net import DlibTail, load_dlib_resnet

    ckpt = torch.load(ft_ckpt, map_location="cpu", weights_only=True)
    assert ckpt["facerec"]["backbone"]["finetune"] == 1
    tail = {k[len("model.tail."):]: v for k, v in ckpt["state_dict"].items()
            if k.startswith("model.tail.")}
    dlib = DlibTail(1, load_dlib_resnet()).state_dict()
    assert set(tail) == set(dlib)
    assert all(isinstance(v, torch.Tensor) for v in tail.values())
    # training moved the last level and the fc away from dlib's weights
    assert max(float((tail[k] - dlib[k]).abs().max()) for k in dlib) > 1e-4
    assert ckpt["facerec_gallery"]["source"] == "finetuned"
    assert ckpt["facerec"]["threshold"] is not None


def test_predict_uses_the_tuned_network_like_training(ft_ckpt: Path, frozen_ckpt: Path,
                                                     celebrities: Path):
    from facerec.recognition.embed import get_embedder
    from facerec.recognition.model import load_checkpoint
    from facerec.training import FaceDataModule

    clf = load_checkpoint(ft_ckpt)
    assert clf.finetune == 1
    data = _checkpoints.dataset(celebrities)
    crops = sorted((data / "val").glob("*/*.jpg"))
    z = clf.embed_crops(crops)
    # the frozen network's features of the same crops differ (the tail was trained)
    frozen = load_checkpoint(frozen_ckpt).embed_crops(crops)
    assert float((z - frozen).abs().max()) > 1e-3
    # in-training evaluation (cached activations through the tail) == predict on the same crops
    dm = FaceDataModule(data, "dlib_face", finetune=1, progress=False)
    feats = dm.tuned_features(clf)
    val, _ = feats["val"]
    order = [p for p, _ in dm.info.samples["val"]]
    assert [Path(p) for p in order] == crops
    np.testing.assert_allclose(val[:, -1], z.numpy(), atol=1e-5)
    with torch.no_grad():
        acts, _ = dm.load_activations()["val"]
        np.testing.assert_allclose(clf.features(torch.from_numpy(acts)).numpy(), z.numpy(),
                                   atol=1e-5)
    # the fine-tuned descriptors have their own cache id: never dlib's
    assert clf.embedder.cache_id != get_embedder("dlib_face").cache_id
    assert clf.embedder.cache_id.startswith("dlib_face-v3-ft1-")
    # the prototypes are the means of the tuned features (as the frozen path's, of its own)
    labels, scores = clf.predict_crops(crops)
    assert len(labels) == len(crops) and all(np.isfinite(scores))


def test_evaluate_and_verify_use_the_tuned_network(ft_ckpt: Path, celebrities: Path):
    from facerec.recognition.model import load_checkpoint
    from facerec.inference.verify import Verifier

    clf = load_checkpoint(ft_ckpt)
    data = _checkpoints.dataset(celebrities)
    crops = sorted((data / "test").glob("*/*.jpg"))
    v = Verifier(ft_ckpt)
    assert v.clf is not None and v.clf.finetune == 1
    np.testing.assert_allclose(v.clf.embed_crops(crops).numpy(), clf.embed_crops(crops).numpy(),
                               atol=1e-6)


def test_onnx_export_matches_the_tuned_model(ft_ckpt: Path, tmp_path: Path, celebrities: Path):
    pytest.importorskip("onnxruntime")
    from facerec.recognition.export import export_onnx
    from facerec.recognition.model import load_checkpoint
    from facerec.recognition.onnx_runtime import OnnxClassifier

    res = export_onnx(ft_ckpt, tmp_path / "ft.onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-3
    model = OnnxClassifier(tmp_path / "ft.onnx")
    clf = load_checkpoint(ft_ckpt)
    crops = sorted((_checkpoints.dataset(celebrities) / "test").glob("*/*.jpg"))
    from PIL import Image

    pil = [Image.open(p).convert("RGB") for p in crops]
    _, proto, ok = model.run_crops(pil)
    assert ok.all()
    z = clf.embed_crops(crops)
    np.testing.assert_allclose(proto, (z @ clf.prototypes.T).numpy(), atol=1e-4)


def test_resume_with_another_finetune_is_refused(ft_ckpt: Path, celebrities: Path,
                                                 tmp_path: Path):
    from facerec.training import train

    with pytest.raises(FacerecError, match="--finetune 1"):
        train(data_path=str(_checkpoints.dataset(celebrities)), ckpt_path=str(ft_ckpt),
              runs_dir=str(tmp_path), progress=False, max_epochs=1)


def test_finetune_0_is_the_frozen_path(frozen_ckpt: Path, celebrities: Path):
    from facerec.recognition.model import load_checkpoint
    from facerec.training import FaceDataModule

    ckpt = torch.load(frozen_ckpt, map_location="cpu", weights_only=True)
    assert ckpt["facerec"]["backbone"]["finetune"] == 0
    assert ckpt["facerec"]["backbone"]["trainable"] is False
    assert not any(".tail." in k for k in ckpt["state_dict"])
    assert ckpt["facerec_gallery"]["source"] == "frozen"
    clf = load_checkpoint(frozen_ckpt)
    assert clf.tail is None and clf.finetune == 0
    assert clf.embedder.cache_id == "dlib_face-v3"
    dm = FaceDataModule(_checkpoints.dataset(celebrities), "dlib_face", progress=False)
    dm.setup()
    assert dm.activations is None and dm.features is not None  # cached descriptors, as before
    x, _ = dm.datasets["train"][0]
    assert x.shape == (128,)


def test_cli_train_finetune_flags(celebrities: Path, tmp_path: Path, capsys):
    from facerec.cli import main

    data = str(_checkpoints.dataset(celebrities))
    assert main(["train", "--data_path", data, "--backbone", "resnet18", "--finetune", "1",
                 "--runs_dir", str(tmp_path), "--quiet"]) == 2
    assert "only the dlib_face backbone" in capsys.readouterr().err
    assert main(["train", "--data_path", data, "--finetune", "-1", "--runs_dir",
                 str(tmp_path), "--quiet"]) == 2
    assert "--finetune must be 0" in capsys.readouterr().err


def test_predictor_and_enroll_use_the_tuned_network(ft_ckpt: Path, celebrities: Path,
                                                    tmp_path: Path):
    from PIL import Image

    from facerec.inference.enroll import enroll
    from facerec.recognition.model import load_checkpoint
    from facerec.inference.predict import Predictor

    clf = load_checkpoint(ft_ckpt)
    crops = sorted((_checkpoints.dataset(celebrities) / "test").glob("*/*.jpg"))
    pil = [Image.open(p).convert("RGB") for p in crops]
    got = Predictor(ft_ckpt, device="cpu").classify_crops(pil)
    want = clf.classify_crops(pil)
    assert [g[2] for g in got] == [w.candidate for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w.score for w in want], atol=1e-5)

    photos = sorted((celebrities / "train" / "madonna").glob("*.jpg"))[:4]
    res = enroll(ft_ckpt, "madonna", photos, pick="largest", out=tmp_path / "enrolled.ckpt",
                 device="cpu")
    new = load_checkpoint(res.checkpoint)
    assert new.finetune == 1 and "madonna" in new.labels
    for (k, a), (_, b) in zip(clf.tail.state_dict().items(), new.tail.state_dict().items()):
        assert torch.equal(a, b), k  # enrolling never changes the network
