"""How many CPU threads the networks use: facerec's thread policy (docs/speed.md).

PyTorch (and OpenCV, and the BLAS under numpy) start one thread per core. That is right on an
idle machine and badly wrong on a shared one: an intra-op parallel region ends when its slowest
thread does, so when another process keeps one of two cores busy, every layer waits for the
thread that shares a core with it (measured: a folder predict at 2 threads ran at half the speed
of 1 thread while a busy loop ran beside it). So facerec counts the CPUs it may use
(``os.sched_getaffinity``: a container's or ``taskset``'s limit, not the machine's), subtracts
the ones other work keeps busy right now (runnable threads in ``/proc/loadavg``, sampled a few
times; the least of them, so that a passing blip does not count) and uses the rest, at least one.

``--threads N`` or ``FACEREC_THREADS=N`` overrides the choice (``0`` or ``auto``: the policy), and
so does ``OMP_NUM_THREADS`` when neither is given (a user who set it meant it). The decision is
made once, at the start of a command: :func:`apply_thread_policy`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

__all__ = ["ThreadPlan", "apply_thread_policy", "busy_cpus", "choose_threads", "usable_cpus"]

ENV_VAR = "FACEREC_THREADS"
#: the variables the native thread pools read when they start (set before torch/cv2 load)
POOL_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadPlan:
    threads: int      # intra-op threads of the networks (torch, OpenCV)
    cpus: int         # CPUs this process may use
    busy: int         # of them, kept busy by other work when the plan was made
    source: str       # "--threads", "FACEREC_THREADS" or "policy"

    def describe(self) -> str:
        if self.source != "policy":
            return f"{self.threads} threads ({self.source})"
        return f"{self.threads} threads ({self.cpus} CPUs, {self.busy} busy with other work)"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cpus(samples: int = 5, gap: float = 0.002) -> int:
    """Threads of other processes that are running or waiting to run right now: the least of
    ``samples`` reads of ``/proc/loadavg``'s runnable count, less this process's own (0 where
    there is no ``/proc``)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        counts.append(running)
        if i + 1 < samples:
            time.sleep(gap)
    return max(0, min(counts) - _own_running())


def _own_running() -> int:
    """This process's threads counted as runnable (its main thread: the one reading)."""
    return 1


def choose_threads(requested: int | str | None = None) -> ThreadPlan:
    """The plan for this process: ``requested`` (``--threads``), else ``$FACEREC_THREADS``, else
    ``$OMP_NUM_THREADS``, else the free CPUs (at least one)."""
    cpus = usable_cpus()
    for source, value in (("--threads", requested), (ENV_VAR, os.environ.get(ENV_VAR)),
                          ("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"))):
        if value in (None, "", 0, "0", "auto"):
            continue
        try:
            threads = int(value)
        except (TypeError, ValueError):
            from facerec.errors import InvalidInputError

            raise InvalidInputError(f"{source} must be a number of threads, or auto (got "
                                    f"{str(value)[:40]!r})") from None
        if threads < 1:
            from facerec.errors import InvalidInputError

            raise InvalidInputError(f"{source} must be at least 1 (got {threads})")
        return ThreadPlan(threads, cpus, 0, source)
    busy = min(busy_cpus(), cpus - 1)
    return ThreadPlan(max(1, cpus - busy), cpus, busy, "policy")


def apply_thread_policy(requested: int | str | None = None) -> ThreadPlan:
    """Choose (:func:`choose_threads`) and apply: the pools' variables for libraries not loaded
    yet, ``torch.set_num_threads`` and ``cv2.setNumThreads`` for those already loaded."""
    plan = choose_threads(requested)
    for var in POOL_VARS:
        os.environ[var] = str(plan.threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(plan.threads)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(plan.threads)
    return plan
