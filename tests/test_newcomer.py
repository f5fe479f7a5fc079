"""A newcomer's first hour (README only): what facerec tells them to type next works as printed,
the tutorial scripts explain themselves when run with the wrong Python, and ``make test`` does not
install a browser unasked."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facerec import hints

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("process_raw_data.py", "create_training_dataset.py", "train.py", "predict.py")


# ------------------------------------------------------------------------------ the next command
def _fake_install(root: Path) -> Path:
    """A virtualenv-like folder: bin/python (this interpreter) and bin/facerec."""
    bindir = root / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(sys.executable)
    script = bindir / "facerec"
    script.write_text("#!/bin/sh\necho facerec-here \"$@\"\n")
    script.chmod(0o755)
    return bindir


def test_next_command_is_the_virtualenv_script_when_facerec_is_not_on_path(tmp_path, monkeypatch):
    bindir = _fake_install(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # as after `make run`: .venv/bin is not on it
    assert hints.facerec_command() == ".venv/bin/facerec"
    line = hints.command_line("predict", "photos/a b.jpg", "--checkpoint_path",
                              str(tmp_path / "work" / "x.ckpt"))
    assert line == ".venv/bin/facerec predict 'photos/a b.jpg' --checkpoint_path work/x.ckpt"
    # it works as printed, from the project folder
    out = subprocess.run(line, shell=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.split() == ["facerec-here", "predict", "photos/a", "b.jpg", "--checkpoint_path",
                           "work/x.ckpt"]


def test_next_command_is_plain_facerec_when_it_is_this_install_on_path(tmp_path, monkeypatch):
    bindir = _fake_install(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")  # an activated virtualenv
    assert hints.facerec_command() == "facerec"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert hints.facerec_command() == str(bindir / "facerec")  # outside the project: absolute


# --------------------------------------------------------------------------- the tutorial scripts
@pytest.mark.parametrize("script", SCRIPTS)
def test_tutorial_scripts_with_a_python_without_facerecs_dependencies(script, tmp_path):
    """`python process_raw_data.py` with the system Python: one line that says how to run it,
    exit status 2, no traceback. -S drops site-packages: torch and the rest are missing."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / script, project / script)
    (project / "src").symlink_to(REPO / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([sys.executable, "-S", "-I", script, "--max_epochs", "1"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err[0].startswith(f"{script}: error: facerec's dependencies are not installed")
    assert f"make venv" in err[0] and f".venv/bin/python {script}" in err[0]
    # with the project's virtualenv made, it says to use it
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "python").symlink_to(sys.executable)
    proc = subprocess.run([sys.executable, "-S", "-I", script], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"run it with the project's virtualenv: .venv/bin/python {script}" in proc.stderr
    assert ". .venv/bin/activate" in proc.stderr


def test_tutorial_detect_script_prints_a_next_step_that_works(celebrities, tmp_path):
    photos = tmp_path / "raw"
    photos.mkdir()
    shutil.copy(sorted((celebrities / "train" / "madonna").glob("*.jpg"))[0], photos)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, str(REPO / "process_raw_data.py"), "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    command = last.split("first pass: ", 1)[1]
    assert command.endswith(" annotate processed")
    program = shlex.split(command)[0]
    assert program == "facerec" or Path(tmp_path, program).is_file() or Path(program).is_file()


# ---------------------------------------------------------------------------- make test's browser
def _make_browser(tmp_path: Path, **env: str) -> tuple[str, list[str]]:
    """`make browser` where chromedriver is missing and we are "root" with a fake apt-get that
    records its calls: (what make printed, apt-get's calls)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    log = tmp_path / "apt.log"
    (fake / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    (fake / "id").write_text("#!/bin/sh\necho 0\n")
    for tool in ("apt-get", "id"):
        (fake / tool).chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "BROWSER", "MAKEFLAGS")}
    proc = subprocess.run([make, "-s", "-C", str(REPO), "browser"], capture_output=True,
                          text=True, env={**clean, "PATH": f"{fake}:/nonexistent", **env},
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.stdout + proc.stderr, calls


def test_make_test_installs_no_browser_unasked(tmp_path):
    said, calls = _make_browser(tmp_path)
    assert calls == []
    assert len(said.strip().splitlines()) == 1 and "make test BROWSER=1" in said


@pytest.mark.parametrize("env", [{"BROWSER": "1"}, {"CI": "true"}])
def test_make_test_installs_the_browser_in_ci_or_when_asked(tmp_path, env):
    said, calls = _make_browser(tmp_path, **env)
    assert any("install" in c and "chromium" in c and "chromium-driver" in c for c in calls)
    assert said.strip().splitlines()[0].startswith("make: installing Debian's chromium")


def test_ci_runs_make_test_with_the_browser():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test BROWSER=1" in ci
