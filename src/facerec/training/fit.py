"""``facerec train``: a face classifier on PyTorch Lightning, from a ``facerec split`` dataset.

Library API (stable; the sweep calls it in-process)::

    from facerec.training import TrainConfig, train
    result = train(TrainConfig(data_path="dataset", max_epochs=100))   # or train(data_path=...)
    result.best_checkpoint      # runs/<name>/version_N/checkpoints/epoch=E-step=S.ckpt
    result.metrics              # final validation (and test) metrics of the best checkpoint
    result.threshold            # the calibrated "unknown" threshold stored in it

Pieces: :func:`scan_dataset` (checks ``dataset/{train,val,test}/<person>/`` against
``labels.json``), :class:`FaceDataModule`, :class:`FaceModule` (the LightningModule around
:class:`facerec.recognition.model.FaceClassifier`), :func:`generate_run_name`. Output layout::

    runs/<run-name>/version_N/hparams.yaml, events.out.tfevents.*   (TensorBoard)
    runs/<run-name>/version_N/checkpoints/epoch=E-step=S.ckpt       (best by the monitored metric)
    runs/<run-name>/version_N/checkpoints/last.ckpt                 (resume with --ckpt_path)

Backbones: ``dlib_face`` (default) is frozen: each crop (and its mirror image) is embedded once and
cached, so an epoch only trains the head; with ``finetune=N`` its last N residual levels train too,
on activations computed once per crop and mirror (:func:`compute_activations`), each epoch running
only those levels. Any timm model name is fine-tuned end to end on augmented crops. Distributed
training is Lightning's (``--strategy ddp``; torchrun and SLURM are detected).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from facerec.defaults import DEFAULT_BACKBONE
from facerec.errors import FacerecError
from facerec.recognition.backbones import Backbone, backbone_for, backbone_for_crops
from facerec.recognition.calibration import FALLBACK_PRIOR_THRESHOLD
from facerec.recognition.model import build_model_config
from facerec.safeio import first_line, folder_lock
from facerec.training.config import TrainConfig
from facerec.training.data import (
    DatasetInfo,
    FaceDataModule,
    is_rank_zero,
    say,
    scan_dataset,
    warn_user,
)
from facerec.training.module import EpochTimer, FaceModule
from facerec.training.runs import (
    absolute_path,
    check_resume,
    atomic_checkpoint_io,
    is_url,
    owns_run_folder,
    epoch_lines,
    lightning_output,
    resume_target,
    truly_best,
    resolve_run_name,
)

__all__ = ["TrainConfig", "TrainResult", "print_train_summary", "train"]


# ----------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train` produced (paths are strings)."""

    best_checkpoint: str
    last_checkpoint: str | None
    run_dir: str
    run_name: str
    metrics: dict[str, float]
    threshold: float | None
    labels: list[str]
    train_samples: int
    val_samples: int
    epochs: int                     # epochs this call ran (a resume continues a run)
    fit_seconds: float
    warnings: list[str] = field(default_factory=list)
    max_epochs: int | None = None   # --max_epochs
    last_epoch: int | None = None   # epochs of the run in all, resumed ones included
    best_epoch: int | None = None   # the epoch of the best checkpoint (1 = the first)
    stopped_early: str | None = None  # why training stopped before --max_epochs (None: it did not)
    data_path: str | None = None    # the dataset folder trained on (a datastore's local copy)

    @property
    def seconds_per_epoch(self) -> float:
        return self.fit_seconds / max(1, self.epochs)

    def to_dict(self) -> dict:
        return asdict(self)


_MAXIMIZE = {"val_acc", "val_f1", "train_acc"}


def _parse_devices(devices: Any) -> Any:
    if isinstance(devices, (int, list)) or devices is None:
        return devices
    text = str(devices).strip()
    if text == "auto":
        return "auto"
    if "," in text:
        return [int(x) for x in text.split(",") if x.strip()]
    try:
        return int(text)
    except ValueError:
        raise FacerecError(f"--devices {devices!r}: give a number, a list like 0,1, or auto") from None


def train(config: TrainConfig | None = None, **overrides: Any) -> TrainResult:
    """Train, calibrate and checkpoint a face classifier; returns :class:`TrainResult`.

    ``train(TrainConfig(...))`` or ``train(data_path=..., max_epochs=...)``. User errors raise
    :class:`FacerecError`. With ``--strategy ddp`` Lightning re-runs the current command in one
    process per device, so call it from a script or the CLI (in a notebook use ``ddp_notebook``).
    """
    # the run name travels to the processes Lightning starts in $FACEREC_RUN_NAME, for this call
    # only (the next in-process call, e.g. a sweep trial, picks its own)
    saved_name = os.environ.get("FACEREC_RUN_NAME")
    try:
        return _train(config, **overrides)
    finally:
        if saved_name is None:
            os.environ.pop("FACEREC_RUN_NAME", None)
        else:
            os.environ["FACEREC_RUN_NAME"] = saved_name


def _train(config: TrainConfig | None = None, **overrides: Any) -> TrainResult:
    cfg = (config or TrainConfig()).replace(**overrides)
    cfg.check()
    warns: list[str] = []

    # data
    data_path = cfg.data_path
    try:
        from facerec.datastore import resolve_data_path

        data_path = resolve_data_path(data_path, progress=cfg.progress and is_rank_zero())
    except ImportError:  # pragma: no cover - datastore is part of facerec
        pass
    info = scan_dataset(data_path)
    if cfg.backbone is None:  # the model the dataset's crops were cut for
        cfg = cfg.replace(backbone=backbone_for_crops(info.crop))
    kind = backbone_for(cfg.backbone, int(cfg.finetune))
    pending = list(info.warnings)  # printed once every check passed (an error stays one line)
    info.warnings = warns
    k = len(info.labels)
    if k == 1:
        if not kind.single_person:
            raise FacerecError(
                f"the dataset has a single person ({info.labels[0]!r}): a {cfg.backbone} backbone "
                "learns from the differences between people, so it needs at least two; add "
                "photos of other people, or use a face embedder such as --backbone "
                f"{DEFAULT_BACKBONE} (person-vs-unknown)")
        prior = kind.prior_threshold or FALLBACK_PRIOR_THRESHOLD
        pending.append(f"the dataset has a single person ({info.labels[0]!r}): training a "
                       f"person-vs-unknown model whose threshold is {cfg.backbone}'s prior "
                       f"({prior}), not calibrated (no other people to calibrate on); add other "
                       "people to calibrate it")
    # run paths are absolute before Lightning sees them: a checkpoint records its folder, and a
    # resume from another working directory (or with the same relative --runs_dir) must find the
    # same folder, else Lightning forgets which checkpoint was best
    runs_dir, ckpt_path = absolute_path(cfg.runs_dir), absolute_path(cfg.ckpt_path)
    if ckpt_path:
        check_resume(ckpt_path, info.labels, cfg.backbone, int(cfg.finetune))
    if cfg.gpus and not torch.cuda.is_available():
        raise FacerecError(f"--gpus {cfg.gpus}: no GPU is available here (CUDA not found); "
                           "drop --gpus to train on the CPU")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = _build_module(cfg, info, kind, warns, pending)
    pre = module.model.config["preprocess"]
    has_val = info.count("val") > 0
    # without a validation split, early stopping and the best checkpoint follow the training loss
    # (or accuracy)
    monitor = cfg.monitor if has_val else ("train_loss" if cfg.monitor == "val_loss" else "train_acc")
    mode = "max" if monitor in _MAXIMIZE else "min"
    save_dir, name, version = _run_folder(cfg, runs_dir, ckpt_path)

    # one writer per (local) run folder; the DDP workers Lightning starts share their parent's
    lock = (folder_lock(Path(save_dir) / name, "train")
            if owns_run_folder() and not is_url(save_dir) else contextlib.nullcontext())
    with lock, lightning_output(verbose=cfg.verbose):
        return _fit(cfg, info, module, kind, save_dir, name, version, ckpt_path, monitor, mode,
                    has_val, pending, pre, warns)


def _build_module(cfg: TrainConfig, info: DatasetInfo, kind: Backbone, warns: list[str],
                  pending: list[str]) -> FaceModule:
    """The LightningModule for CFG's backbone and INFO's people (timm weights created, the
    embedder's own weights in the tuned levels for --finetune)."""
    lr = cfg.learning_rate if cfg.learning_rate is not None else kind.default_learning_rate
    timm_model = kind.create_network(pretrained=cfg.pretrained)
    for warning in kind.training_warnings(pretrained=cfg.pretrained, backbone_lr=cfg.backbone_lr):
        warn_user(warning, warns)
    model_config = build_model_config(info.labels, cfg.backbone, pretrained=cfg.pretrained,
                                      image_size=cfg.image_size, scale=cfg.scale,
                                      margin=cfg.margin, dropout=cfg.dropout,
                                      mirror_tta=cfg.mirror_tta, crop=info.crop,
                                      timm_model=timm_model, finetune=int(cfg.finetune))
    module = FaceModule(model_config, learning_rate=lr, weight_decay=cfg.weight_decay,
                        label_smoothing=cfg.label_smoothing, warmup_epochs=cfg.warmup_epochs,
                        backbone_lr_mult=kind.learning_rate_multiplier(cfg.pretrained),
                        target_fpir=cfg.target_fpir, timm_model=timm_model,
                        backbone_lr=cfg.backbone_lr, train_config=cfg.hparams())
    if module.model.tail is not None:  # --finetune starts from the embedder's trained weights
        module.model.tail.load_state_dict(kind.initial_tail_state())
        # measured (bench/recognition.py --only lfw --finetune 0,1,2): the FPIR of unseen people
        # at the calibrated threshold was 7-47% against a 1% target (docs/training.md)
        pending.append(f"--finetune {cfg.finetune}: the unknown threshold is calibrated on the "
                       "people the network was fine-tuned on, so it accepts unseen people more "
                       "often than --target_fpir says; check it with facerec evaluate on photos of "
                       "people outside the dataset")
    return module


def _run_folder(cfg: TrainConfig, runs_dir: str, ckpt_path: str | None
                ) -> tuple[str, str, int | None]:
    """(save_dir, run name, version): a resume without --name continues its own run folder."""
    save_dir, name, version = runs_dir, cfg.name, None
    if ckpt_path and not cfg.name:
        rdir, rname, rversion = resume_target(ckpt_path, runs_dir)
        if rname:
            save_dir, name, version = rdir, rname, rversion
            os.environ["FACEREC_RUN_NAME"] = rname
    return save_dir, resolve_run_name(name), version


def _trainer(cfg: TrainConfig, info: DatasetInfo, kind: Backbone, save_dir: str, name: str,
             version: int | None, monitor: str, mode: str, has_val: bool):
    """Lightning's Trainer for CFG, with its logger and the callbacks the run reads back:
    (trainer, logger, best checkpoint, last checkpoint, epoch timer, early stopping or None).
    The console shows one line per epoch (runs.epoch_lines), not Lightning's bars and summary
    (``--verbose`` brings its summary and messages back)."""
    from lightning.pytorch.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
    )
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=save_dir, name=name, version=version,
                               default_hp_metric=False)
    ckpt_cb = ModelCheckpoint(monitor=monitor, mode=mode, save_top_k=1,
                              filename="{epoch}-{step}", auto_insert_metric_name=True)
    # last.ckpt after every epoch (Lightning's save_last only follows saves of the best)
    last_cb = ModelCheckpoint(monitor=None, save_top_k=1, filename="last",
                              enable_version_counter=False)
    timer = EpochTimer()
    callbacks = [ckpt_cb, last_cb, timer, LearningRateMonitor(logging_interval="epoch"),
                 *cfg.callbacks]
    if cfg.progress:
        callbacks.append(epoch_lines())
    early = None
    if cfg.patience and cfg.patience > 0:
        early = EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience)
        callbacks.append(early)

    accelerator, devices = cfg.accelerator, _parse_devices(cfg.devices)
    if cfg.gpus is not None:
        if int(cfg.gpus) == 0:
            accelerator, devices = "cpu", "auto" if devices == "auto" else devices
        else:
            accelerator, devices = "gpu", int(cfg.gpus)
    n = info.count("train")
    steps_per_epoch = max(1, n // cfg.batch_size if kind.drops_last_batch and n > cfg.batch_size
                          else math.ceil(n / cfg.batch_size))  # see train_dataloader's drop_last
    try:
        trainer = L.Trainer(
            accelerator=accelerator, devices=devices, strategy=cfg.strategy,
            num_nodes=cfg.num_nodes, precision=cfg.precision, max_epochs=int(cfg.max_epochs),
            logger=logger, callbacks=callbacks, enable_progress_bar=False,
            plugins=[atomic_checkpoint_io()],
            enable_model_summary=cfg.verbose, num_sanity_val_steps=0,
            limit_val_batches=1.0 if has_val else 0,
            log_every_n_steps=max(1, min(cfg.log_every_n_steps, steps_per_epoch)),
            deterministic=False,
        )
    except FacerecError:
        raise
    except Exception as exc:  # MisconfigurationException, bad precision, no such accelerator
        raise FacerecError(f"cannot set up the trainer: {first_line(exc)}") from None

    return trainer, logger, ckpt_cb, last_cb, timer, early


def _fit(cfg: TrainConfig, info: DatasetInfo, module: FaceModule, kind: Backbone, save_dir: str,
         name: str, version: int | None, ckpt_path: str | None, monitor: str, mode: str,
         has_val: bool, pending: list[str], pre: dict, warns: list[str]) -> TrainResult:
    trainer, logger, ckpt_cb, last_cb, timer, early = _trainer(
        cfg, info, kind, save_dir, name, version, monitor, mode, has_val)
    # data last: a misconfigured trainer fails before minutes of embedding
    for w in pending:
        warn_user(w, warns)
    dm = FaceDataModule(info.root, cfg.backbone, batch_size=cfg.batch_size,
                        num_workers=cfg.num_workers, image_size=cfg.image_size,
                        mean=pre.get("mean", (0.5,) * 3), std=pre.get("std", (0.5,) * 3),
                        augment=cfg.augment, mirror_tta=cfg.mirror_tta,
                        progress=cfg.progress, info=info, finetune=int(cfg.finetune))
    dm.prepare_data()  # embeds here, before Lightning starts other processes (they hit the cache)
    n_train, n_val = dm.count("train"), dm.count("val")
    if has_val and not n_val:
        raise FacerecError(f"none of the {info.count('val')} validation crops could be embedded "
                           f"with {cfg.backbone}: are they face crops?")
    say(f"train samples: {n_train}")
    say(f"valid samples: {n_val}")

    # a frozen backbone trains a (K x D) head: one intra-op thread is faster than several (whose
    # fork/join costs more than these tiny matrix products, badly so on a busy machine)
    threads = torch.get_num_threads()
    if kind.single_thread_training:
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - t0
        epochs = len(timer.seconds)
        last_epoch = int(trainer.current_epoch)
        stopped_early = None
        if early is not None and early.stopped_epoch > 0 and last_epoch < int(cfg.max_epochs):
            stopped_early = f"{monitor} had not improved for {cfg.patience} epochs (--patience)"

        best = ckpt_cb.best_model_path or last_cb.best_model_path
        if ckpt_cb.best_model_path:
            best = truly_best(best, monitor, mode)
        last = last_cb.best_model_path or None
        metrics: dict[str, float] = {}
        if best and has_val:
            out = trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
            metrics.update({k: float(v) for k, v in (out[0] if out else {}).items()})
        if best and cfg.test and dm.count("test") > 0:
            out = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
            metrics.update({k: float(v) for k, v in (out[0] if out else {}).items()})
    finally:
        torch.set_num_threads(threads)
    threshold = None
    calibration: dict = {}
    if best and os.path.isfile(best):
        saved = torch.load(best, map_location="cpu", weights_only=True)
        threshold = saved["facerec"].get("threshold")
        calibration = saved["facerec"].get("calibration") or {}
    run_dir = str(Path(logger.log_dir))
    result = TrainResult(best_checkpoint=str(best), last_checkpoint=last, run_dir=run_dir,
                         run_name=name, metrics=metrics, threshold=threshold, labels=info.labels,
                         train_samples=n_train, val_samples=n_val, epochs=epochs,
                         fit_seconds=fit_seconds, warnings=warns, max_epochs=int(cfg.max_epochs),
                         last_epoch=last_epoch, best_epoch=_epoch_of(best),
                         stopped_early=stopped_early, data_path=str(info.root))
    if is_rank_zero():
        print_train_summary(result, calibration)
    return result


def _epoch_of(checkpoint: str | None) -> int | None:
    """The epoch (1 = the first) a ``epoch=E-step=S.ckpt`` checkpoint was saved at."""
    import re

    m = re.search(r"epoch=(\d+)", Path(checkpoint).name) if checkpoint else None
    return int(m.group(1)) + 1 if m else None


def print_train_summary(result: TrainResult, calibration: dict | None = None, file=None) -> None:
    """How the training went (epochs, why it stopped), the final metrics, the threshold, and
    last ``Best checkpoint: PATH``."""
    out = file or sys.stdout
    if result.max_epochs and result.last_epoch is not None:
        ran = f"Trained {result.last_epoch} of at most {result.max_epochs} epochs"
        if result.epochs != result.last_epoch:
            ran += f" ({result.epochs} in this run, resumed)"
    else:
        ran = f"Trained {result.epochs} epoch(s)"
    why = f" Stopped early: {result.stopped_early}." if result.stopped_early else ""
    best = f" Best: epoch {result.best_epoch}." if result.best_epoch else ""
    print(f"{ran} in {result.fit_seconds:.1f}s ({result.seconds_per_epoch:.2f}s/epoch).{why}{best}",
          file=out)
    order = ["val_acc", "val_f1", "val_loss", "calib_fnir", "test_acc", "test_f1", "test_loss",
             "test_fnir"]
    shown = [k for k in order if k in result.metrics]
    if shown:
        print("Final metrics: " + "  ".join(f"{k}={result.metrics[k]:.4f}" for k in shown), file=out)
    cal = calibration or {}
    if result.threshold is not None:
        extra = ""
        if cal.get("est_fpir") is not None:
            extra = (f" (target FPIR {cal['target_fpir']:.1%}; on {cal.get('data', 'calibration')}: "
                     f"FPIR {cal['est_fpir']:.2%}, FNIR "
                     f"{cal['est_fnir']:.2%})" if cal.get("est_fnir") is not None else "")
        elif cal.get("method") == "prior":
            extra = f" (prior: {cal.get('reason', 'not calibrated')})"
        print(f"Unknown threshold: {result.threshold:.4f}{extra}", file=out)
    print(f"TensorBoard: tensorboard --logdir {Path(result.run_dir).parent}", file=out)
    print(f"Best checkpoint: {result.best_checkpoint}", file=out)
