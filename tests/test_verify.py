"""facerec verify: 1:1 on real lfw-dev pairs, 1:N with a checkpoint, and the threshold rule."""

from __future__ import annotations

import json
from pathlib import Path

import _checkpoints
import _facecrops
import numpy as np
import pytest

from facerec.cli import main
from facerec.defaults import DEFAULT_BACKBONE
from facerec.inference.verify import default_pair_threshold, pair_rates, pair_threshold


@pytest.fixture(autouse=True)
def _cache(monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))


@pytest.fixture(scope="module")
def lfw(data_dir) -> Path:
    root = data_dir / "lfw-dev"
    if not root.is_dir():
        pytest.skip("lfw-dev missing")
    return root


def _photo(lfw: Path, person: str, k: int) -> str:
    return str(sorted((lfw / person).glob("*.jpg"))[k])


PEOPLE = ("Adrien_Brody", "Abdullah_Gul", "Andy_Roddick")


def test_verify_real_pairs(lfw, capsys):
    """Same-person pairs (two photos of one person) and different-person pairs, at the default
    threshold, through the CLI's JSON."""
    results = []
    for i, person in enumerate(PEOPLE):
        same = [_photo(lfw, person, 0), _photo(lfw, person, 1)]
        other = [_photo(lfw, person, 2), _photo(lfw, PEOPLE[(i + 1) % len(PEOPLE)], 3)]
        for pair, truth in ((same, True), (other, False)):
            assert main(["verify", *pair, "--pick", "center", "--json"]) == 0
            r = json.loads(capsys.readouterr().out)
            # the default model's threshold (facerec.defaults: sface)
            assert r["threshold"] == pytest.approx(default_pair_threshold(DEFAULT_BACKBONE))
            assert r["metric"] == "cosine distance" and 0 <= r["distance"] <= 2
            assert r["same"] == (r["distance"] <= r["threshold"])
            results.append((r["same"], truth, r["distance"]))
    correct = sum(s == t for s, t, _ in results)
    assert correct == len(results), results
    # genuine pairs are closer than impostor pairs on average
    gen = np.mean([d for _, t, d in results if t])
    imp = np.mean([d for _, t, d in results if not t])
    assert gen < imp


def test_verify_text_and_errors(lfw, tmp_path, capsys):
    a, b = _photo(lfw, PEOPLE[0], 0), _photo(lfw, PEOPLE[0], 1)
    assert main(["verify", a, b, "--pick", "center"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Same person: yes (distance ")
    for argv in (["verify", a], ["verify", a, str(tmp_path / "missing.jpg")],
                 ["verify", a, b, b]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error:" in err
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (640, 480), (200, 200, 200)).save(blank)
    assert main(["verify", a, str(blank)]) == 2
    assert "no face found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ckpt(celebrities) -> Path:
    """The dlib test checkpoint, trained here (outside capsys: training prints)."""
    import os

    os.environ.setdefault("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))
    return _checkpoints.checkpoint("dlib", celebrities)


def test_verify_one_to_n_with_checkpoint(ckpt, celebrities, capsys):
    crops = _checkpoints.held_out_crops(celebrities)
    for crop, person in crops:
        assert main(["verify", str(crop), "--checkpoint_path", str(ckpt), "--json"]) == 0
        r = json.loads(capsys.readouterr().out)
        assert [m["rank"] for m in r["matches"]] == [1, 2, 3]
        dists = [m["distance"] for m in r["matches"]]
        assert dists == sorted(dists)
        assert r["matches"][0]["name"] == person and r["best"] == person
    # 1:1 with the checkpoint: its own pair calibration
    (a, pa), (b, pb) = crops[0], crops[1]
    assert main(["verify", str(a), str(b), "--checkpoint_path", str(ckpt), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["threshold_source"].startswith("checkpoint") and r["same"] is False


def test_pair_threshold_accepts_at_most_the_target_share_of_impostors():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    y = np.repeat(np.arange(30), 6)
    z = centres[y] + 0.6 * rng.normal(size=(len(y), 16))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    for far in (0.01, 0.05):
        t = pair_threshold(z, y, far)
        rates = pair_rates(z, y, t)
        assert rates["far"] <= far
        # and it is the largest such threshold: a bit more lets too many impostors in
        assert pair_rates(z, y, t + 0.02)["far"] > rates["far"]
    assert pair_threshold(z[y == 0], y[y == 0]) is None  # one person: no impostor pairs


def test_verify_pairs_file(lfw, data_dir, tmp_path, capsys, monkeypatch):
    """``--pairs``: a CSV of labelled pairs (relative paths, a header), each photo embedded once,
    every pair's distance and decision, the summary with accuracy, 10-fold accuracy and TAR at
    FAR 1%; a photo without a face fails its pair only (exit 3)."""
    import shutil

    from facerec.inference import verify as verify_mod

    folder = tmp_path / "pairs"
    folder.mkdir()
    rows = ["a,b,same"]
    for i, person in enumerate(PEOPLE):
        for k in range(3):
            shutil.copy(_photo(lfw, person, k), folder / f"{person}_{k}.jpg")
        other = PEOPLE[(i + 1) % len(PEOPLE)]
        rows += [f"{person}_0.jpg,{person}_1.jpg,1", f"{person}_1.jpg,{person}_2.jpg,yes",
                 f"{person}_0.jpg,{other}_2.jpg,0", f"{person}_2.jpg,{other}_1.jpg,different"]
    no_face = sorted((data_dir / "edge-cases" / "no_face").glob("*.jpg"))[0]
    shutil.copy(no_face, folder / "dog.jpg")
    rows.append(f"dog.jpg,{PEOPLE[0]}_0.jpg,0")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")

    calls = []
    real = verify_mod.Verifier.features_of

    def spy(self, paths, *args, **kwargs):
        calls.append(list(paths))
        return real(self, paths, *args, **kwargs)

    monkeypatch.setattr(verify_mod.Verifier, "features_of", spy)
    assert main(["verify", "--pairs", str(folder / "pairs.csv"), "--pick", "center",
                 "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 3 * len(PEOPLE) + 1
    pairs, summary = report["pairs"], report["summary"]
    assert len(pairs) == 4 * len(PEOPLE) + 1 and summary["failed"] == 1
    assert pairs[-1]["distance"] is None and pairs[-1]["same"] is None and "dog.jpg" in pairs[-1]["error"]
    for p in pairs[:-1]:
        assert set(p) == {"a", "b", "distance", "same", "label"}
        assert p["same"] == (p["distance"] <= summary["threshold"])
        assert p["same"] == p["label"], p  # dlib_face tells these people apart
    assert summary["accuracy"] == 1.0 and summary["tar_at_far_1pct"] == 1.0
    assert 0.9 <= summary["tenfold_accuracy"] <= 1.0
    assert summary["genuine_pairs"] == 2 * len(PEOPLE) and summary["impostor_pairs"] == 2 * len(PEOPLE)

    # unlabelled TSV, absolute paths, text output: one line per pair and the summary
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(f"{folder / (PEOPLE[0] + '_0.jpg')}\t{folder / (PEOPLE[0] + '_1.jpg')}\n")
    assert main(["verify", "--pairs", str(tsv), "--pick", "center"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(out[0].split("\t")[-1]) and "\tsame\tdistance " in out[0]
    assert out[1].startswith("1 of 1 pair(s) compared at threshold")

    bad = tmp_path / "bad.csv"
    bad.write_text("only_one_column.jpg\n")
    assert main(["verify", "--pairs", str(bad)]) == 2
    assert "is not 'path_a,path_b[,same]'" in capsys.readouterr().err
