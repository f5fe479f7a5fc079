"""Ray for the photo stages: connecting to a cluster or starting a local one, and the actor pool
of a stage (how many actors, what each reserves, which device and how many threads it uses).

The driver imports ``ray`` through :func:`import_ray`: without the ``facerec[ray]`` extra
``--engine ray`` is one line naming it (:func:`facerec.extras.missing_extra`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from facerec.errors import FacerecError
from facerec.extras import missing_extra

#: logical CPUs a decoding task reserves (decoding is short; actors hold the rest)
DECODE_CPUS = 0.5
#: what Ray Data appends to the message of an error a task raised (its retry policy)
RETRY_NOTE = re.compile(r"\n?Failed to .* after \d+/\d+ attempts \(total backoff.*", re.S)


def import_ray() -> Any:
    """``ray`` with Ray Data, or the one-line error naming ``pip install 'facerec[ray]'``."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is part of the extra
    except ModuleNotFoundError as exc:
        error = missing_extra(exc, "--engine ray")
        if error is None:
            raise
        raise error from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected to the cluster at ``address`` (``auto``, ``HOST:PORT``,
    ``ray://HOST:10001``) or, without one, a local Ray started here with ``num_cpus`` (default:
    this machine's), no dashboard and no usage reporting, shut down when the block ends. A Ray
    already initialised in this process (a test, a notebook) is used as it is and left running."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                   "log_to_driver": False}
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise FacerecError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
    configure_ray_data(ray)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def configure_ray_data(ray: Any) -> None:
    """facerec prints its own progress bar and summary: Ray Data's bars and execution logs
    would only repeat them. An error a stage's task or actor raises travels as itself (inside
    Ray's ``RayTaskError``), not as Ray Data's ``UserCodeException``, whose cause does not
    survive the trip to the driver: :func:`results` can then report it as the local engine
    does."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.raise_original_map_exception = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Pool:
    """The actor pool of a stage: ``size`` actors, each reserving ``num_cpus`` and ``num_gpus``,
    building its model on ``device`` with ``threads`` torch threads; decoding tasks reserve
    ``decode_cpus`` each."""

    size: int
    num_cpus: float
    num_gpus: float
    threads: int
    device: str
    decode_cpus: float = DECODE_CPUS

    def actor_args(self) -> dict[str, Any]:
        """What :meth:`ray.data.Dataset.map_batches` takes for this pool (actors are restarted
        and their batches retried when a worker dies: Ray Data's defaults)."""
        import ray.data

        args: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=self.size),
                                "num_cpus": self.num_cpus}
        if self.num_gpus:
            args["num_gpus"] = self.num_gpus
        return args


def actor_pool(ray: Any, workers: int | None = None, device: str = "auto",
               threads: int | None = None) -> Pool:
    """The pool for the cluster Ray sees: one actor per GPU (``workers`` overrides) when it has
    GPUs and ``device`` allows them, else ``workers`` CPU actors (default: one per 2 CPUs) that
    share the CPUs left to decoding, each with as many torch threads as CPUs it holds."""
    if workers is not None and workers < 1:
        raise FacerecError(f"--ray_workers must be at least 1, not {workers}")
    total = ray.cluster_resources()
    cpus = float(total.get("CPU", 1.0))
    gpus = int(total.get("GPU", 0))
    node_cpus = min((float(n["Resources"].get("CPU", 0)) for n in ray.nodes()
                     if n.get("Alive") and n["Resources"].get("CPU")), default=cpus)
    if gpus and not str(device).startswith("cpu"):
        size = workers or gpus
        return Pool(size, min(1.0, max(0.1, node_cpus - DECODE_CPUS)), 1.0, threads or 1,
                    "cuda" if str(device).startswith("cuda") else "auto")
    if str(device).startswith("cuda"):
        raise FacerecError(f"--device {device}: the Ray cluster has no GPU (use --device auto or cpu)")
    size = workers or max(1, int(cpus) // 2)
    share = max(0.1, min(node_cpus - DECODE_CPUS, (cpus - DECODE_CPUS) / size))
    return Pool(size, round(share, 3), 0.0, threads or max(1, round(share)), "cpu")


def use_threads(threads: int) -> None:
    """Torch's intra-op threads in this worker process."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def results(ds: Any) -> Iterator[dict]:
    """The output batches of a dataset as they come (numpy format); an error a task or actor
    raised comes out as itself when it is a :class:`FacerecError` or an ``OSError`` (see
    :func:`root_cause`), else as Ray raised it (with its worker's traceback)."""
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as exc:  # noqa: BLE001 - re-raised
        cause = root_cause(exc)
        if cause is not exc and isinstance(cause, (FacerecError, OSError)):
            raise without_retry_note(cause) from None
        raise


def root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, under Ray's wrappers (``RayTaskError`` and
    its ``cause``, chained ``__cause__``): a :class:`FacerecError` or an ``OSError`` there (a
    bucket refusing a write, a full disk) is then reported as the local engine reports it."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def without_retry_note(exc: BaseException) -> BaseException:
    """``exc`` without the retry advice Ray Data appends to its message (it names Ray's
    ``DataContext`` settings, not anything a facerec user can change)."""
    exc.args = tuple(RETRY_NOTE.sub("", a) if isinstance(a, str) else a for a in exc.args
                     if not (isinstance(a, str) and RETRY_NOTE.fullmatch(a)))
    return exc
