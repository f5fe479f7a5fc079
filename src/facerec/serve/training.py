"""Train jobs started from the page: ``split`` + ``train`` + ``evaluate`` on the labelled folders
of ``processed/``, in a background thread, with live progress, then the new checkpoint is swapped
into the :class:`~facerec.serve.recognise.Recogniser`.

The stages are :func:`facerec.workflow.train_and_evaluate`, the same as ``facerec run``'s (same
outputs: ``WORK/dataset``, ``WORK/runs/<run>/...``, ``WORK/report/``; same device mapping). One
job at a time: a second start while one runs is refused. A thread (not a process) keeps progress
a plain shared object; Lightning runs fine off the main thread (it only installs signal handlers
on the main thread).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from facerec.errors import ConflictError, FacerecError
from facerec.workflow import TrainOptions
from facerec.workspace import Workspace


@dataclass
class TrainJob:
    id: str
    options: TrainOptions
    state: str = "queued"           # queued, running, done, failed
    stage: str = ""                 # split, train, evaluate, load
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)   # per epoch: metrics
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_epochs"] = self.options.max_epochs
        return d


def _progress_callback(job: TrainJob):
    """A Lightning callback that copies each epoch's metrics into ``job`` (read by the page)."""
    import lightning as L

    class Progress(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            # validation ran inside this epoch already, so val_* metrics are there too
            metrics = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()
                       if getattr(v, "numel", lambda: 1)() == 1}
            job.epoch = trainer.current_epoch + 1
            job.history.append({"epoch": job.epoch, **metrics})

    return Progress()


class TrainManager:
    """Starts and tracks train jobs for one work folder."""

    def __init__(self, workspace: Workspace, recogniser: Any, edit_lock: threading.Lock,
                 device: str = "auto") -> None:
        self.workspace = workspace
        self.recogniser = recogniser
        self.edit_lock = edit_lock   # split reads processed/: no page edits meanwhile
        self.device = device
        self.jobs: dict[str, TrainJob] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def running(self) -> TrainJob | None:
        return next((j for j in self.jobs.values() if j.state in ("queued", "running")), None)

    def start(self, options: TrainOptions) -> TrainJob:
        with self._lock:
            if self.running() is not None:
                raise ConflictError("a training job is already running")
            job = TrainJob(id=uuid.uuid4().hex[:12], options=options)
            self.jobs[job.id] = job
            self._thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                            name=f"facerec-train-{job.id}")
            self._thread.start()
            return job

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, job: TrainJob) -> None:
        job.state = "running"
        try:
            job.result = self._stages(job)
            job.state, job.stage = "done", ""
        except FacerecError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a bug or an OSError mid-training: the page says so
            traceback.print_exc(file=sys.stderr)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()

    def _stages(self, job: TrainJob) -> dict[str, Any]:
        from facerec.workflow import train_and_evaluate

        def on_stage(name: str) -> None:
            job.stage = name

        ws = self.workspace
        done = train_and_evaluate(ws, job.options, device=self.device, progress=False,
                                  callbacks=[_progress_callback(job)], on_stage=on_stage,
                                  split_lock=self.edit_lock)  # no page edits while split reads
        trained = done.train
        png = done.report_dir / "confusion_matrix.png" if done.report_dir else None
        out: dict[str, Any] = {"checkpoint": trained.best_checkpoint, "labels": trained.labels,
                               "threshold": trained.threshold, "metrics": trained.metrics,
                               "epochs": trained.epochs, "accuracy": done.accuracy,
                               "max_epochs": trained.max_epochs,
                               "stopped_early": trained.stopped_early,
                               "best_epoch": trained.best_epoch,
                               "confusion_png": ws.relative(png) if png and png.is_file() else None,
                               "people": len(trained.labels),
                               "split": getattr(done.split, "counts", None)}
        job.stage = "load"
        self.recogniser.load(trained.best_checkpoint)
        return out
