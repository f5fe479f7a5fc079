"""Train jobs started from the page: ``split`` + ``train`` + ``evaluate`` on the labelled folders
of ``processed/``, in a background thread, with live progress, then the new checkpoint is swapped
into the :class:`~facerec.serve.recognise.Recogniser`.

Same stages and outputs as ``facerec run`` (``WORK/dataset``, ``WORK/runs/<run>/...``,
``WORK/report/``). One job at a time: a second start while one runs is refused. A thread (not a
process) keeps progress a plain shared object; Lightning runs fine off the main thread (it only
installs signal handlers on the main thread).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facerec.errors import ConflictError, FacerecError
from facerec.workspace import Workspace


@dataclass
class TrainOptions:
    max_epochs: int = 30
    backbone: str = "dlib_face"
    val: float = 0.1
    test: float = 0.1
    seed: int = 42


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
        from facerec.inference.evaluate import evaluate, write_report
        from facerec.split import split_dataset
        from facerec.training import TrainConfig, train

        opt = job.options
        ws = self.workspace
        job.stage = "split"
        with self.edit_lock:
            split = split_dataset(ws.processed, ws.dataset, val=opt.val, test=opt.test,
                                  seed=opt.seed, force=True, progress=False)
        job.stage = "train"
        accelerator = "cpu" if self.device == "cpu" else "auto"
        result = train(TrainConfig(data_path=str(ws.dataset), runs_dir=str(ws.runs),
                                   backbone=opt.backbone, max_epochs=opt.max_epochs,
                                   seed=opt.seed, progress=False, accelerator=accelerator,
                                   callbacks=[_progress_callback(job)]))
        out: dict[str, Any] = {"checkpoint": result.best_checkpoint, "labels": result.labels,
                               "threshold": result.threshold, "metrics": result.metrics,
                               "epochs": result.epochs, "accuracy": None,
                               "confusion_png": None, "people": len(result.labels),
                               "split": getattr(split, "counts", None)}
        job.stage = "evaluate"
        if ws.has_test_split():
            report = evaluate(result.best_checkpoint, ws.test_split, device=self.device,
                              progress=False)
            report_dir = write_report(report, ws.report)
            out["accuracy"] = report.accuracy
            png = Path(report_dir) / "confusion_matrix.png"
            if png.is_file():
                out["confusion_png"] = ws.relative(png)
        job.stage = "load"
        self.recogniser.load(result.best_checkpoint)
        return out
