"""The thread policy (issue 18): the networks use the CPUs this process may use, less those
other work keeps busy; --threads / FACEREC_THREADS / OMP_NUM_THREADS override it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from facerec import threads
from facerec.cli import main
from facerec.errors import InvalidInputError


@pytest.fixture(autouse=True)
def _no_thread_env(monkeypatch):
    for var in ("FACEREC_THREADS", *threads.POOL_VARS):
        monkeypatch.delenv(var, raising=False)


def test_an_explicit_choice_wins_in_order(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads().threads == 3
    assert threads.choose_threads().source == "OMP_NUM_THREADS"
    monkeypatch.setenv("FACEREC_THREADS", "2")
    assert (threads.choose_threads().threads, threads.choose_threads().source) == (2, "FACEREC_THREADS")
    plan = threads.choose_threads("5")
    assert (plan.threads, plan.source) == (5, "--threads") and "--threads" in plan.describe()
    monkeypatch.setenv("FACEREC_THREADS", "auto")
    assert threads.choose_threads().source == "OMP_NUM_THREADS"


@pytest.mark.parametrize("bad", ["x", "-1", "1.5"])
def test_a_bad_thread_count_is_one_clear_error(bad):
    with pytest.raises(InvalidInputError, match="--threads must be"):
        threads.choose_threads(bad)


def test_the_policy_leaves_the_busy_cpus_to_their_work(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 1)
    plan = threads.choose_threads()
    assert (plan.threads, plan.cpus, plan.busy, plan.source) == (3, 4, 1, "policy")
    assert plan.describe() == "3 threads (4 CPUs, 1 busy with other work)"
    monkeypatch.setattr(threads, "busy_cpus", lambda: 9)
    assert threads.choose_threads().threads == 1  # never none
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0)
    assert threads.choose_threads().threads == 4


def test_busy_loops_in_other_processes_are_seen():
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        assert threads.busy_cpus() >= 1
        assert threads.choose_threads().threads < threads.usable_cpus() or threads.usable_cpus() == 1
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert threads.usable_cpus() >= 1


@pytest.mark.parametrize("torch_first", [True, False])
def test_the_plan_reaches_torch_loaded_before_or_after(torch_first):
    code = ("import sys\n"
            + ("import torch\n" if torch_first else "")
            + "from facerec.threads import apply_thread_policy\n"
              "apply_thread_policy('1')\n"
              "import torch\n"
              "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in __import__("os").environ.items()
                              if k not in threads.POOL_VARS})
    assert out.stdout.strip() == "1"


def test_the_commands_that_run_networks_take_threads(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--checkpoint_path", str(tmp_path / "c.ckpt"),
                 "--threads", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "facerec predict: error: --threads must be a number of threads, or auto (got 'lots')"
