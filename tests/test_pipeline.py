"""`facerec run` / `make run`: photos -> trained model and report, in one command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import _facecrops
from facerec.cli import main
from facerec.recognition.model import load_checkpoint


@pytest.fixture()
def shared_cache(monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(_facecrops.cache_dir().parent / "pipeline-cache"))


def test_albums_to_trained_model_and_report(tmp_path, celebrities, shared_cache, capsys):
    photos = tmp_path / "photos"
    for person, photo in _facecrops.chosen_photos(celebrities):
        (photos / person).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, photos / person / f"{photo.parent.parent.name}_{photo.name}")
    work = tmp_path / "work"
    assert main(["run", str(photos), "--work", str(work), "--max_epochs", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    best = next(line.split(": ", 1)[1] for line in reversed(out.splitlines())
                if line.startswith("Best checkpoint: "))
    classifier = load_checkpoint(best)
    assert classifier.labels == list(_facecrops.PEOPLE)
    assert Path(best).is_relative_to(work / "runs")
    assert json.loads((work / "dataset" / "labels.json").read_text())["labels"] == list(_facecrops.PEOPLE)
    report = json.loads((work / "report" / "report.json").read_text())
    assert report["n_genuine"] >= 3 and report["accuracy"] >= 0.66
    assert (work / "report" / "confusion_matrix.png").stat().st_size > 0
    # the other people of the group photos were set aside, not trained on
    assert any((work / "processed" / "_others").rglob("*.jpg"))
    assert "Stage seconds: detect=" in out


def test_run_on_a_folder_without_faces_is_a_clear_error(tmp_path, data_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted((data_dir / "edge-cases" / "no_face").glob("*.jpg"))[:2]:
        shutil.copy(photo, photos)
    assert main(["run", str(photos), "--work", str(tmp_path / "work"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no faces found" in err[0] and "nothing to train on" in err[0]


def test_run_device_picks_that_gpu_only_for_training():
    from facerec.workflow import lightning_devices

    assert lightning_devices("cuda:1") == ("gpu", [1])  # GPU 1, not every GPU
    assert lightning_devices("cuda") == ("gpu", "1")
    assert lightning_devices("cpu") == ("cpu", "auto")
    assert lightning_devices("auto") == ("auto", "auto")
