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
    # MTCNN finds nothing there; the default YuNet cuts a face-like patch that annotate rejects:
    # either way one clear line
    assert len(err) == 1 and ("no faces found" in err[0] and "nothing to train on" in err[0]
                              or "no usable faces were found" in err[0]), err


def test_run_device_picks_that_gpu_only_for_training():
    from facerec.workflow import lightning_devices

    assert lightning_devices("cuda:1") == ("gpu", [1])  # GPU 1, not every GPU
    assert lightning_devices("cuda") == ("gpu", "1")
    assert lightning_devices("cpu") == ("cpu", "auto")
    assert lightning_devices("auto") == ("auto", "auto")


# ------------------------------------------------------------------ reruns, loose photos, options
def _albums(celebrities: Path, root: Path, per_person: int = 4) -> Path:
    """Albums: one folder per person of _facecrops.PEOPLE, PER_PERSON single-face photos each."""
    chosen = _facecrops.chosen_photos(celebrities)
    for person in _facecrops.PEOPLE:
        picks = [p for q, p in chosen if q == person and p.name != _facecrops.GROUP_PHOTOS.get(q)]
        (root / person).mkdir(parents=True, exist_ok=True)
        for photo in picks[:per_person]:
            shutil.copy(photo, root / person / f"{photo.parent.parent.name}_{photo.name}")
    return root


def _runs(work: Path) -> list[Path]:
    return sorted((work / "runs").glob("*/version_*")) if (work / "runs").is_dir() else []


def _last(out: str, prefix: str) -> str:
    return next(line.split(": ", 1)[1] for line in reversed(out.splitlines())
                if line.startswith(prefix))


def test_a_rerun_with_nothing_changed_trains_nothing(tmp_path, celebrities, shared_cache, capsys):
    photos = _albums(celebrities, tmp_path / "photos")
    work = tmp_path / "work"
    argv = ["run", str(photos), "--out", str(work), "--max_epochs", "5", "--quiet"]
    assert main(argv) == 0
    first = _last(capsys.readouterr().out, "Best checkpoint: ")
    assert len(_runs(work)) == 1

    assert main(argv) == 0  # nothing changed: the same model, and why
    out = capsys.readouterr().out
    assert "Nothing changed since the last run" in out and "--retrain" in out
    assert _last(out, "Best checkpoint: ") == first and len(_runs(work)) == 1
    assert out.strip().splitlines()[-1].startswith("Next: ")

    assert main([*argv, "--retrain"]) == 0  # forced
    assert "Nothing changed" not in capsys.readouterr().out and len(_runs(work)) == 2
    assert main([*argv[:-3], "--max_epochs", "6", "--quiet"]) == 0  # another option
    assert "Nothing changed" not in capsys.readouterr().out and len(_runs(work)) == 3
    # another name: a person folder renamed is new training data
    shutil.move(str(work / "processed" / "ben_afflek"), str(work / "processed" / "Ben Affleck"))
    assert main([*argv[:-3], "--max_epochs", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Nothing changed" not in out and len(_runs(work)) == 4
    assert "Ben Affleck" in load_checkpoint(_last(out, "Best checkpoint: ")).labels


def test_loose_photos_stop_before_training_then_train_once_named(tmp_path, celebrities,
                                                                 shared_cache, capsys):
    import _servework

    photos = tmp_path / "photos"
    photos.mkdir()
    for person, photo in _facecrops.chosen_photos(celebrities):
        shutil.copy(photo, photos / f"{person}__{photo.parent.parent.name}__{photo.name}")
    work = tmp_path / "work"
    argv = ["run", str(photos), "--out", str(work), "--max_epochs", "5", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert not _runs(work) and "Nothing was trained" in out
    processed = work / "processed"
    clusters = sorted(p.name for p in processed.glob("person_*"))
    assert len(clusters) >= 3
    for name in clusters:  # one row each: the cluster, its crop count, an example crop (a file)
        row = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        count, example = row.split()[1], row.split()[2]
        assert int(count) == len(list((processed / name).glob("*.jpg")))
        assert Path(example).is_file() and Path(example).parent.name == name
    assert "rename each folder to the person's name" in out
    serve = next(line for line in out.splitlines() if " serve " in line)
    assert serve.split(" serve ", 1)[1].split()[0] in (str(work), "work")
    assert "--photos" in serve

    for person in _facecrops.PEOPLE:  # name the three people, leave the rest out
        cluster = _servework.cluster_of(processed, person)
        shutil.move(str(processed / cluster), str(processed / person))
    for rest in processed.glob("person_*"):
        shutil.move(str(rest), str(processed / "_rejected" / rest.name))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert len(_runs(work)) == 1
    assert load_checkpoint(_last(out, "Best checkpoint: ")).labels == list(_facecrops.PEOPLE)


def test_run_takes_every_detect_and_train_option(tmp_path, celebrities, shared_cache, capsys):
    import torch

    from facerec.cli import build_parser
    from facerec.training.config import cli_fields, option

    import re

    commands = build_parser().subcommands
    flags = {c: set(re.findall(r"(?<![\w-])--?[a-z][a-z_]*", commands[c].format_help()))
             for c in ("run", "detect", "train")}
    own = {"--data_path", "--out", "--runs_dir", "--ckpt_path", "--quiet", "--config", "--json",
           "--batch_size", "--size", "--margin", "--device", "-h", "--help",
           # detect's Ray engine: `run` is the one-machine path (docs/scaling-out.md)
           "--engine", "--ray_address", "--ray_workers"}
    assert (flags["detect"] | flags["train"]) - own <= flags["run"]
    assert {option(f) for f in cli_fields()} - own <= flags["run"]
    assert "--detect_batch_size" in flags["run"]

    photos = _albums(celebrities, tmp_path / "photos", per_person=3)
    work = tmp_path / "work"
    assert main(["run", str(photos), "--out", str(work), "--max_epochs", "3", "--quiet",
                 "--crop_size", "128", "--learning_rate", "0.005", "--patience", "7",
                 "--label_smoothing", "0.05"]) == 0
    best = _last(capsys.readouterr().out, "Best checkpoint: ")
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["learning_rate"] == 0.005 and hp["label_smoothing"] == 0.05
    assert hp["train_config"]["patience"] == 7
    assert ckpt["facerec"]["preprocess"]["crop"]["size"] == 128


def test_the_next_step_runs_as_printed(tmp_path, celebrities, shared_cache, capsys, monkeypatch):
    import os
    import subprocess

    photos = _albums(celebrities, tmp_path / "photos", per_person=4)
    monkeypatch.chdir(tmp_path)  # the project folder, as after `make run`
    assert main(["run", "photos", "--out", "work", "--max_epochs", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    nxt = out.strip().splitlines()[-1]
    assert nxt.startswith("Next: ")
    command = nxt[len("Next: "):].split("   (", 1)[0]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Predicted class: " in proc.stdout
    assert photos.is_dir()
