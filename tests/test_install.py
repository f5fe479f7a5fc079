"""The core install: ``pip install facerec`` (no extras) in a fresh virtualenv detects, predicts,
verifies and enrolls with a checkpoint trained elsewhere, and a command that needs an extra says
which one in one line.

Slow (it installs torch into a new virtualenv); CI runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import _checkpoints
import _facecrops

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check"]
    # a non-editable install of this checkout, core dependencies only
    proc = subprocess.run([*pip, str(REPO)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str, env_extra: dict | None = None, cwd: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(env_extra or {})
    return subprocess.run([str(venv / "bin" / "facerec"), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


def test_the_core_install_has_no_training_stack(core_venv):
    code = ("import importlib.util, json; print(json.dumps([importlib.util.find_spec(m) is None "
            "for m in ('lightning', 'timm', 'optuna', 'sklearn', 'fastapi', 'av', 'tensorboard', "
            "'ray')]))")
    out = subprocess.run([str(core_venv / "bin" / "python"), "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[true, true, true, true, true, true, true, true]"


def test_the_core_install_predicts_verifies_and_enrolls(core_venv, celebrities, tmp_path):
    ckpt = _checkpoints.checkpoint("dlib", celebrities)
    env = {"FACEREC_CACHE_DIR": str(tmp_path / "cache")}
    # the same answers as this (full) install gives, on photos of a person it knows
    person = _facecrops.PEOPLE[0]
    photos = sorted((celebrities / "train" / person).glob("*.jpg"))[:4]
    here = subprocess.run([sys.executable, "-m", "facerec.cli", "predict", "--checkpoint_path",
                           str(ckpt), "--image_path", *map(str, photos), "--quiet"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env}, cwd=tmp_path)
    assert here.returncode == 0 and f"Predicted class: {person}" in here.stdout, here.stderr
    proc = _run(core_venv, "predict", "--checkpoint_path", str(ckpt), "--image_path",
                *map(str, photos), "--quiet", env_extra=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == here.stdout

    a, b = sorted((celebrities / "train" / person).glob("*.jpg"))[:2]
    # the default model alone (its own 1:1 threshold), then the checkpoint's backbone and calibration
    proc = _run(core_venv, "verify", str(a), str(b), env_extra=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("Same person: ") and "distance" in proc.stdout
    proc = _run(core_venv, "verify", str(a), str(b), "--checkpoint_path", str(ckpt),
                env_extra=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("Same person: yes"), proc.stdout

    copy = tmp_path / "model.ckpt"
    copy.write_bytes(Path(ckpt).read_bytes())
    photos = sorted((celebrities / "train" / "madonna").glob("*.jpg"))[2:4]
    proc = _run(core_venv, "enroll", "--checkpoint_path", str(copy), "--name", "madonna",
                *map(str, photos), env_extra=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Saved checkpoint:" in proc.stdout


def test_a_command_of_an_extra_names_it_in_one_line(core_venv, tmp_path):
    proc = _run(core_venv, "train", "--data_path", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'facerec[train]'" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    # --engine ray without the ray extra: one line, before anything is loaded or written
    photos = tmp_path / "photos"
    photos.mkdir()
    proc = _run(core_venv, "detect", str(photos), "--out", str(tmp_path / "out"), "--engine",
                "ray", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'facerec[ray]'" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
