"""``facerec split``: layout, stratification, same-photo and near-duplicate grouping, stability,
tiny classes, reruns and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import _facecrops
from facerec.cli import main
from facerec.errors import FacerecError
from facerec.split import split_dataset

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ synthetic crops
def _make(processed: Path, photos: dict[str, list[str]], start: int = 0) -> None:
    """Crops for photos: {photo path: [person of face 0, person of face 1, ...]}, with manifest."""
    processed.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (photo, people) in enumerate(sorted(photos.items())):
        faces = []
        for i, person in enumerate(people):
            name = f"{Path(photo).stem}_{hashlib.sha1(photo.encode()).hexdigest()[:8]}_{i}.jpg"
            rng = np.random.default_rng(start + k * 10 + i)
            (processed / person).mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(processed / person / name)
            faces.append({"box": [0, 0, 50, 50], "score": 0.99, "landmarks": [[0, 0]] * 5,
                          "crop": f"{person}/{name}", "crop_box": [0, 0, 60, 60]})
        lines.append(json.dumps({"path": photo, "sha256": "x", "width": 100, "height": 100,
                                 "faces": faces, "error": None}))
    with open(processed / "manifest.jsonl", "a") as handle:
        handle.write("".join(line + "\n" for line in lines))


def _people(n_people: int, n_photos: int, offset: int = 0) -> dict[str, list[str]]:
    return {f"p{p}/photo_{j:03d}.jpg": [f"person_{chr(97 + p)}"]
            for p in range(n_people) for j in range(offset, offset + n_photos)}


def _assignment(out: Path) -> dict[str, str]:
    """crop file name -> split."""
    return {p.name: p.relative_to(out).parts[0] for s in ("train", "val", "test")
            for p in (out / s).rglob("*.jpg")}


def _mtimes(out: Path) -> dict[Path, int]:
    """Modification times of the dataset's files and folders (not facerec's lock under .facerec/)."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if ".facerec" not in p.parts}


def _split(processed, out, **kw):
    kw.setdefault("dedup", "none")
    kw.setdefault("progress", False)
    return split_dataset(processed, out, **kw)


# ---------------------------------------------------------------------------------------- tests
def test_layout_labels_and_processed_untouched(tmp_path):
    processed, out = tmp_path / "processed", tmp_path / "dataset"
    _make(processed, _people(3, 20))
    (processed / "_rejected").mkdir()
    Image.new("RGB", (8, 8)).save(processed / "_rejected" / "bad.jpg")
    (processed / ".facerec").mkdir()
    before = _facecrops.snapshot(processed)
    result = _split(processed, out)
    assert json.loads((out / "labels.json").read_text()) == {
        "labels": ["person_a", "person_b", "person_c"]}
    assert result.labels == ["person_a", "person_b", "person_c"]
    where = _assignment(out)
    assert len(where) == 60 and "bad.jpg" not in where
    for person in result.labels:
        for s in ("train", "val", "test"):
            assert (out / s / person).is_dir()  # stratified: every person in every split
        assert sum(result.counts[person].values()) == 20
        assert result.counts[person]["train"] >= 10
    assert _facecrops.snapshot(processed) == before
    meta = json.loads((out / "split.json").read_text())
    assert meta["sources"]["p0/photo_000.jpg"]["split"] in ("train", "val", "test")
    assert meta["params"]["seed"] == 42 and meta["input"]["crops"] == 60


def test_fractions_follow_the_flags(tmp_path):
    processed = tmp_path / "processed"
    _make(processed, _people(4, 100))
    result = _split(processed, tmp_path / "d", val=0.2, test=0.3)
    totals = defaultdict(int)
    for row in result.counts.values():
        for s, n in row.items():
            totals[s] += n
    assert abs(totals["test"] / 400 - 0.3) < 0.06 and abs(totals["val"] / 400 - 0.2) < 0.06


def test_seed_changes_the_assignment(tmp_path):
    processed = tmp_path / "processed"
    _make(processed, _people(2, 30))
    a = _split(processed, tmp_path / "a", seed=1).sources
    b = _split(processed, tmp_path / "b", seed=2).sources
    c = _split(processed, tmp_path / "c", seed=1).sources
    assert a == c and a != b


def test_crops_of_one_photo_share_a_split(tmp_path):
    processed, out = tmp_path / "processed", tmp_path / "dataset"
    photos = _people(2, 15)
    for j in range(15):  # group photos showing both people
        photos[f"group/g_{j:02d}.jpg"] = ["person_a", "person_b"]
    _make(processed, photos)
    _split(processed, out)
    where = _assignment(out)
    for j in range(15):
        stem = f"g_{j:02d}_"
        splits = {s for name, s in where.items() if name.startswith(stem)}
        assert len(splits) == 1, (stem, splits)
    assert len([n for n in where if n.startswith("g_")]) == 30


def test_adding_photos_never_moves_a_held_out_crop_to_train(tmp_path):
    processed, out = tmp_path / "processed", tmp_path / "dataset"
    _make(processed, _people(3, 12))
    _split(processed, out)
    before = _assignment(out)
    _make(processed, _people(3, 30, offset=12), start=10_000)
    with pytest.raises(FacerecError, match="--force"):
        _split(processed, out)
    _split(processed, out, force=True)
    after = _assignment(out)
    assert set(before) < set(after)
    for name, split in before.items():
        if split != "train":
            assert after[name] == split, name
    # and in a fresh folder, every photo the hash alone sent to test/val is held out again
    fresh = tmp_path / "fresh"
    _split(processed, fresh)
    again = _assignment(fresh)
    moved = [n for n, s in before.items() if s == "test" and again[n] == "train"]
    meta = json.loads((out / "split.json").read_text())
    assert len(moved) <= len(meta["labels"])  # at most the one promoted photo per person


def test_tiny_classes_go_to_train_then_val_with_a_warning(tmp_path):
    processed, out = tmp_path / "processed", tmp_path / "dataset"
    photos = _people(1, 20)
    photos["solo/one.jpg"] = ["uno"]
    photos["duo/a.jpg"] = ["duo"]
    photos["duo/b.jpg"] = ["duo"]
    photos["trio/a.jpg"] = ["trio"]
    photos["trio/b.jpg"] = ["trio"]
    photos["trio/c.jpg"] = ["trio"]
    _make(processed, photos)
    (processed / "empty_person").mkdir()
    result = _split(processed, out)
    assert result.counts["uno"] == {"train": 1, "val": 0, "test": 0}
    assert result.counts["duo"] == {"train": 1, "val": 1, "test": 0}
    assert result.counts["trio"] == {"train": 1, "val": 1, "test": 1}
    text = "\n".join(result.warnings)
    assert "uno: only 1 photo" in text and "duo: only 2 photos" in text and "trio" not in text
    assert "empty_person" in text and "empty_person" not in result.labels


def test_rerun_on_unchanged_input_changes_nothing(tmp_path):
    processed, out = tmp_path / "processed", tmp_path / "dataset"
    _make(processed, _people(2, 10))
    _split(processed, out)
    before = _mtimes(out)
    result = _split(processed, out)
    assert result.unchanged
    assert _mtimes(out) == before  # the lock file (.facerec/) is bookkeeping, not data


def test_files_are_hard_linked_or_copied(tmp_path):
    processed = tmp_path / "processed"
    _make(processed, _people(1, 5))
    linked = _split(processed, tmp_path / "a")
    src = next((processed / "person_a").glob("*.jpg"))
    dst = next((tmp_path / "a").rglob(src.name))
    assert linked.linked == 5 and os.path.samefile(src, dst)
    copied = _split(processed, tmp_path / "b", link=False)
    dst = next((tmp_path / "b").rglob(src.name))
    assert copied.copied == 5 and not os.path.samefile(src, dst)
    assert dst.read_bytes() == src.read_bytes()


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(FacerecError, match="not found"):
        _split(tmp_path / "missing", tmp_path / "d")
    empty = tmp_path / "empty"
    (empty / "_rejected").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(empty / "_rejected" / "x.jpg")
    with pytest.raises(FacerecError, match="no labelled crops"):
        _split(empty, tmp_path / "d")
    Image.new("RGB", (8, 8)).save(empty / "loose.jpg")
    with pytest.raises(FacerecError, match="annotate"):
        _split(empty, tmp_path / "d")
    processed = tmp_path / "processed"
    _make(processed, _people(1, 5))
    with pytest.raises(FacerecError, match="inside"):
        _split(processed, processed / "dataset")
    with pytest.raises(FacerecError, match="between 0 and 1|leave something"):
        _split(processed, tmp_path / "d", val=0.5, test=0.5)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FacerecError, match="not made by"):
        _split(processed, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_near_duplicates_of_real_photos_share_a_split(celebrities, tmp_path):
    """The celebrities set holds the same Ben Affleck photo twice (another crop and size); a
    re-encoded, slightly re-cropped copy added by hand (no manifest entry) joins them too."""
    processed = _facecrops.copy_of("albums", celebrities, tmp_path / "processed")
    ben = processed / "ben_afflek"
    twins = sorted(p for p in ben.glob("*.jpg") if "xeebdfdbaaa" in p.name or "edLMjVpRGkSWex" in p.name)
    assert len(twins) == 2
    img = Image.open(twins[0])
    img.crop((4, 6, 156, 158)).resize((140, 140)).save(ben / "handmade_copy.jpg", quality=80)
    for seed in range(4):
        out = tmp_path / f"d{seed}"
        result = split_dataset(processed, out, seed=seed, progress=False,
                               cache=_facecrops.cache_dir())
        where = _assignment(out)
        assert len({where[p.name] for p in twins} | {where["handmade_copy.jpg"]}) == 1
        assert result.groups_merged >= 2
    # split.json records the three source photos as one group
    meta = json.loads((tmp_path / "d0" / "split.json").read_text())
    groups = {v["group"] for k, v in meta["sources"].items()
              if "xeebdfdbaaa" in k or "edLMjVpRGkSWex" in k or k.startswith("sha256:")}
    assert len(groups) == 1


def test_cli_and_seed_script(tmp_path):
    processed = tmp_path / "processed"
    _make(processed, _people(2, 8))
    assert main(["split", str(processed), "--out", str(tmp_path / "cli"), "--dedup", "none",
                 "--quiet", "--val", "0.2", "--test", "0.2"]) == 0
    assert (tmp_path / "cli" / "labels.json").is_file()
    assert main(["split", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    env = {**os.environ, "FACEREC_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, str(REPO / "create_training_dataset.py"), "--dedup", "none"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    labels = json.loads((tmp_path / "dataset" / "labels.json").read_text())
    assert labels == {"labels": ["person_a", "person_b"]}
    assert "person_a" in proc.stdout
