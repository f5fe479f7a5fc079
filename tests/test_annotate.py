"""``facerec annotate``: clustering real crops, rejects, suggestions, album mode, undo."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import _facecrops
from facerec.annotate import annotate, cluster_embeddings, print_annotate_summary, undo
from facerec.cli import main
from facerec.crops import list_images
from facerec.errors import FacerecError


@pytest.fixture()
def cache() -> Path:
    return _facecrops.cache_dir()


@pytest.fixture()
def loose(celebrities: Path, tmp_path: Path) -> Path:
    return _facecrops.copy_of("loose", celebrities, tmp_path / "processed")


@pytest.fixture()
def albums(celebrities: Path, tmp_path: Path) -> Path:
    return _facecrops.copy_of("albums", celebrities, tmp_path / "processed")


def _where(processed: Path) -> dict[str, str]:
    """crop name -> folder it is in now ('' = loose)."""
    out = {}
    for p in processed.rglob("*.jpg"):
        rel = p.relative_to(processed)
        out[p.name] = "/".join(rel.parts[:-1])
    return out


def test_clusters_real_crops_by_person(loose, cache):
    truth = _facecrops.truth(loose)
    result = annotate(loose, cache=cache, progress=False)
    where = _where(loose)
    assert not list_images(loose)  # every loose crop was sorted
    clusters = {f for f in where.values() if f.startswith("person_")}
    assert clusters == set(result.clusters) and 3 <= len(clusters) <= 4
    # largest first
    sizes = [result.clusters[c] for c in sorted(result.clusters)]
    assert sizes == sorted(sizes, reverse=True)
    # purity: the main faces of each cluster are one person, and each person has a main cluster
    main_of = Counter()
    for folder in clusters:
        people = {truth[n][0] for n, f in where.items() if f == folder and truth[n][1]}
        assert len(people) == 1, (folder, people)
        main_of[people.pop()] += result.clusters[folder]
    assert set(main_of) == set(_facecrops.PEOPLE)
    # the bad detections (a 20 px background face, a 0.77-score non-face) were rejected
    rejected = {n for n, f in where.items() if f == "_rejected"}
    assert len(rejected) >= 2 and all(not truth[n][1] for n in rejected)
    assert sum(result.rejected.values()) == len(rejected)
    out = io.StringIO()
    print_annotate_summary(result, file=out)
    assert "person_01/" in out.getvalue() and "--undo" in out.getvalue()


def test_undo_restores_exactly_and_twice_is_an_error(loose, cache):
    before = _facecrops.snapshot(loose)
    dirs_before = sorted(p.name for p in loose.iterdir() if p.is_dir())
    result = annotate(loose, cache=cache, progress=False)
    assert result.moves and _facecrops.snapshot(loose) != before
    log = [json.loads(l) for l in (loose / ".facerec" / "moves.jsonl").read_text().splitlines()]
    assert sum(1 for ev in log if ev["event"] == "move") == len(result.moves)
    restored = undo(loose)
    assert restored.restored == len(result.moves)
    assert _facecrops.snapshot(loose) == before  # same files, same bytes, same mtimes
    assert {p.name for p in loose.iterdir() if p.is_dir()} == {*dirs_before, ".facerec"}
    with pytest.raises(FacerecError, match="nothing to undo"):
        undo(loose)


def test_undo_goes_back_one_run_at_a_time(loose, cache, tmp_path):
    # hold back two crops, annotate, add them, annotate again
    held = tmp_path / "held"
    held.mkdir()
    late = [p.name for p in list_images(loose)[:2]]
    for name in late:
        shutil.move(loose / name, held / name)
    state0 = _facecrops.snapshot(loose)
    annotate(loose, cache=cache, progress=False)
    for name in late:
        shutil.move(held / name, loose / name)
    state1 = _facecrops.snapshot(loose)
    second = annotate(loose, cache=cache, progress=False)
    # the second run sorts the new crops (and may re-cluster earlier singletons), nothing else
    assert {m.src for m in second.moves} - set(late) <= {
        m.src for m in second.moves if m.src.startswith("_singletons/")}
    assert set(late) <= {m.src for m in second.moves}
    undo(loose)
    assert _facecrops.snapshot(loose) == state1
    undo(loose)
    now = _facecrops.snapshot(loose)
    assert {k: v for k, v in now.items() if k not in late} == state0
    assert set(now) - set(state0) == set(late)


def test_dry_run_moves_nothing(loose, cache):
    before = _facecrops.snapshot(loose)
    result = annotate(loose, cache=cache, progress=False, dry_run=True)
    assert result.moves and result.op is None
    assert _facecrops.snapshot(loose) == before
    assert not (loose / ".facerec" / "moves.jsonl").exists()


def test_suggests_known_people_and_clusters_the_rest(albums, cache):
    """Named folders for two people; loose crops of them are suggested, the third is clustered."""
    truth = _facecrops.truth(albums)
    # Jerry's crops become loose, as if new photos arrived; keep 2 of Ben's and Elton's loose too
    for p in list_images(albums / "jerry_seinfeld"):
        shutil.move(p, albums / p.name)
    (albums / "jerry_seinfeld").rmdir()
    moved_known = []
    for person, keys in (("ben_afflek", ("edLMjVpRGkSWex", "fandangocom")),
                         ("elton_john", ("iamediaimdbcom", "imagesmtvcom"))):
        for p in list_images(albums / person):
            if truth[p.name][1] and any(k in p.name for k in keys):
                shutil.move(p, albums / p.name)
                moved_known.append(p.name)
    assert len(moved_known) == 4
    result = annotate(albums, cache=cache, progress=False, albums=False)
    where = _where(albums)
    for name in moved_known:
        assert where[name] == f"_suggested/{truth[name][0]}", name
    jerry_main = [n for n, (person, main) in truth.items() if person == "jerry_seinfeld" and main]
    folders = Counter(where[n] for n in jerry_main)
    top, count = folders.most_common(1)[0]
    assert top == "person_01" and count >= 4
    assert result.suggested == {"ben_afflek": 2, "elton_john": 2}
    # named folders are never touched without album mode
    assert all(where[n] in ("ben_afflek", "elton_john") for n in truth
               if n not in moved_known and truth[n][0] != "jerry_seinfeld")


def test_album_mode_moves_other_people_of_group_photos(albums, cache):
    truth = _facecrops.truth(albums)
    result = annotate(albums, cache=cache, progress=False)  # auto: detect made these folders
    where = _where(albums)
    others = {n for n, f in where.items() if f.startswith("_others/")}
    assert others and all(not truth[n][1] for n in others)
    # Cher (with Elton) and the woman beside Seinfeld were detected well, so they are in _others
    group = {n for n in truth if any(k[:20] in n for k in ("httpssmediacacheakpinimgcomxf",
                                                           "httpwwweonlinecomresizeww"))}
    assert {n for n in group if not truth[n][1]} <= others | {
        n for n, f in where.items() if f.startswith("_rejected")}
    for name in others:
        assert where[name] == f"_others/{truth[name][0]}"
    # every main face stays in (or is rejected from) its own album
    for name, (person, main) in truth.items():
        if main:
            assert where[name] in (person, f"_rejected/{person}"), name
    assert sum(result.others.values()) == len(others)
    # no new clusters in pure album mode
    assert not result.clusters and not any(f.startswith("person_") for f in where.values())
    undo(albums)
    assert set(_where(albums).values()) == set(_facecrops.PEOPLE)


def test_rejects_low_score_tiny_and_unreadable(loose, cache):
    lines = [json.loads(l) for l in (loose / "manifest.jsonl").read_text().splitlines()]
    crops = [f for rec in lines for f in rec["faces"]]
    crops[0]["score"] = 0.5
    crops[1]["box"][2] = crops[1]["box"][3] = 10.0
    (loose / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (loose / "broken.jpg").write_bytes(b"garbage")
    count = len(list(loose.rglob("*.jpg")))
    result = annotate(loose, cache=cache, progress=False)
    where = _where(loose)
    assert where[Path(crops[0]["crop"]).name] == "_rejected"
    assert where[Path(crops[1]["crop"]).name] == "_rejected"
    assert where["broken.jpg"] == "_rejected"
    assert result.rejected["unreadable"] == 1
    assert result.rejected["low detector score"] >= 1 and result.rejected["tiny face"] >= 1
    assert len(list(loose.rglob("*.jpg"))) == count  # nothing deleted


def test_keep_poor_rejects_nothing_but_unreadable(loose, cache):
    result = annotate(loose, cache=cache, progress=False, reject=False, dry_run=True)
    assert not result.rejected


def test_bad_input(tmp_path):
    with pytest.raises(FacerecError, match="not found"):
        annotate(tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacerecError, match="no face crops"):
        annotate(tmp_path / "empty", progress=False)
    with pytest.raises(FacerecError, match="nothing to undo"):
        undo(tmp_path / "empty")


def test_cli_dry_run_and_errors(loose, cache, capsys):
    assert main(["annotate", str(loose), "--dry_run", "--quiet", "--cache_dir", str(cache)]) == 0
    assert "dry run" in capsys.readouterr().out
    assert main(["annotate", str(loose), "--undo"]) == 2
    assert "nothing to undo" in capsys.readouterr().err


def test_cluster_embeddings_splits_off_strangers():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.03, (6, 128)) + rng.normal(0, 0.1, 128)
    b = rng.normal(0, 0.03, (4, 128)) + rng.normal(0, 0.1, 128)
    stranger = rng.normal(0, 0.1, (1, 128)) * 1.0 + 0.2
    labels = cluster_embeddings(np.vstack([b, a, stranger]))
    assert list(labels[:4]) == [1] * 4 and list(labels[4:10]) == [0] * 6  # largest first
    assert labels[10] == 2
    assert len(cluster_embeddings(np.zeros((1, 128)))) == 1
    assert len(cluster_embeddings(np.zeros((0, 128)))) == 0


def test_two_faces_of_one_photo_never_share_a_cluster():
    """A group photo's faces are different people, however alike their embeddings: the one
    further from the rest is split off (the two faces of one celebrity photo clustered together
    when annotate was rerun on _singletons/ with SFace)."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=128)
    close = [base + rng.normal(scale=0.01, size=128) for _ in range(3)]
    assert len(set(cluster_embeddings(np.vstack(close)))) == 1
    labels = cluster_embeddings(np.vstack(close), sources=["p1.jpg", "p2.jpg", "p1.jpg"])
    assert labels[0] != labels[2] and len(set(labels)) == 2
    # the pair alone, as in a rerun on two singletons of one photo
    pair = cluster_embeddings(np.vstack(close[:2]), sources=["group.jpg", "group.jpg"])
    assert pair[0] != pair[1]


def test_a_pair_is_one_person_only_within_the_pair_distance():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=128), rng.normal(size=128)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    mid = (a + b) / np.linalg.norm(a + b)
    pair = np.vstack([a, mid])  # |a - mid| ~ 0.75
    gap = float(np.linalg.norm(a - mid))
    assert len(set(cluster_embeddings(pair, threshold=2.0, member_distance=1.25))) == 1
    assert len(set(cluster_embeddings(pair, threshold=2.0, member_distance=1.25,
                                      pair_distance=gap - 0.01))) == 2
    assert len(set(cluster_embeddings(pair, threshold=2.0, member_distance=1.25,
                                      pair_distance=gap + 0.01))) == 1
