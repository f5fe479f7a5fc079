"""facerec enroll / forget: a person added to (and removed from) real checkpoints without retraining."""

from __future__ import annotations

import hashlib
from pathlib import Path

import _checkpoints
import _facecrops
import numpy as np
import pytest
import torch

from facerec.cli import main
from facerec.inference.enroll import GALLERY_KEY, new_checkpoint_path

NEW = "madonna"  # in celebrities, not in the test checkpoints (ben_afflek, elton_john, jerry_seinfeld)


@pytest.fixture(autouse=True)
def _cache(monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _saved(out: str) -> Path:
    lines = [x for x in out.splitlines() if x.startswith("Saved checkpoint: ")]
    assert len(lines) == 1, out
    return Path(lines[0][len("Saved checkpoint: "):])


def _enrol_photos(celebrities: Path) -> list[Path]:
    return sorted((celebrities / "train" / NEW).glob("*.jpg"))[:6]


@pytest.fixture(scope="module")
def enrolled(celebrities, tmp_path_factory):
    """(original dlib checkpoint, its sha256, CLI output, new checkpoint) after enrolling NEW."""
    import os

    os.environ["FACEREC_CACHE_DIR"] = str(_facecrops.cache_dir())
    ckpt = _checkpoints.checkpoint("dlib", celebrities)
    before = _sha(ckpt)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["enroll", "--checkpoint_path", str(ckpt), "--name", NEW, "--pick", "largest",
                   *map(str, _enrol_photos(celebrities))])
    assert rc == 0
    return ckpt, before, buf.getvalue(), _saved(buf.getvalue())


def test_enroll_writes_a_new_checkpoint_beside_the_old(enrolled):
    ckpt, before, out, new = enrolled
    assert new.parent == ckpt.parent and new != ckpt and new.is_file()
    assert _sha(ckpt) == before, "the original checkpoint must not change"
    raw = torch.load(new, map_location="cpu", weights_only=True)  # plain tensors only
    info = raw["facerec"]
    assert info["labels"][-1] == NEW and len(info["labels"]) == 4
    assert info["enrollment"]["enrolled"] == [NEW]
    g = raw[GALLERY_KEY]
    old = torch.load(ckpt, map_location="cpu", weights_only=True)[GALLERY_KEY]
    assert len(g["labels"]) == len(old["labels"]) + 6  # every enrolment photo gave a face
    assert int((g["labels"] == 3).sum()) == 6
    assert info["calibration"]["method"] in ("hold-out-person", "prior")
    assert "Enrolled madonna from 6 face(s) of 6 photo(s)" in out


def test_enrolled_person_is_recognised_and_others_still_are(enrolled, celebrities):
    from facerec.recognition.model import load_checkpoint
    from facerec.inference.predict import Predictor, main_face

    _, _, _, new = enrolled
    predictor = Predictor(new, device="cpu")
    val = sorted((celebrities / "val" / NEW).glob("*.jpg"))
    labels = []
    for r in predictor.predict_paths(val):
        f = main_face(r)
        labels.append(f.label if f else None)
    assert labels.count(NEW) >= len(val) - 1, labels
    clf = load_checkpoint(new)
    crops = _checkpoints.held_out_crops(celebrities)
    preds = clf.classify_crops([c for c, _ in crops])
    assert [p.candidate for p in preds] == [person for _, person in crops]


def test_forget_round_trip_restores_the_original_model(enrolled, capsys):
    from facerec.recognition.model import load_checkpoint

    ckpt, _, _, new = enrolled
    assert main(["forget", "--checkpoint_path", str(new), "--name", NEW]) == 0
    back = _saved(capsys.readouterr().out)
    assert back.parent == new.parent and back not in (new, ckpt)
    a, b = load_checkpoint(ckpt), load_checkpoint(back)
    assert b.labels == a.labels
    assert torch.allclose(a.prototypes, b.prototypes, atol=1e-6)
    # (the head is nearest-prototype after an enrolment, so its weights are the prototypes now)
    assert torch.allclose(torch.nn.functional.normalize(b.head.weight, dim=1), b.prototypes,
                          atol=1e-6)
    # the same held-out procedure on the same faces gives the same threshold
    assert b.threshold == pytest.approx(a.threshold, abs=1e-6)
    ga = torch.load(ckpt, weights_only=True)[GALLERY_KEY]
    gb = torch.load(back, weights_only=True)[GALLERY_KEY]
    assert torch.equal(ga["labels"], gb["labels"])
    assert torch.allclose(ga["features"], gb["features"])


def test_enrolled_checkpoint_exports_to_onnx(enrolled, tmp_path, celebrities):
    from facerec.inference.predict import Predictor

    _, _, _, new = enrolled
    onnx = tmp_path / "enrolled.onnx"
    assert main(["export", "--checkpoint_path", str(new), "--format", "onnx",
                 "--out", str(onnx)]) == 0
    torch_pred = Predictor(new, device="cpu", mode="crops")
    onnx_pred = Predictor(onnx, device="cpu", mode="crops")
    assert onnx_pred.labels == torch_pred.labels and onnx_pred.labels[-1] == NEW
    assert onnx_pred.threshold == pytest.approx(torch_pred.threshold, abs=1e-6)
    crops = [c for c, _ in _checkpoints.held_out_crops(celebrities)]
    a = [f.candidate for r in torch_pred.predict_paths(crops) for f in r.faces]
    b = [f.candidate for r in onnx_pred.predict_paths(crops) for f in r.faces]
    assert a == b and len(a) == len(crops)


def test_enroll_extends_a_known_person(enrolled, celebrities, capsys):
    _, _, _, new = enrolled
    extra = sorted((celebrities / "train" / NEW).glob("*.jpg"))[6:8]
    assert main(["enroll", "--checkpoint_path", str(new), "--name", NEW, "--pick", "largest",
                 *map(str, extra)]) == 0
    out = capsys.readouterr().out
    assert "Extended madonna" in out
    raw = torch.load(_saved(out), weights_only=True)
    assert raw["facerec"]["labels"].count(NEW) == 1
    assert int((raw[GALLERY_KEY]["labels"] == 3).sum()) == 8


def test_enroll_refuses_ambiguous_group_photos(celebrities, capsys):
    ckpt = _checkpoints.checkpoint("dlib", celebrities)
    group = celebrities / "train" / "elton_john" / _facecrops.GROUP_PHOTOS["elton_john"]
    assert main(["enroll", "--checkpoint_path", str(ckpt), "--name", "someone", str(group)]) == 2
    err = capsys.readouterr().err
    assert "--pick" in err and len(err.strip().splitlines()) == 1


def test_enroll_errors(celebrities, tmp_path, capsys):
    ckpt = _checkpoints.checkpoint("dlib", celebrities)
    photo = _enrol_photos(celebrities)[0]
    taken = tmp_path / "taken.ckpt"
    taken.write_bytes(b"precious")
    cases = [
        ["enroll", "--checkpoint_path", str(ckpt), "--name", "x", "--out", str(taken), str(photo)],
        ["enroll", "--checkpoint_path", str(ckpt), "--name", "unknown", str(photo)],
        ["enroll", "--checkpoint_path", str(tmp_path / "missing.ckpt"), "--name", "x", str(photo)],
        ["enroll", "--checkpoint_path", str(ckpt), "--name", "x", str(tmp_path / "none.jpg")],
        ["forget", "--checkpoint_path", str(ckpt), "--name", "nobody"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error:" in err, (argv, err)
    assert taken.read_bytes() == b"precious"


def test_new_checkpoint_path_never_reuses_a_name(tmp_path):
    old = tmp_path / "epoch=1-step=2.ckpt"
    first = new_checkpoint_path(old, "enroll-bob")
    assert first.name == "epoch=1-step=2-enroll-bob.ckpt"
    first.write_bytes(b"x")
    assert new_checkpoint_path(old, "enroll-bob").name == "epoch=1-step=2-enroll-bob-2.ckpt"


def test_checkpoint_without_gallery_keeps_its_threshold(celebrities, tmp_path, capsys):
    """Checkpoints trained before the gallery was stored still enrol; the threshold is kept."""
    ckpt = _checkpoints.checkpoint("dlib", celebrities)
    raw = torch.load(ckpt, weights_only=True)
    raw.pop(GALLERY_KEY)
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    assert main(["enroll", "--checkpoint_path", str(old), "--name", NEW, "--pick", "largest",
                 *map(str, _enrol_photos(celebrities)[:2])]) == 0
    cap = capsys.readouterr()
    assert "does not store its calibration features" in cap.err
    new = torch.load(_saved(cap.out), weights_only=True)
    assert new["facerec"]["threshold"] == pytest.approx(raw["facerec"]["threshold"])
    assert new["facerec"]["labels"][-1] == NEW


@pytest.mark.slow
def test_enroll_and_forget_timm_checkpoint(celebrities, tmp_path, capsys):
    from facerec.recognition.model import load_checkpoint

    ckpt = _checkpoints.checkpoint("timm", celebrities)
    raw = torch.load(ckpt, weights_only=True)
    assert GALLERY_KEY in raw and raw[GALLERY_KEY]["features"].shape[1] == 512
    # a timm network trained for one epoch tells nobody apart (its threshold is ~0.1): it takes
    # the new faces for known people and enroll refuses them; --force is what a user would pass
    assert main(["enroll", "--checkpoint_path", str(ckpt), "--name", NEW, "--pick", "largest",
                 *map(str, _enrol_photos(celebrities)[:4])]) == 2
    assert "recognised as" in capsys.readouterr().err
    assert main(["enroll", "--checkpoint_path", str(ckpt), "--name", NEW, "--pick", "largest",
                 "--force", *map(str, _enrol_photos(celebrities)[:4])]) == 0
    new = _saved(capsys.readouterr().out)
    clf = load_checkpoint(new)
    assert clf.labels[-1] == NEW and np.isfinite(clf.threshold)
    onnx = tmp_path / "timm.onnx"
    assert main(["export", "--checkpoint_path", str(new), "--format", "onnx",
                 "--out", str(onnx)]) == 0
    capsys.readouterr()
    assert main(["forget", "--checkpoint_path", str(new), "--name", NEW]) == 0
    back = load_checkpoint(_saved(capsys.readouterr().out))
    assert back.labels == load_checkpoint(ckpt).labels
