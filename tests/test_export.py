"""``facerec export`` to ONNX, and ``facerec predict`` on onnxruntime giving torch's answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import _checkpoints
from facerec.cli import main

PHOTO = "multi_face/dlib_pascal_2008_001322.jpg"  # 3 faces


_EXPORTS: dict[str, tuple[str, Path, Path]] = {}


def _export(kind: str, celebrities: Path, tmp_path_factory) -> tuple[str, Path, Path]:
    """(kind, checkpoint, exported .onnx), made once per session."""
    if kind not in _EXPORTS:
        ckpt = _checkpoints.checkpoint(kind, celebrities)
        out = tmp_path_factory.mktemp(f"onnx-{kind}") / "model.onnx"
        rc = main(["export", "--checkpoint_path", str(ckpt), "--format", "onnx", "--out",
                   str(out)])
        assert rc == 0
        _EXPORTS[kind] = (kind, ckpt, out)
    return _EXPORTS[kind]


@pytest.fixture(scope="module", params=["dlib", "timm"])
def exported(request, celebrities, tmp_path_factory):
    return _export(request.param, celebrities, tmp_path_factory)


@pytest.fixture(scope="module")
def dlib_exported(celebrities, tmp_path_factory):
    return _export("dlib", celebrities, tmp_path_factory)


def test_export_metadata(exported):
    import onnx

    kind, ckpt, out = exported
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    info = json.loads(meta["facerec"])
    from facerec.recognition.model import load_checkpoint

    clf = load_checkpoint(ckpt)
    assert info["labels"] == clf.labels
    assert info["threshold"] == pytest.approx(clf.threshold)
    exp = info["export"]
    assert exp["kind"] == ("chips" if kind == "dlib" else "full")
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs == [exp["input"]]
    assert outputs[:2] == ["logits", "prototype_cosine"]
    if kind == "dlib":
        assert exp["embedding"]["embedder"] == "dlib_face"
        assert inputs == ["chips"] and exp["input_shape"] == ["N", 3, 150, 150]
        assert outputs == ["logits", "prototype_cosine", "features", "embedding"]
        assert out.stat().st_size > 20_000_000  # dlib's network (22 MB of float32) is inside
    else:
        assert exp["input_shape"][1:] == [3, 48, 48]


def test_onnx_parity_with_torch(exported, data_dir, celebrities):
    """Same labels and scores from both runtimes, on crops and on a photo with 3 faces."""
    from facerec.inference.predict import Predictor

    kind, ckpt, out = exported
    crops = [c for c, _ in _checkpoints.held_out_crops(celebrities)]
    paths = [*crops, data_dir / "edge-cases" / PHOTO]
    torch_predictor = Predictor(ckpt, device="cpu")
    ref = list(torch_predictor.predict_paths(paths))
    onx = Predictor(out, device="cpu")
    assert onx.runtime_name == "onnx" and torch_predictor.runtime_name == "torch"
    assert onx.threshold == pytest.approx(torch_predictor.threshold)
    got = list(onx.predict_paths(paths))
    n = 0
    for a, b in zip(ref, got):
        assert len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces):
            assert fa.box == fb.box
            assert fa.candidate == fb.candidate and fa.label == fb.label
            assert fb.confidence == pytest.approx(fa.confidence, abs=1e-4)
            assert fb.probability == pytest.approx(fa.probability, abs=1e-4)
            n += 1
    assert n == len(crops) + 3
    # one decision rule: both runtimes' outputs agree and go through runtime.decide, as does
    # FaceClassifier.predict_features
    from PIL import Image

    from facerec.recognition.onnx_runtime import OnnxClassifier
    from facerec.recognition.torch_runtime import TorchRuntime

    rt, ox = torch_predictor.runtime, onx.runtime
    assert isinstance(rt, TorchRuntime) and isinstance(ox, OnnxClassifier)
    pil = [Image.open(c) for c in crops]
    z, o = rt.features(pil), ox.features(pil)
    for a, b in zip(rt.outputs(z), ox.outputs(o)):
        np.testing.assert_allclose(b, a, atol=1e-4)
    for t in (None, rt.threshold, -1.0, 1.01):
        a, b = rt.decide(z, t), ox.decide(o, t)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[3], b[3])
        np.testing.assert_allclose(b[1], a[1], atol=1e-4)
        np.testing.assert_allclose(b[2], a[2], atol=1e-4)
    assert rt.decide(z, -1.0)[3].all() and not rt.decide(z, 1.01)[3].any()
    model_says = rt.clf.predict_features(z, rt.threshold)
    for a, b in zip(model_says, rt.decide(z, rt.threshold)):
        assert np.array_equal(a.numpy(), b)


def test_decide_rule():
    """argmax of the logits, its softmax probability, its prototype cosine, the threshold; a row
    that could not be embedded has no score and is never known."""
    from facerec.recognition.decision import decide

    logits = np.array([[0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    proto = np.array([[0.2, 0.8], [0.6, 0.5], [0.9, 0.1]])
    ok = np.array([True, True, False])
    idx, score, prob, known = decide(logits, proto, ok, 0.7)
    assert idx.tolist() == [1, 0, 0]
    np.testing.assert_allclose(prob, [1 / (1 + np.exp(-2)), 0.5, 1 / (1 + np.exp(-3))])
    assert score[:2].tolist() == [0.8, 0.6] and np.isnan(score[2])
    assert known.tolist() == [True, False, False]
    assert decide(logits, proto, ok, None)[3].tolist() == [True, True, False]
    assert decide(logits, proto, ok, float("nan"))[3].tolist() == [True, True, False]


def test_predict_runtime_onnx_on_a_checkpoint(capsys, exported, celebrities):
    """--runtime onnx with a .ckpt exports in memory; the text output is torch's."""
    kind, ckpt, _ = exported
    crop = _checkpoints.held_out_crops(celebrities)[0][0]
    answers = []
    for runtime in ("torch", "onnx"):
        rc = main(["predict", "--checkpoint_path", str(ckpt), "--image_path", str(crop),
                   "--runtime", runtime, "--json", "--device", "cpu"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        answers.append(json.loads(out)[0]["faces"][0])
    assert answers[0]["label"] == answers[1]["label"]
    assert answers[0]["confidence"] == pytest.approx(answers[1]["confidence"], abs=1e-4)


def test_export_errors(capsys, tmp_path, celebrities):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    rc = main(["export", "--checkpoint_path", str(bad)])
    _, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "not a facerec checkpoint" in err
    onnx_file = tmp_path / "plain.onnx"
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(onnx_file))
    crop = _checkpoints.held_out_crops(celebrities)[0][0]
    rc = main(["predict", "--checkpoint_path", str(onnx_file), "--image_path", str(crop)])
    _, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "not one exported by `facerec export`" in err


def test_dlib_onnx_embedding_matches_dlib_and_needs_no_torch(dlib_exported, celebrities):
    """The exported model's ``embedding`` output is dlib's descriptor of the chip (the parity
    bound of the torch network), and running it needs neither torch nor a dlib network: only
    dlib's landmark fit (checked in a fresh process)."""
    import subprocess
    import sys

    import dlib
    import numpy as np
    from PIL import Image

    _, _, out = dlib_exported
    import onnxruntime as ort

    from facerec.recognition.dlib_face import DlibChipper, dlib_models_dir

    crops = [c for c, _ in _checkpoints.held_out_crops(celebrities)]
    chips, rows, _ = DlibChipper().chips([Image.open(c) for c in crops])
    assert rows == list(range(len(crops)))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)
    emb = session.run(["embedding"], {"chips": x})[0]
    net = dlib.face_recognition_model_v1(str(dlib_models_dir() /
                                             "dlib_face_recognition_resnet_model_v1.dat"))
    ref = np.asarray([np.asarray(v) for v in net.compute_face_descriptor(chips)])
    assert np.abs(emb - ref).max() <= 1e-4
    code = (
        "import sys, json\n"
        "from facerec.recognition.onnx_runtime import OnnxClassifier\n"
        f"clf = OnnxClassifier({str(out)!r})\n"
        f"logits, proto, ok = clf.run_crops({[str(c) for c in crops]!r})\n"
        "assert ok.all() and logits.shape[0] == len(ok)\n"
        "print(json.dumps(['facerec.recognition.dlib_net' in sys.modules, 'facerec.recognition.model' in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[false, false]"
