"""Manual edits of processed/ (what ``facerec serve``'s people page does): move_crops, rename_person
(merge when the name exists), all logged in moves.jsonl and undone by ``facerec annotate --undo``;
and undo after a folder was renamed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import _facecrops
import _servework
from facerec.annotate import annotate, move_crops, rename_person, undo
from facerec.cli import main
from facerec.errors import FacerecError


@pytest.fixture()
def processed(celebrities: Path, tmp_path: Path) -> Path:
    return _servework.copy_of(celebrities, tmp_path / "work") / "processed"


def test_undo_after_renaming_a_cluster_by_hand(celebrities, tmp_path):
    """The issue's case: annotate, rename person_01 in a file manager, then --undo."""
    loose = _facecrops.copy_of("loose", celebrities, tmp_path / "processed")
    before = _servework.snapshot(loose)
    annotate(loose, progress=False, cache=_facecrops.cache_dir())
    (loose / "person_01").rename(loose / "alice")
    assert main(["annotate", str(loose), "--undo"]) == 0
    assert _servework.snapshot(loose) == before  # every crop back where detect put it


def test_rename_merge_move_and_undo_in_reverse(processed):
    before = _servework.snapshot(processed)
    rename_person(processed, "person_01", "alice")
    assert (processed / "alice").is_dir() and not (processed / "person_01").exists()
    merged = rename_person(processed, "person_02", "alice")
    assert merged.merged and not (processed / "person_02").exists()
    crop = sorted((processed / "alice").glob("*.jpg"))[0].relative_to(processed).as_posix()
    moved = move_crops(processed, [crop, crop], "_rejected")
    assert moved.moved == 1 and (processed / "_rejected" / Path(crop).name).is_file()
    log = [json.loads(x) for x in (processed / ".facerec" / "moves.jsonl").read_text().splitlines()]
    assert [e["command"] for e in log if e["event"] == "begin"][-3:] == ["rename", "rename", "move"]
    for _ in range(3):
        undo(processed)
    assert _servework.snapshot(processed) == before


def test_merge_never_overwrites_a_crop_of_the_same_name(processed):
    a = sorted((processed / "person_01").glob("*.jpg"))[0]
    original = a.read_bytes()
    twin = processed / "person_02" / a.name
    twin.write_bytes(b"another file with the same name")
    rename_person(processed, "person_02", "person_01")
    assert a.read_bytes() == original
    assert (a.parent / f"{a.stem}_1.jpg").read_bytes() == b"another file with the same name"
    undo(processed)
    assert twin.read_bytes() == b"another file with the same name" and a.read_bytes() == original


def test_edits_refuse_bad_input(processed):
    with pytest.raises(FacerecError, match="no such person folder"):
        rename_person(processed, "nobody", "x")
    with pytest.raises(FacerecError, match="already called"):
        rename_person(processed, "person_01", "person_01")
    with pytest.raises(FacerecError, match="invalid person name"):
        move_crops(processed, ["person_01/x.jpg"], "../up")
    with pytest.raises(FacerecError, match="invalid crop path"):
        move_crops(processed, ["person_01/../../../etc/passwd"], "bob")
    with pytest.raises(FacerecError, match="no such crop"):
        move_crops(processed, ["manifest.jsonl"], "bob")
    assert not (processed / "bob").exists()
