"""``facerec evaluate``: numbers on a tiny real test set, open-set figures, the report files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import _checkpoints
from facerec.cli import main
from facerec.recognition.model import UNKNOWN


@pytest.fixture(scope="module")
def dlib_ckpt(celebrities: Path) -> Path:
    return _checkpoints.checkpoint("dlib", celebrities)


@pytest.fixture(scope="module")
def dataset(celebrities: Path) -> Path:
    return _checkpoints.dataset(celebrities)


@pytest.fixture(scope="module")
def strangers(celebrities: Path, tmp_path_factory) -> Path:
    """Full photos of two people the checkpoints never saw."""
    folder = tmp_path_factory.mktemp("strangers")
    for person in ("madonna", "mindy_kaling"):
        for photo in sorted((celebrities / "val" / person).glob("*.jpg"))[:2]:
            shutil.copy(photo, folder / f"{person}_{photo.name}")
    return folder


def test_open_set_figures_by_hand():
    from facerec.inference.evaluate import open_set_figures

    correct = np.array([True, True, True, False])
    g_score = np.array([0.9, 0.8, 0.5, 0.95])
    g_accept = g_score >= 0.7
    i_score = np.array([0.6, 0.75, np.nan, 0.3])     # NaN: no face found in that impostor photo
    i_accept = np.nan_to_num(i_score, nan=0) >= 0.7
    o = open_set_figures(correct, g_score, g_accept, i_score, i_accept)
    assert o["fpir"] == pytest.approx(1 / 4)
    assert o["fnir"] == pytest.approx(2 / 4)  # 0.5 rejected, 0.95 misidentified
    # FPIR <= 1% of 4 impostors: none strictly above the threshold = the highest impostor (0.75)
    assert o["threshold_at_target"] == pytest.approx(0.75)
    assert o["fpir_at_target"] == 0
    assert o["tpir_at_fpir"] == pytest.approx(2 / 4)  # 0.9 and 0.8 correct and above 0.75


def test_evaluate_crops(dlib_ckpt, dataset, tmp_path):
    from facerec.inference.evaluate import evaluate
    from facerec.recognition.model import load_checkpoint

    report = evaluate(dlib_ckpt, dataset / "test", device="cpu", progress=False)
    assert report.input == "crops"  # a `facerec split` dataset: crops as they are
    crops = sorted((dataset / "test").glob("*/*.jpg"))
    assert report.n_images == report.n_genuine == len(crops) == 3
    # the same numbers as the classifier itself on the same crops
    clf = load_checkpoint(dlib_ckpt)
    preds = clf.classify_crops(crops)
    truth = [c.parent.name for c in crops]
    expected = np.mean([p.label == t for p, t in zip(preds, truth)])
    assert report.accuracy == pytest.approx(expected)
    assert report.closed_set_accuracy == pytest.approx(
        np.mean([p.candidate == t for p, t in zip(preds, truth)]))
    assert report.closed_set_accuracy == 1.0  # dlib knows these three people
    m = np.array(report.confusion["matrix"])
    assert m.sum() == 3 and np.trace(m[:, :3]) == round(report.accuracy * 3)
    assert set(report.per_person) == set(truth)
    f1s = [v["f1"] for v in report.per_person.values()]
    assert report.macro_f1 == pytest.approx(np.mean(f1s))
    assert len(report.misclassified) == round((1 - report.accuracy) * 3)
    assert report.open_set is None


def test_evaluate_cli_open_set_report(capsys, dlib_ckpt, dataset, strangers, tmp_path):
    out_dir = tmp_path / "report"
    rc = main(["evaluate", "--checkpoint_path", str(dlib_ckpt), "--data_path",
               str(dataset / "test"), "--unknown_dir", str(strangers), "--report", str(out_dir),
               "--json", "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["n_genuine"] == 3 and doc["n_impostor"] == 4
    o = doc["open_set"]
    rows = list(csv.DictReader((out_dir / "predictions.csv").open()))
    imp = [r for r in rows if r["truth"] == UNKNOWN]
    assert len(imp) == 4
    accepted = sum(r["predicted"] not in (UNKNOWN, "(no face)") for r in imp)
    assert o["fpir"] == pytest.approx(accepted / 4)
    gen = [r for r in rows if r["truth"] != UNKNOWN]
    assert o["fnir"] == pytest.approx(1 - np.mean([r["predicted"] == r["truth"] for r in gen]))
    assert 0 <= o["tpir_at_fpir"] <= 1 and o["threshold"] == pytest.approx(doc["threshold"])
    assert (out_dir / "confusion_matrix.png").stat().st_size > 1000
    from PIL import Image

    with Image.open(out_dir / "confusion_matrix.png") as im:
        assert im.format == "PNG" and im.width > 200
    saved = json.loads((out_dir / "report.json").read_text())
    assert saved["accuracy"] == doc["accuracy"] and len(saved["predictions"]) == 7
    mis = list(csv.DictReader((out_dir / "misclassified.csv").open()))
    assert len(mis) == len(doc["misclassified"])


def test_evaluate_photos_and_table(capsys, dlib_ckpt, celebrities, tmp_path):
    """Full photos (detected, largest face) of the known people; the readable table."""
    data = tmp_path / "photos"
    for person in ("ben_afflek", "jerry_seinfeld"):
        (data / person).mkdir(parents=True)
        for photo in sorted((celebrities / "val" / person).glob("*.jpg"))[:2]:
            shutil.copy(photo, data / person / photo.name)
    (data / "ben_afflek" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    rc = main(["evaluate", "--checkpoint_path", str(dlib_ckpt), "--data_path", str(data),
               "--quiet", "--device", "cpu", "--threshold", "-1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "input" in out and "photos" in out
    assert "closed-set accuracy" in out and "100.0%" in out
    assert "unreadable" in out and "broken.jpg" in out
    assert "ben_afflek" in out and "precision" in out


def test_evaluate_errors(capsys, dlib_ckpt, tmp_path):
    rc = main(["evaluate", "--checkpoint_path", str(dlib_ckpt), "--data_path",
               str(tmp_path / "none")])
    _, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "data folder not found" in err
    (tmp_path / "flat").mkdir()
    rc = main(["evaluate", "--checkpoint_path", str(dlib_ckpt), "--data_path",
               str(tmp_path / "flat")])
    _, err = capsys.readouterr()
    assert rc == 2 and "one folder of images per person" in err
