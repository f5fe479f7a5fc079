"""Cheap stand-ins for ``facerec.training.train`` in the sweep tests.

They live in a module of their own so that the spawned processes of ``--parallel`` can import
them by name. Each writes what the real one writes where the sweep expects it
(``<runs_dir>/<name>/version_N/checkpoints/*.ckpt``) and returns a result shaped like
:class:`facerec.training.TrainResult` (``best_checkpoint``, ``metrics``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

FAIL_ENV = "FACEREC_FAKE_FAIL"  # a backbone that fails (default: "bad")


@dataclass
class FakeResult:
    best_checkpoint: str
    metrics: dict = field(default_factory=dict)


def loss_of(kw: dict) -> float:
    """The fake validation loss: the learning rate (x1000) plus a penalty per backbone."""
    return float(kw.get("learning_rate") or 0.0) * 1000 + {"a": 0.0, "b": 0.5}.get(kw.get("backbone"), 0.25)


def _write_run(kw: dict, **extra) -> Path:
    exp = Path(kw["runs_dir"]) / kw["name"]
    version = 0
    while (exp / f"version_{version}").exists():
        version += 1
    run = exp / f"version_{version}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "hparams.yaml").write_text("fake: true\n")
    ckpt = run / "checkpoints" / "epoch=0-step=1.ckpt"
    record = {k: v for k, v in kw.items() if k != "callbacks"}
    ckpt.write_text(json.dumps({**record, **extra, "pid": os.getpid()}, default=str))
    return ckpt


def fake_train(**kw) -> FakeResult:
    if kw.get("backbone") == os.environ.get(FAIL_ENV, "bad"):
        _write_run(kw, failed=True)  # a run that crashes after Lightning made its folder
        raise RuntimeError(f"boom: cannot build {kw.get('backbone')}")
    loss = loss_of(kw)
    ckpt = _write_run(kw)
    return FakeResult(str(ckpt), {"val_loss": loss, "val_acc": 1.0 - loss / 10})


def slow_train(**kw) -> FakeResult:
    """fake_train taking a second, so that parallel workers overlap."""
    time.sleep(1.0)
    return fake_train(**kw)


def curve_train(**kw) -> FakeResult:
    """Reports a validation loss per epoch to the sweep's callbacks, as Lightning would: the first
    two runs of the sweep learn (low loss), later ones are hopeless (high loss)."""
    earlier = len(list(Path(kw["runs_dir"]).glob("*-exp*/version_*")))
    hopeless = earlier >= 2
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True,
                              state=SimpleNamespace(fn="fit"), should_stop=False,
                              callback_metrics={}, current_epoch=0)
    epochs, best = 0, None
    for epoch in range(kw.get("max_epochs", 5)):
        value = 10.0 - 0.1 * epoch if hopeless else 1.0 / (epoch + 1)
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val_loss": value}
        for cb in kw.get("callbacks") or []:
            cb.on_validation_end(trainer, None)
        epochs += 1
        best = value if best is None else min(best, value)
        if trainer.should_stop:
            break
    ckpt = _write_run(kw, epochs=epochs)
    return FakeResult(str(ckpt), {"val_loss": best})


def crash_once_train(**kw) -> FakeResult:
    """The first run of backbone b at the lowest learning rate kills its process outright
    (SIGKILL, out of memory...): its trial is left RUNNING, without a heartbeat."""
    marker = Path(kw["runs_dir"]) / "crashed-once"
    if kw.get("backbone") == "b" and kw.get("learning_rate") == 0.001 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(9)
    return fake_train(**kw)


def interrupted_once_train(**kw) -> FakeResult:
    """The first run of backbone b is interrupted (Ctrl-C)."""
    marker = Path(kw["runs_dir"]) / "interrupted-once"
    if kw.get("backbone") == "b" and not marker.exists():
        marker.write_text("")
        raise KeyboardInterrupt
    return fake_train(**kw)
