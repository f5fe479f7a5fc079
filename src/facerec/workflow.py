"""split -> train -> evaluate -> report on a work folder: the one workflow behind ``facerec run``
(after detect and annotate) and the server's Train page.

:func:`train_and_evaluate` splits the person folders of ``WORK/processed`` into ``WORK/dataset``,
trains a new version under ``WORK/runs``, evaluates its best checkpoint on the test split (when
there is one) and writes ``WORK/report``. The caller decides what to show: ``out`` gets the
stages' summaries (``facerec run``), ``on_stage`` hears each stage begin (the Train page's job),
``callbacks`` are Lightning callbacks (the page's per-epoch progress).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from facerec.workspace import Workspace

#: the stages of :func:`train_and_evaluate`, in order
STAGES = ("split", "train", "evaluate")


@dataclass
class TrainOptions:
    """What the user chooses for a training (the rest are the train command's defaults)."""

    max_epochs: int = 30
    backbone: str | None = None  # None: the model the dataset's crops were cut for
    val: float = 0.1
    test: float = 0.1
    seed: int = 42
    #: any other train option, by TrainConfig field name (``facerec run --learning_rate 0.01``)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainEvalResult:
    """What :func:`train_and_evaluate` made."""

    split: Any                      # facerec.split.SplitResult
    train: Any                      # facerec.training.TrainResult
    report: Any | None = None       # facerec.inference.evaluate.EvalReport; None: no test split
    report_dir: Path | None = None  # WORK/report, when evaluated
    seconds: dict[str, float] = field(default_factory=dict)   # per stage

    @property
    def best_checkpoint(self) -> str:
        return self.train.best_checkpoint

    @property
    def accuracy(self) -> float | None:
        return self.report.accuracy if self.report is not None else None


def lightning_devices(device: str) -> tuple[str, str | list[int]]:
    """Lightning's (accelerator, devices) for a torch device string: ``cuda:1`` is GPU 1 only
    (not every GPU), ``cuda`` one GPU, ``cpu`` the CPU, ``auto`` whatever Lightning finds."""
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        return "gpu", [int(index)] if index else "1"
    return ("cpu", "auto") if device == "cpu" else ("auto", "auto")


def train_and_evaluate(workspace: Workspace, options: TrainOptions, *, device: str = "auto",
                       progress: bool = True, callbacks: Sequence[Any] = (),
                       out: TextIO | None = None,
                       on_stage: Callable[[str], None] | None = None,
                       split_lock: contextlib.AbstractContextManager | None = None
                       ) -> TrainEvalResult:
    """Split, train, evaluate and report inside ``workspace`` (see the module docstring).

    ``device``: a torch device string for evaluation, mapped by :func:`lightning_devices` for
    training. ``split_lock``: held while the split reads ``processed/`` (the server's edit lock).
    ``out``: where the split summary and the report are printed (None: nowhere)."""
    from facerec.inference.evaluate import evaluate, print_report, write_report
    from facerec.split import print_split_summary, split_dataset
    from facerec.training import TrainConfig, train

    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(name: str):
        if on_stage is not None:
            on_stage(name)
        start = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - start, 2)

    ws = workspace
    with stage("split"), split_lock or contextlib.nullcontext():
        split = split_dataset(ws.processed, ws.dataset, val=options.val, test=options.test,
                              seed=options.seed, force=True, progress=progress)
        if out is not None:
            print_split_summary(split, file=out)

    with stage("train"):  # train() prints its own summary (best checkpoint, metrics, threshold)
        accelerator, devices = lightning_devices(device)
        config = TrainConfig(data_path=str(ws.dataset), runs_dir=str(ws.runs),
                             backbone=options.backbone, max_epochs=options.max_epochs,
                             seed=options.seed, progress=progress,
                             accelerator=accelerator, devices=devices,
                             callbacks=list(callbacks)).replace(**options.extra)
        trained = train(config)

    result = TrainEvalResult(split, trained, seconds=seconds)
    with stage("evaluate"):
        if ws.has_test_split():
            result.report = evaluate(trained.best_checkpoint, ws.test_split, device=device,
                                     progress=progress)
            result.report_dir = Path(write_report(result.report, ws.report))
            if out is not None:
                print_report(result.report, file=out)
                print(f"Report: {result.report_dir}", file=out)
        elif out is not None:
            print("no test split (too few photos per person): evaluation skipped", file=out)
    return result
