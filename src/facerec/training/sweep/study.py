"""Running a sweep: the Optuna study and its storage, the trial objective, local workers and
the retry of failed or abandoned trials (:func:`run_sweep`)."""

from __future__ import annotations

import datetime as _dt
import inspect
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from facerec.errors import FacerecError
from facerec.safeio import first_line
from facerec.training.sweep.spec import SweepSpec
from facerec.training.sweep.spec import short_value as _short

DEFAULT_ROOT = "runs"
STORAGE_FILE = "optuna.db"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a sweep (study, folder) name
STUDY_ATTR = "facerec_sweep"  # study user attr holding the sweep's definition
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 60  # a RUNNING trial without a heartbeat for this long is marked FAIL


# ---------------------------------------------------------------------------------- training
def default_train_fn() -> Callable[..., Any]:
    """``facerec.training.train``, looked up once per process."""
    try:
        from facerec.training import train
    except ImportError as exc:  # pragma: no cover - the training stage is missing
        raise FacerecError(f"the training stage is not available ({exc})") from None
    return train


def _direction(metric: str) -> str:
    """Accuracy and F1 are maximized (as ``facerec train`` does), everything else minimized."""
    return "maximize" if metric.endswith(("acc", "f1")) else "minimize"


def _accepts(fn: Callable, names: Sequence[str]) -> tuple[bool, set[str]]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover
        return True, set(names)
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True, set(names)
    return False, {n for n in names if n in params}


def _get(result: Any, name: str) -> Any:
    return result.get(name) if isinstance(result, Mapping) else getattr(result, name, None)


def _number(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def read_result(result: Any, metric: str) -> tuple[str | None, float | None, dict[str, float]]:
    """(best checkpoint, METRIC's value, final metrics) of what the train function returned: a
    :class:`facerec.training.TrainResult` (or any object or mapping with ``best_checkpoint`` and
    ``metrics``, the metrics of the best checkpoint)."""
    ckpt = _get(result, "best_checkpoint")
    metrics: dict[str, float] = {}
    raw = _get(result, "metrics")
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            f = _number(v)
            if f is not None:
                metrics[str(k)] = f
    return (str(ckpt) if ckpt else None), metrics.get(metric), metrics


def make_pruning_callback(trial: Any, metric: str):
    """A Lightning callback: after each validation, report METRIC to the Optuna TRIAL; when the
    pruner says so, stop training (``trainer.should_stop``). ``callback.pruned_epoch`` then tells
    the sweep to mark the trial pruned. (A stand-in for optuna-integration's
    PyTorchLightningPruningCallback, which is a separate package.)"""
    from lightning.pytorch.callbacks import Callback

    class OptunaPruning(Callback):
        def __init__(self) -> None:
            self.trial, self.metric = trial, metric
            self.pruned_epoch: int | None = None
            self.last_value: float | None = None

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
                return  # not after fit (train validates the best checkpoint again)
            value = _number(trainer.callback_metrics.get(self.metric))
            if value is None:
                return
            epoch = int(trainer.current_epoch)
            self.last_value = value
            self.trial.report(value, step=epoch)
            if self.pruned_epoch is None and self.trial.should_prune():
                self.pruned_epoch = epoch
                trainer.should_stop = True

    return OptunaPruning()


# ------------------------------------------------------------------------------------- storage
def default_storage(root: str | os.PathLike, name: str) -> str:
    return f"sqlite:///{(Path(root) / name / STORAGE_FILE).resolve()}"


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def make_storage(url: str, *, heartbeat: tuple[int, int] | None = None):
    """An Optuna RDB storage for URL; SQLite waits up to 60 s for a lock (parallel workers).
    HEARTBEAT: (interval, grace period) in seconds, default (:data:`HEARTBEAT_INTERVAL`,
    :data:`GRACE_PERIOD`): a RUNNING trial whose worker stopped beating is marked FAIL."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    interval, grace = heartbeat or (HEARTBEAT_INTERVAL, GRACE_PERIOD)
    kwargs.update(heartbeat_interval=interval, grace_period=grace)
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except ImportError as exc:
        raise FacerecError(f"cannot open --storage {_redact(url)}: a database driver is missing "
                           f"({exc}); e.g. pip install psycopg2-binary (PostgreSQL) or pymysql") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's errors: bad URL, unreachable server...
        raise FacerecError(f"cannot open --storage {_redact(url)}: {first_line(exc)}") from None


# -------------------------------------------------------------------------------------- running
@dataclass
class _Job:
    """Everything a worker needs (picklable: sent to spawned processes)."""

    name: str
    root: str
    storage_url: str
    spec: SweepSpec
    data_paths: dict[str, str]  # --data_path as given -> local folder
    metric: str
    direction: str
    prune: bool
    seed: int
    train_fn: Callable[..., Any] | None = None
    threads: int | None = None  # torch threads per worker (--parallel)
    gpus: list[str] | None = None  # CUDA devices, round-robin over workers
    heartbeat: tuple[int, int] | None = None  # (interval, grace period), seconds


def _pruner(job: _Job):
    import optuna

    if not job.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def _load_study(job: _Job, storage=None):
    import optuna

    storage = storage if storage is not None else make_storage(job.storage_url, heartbeat=job.heartbeat)
    return optuna.load_study(study_name=job.name, storage=storage,
                             sampler=optuna.samplers.GridSampler(job.spec.search_space(), seed=job.seed),
                             pruner=_pruner(job))


def _next_version(exp_dir: Path) -> int:
    taken = []
    if exp_dir.is_dir():
        for p in exp_dir.iterdir():
            m = re.fullmatch(r"version_(\d+)", p.name)
            if m:
                taken.append(int(m.group(1)))
    return max(taken) + 1 if taken else 0


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


class _Objective:
    def __init__(self, job: _Job, train_fn: Callable[..., Any],
                 on_params: Callable[[], None] | None = None):
        self.job, self.train_fn, self.on_params = job, train_fn, on_params
        self.host = socket.gethostname()

    def __call__(self, trial) -> float:
        import optuna

        job, spec = self.job, self.job.spec
        # a first heartbeat now (Optuna's thread may not have written one yet): a worker killed
        # at any point leaves a trial that the next run can tell is stale
        record = getattr(trial.storage, "record_heartbeat", None)
        if record is not None and getattr(trial.storage, "heartbeat_interval", None):
            record(trial._trial_id)
        # who runs it: a later invocation on this host knows at once when this process is gone
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", os.getpid())
        params = {k: trial.suggest_categorical(k, v) for k, v in spec.grid.items()}
        if self.on_params is not None:
            self.on_params()  # the grid point is taken: other local workers may look for theirs
        k = spec.index_of(params)
        exp = f"{job.name}-exp{k}"
        sweep_dir = Path(job.root) / job.name
        version = _next_version(sweep_dir / exp)
        run_dir = sweep_dir / exp / f"version_{version}"
        for key, value in (("exp", exp), ("run_dir", str(run_dir))):
            trial.set_user_attr(key, value)
        kwargs = {**spec.fixed, **params, **spec.environment}
        if kwargs.get("data_path") is not None:
            kwargs["data_path"] = job.data_paths.get(str(kwargs["data_path"]), kwargs["data_path"])
        callback = make_pruning_callback(trial, job.metric) if job.prune else None
        # train writes <runs_dir>/<name>/version_N: N = 0, or the next free one on a retry
        kwargs.update(name=exp, runs_dir=str(sweep_dir),
                      callbacks=[callback] if callback is not None else [])
        shown = " ".join(f"{spec.options.get(p, p)}={_short(v)}" for p, v in params.items())
        print(f"\n=== {job.name}: trial {trial.number}, {exp}" + (f" ({shown})" if shown else "")
              + " ===", flush=True)
        has_var_kw, accepted = _accepts(self.train_fn, list(kwargs))
        if not has_var_kw:
            kwargs = {n: v for n, v in kwargs.items() if n in accepted}
        start = time.monotonic()
        try:
            result = self.train_fn(**kwargs)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")
            raise
        except BaseException as exc:
            trial.set_user_attr("error", _one_line(exc))
            trial.set_user_attr("seconds", round(time.monotonic() - start, 1))
            raise
        trial.set_user_attr("seconds", round(time.monotonic() - start, 1))
        ckpt, value, metrics = read_result(result, job.metric)
        actual_dir = _get(result, "run_dir")
        if actual_dir and str(actual_dir) != str(run_dir):
            trial.set_user_attr("run_dir", str(actual_dir))
        if ckpt:
            trial.set_user_attr("checkpoint", ckpt)
        if metrics:
            trial.set_user_attr("metrics", metrics)
        pruned = getattr(callback, "pruned_epoch", None)
        if pruned is not None:
            trial.set_user_attr("pruned_epoch", pruned)
            if value is not None:
                trial.set_user_attr("value", value)
            raise optuna.TrialPruned(f"{job.metric} {getattr(callback, 'last_value', None)} at "
                                     f"epoch {pruned}: worse than the median of earlier trials")
        if value is None:
            msg = (f"training returned no {job.metric} (metrics: {', '.join(metrics) or 'none'}): "
                   "a sweep compares validation metrics, so the dataset needs a val/ split")
            trial.set_user_attr("error", msg)
            raise FacerecError(msg)
        return value


def _grid_status(study, spec: SweepSpec) -> tuple[set[int], set[int], int, int]:
    """(finished grid indices, running grid indices, running trials with no params yet, waiting)."""
    from optuna.trial import TrialState

    done: set[int] = set()
    running: set[int] = set()
    unknown = waiting = 0
    for t in study.get_trials(deepcopy=False):
        idx = spec.index_of(t.params) if (t.params or not spec.grid) else None
        if t.state == TrialState.WAITING:
            waiting += 1
        elif t.state == TrialState.RUNNING:
            if idx is None:
                unknown += 1
            else:
                running.add(idx)
        elif t.state.is_finished() and idx is not None:
            done.add(idx)
    return done, running, unknown, waiting


def _has_work(study, spec: SweepSpec) -> bool:
    done, running, unknown, waiting = _grid_status(study, spec)
    return waiting > 0 or spec.size - len(done | running) - unknown > 0


class _Shared:
    """What the workers of one invocation share: a budget of at most N trials started, all
    workers together, and a lock held from "is there a grid point left?" until the new trial has
    its parameters, so that two local workers never take the same grid point. (Workers on other
    machines can still, rarely, both take the last one: Optuna's GridSampler has that race.)"""

    def __init__(self, n: int | None, ctx=None):
        self._value = ctx.Value("i", -1 if n is None else n) if ctx is not None else None
        self._lock = ctx.Lock() if ctx is not None else None
        self._n = -1 if n is None else n
        self._held = False

    def take(self) -> bool:
        if self._value is None:
            if self._n == 0:
                return False
            self._n -= 1 if self._n > 0 else 0
            return True
        with self._value.get_lock():
            if self._value.value == 0:
                return False
            if self._value.value > 0:
                self._value.value -= 1
            return True

    def claim(self) -> None:
        # best effort: a worker killed while holding the lock must not block the others forever
        if self._lock is not None and not self._held:
            self._held = self._lock.acquire(timeout=120)

    def claimed(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()


def _worker(job: _Job, shared: _Shared, index: int = 0) -> None:
    import warnings

    import optuna

    if job.threads:
        os.environ["OMP_NUM_THREADS"] = str(job.threads)
        os.environ["MKL_NUM_THREADS"] = str(job.threads)
    if job.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = job.gpus[index % len(job.gpus)]
    if job.threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(job.threads)
    train_fn = job.train_fn or default_train_fn()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _load_study(job)
    objective = _Objective(job, train_fn, on_params=shared.claimed)
    while True:
        shared.claim()
        try:
            if not (_has_work(study, job.spec) and shared.take()):
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        finally:
            shared.claimed()


def _worker_main(job: _Job, shared: _Shared, index: int) -> None:  # spawned process
    try:
        _worker(job, shared, index)
    except KeyboardInterrupt:
        sys.exit(130)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's process), or cannot tell: assume alive
    return True


def _fail_dead_local_trials(study) -> int:
    """Mark FAIL the RUNNING trials of workers on this host whose process is gone (killed, out
    of memory). Deterministic: no waiting for the heartbeat's grace period, which still covers
    workers on other machines. A reused pid only delays this to the heartbeat."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or pid == os.getpid():
            continue
        if _pid_alive(pid):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error",
                                               f"worker (pid {pid}) died while training")
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed += 1
        except RuntimeError:  # finished meanwhile (another invocation got there first)
            continue
    return failed


def _retry_failed(study, spec: SweepSpec) -> int:
    """Queue again the grid points whose trials all failed (or were interrupted)."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by_index: dict[int, list] = {}
    for t in trials:
        idx = spec.index_of(t.params) if (t.params or not spec.grid) else None
        if idx is not None:
            by_index.setdefault(idx, []).append(t)
    queued = 0
    for idx, ts in sorted(by_index.items()):
        if any(t.state != TrialState.FAIL for t in ts):
            continue
        last = max(ts, key=lambda t: t.number)
        attrs = {k: v for k, v in last.system_attrs.items() if k in ("grid_id", "search_space")}
        attrs["fixed_params"] = dict(last.params)
        attrs["retry_of"] = last.number
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=attrs))
        queued += 1
    return queued


def _visible_gpus() -> list[str] | None:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [x.strip() for x in env.split(",") if x.strip() and x.strip() != "-1"]
        return ids or None
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch / no driver
        return None
    return [str(i) for i in range(n)] or None


@dataclass(frozen=True)
class TrialRow:
    """One trial, as the final table shows it."""

    number: int
    exp: str | None
    params: dict[str, Any]
    value: float | None
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    checkpoint: str | None
    error: str | None
    seconds: float | None
    host: str | None


@dataclass
class SweepResult:
    name: str
    root: Path
    storage: str  # the storage URL, password hidden
    spec: SweepSpec
    metric: str
    direction: str
    trials: list[TrialRow]  # sorted: completed best first, then pruned, then the rest
    seconds: float = 0.0
    retried: int = 0
    ran: int = 0  # trials started by this invocation (counted from the study)

    @property
    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        return done[0] if done else None

    @property
    def complete(self) -> int:
        return len({t.exp for t in self.trials if t.state in ("COMPLETE", "PRUNED")})


def _rows(study, spec: SweepSpec, direction: str) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        value = t.value if t.value is not None else _number(ua.get("value"))
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        rows.append(TrialRow(number=t.number, exp=ua.get("exp"), params=dict(t.params), value=value,
                             state=t.state.name, checkpoint=ua.get("checkpoint"), error=ua.get("error"),
                             seconds=ua.get("seconds"), host=ua.get("host")))
    sign = -1.0 if direction == "maximize" else 1.0
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}

    def key(r: TrialRow):
        return (order.get(r.state, 5), r.value is None,
                sign * r.value if r.value is not None else 0.0, r.number)

    return sorted(rows, key=key)


def run_sweep(spec: SweepSpec, *, name: str | None = None, root: str | os.PathLike = DEFAULT_ROOT,
              storage: str | None = None, parallel: int = 1, max_trials: int | None = None,
              prune: bool = True, metric: str | None = None, direction: str | None = None,
              train_fn: Callable[..., Any] | None = None, log: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or resume, or join) the sweep SPEC; returns every trial of the study, sorted.

    NAME: the sweep's name, study and folder (default: ``sweep-<hash of SPEC>``). STORAGE: an
    SQLAlchemy URL shared by workers (default ``sqlite:///ROOT/NAME/optuna.db``). PARALLEL: worker
    processes on this machine. MAX_TRIALS: at most this many trials started by this call.
    TRAIN_FN: the training function (default ``facerec.training.train``), called with keyword
    arguments (TrainConfig fields: the train flags, plus ``name``, ``runs_dir`` and
    ``callbacks``) and returning an object with ``best_checkpoint`` and ``metrics``. METRIC: what
    the trials are compared on (default: the ``monitor`` train flag, else ``val_loss``).
    """
    import warnings

    import optuna

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if parallel < 1:
        raise FacerecError(f"--parallel must be at least 1, not {parallel}")
    if max_trials is not None and max_trials < 0:
        raise FacerecError(f"--max_trials must be 0 or more, not {max_trials}")
    if name is not None and not _NAME_RE.fullmatch(name):
        raise FacerecError(f"invalid sweep name {name!r}: letters, digits, '.', '_', '-' "
                           "(starting with a letter or digit)")
    metric = metric or spec.fixed.get("monitor") or "val_loss"
    direction = direction or _direction(metric)
    if direction not in ("minimize", "maximize"):
        raise FacerecError(f"direction must be minimize or maximize, not {direction!r}")
    spec = replace(spec, environment=_one_device(spec.environment, parallel))
    if train_fn is None:
        _check_train_options(spec)

    name = name or spec.default_name()
    root_path = Path(root)
    sweep_dir = root_path / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(root_path, name)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    heartbeat = (HEARTBEAT_INTERVAL, GRACE_PERIOD)
    rdb = make_storage(url, heartbeat=heartbeat)

    study, spec, metric, direction = _open_study(name, rdb, spec, metric, direction, log,
                                                 check=train_fn is None)
    data_paths = _resolve_data(spec, check=train_fn is None)

    # resume: stale RUNNING trials (dead workers) -> FAIL; failed grid points queued again
    _fail_dead_local_trials(study)
    optuna.storages.fail_stale_trials(study)
    retried = _retry_failed(study, spec) if (max_trials is None or max_trials > 0) else 0
    before = len(study.get_trials(deepcopy=False)) - retried

    seed = int(spec.fixed.get("seed") or 0) if isinstance(spec.fixed.get("seed"), int) else 0
    job = _Job(name=name, root=str(root_path), storage_url=url, spec=spec, data_paths=data_paths,
               metric=metric, direction=direction, prune=prune, seed=seed, train_fn=train_fn,
               heartbeat=heartbeat)
    log(f"facerec sweep: {name}: {spec.describe()}, {metric} ({direction}), "
        f"storage {_redact(url)}" + (f", {parallel} workers" if parallel > 1 else ""))
    if retried:
        log(f"facerec sweep: retrying {retried} failed or interrupted experiment"
            f"{'s' * (retried != 1)}")

    start = time.monotonic()
    if parallel == 1:
        _worker(job, _Shared(max_trials))
    else:
        _run_workers(job, parallel, max_trials, log)
    seconds = time.monotonic() - start

    study = optuna.load_study(study_name=name, storage=rdb)
    rows = _rows(study, spec, direction)
    ran = len(study.get_trials(deepcopy=False)) - before
    return SweepResult(name=name, root=root_path, storage=_redact(url), spec=spec, metric=metric,
                       direction=direction, trials=rows, seconds=seconds, retried=retried, ran=ran)


def _open_study(name: str, rdb, spec: SweepSpec, metric: str, direction: str,
                log: Callable[[str], None], check: bool):
    """The study NAME, created with SPEC, or SPEC checked against the one it holds (a worker
    without sweep flags adopts it): (study, spec, metric, direction)."""
    import optuna

    study = optuna.create_study(study_name=name, storage=rdb, direction=direction, load_if_exists=True)
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        study.set_user_attr(STUDY_ATTR, {**spec.identity(), "metric": metric, "direction": direction,
                                         "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                                             timespec="seconds")})
    else:
        stored_spec = SweepSpec.from_identity(stored, environment=spec.environment, options=spec.options)
        if stored_spec.identity() != spec.identity():
            if spec.customized:
                raise FacerecError(_mismatch(name, stored_spec, spec))
            log(f"facerec sweep: joining sweep {name} as stored in the study")
            spec = stored_spec
            if check:
                _check_train_options(spec)
        metric = stored.get("metric", metric)
        direction = stored.get("direction", direction)
    if study.direction.name.lower() != direction:
        raise FacerecError(f"study {name} optimizes in the direction {study.direction.name.lower()}, "
                           f"not {direction}")
    return study, spec, metric, direction


def _resolve_data(spec: SweepSpec, check: bool) -> dict[str, str]:
    """--data_path value -> local folder: a datastore://NAME/VERSION is pulled and verified once,
    before any trial."""
    from facerec.datastore import resolve_data_path

    data_paths: dict[str, str] = {}
    for raw in spec.grid.get("data_path") or [spec.fixed.get("data_path")]:
        if raw is None:
            continue
        data_paths[str(raw)] = str(resolve_data_path(str(raw)))
        if check and not Path(data_paths[str(raw)]).is_dir():
            raise FacerecError(f"dataset folder not found: {data_paths[str(raw)]} (make one with "
                               "`facerec split`, or pass --data_path)")
    return data_paths


def _run_workers(job: _Job, parallel: int, max_trials: int | None,
                 log: Callable[[str], None]) -> None:
    """PARALLEL spawned worker processes on this machine (one GPU each when there are GPUs)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    env = job.spec.environment
    if (str(env.get("accelerator") or "auto") != "cpu"
            and str(env.get("devices") or "auto") in ("auto", "1")):
        job.gpus = _visible_gpus()
    if not job.gpus:
        job.threads = max(1, (os.cpu_count() or 1) // parallel)
    shared = _Shared(max_trials, ctx)
    procs = [ctx.Process(target=_worker_main, args=(job, shared, i), name=f"facerec-sweep-{i}")
             for i in range(parallel)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        log(f"facerec sweep: {len(bad)} worker{'s' * (len(bad) != 1)} exited with status "
            f"{', '.join(map(str, bad))}")


def _one_device(env: Mapping[str, Any], parallel: int) -> dict[str, Any]:
    """Each trial trains on one device of one machine: Lightning's DDP would start the whole
    sweep again in every process. ``--devices auto`` becomes 1; use ``--parallel K`` (one GPU each)
    or workers on several machines to go faster."""
    env = dict(env)
    nodes = env.get("num_nodes")
    if nodes not in (None, 1):
        raise FacerecError("a sweep trains each experiment on one machine: drop --num_nodes and run "
                           "a worker on each machine with a shared --storage instead")
    gpus = env.get("gpus")
    if gpus is not None and int(gpus) > 1:
        raise FacerecError(f"--gpus {gpus}: a sweep trains each experiment on one device; use "
                           f"--parallel {gpus} to train {gpus} experiments at once, one GPU each")
    devices = str(env.get("devices", "auto")).strip()
    if devices in ("auto", "-1", ""):
        if "devices" in env or gpus is None:
            env["devices"] = 1
    else:
        many = "," in devices.strip(",") or (devices.isdigit() and int(devices) > 1)
        if many:
            raise FacerecError(f"--devices {devices}: a sweep trains each experiment on one device; "
                               "use --parallel K to train K experiments at once, one GPU each")
    if parallel > 1:
        env["progress"] = False  # K progress bars on one terminal are unreadable
    return env


def _check_train_options(spec: SweepSpec) -> None:
    """Before anything runs: every flag is a train option (a stored sweep may predate one), and
    every backbone exists."""
    from facerec.training.config import cli_fields

    known = {f.name for f in cli_fields()}
    unknown = sorted({*spec.fixed, *spec.grid, *spec.environment} - known)
    if unknown:
        raise FacerecError("facerec sweep cannot pass these flags to training: "
                           + ", ".join(spec.options.get(n, n) for n in unknown))
    # a typo in one backbone of a list would otherwise only show once its trial runs
    from facerec.recognition.backbones import backbone_for

    for backbone in spec.grid.get("backbone") or [spec.fixed.get("backbone")]:
        if backbone is not None:
            backbone_for(backbone)


def _mismatch(name: str, stored: SweepSpec, spec: SweepSpec) -> str:
    diffs = []
    a, b = stored.identity(), spec.identity()
    for part in ("grid", "fixed"):
        for key in sorted(set(a[part]) | set(b[part])):
            if a[part].get(key, "<unset>") != b[part].get(key, "<unset>"):
                diffs.append(f"{spec.options.get(key, '--' + key)} "
                             f"{'swept' if part == 'grid' else 'fixed'} "
                             f"{a[part].get(key, '<unset>')!r} there, {b[part].get(key, '<unset>')!r} here")
    shown = "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
    return (f"study {name} already holds a different sweep ({shown}): use another --name, or "
            f"join it with --study {name} and no sweep flags")
