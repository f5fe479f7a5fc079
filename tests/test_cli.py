"""The command line's contract: exit statuses, one meaning per flag (old names as hidden aliases),
defaults in --help, and --json on the reporting commands (real crops from the celebrities set)."""

from __future__ import annotations

import json

import pytest

import _facecrops
from facerec.cli import build_parser, main
from facerec.errors import EXIT_USAGE


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["detect", "--no_such_flag"], ["train", "--max_epochs", "ten"], ["sweep", "--ckpt_path", "x"],
    ["predict"], ["annotate", "--albums", "--bogus"], ["datastore", "show"], ["nope"],
])
def test_usage_errors_exit_64_not_2(argv, capsys):
    """2 is facerec's bad-input status, so a bad command line gets its own (EX_USAGE)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE == 64
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("command, old, new, value, dest, expected", [
    ("detect", "--size", "--crop_size", "112", "crop_size", 112),
    ("detect", "--margin", "--crop_margin", "0.3", "crop_margin", 0.3),
    ("annotate", "--threshold", "--cluster_distance", "0.8", "cluster_distance", 0.8),
    ("annotate", "--min_face", "--min_face_size", "30", "min_face_size", 30.0),
    ("verify", "--threshold", "--max_distance", "0.1", "max_distance", 0.1),
    ("launch", "--gpus", "--accelerators", "T4:1", "accelerators", "T4:1"),
])
def test_renamed_flags_keep_their_old_name_hidden(command, old, new, value, dest, expected, capsys):
    extra = {"verify": ["a.jpg", "b.jpg"], "launch": ["--", "train"]}.get(command, [])
    for flag in (old, new):
        args = build_parser().parse_args([command, flag, value, *extra])
        assert getattr(args, dest) == expected
    text = _help(capsys, command)
    assert new in text and f"{old} " not in text.replace(f"{new} ", "")


def test_one_meaning_per_flag_name_across_commands(capsys):
    """A flag name shown in two commands' --help means the same there (the known shared ones)."""
    assert "cosine margin" in _help(capsys, "train")
    assert "--margin" not in _help(capsys, "detect")
    for command in ("predict", "evaluate"):
        assert "--threshold" in _help(capsys, command)
    for command in ("annotate", "verify"):
        assert "--threshold" not in _help(capsys, command)
    assert "--gpus" not in _help(capsys, "launch")


def test_every_default_is_shown_the_same_way(capsys):
    text = _help(capsys, "detect")
    assert "(default: 20)" in text and "(default: 1600)" in text and "(default: 8)" in text
    assert "(default: as the crops already in the output folder, else the recipe of the " \
        "--backbone model" in " ".join(text.split())
    assert "(default: processed)" in text and "default " not in text.replace("(default: ", "")


def test_json_from_detect_split_annotate_datastore(celebrities, tmp_path, capsys):
    photos = tmp_path / "photos"
    for person, photo in _facecrops.chosen_photos(celebrities)[:4]:
        (photos / person).mkdir(parents=True, exist_ok=True)
        (photos / person / photo.name).write_bytes(photo.read_bytes())
    processed = tmp_path / "processed"
    assert main(["detect", str(photos), "--out", str(processed), "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    detect = json.loads(out)
    assert detect["photos_read"] == 4 and detect["faces"] >= 4 and detect["skipped"] == {}

    assert main(["annotate", str(processed), "--dry_run", "--quiet", "--json",
                 "--cache_dir", str(_facecrops.cache_dir())]) == 0
    annotate = json.loads(capsys.readouterr().out)
    assert annotate["dry_run"] is True and annotate["processed_dir"]

    dataset = tmp_path / "dataset"
    assert main(["split", str(processed), "--out", str(dataset), "--quiet", "--json",
                 "--dedup", "none"]) == 0
    split = json.loads(capsys.readouterr().out)
    assert split["labels"] and set(split["counts"]) == set(split["labels"])

    store = tmp_path / "store"
    assert main(["datastore", "create", "--store", str(store), "--name", "faces", "--source",
                 str(dataset), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["datastore", "list", "--store", str(store), "--json"]) == 0
    (version,) = json.loads(capsys.readouterr().out)
    assert version["name"] == "faces" and version["version"] == 1
    # either spelling of a version
    for ref in ("faces:1", "datastore://faces/1"):
        assert main(["datastore", "show", ref, "--store", str(store), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["digest"] == version["digest"]


def test_detect_with_an_unreadable_photo_is_partial_success(celebrities, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (_, photo), = _facecrops.chosen_photos(celebrities)[:1]
    (photos / "good.jpg").write_bytes(photo.read_bytes())
    (photos / "torn.jpg").write_bytes(photo.read_bytes()[:200])
    assert main(["detect", str(photos), "--out", str(tmp_path / "out"), "--quiet", "--json"]) == 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["photos_read"] == 1 and sum(summary["skipped"].values()) == 1


def test_the_command_line_is_built_without_torch():
    """Every flag (train's and sweep's come from TrainConfig) is declared without importing
    torch, numpy or Lightning: `facerec --help` and usage errors stay instant."""
    import subprocess
    import sys

    code = ("import sys, facerec.cli; facerec.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("argv, command", [
    (["predict", "x.jpg", "--checkpoint_path", "c.ckpt", "--bogus"], "predict"),
    (["train", "dataset", "--no_such_flag", "1"], "train"),
    (["datastore", "pull", "faces:1", "--out", "d", "--nope"], "datastore pull"),
    (["run", "photos", "--learning_rate", "fast"], "run"),
])
def test_a_usage_error_prints_the_usage_of_its_command(argv, command, capsys):
    """Not the top-level list of commands: the usage of the command the user typed."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"usage: facerec {command} ") and "COMMAND" not in err
    assert f"facerec {command}: error: " in err


def test_the_model_choice_is_backbone_with_the_default_from_facerec_defaults(capsys):
    from pathlib import Path

    from facerec.defaults import DEFAULT_BACKBONE, DEFAULT_DETECTOR

    for command in ("annotate", "verify", "run", "train", "sweep"):
        text = " ".join(_help(capsys, command).split())
        assert "--backbone BACKBONE" in text and "--embedder" not in text, command
        if command == "verify":
            assert f"(default: {DEFAULT_BACKBONE})" in text, command
        elif command != "sweep":
            assert f"{DEFAULT_BACKBONE} for crops made by facerec detect's defaults" in text, command
    assert f"(default: the output folder's, else {DEFAULT_DETECTOR})" in " ".join(
        _help(capsys, "detect").split())
    assert build_parser().parse_args(["annotate", "--embedder", "x"]).backbone == "x"
    source = (Path(__file__).resolve().parents[1] / "src" / "facerec" / "cli.py").read_text()
    assert '"dlib_face"' not in source and '"mtcnn"' not in source


def test_the_main_input_is_positional_and_the_old_flags_still_work():
    parse = build_parser().parse_args
    assert parse(["predict", "a.jpg", "b/", "--checkpoint_path", "c"]).image_path == ["a.jpg", "b/"]
    assert parse(["predict", "--checkpoint_path", "c", "--image_path", "a.jpg", "b/"]).image_path \
        == ["a.jpg", "b/"]
    assert parse(["evaluate", "--checkpoint_path", "c"]).data_path == "dataset/test"
    assert parse(["train", "ds"]).data_path == parse(["train", "--data_path", "ds"]).data_path
    assert parse(["detect"]).raw_dir == "raw" and parse(["serve"]).work_dir == "facerec-work"
    assert parse(["run", "p", "--work", "w"]).out == parse(["run", "p", "--out", "w"]).out == "w"
