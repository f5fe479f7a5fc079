"""facerec verify: 1:1 on real lfw-dev pairs, 1:N with a checkpoint, and the threshold rule."""

from __future__ import annotations

import json
from pathlib import Path

import _checkpoints
import _facecrops
import numpy as np
import pytest

from facerec.cli import main
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
            assert r["threshold"] == pytest.approx(default_pair_threshold("dlib_face"))
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
