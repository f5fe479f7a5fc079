"""Training, in the order a run goes: the options (:mod:`.config`, the one schema of every train
flag), the data (:mod:`.data`), the LightningModule (:mod:`.module`), the run's folder
(:mod:`.runs`), the entry point (:mod:`.fit`: :func:`train`), then sweeps (:mod:`.sweep`) and
cloud launches (:mod:`.launch`).

Library API (stable; the sweep calls it in-process)::

    from facerec.training import TrainConfig, train
    result = train(TrainConfig(data_path="dataset", max_epochs=100))   # or train(data_path=...)
    result.best_checkpoint      # runs/<name>/version_N/checkpoints/epoch=E-step=S.ckpt

Names are imported lazily: ``facerec.training.config`` (imported by ``facerec --help``) must not
pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TrainConfig": "facerec.training.config",
    "read_config_file": "facerec.training.config",
    "train": "facerec.training.fit",
    "TrainResult": "facerec.training.fit",
    "print_train_summary": "facerec.training.fit",
    "DatasetInfo": "facerec.training.data",
    "FaceDataModule": "facerec.training.data",
    "scan_dataset": "facerec.training.data",
    "FaceModule": "facerec.training.module",
    "generate_run_name": "facerec.training.runs",
    "resolve_run_name": "facerec.training.runs",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facerec.training' has no attribute {name!r}")
