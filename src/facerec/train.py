"""``facerec train``: a face classifier on PyTorch Lightning, from a ``facerec split`` dataset.

Library API (stable; the sweep calls it in-process)::

    from facerec.train import TrainConfig, train
    result = train(TrainConfig(data_path="dataset", max_epochs=100))   # or train(data_path=...)
    result.best_checkpoint      # runs/<name>/version_N/checkpoints/epoch=E-step=S.ckpt
    result.metrics              # final validation (and test) metrics of the best checkpoint
    result.threshold            # the calibrated "unknown" threshold stored in it

Pieces: :func:`scan_dataset` (checks ``dataset/{train,val,test}/<person>/`` against
``labels.json``), :class:`FaceDataModule`, :class:`FaceModule` (the LightningModule around
:class:`facerec.model.FaceClassifier`), :func:`generate_run_name`. Output layout::

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
import io
import json
import logging
import math
import os
import random
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import lightning.pytorch as L
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from facerec.cropspec import CropSpec, read_dataset_spec
from facerec.errors import FacerecError
from facerec.images import IMAGE_EXTS
from facerec.safeio import atomic_write, first_line, folder_lock
from facerec.model import (
    DEFAULT_BACKBONE,
    FALLBACK_PRIOR_THRESHOLD,
    PRIOR_THRESHOLDS,
    UNKNOWN,
    FaceClassifier,
    backbone_kind,
    build_model_config,
    calibrate_threshold,
    combine_views,
    create_timm_model,
    embed_crop_files,
    read_checkpoint,
)

__all__ = [
    "DatasetInfo",
    "FaceDataModule",
    "FaceModule",
    "TrainConfig",
    "TrainResult",
    "generate_run_name",
    "scan_dataset",
    "train",
]

SPLITS = ("train", "val", "test")


def _is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def _say(msg: str, file=None) -> None:
    if _is_rank_zero():
        print(msg, file=file or sys.stdout, flush=True)


def _warn(msg: str, sink: list[str] | None = None) -> None:
    if sink is not None:
        sink.append(msg)
    if _is_rank_zero():
        print(f"facerec train: warning: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ dataset
@dataclass
class DatasetInfo:
    """What :func:`scan_dataset` found: labels and ``(path, label index)`` per split."""

    root: Path
    labels: list[str]
    samples: dict[str, list[tuple[Path, int]]]
    warnings: list[str] = field(default_factory=list)
    crop: CropSpec = field(default_factory=CropSpec)  # how its crops were made (labels.json)

    def count(self, split: str) -> int:
        return len(self.samples.get(split, []))

    def people_in(self, split: str) -> int:
        return len({y for _, y in self.samples.get(split, [])})


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def scan_dataset(data_path: str | os.PathLike) -> DatasetInfo:
    """Read ``labels.json`` and list ``{train,val,test}/<person>/*`` crops, checking they agree.

    Errors (:class:`FacerecError`): no folder, no/bad ``labels.json``, no ``train/``, no crops, a
    folder that is not in ``labels.json``, a person of ``labels.json`` without training crops.
    A missing ``val/`` or ``test/`` is a warning.
    """
    root = Path(data_path)
    if not root.is_dir():
        raise FacerecError(f"dataset folder not found: {root} (make one with `facerec split`)")
    lj = root / "labels.json"
    if not lj.is_file():
        raise FacerecError(f"{lj} not found: {root} is not a dataset from `facerec split`")
    try:
        data = json.loads(lj.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FacerecError(f"cannot read {lj}: {exc}") from None
    labels = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise FacerecError(f'{lj} must hold {{"labels": ["person", ...]}}')
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise FacerecError(f"{lj} lists {', '.join(dup)} more than once")
    if not labels:
        raise FacerecError(f"empty dataset: {lj} lists no people")
    if UNKNOWN in labels:
        raise FacerecError(f"{lj}: {UNKNOWN!r} is reserved for faces of nobody in the dataset; "
                           "rename that person folder")
    index = {name: i for i, name in enumerate(labels)}
    warns: list[str] = []
    samples: dict[str, list[tuple[Path, int]]] = {}
    if not (root / "train").is_dir():
        raise FacerecError(f"{root / 'train'} not found: {root} is not a dataset from `facerec split`")
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            warns.append(f"{folder} not found: "
                         + ("no validation set: no early stopping on it, and the unknown threshold "
                            "is calibrated on the training crops" if split == "val"
                            else "no test set to report on"))
            samples[split] = []
            continue
        people = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        extra = [d.name for d in people if d.name not in index]
        if extra:
            shown = ", ".join(f"{split}/{x}" for x in extra[:3]) + (" ..." if len(extra) > 3 else "")
            raise FacerecError(f"labels.json mismatch: {shown} not in {lj} (rerun `facerec split`, "
                               "or fix labels.json)")
        loose = _images(folder)
        if loose:
            warns.append(f"{len(loose)} image(s) directly in {folder} ignored (crops go in "
                         f"{split}/<person>/)")
        samples[split] = [(p, index[d.name]) for d in people for p in _images(d)]
    if not samples["train"]:
        raise FacerecError(f"empty dataset: no face crops in {root / 'train'}")
    have = {y for _, y in samples["train"]}
    missing = [name for name in labels if index[name] not in have]
    if missing:
        shown = ", ".join(repr(x) for x in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise FacerecError(f"labels.json mismatch: no training crops for {shown} "
                           f"({root / 'train'}/<person>/ missing or empty)")
    crop = read_dataset_spec(data if isinstance(data, dict) else {})
    return DatasetInfo(root=root, labels=labels, samples=samples, warnings=warns, crop=crop)


class ViewDataset(Dataset):
    """Cached per-crop views (N, V, ...) and labels. Training draws a random view; evaluation
    returns view ``eval_view``, or all V views when it is None.

    Frozen backbone: features (N, V, D) with views crop, mirror, mean; evaluation uses the mean
    (``eval_view=-1``, the test-time feature). ``--finetune``: the activations entering the tuned
    levels (N, V, C, H, W) with views crop, mirror; evaluation returns both (``eval_view=None``:
    the model averages their descriptors)."""

    def __init__(self, views: np.ndarray, labels: np.ndarray, augment: bool = False,
                 eval_view: int | None = -1):
        self.views = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.augment = augment
        self.eval_view = eval_view

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.augment:
            return self.views[i, int(torch.randint(self.views.shape[1], (1,)))], self.labels[i]
        if self.eval_view is None:
            return self.views[i], self.labels[i]
        return self.views[i, self.eval_view], self.labels[i]


#: ``--finetune`` activations of the last dataset, per process: a sweep's trials on the same
#: crops reuse them (key: crop files' sizes and times, level, views)
_ACTIVATIONS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _activations_key(paths: Sequence[Path], upto: int, mirror: bool) -> tuple:
    stats = []
    for p in paths:
        st = p.stat()
        stats.append((str(p), st.st_size, st.st_mtime_ns))
    return (tuple(stats), int(upto), bool(mirror))


def compute_activations(paths: Sequence[Path], embedder, upto: int, mirror: bool = True,
                        progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(activations (N, V, C, H, W) entering dlib_face's level ``upto``, ok (N,) bool) of crop
    files: the same chips as the embedding path (landmarks in the crop's default box), computed
    once (and kept for this process's next run on the same files). Kept out of the embedding
    cache on purpose: they are not descriptors."""
    from facerec.embed import _open_image

    key = _activations_key(paths, upto, mirror)
    if key in _ACTIVATIONS:
        return _ACTIVATIONS[key]
    chips, rows = [], []
    for i, p in enumerate(paths):
        try:
            img = _open_image(p.read_bytes())
        except OSError as exc:
            raise FacerecError(f"cannot read {p}: {first_line(exc)}") from None
        except Exception:  # noqa: BLE001 - not an image: left out like an unembeddable crop
            continue
        got, ok_rows, _ = embedder.chipper.chips([img])
        if ok_rows:
            chips.append(got[0])
            rows.append(i)
    if progress:
        _say(f"fine-tuning: activations of {len(rows)} crops (and mirrors) at level {upto}")
    ok = np.zeros(len(paths), bool)
    ok[rows] = True
    some = embedder.trunk(np.stack(chips), upto, mirror=mirror) if chips else None
    shape = some.shape[1:] if some is not None else (2 if mirror else 1, 1, 1, 1)
    acts = np.zeros((len(paths), *shape), dtype=np.float32)
    if some is not None:
        acts[rows] = some
    _ACTIVATIONS.clear()  # one dataset at a time: memory stays that of one run
    _ACTIVATIONS[key] = (acts, ok)
    return acts, ok


class ImageDataset(Dataset):
    """Face crops from disk through a torchvision transform."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image, ImageOps

        path, y = self.samples[i]
        with Image.open(path) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        return self.transform(img), y


def face_transforms(size: int, mean, std, augment: bool):
    """Train (face-appropriate augmentation: small scale/aspect/rotation changes, mirror, colour,
    greyscale, small occlusions; never a vertical flip) or eval transforms for timm backbones."""
    from torchvision import transforms as T

    if not augment:
        from facerec.runtime import eval_transform

        return eval_transform(size, mean, std)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.75, 1.0), ratio=(0.9, 1.1)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.RandomAffine(degrees=10, translate=(0.04, 0.04))], p=0.5),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
        T.RandomGrayscale(p=0.1),
        T.ToTensor(),
        T.Normalize(mean, std),
        T.RandomErasing(p=0.2, scale=(0.02, 0.12)),
    ])


class FaceDataModule(L.LightningDataModule):
    """``dataset/{train,val,test}/<person>/`` crops + ``labels.json`` (see :func:`scan_dataset`).

    Frozen backbones (``dlib_face``): :meth:`prepare_data` embeds every crop and its mirror once
    (cached by content, see :func:`facerec.model.embed_crop_files`); batches are feature vectors.
    timm backbones: batches are augmented image tensors, loaded by ``num_workers`` processes.
    """

    def __init__(self, data_path: str | os.PathLike = "dataset", backbone: str = DEFAULT_BACKBONE,
                 batch_size: int = 32, num_workers: int | None = None, image_size: int = 160,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                 augment: bool = True, mirror_tta: bool = True, embedder_kwargs: dict | None = None,
                 progress: bool = True, info: DatasetInfo | None = None, finetune: int = 0):
        super().__init__()
        self.info = info or scan_dataset(data_path)
        self.labels = self.info.labels
        self.backbone = backbone
        self.kind = backbone_kind(backbone)
        self.batch_size = int(batch_size)
        if num_workers is None:
            num_workers = 0 if self.kind == "embedder" else min(4, max(0, (os.cpu_count() or 1) - 1))
        self.num_workers = int(num_workers)
        self.image_size = int(image_size)
        self.mean, self.std = list(mean), list(std)
        self.augment = augment
        self.mirror_tta = mirror_tta
        self.embedder_kwargs = dict(embedder_kwargs or {})
        self.progress = progress
        self.features: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.finetune = int(finetune or 0)
        self.activations: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.dropped: list[Path] = []
        self.datasets: dict[str, Dataset] = {}

    # ---- frozen features
    def load_features(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per split: (views (n, V, D) unit rows, labels (n,)); crops that cannot be embedded are
        dropped with a warning."""
        if self.features is not None:
            return self.features
        from facerec.embed import get_embedder

        emb = get_embedder(self.backbone, **self.embedder_kwargs)
        all_samples = [(s, p, y) for s in SPLITS for p, y in self.info.samples[s]]
        raw = embed_crop_files([p for _, p, _ in all_samples], emb, mirror=self.mirror_tta,
                               progress=self.progress and _is_rank_zero())
        views = combine_views(raw[:, 0], raw[:, 1] if self.mirror_tta else None)
        ok = np.isfinite(views).all(axis=(1, 2))
        self.dropped = [p for (_, p, _), good in zip(all_samples, ok) if not good]
        if self.dropped:
            _warn(f"{len(self.dropped)} crop(s) could not be embedded and are left out "
                  f"(first: {self.dropped[0]})", self.info.warnings)
        out = {}
        split_of = np.array([s for s, _, _ in all_samples])
        labels = np.array([y for _, _, y in all_samples], dtype=np.int64)
        for s in SPLITS:
            m = (split_of == s) & ok
            out[s] = (views[m], labels[m])
        if not len(out["train"][1]):
            raise FacerecError(f"no training crop of {self.info.root} could be embedded "
                               f"with {self.backbone}: are they face crops?")
        missing = sorted(set(range(len(self.labels))) - set(out["train"][1].tolist()))
        if missing:
            raise FacerecError(f"no usable training crop for {self.labels[missing[0]]!r}: "
                               f"none could be embedded with {self.backbone}")
        self.features = out
        return out

    def load_activations(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``--finetune N``: per split, (activations (n, V, C, H, W) entering the first tuned
        level, labels (n,)); crops without a landmark fit are dropped (as by
        :meth:`load_features`)."""
        if self.activations is not None:
            return self.activations
        from facerec.dlib_net import LEVELS
        from facerec.embed import get_embedder

        emb = get_embedder(self.backbone, **self.embedder_kwargs)
        all_samples = [(s, p, y) for s in SPLITS for p, y in self.info.samples[s]]
        acts, ok = compute_activations([p for _, p, _ in all_samples], emb,
                                       len(LEVELS) - self.finetune, mirror=self.mirror_tta,
                                       progress=self.progress and _is_rank_zero())
        self.dropped = [p for (_, p, _), good in zip(all_samples, ok) if not good]
        if self.dropped:
            _warn(f"{len(self.dropped)} crop(s) could not be embedded and are left out "
                  f"(first: {self.dropped[0]})", self.info.warnings)
        split_of = np.array([s for s, _, _ in all_samples])
        labels = np.array([y for _, _, y in all_samples], dtype=np.int64)
        out = {s: (acts[(split_of == s) & ok], labels[(split_of == s) & ok]) for s in SPLITS}
        missing = sorted(set(range(len(self.labels))) - set(out["train"][1].tolist()))
        if missing:
            raise FacerecError(f"no usable training crop for {self.labels[missing[0]]!r}: "
                               f"none could be embedded with {self.backbone}")
        self.activations = out
        return out

    @torch.no_grad()
    def tuned_features(self, model: FaceClassifier, batch_size: int = 256
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``--finetune``: :meth:`load_features`' views (n, 3 or 1, D) from the network as it is
        now (the tuned levels run on the cached activations)."""
        assert model.tail is not None
        was_training = model.training
        model.eval()
        device = model.prototypes.device
        out = {}
        for s, (acts, y) in self.load_activations().items():
            raw = [model.tail(torch.from_numpy(acts[i:i + batch_size]).to(device).flatten(0, 1))
                   .float().view(len(acts[i:i + batch_size]), acts.shape[1], -1).cpu().numpy()
                   for i in range(0, len(acts), batch_size)]
            dim = model.head.weight.shape[1]
            r = np.concatenate(raw) if raw else np.zeros((0, acts.shape[1], dim), np.float32)
            out[s] = (combine_views(r[:, 0], r[:, 1] if r.shape[1] > 1 else None), y)
        model.train(was_training)
        return out

    def prepare_data(self) -> None:
        if self.kind == "embedder" and self.finetune:
            self.load_activations()
        elif self.kind == "embedder":
            self.load_features()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.kind == "embedder" and self.finetune:
            acts = self.load_activations()
            for s in SPLITS:
                self.datasets[s] = ViewDataset(*acts[s], augment=(s == "train" and self.augment),
                                               eval_view=None)
        elif self.kind == "embedder":
            feats = self.load_features()
            for s in SPLITS:
                self.datasets[s] = ViewDataset(*feats[s], augment=(s == "train" and self.augment))
        else:
            for s in SPLITS:
                tf = face_transforms(self.image_size, self.mean, self.std,
                                     augment=(s == "train" and self.augment))
                self.datasets[s] = ImageDataset(self.info.samples[s], tf)

    def count(self, split: str) -> int:
        if self.kind == "embedder" and self.finetune and self.activations is not None:
            return len(self.activations[split][1])
        if self.kind == "embedder" and self.features is not None:
            return len(self.features[split][1])
        return self.info.count(split)

    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        self.setup()
        workers = 0 if self.kind == "embedder" else self.num_workers
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=False, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        # a trainable backbone has batch norm, which fails on a trailing batch of one: drop the
        # incomplete last batch (reshuffled every epoch, so every crop is still seen)
        drop = False
        if self.kind != "embedder":
            world = getattr(getattr(self, "trainer", None), "world_size", 1) or 1
            drop = math.ceil(len(self.datasets.get("train", ()) or self.info.samples["train"])
                             / world) > self.batch_size
        return self._loader("train", True, drop_last=drop)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def prototype_sums(self, splits: Sequence[str] = ("train", "val"),
                       model: FaceClassifier | None = None):
        """(sums (K, D), counts (K,), features (n, D), labels (n,)) of the test-time features
        (``--finetune``: of ``model``'s network as it is now)."""
        feats = self.tuned_features(model) if self.finetune else self.load_features()
        z = np.concatenate([feats[s][0][:, -1] for s in splits])
        y = np.concatenate([feats[s][1] for s in splits])
        k = len(self.labels)
        sums = np.zeros((k, z.shape[1]), dtype=np.float64)
        np.add.at(sums, y, z.astype(np.float64))
        counts = np.bincount(y, minlength=k).astype(np.float64)
        return sums, counts, z, y


# ------------------------------------------------------------------------------------ LightningModule
class FaceModule(L.LightningModule):
    """Trains a :class:`~facerec.model.FaceClassifier`: cosine head with margin and label
    smoothing, AdamW, warm-up + cosine learning-rate schedule, accuracy and macro-F1 per epoch, and
    the open-set threshold calibrated into every checkpoint."""

    def __init__(self, model_config: dict, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                 label_smoothing: float = 0.1, warmup_epochs: float = 1.0,
                 backbone_lr_mult: float = 1.0, target_fpir: float = 0.01,
                 timm_model: torch.nn.Module | None = None, backbone_lr: float | None = None,
                 **extra_hparams: Any):
        super().__init__()
        self.save_hyperparameters(ignore=["timm_model"])
        self.model = FaceClassifier(model_config, timm_model=timm_model)
        self.calibration: dict = dict(model_config.get("calibration") or {})
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        k = max(2, len(model_config["labels"]))
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes=k, average="micro"))
            if stage != "train":
                setattr(self, f"{stage}_f1", MulticlassF1Score(num_classes=k, average="macro"))
        self._stash: dict[str, list] = {"train": [], "val": []}

    @property
    def frozen(self) -> bool:
        """A frozen embedder's features, or --finetune's (its calibration follows the frozen
        path: prototypes are the means of the current features, each person held out in turn)."""
        return not self.model.trainable_backbone

    @property
    def tuned(self) -> bool:
        return self.model.tail is not None

    # ---- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        head = [self.model.head.weight]
        groups = [{"params": head, "weight_decay": 0.0, "lr": hp.learning_rate}]
        if self.model.backbone is not None:
            decay, no_decay = [], []
            for n, p in self.model.backbone.named_parameters():
                if p.requires_grad:
                    (no_decay if p.ndim <= 1 else decay).append(p)
            lr = hp.learning_rate * hp.backbone_lr_mult
            groups += [{"params": decay, "weight_decay": hp.weight_decay, "lr": lr},
                       {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
        if self.model.tail is not None:  # --finetune: dlib's last levels, at their own rate
            lr = hp.backbone_lr if hp.backbone_lr is not None else hp.learning_rate * 0.01
            tail = list(self.model.tail.parameters())
            groups += [{"params": [p for p in tail if p.ndim > 1], "lr": lr,
                        "weight_decay": hp.weight_decay},
                       {"params": [p for p in tail if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warm = min(total // 2, int(round(hp.warmup_epochs * per_epoch)))

        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- steps
    def training_step(self, batch, batch_idx):
        x, y = batch
        z = self.model.features(x)
        logits = self.model.head(self.model.dropout(z), y)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        with torch.no_grad():
            self.train_acc(self.model.head(z).argmax(1), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(y))
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        if not self.frozen and not self._has_val():
            self._stash["train"].append((z.detach().float(), y.detach()))
        return loss

    def _eval_step(self, batch, stage: str):
        x, y = batch
        z = self.model.features(x)
        logits = self.model.head(z)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        pred = logits.argmax(1)
        getattr(self, f"{stage}_acc")(pred, y)
        getattr(self, f"{stage}_f1")(pred, y)
        n = len(y)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True,
                 batch_size=n)
        self.log(f"{stage}_acc", getattr(self, f"{stage}_acc"), on_epoch=True, prog_bar=True,
                 batch_size=n)
        self.log(f"{stage}_f1", getattr(self, f"{stage}_f1"), on_epoch=True, batch_size=n)
        return z, y, pred

    def validation_step(self, batch, batch_idx):
        z, y, _ = self._eval_step(batch, "val")
        if not self.frozen:
            self._stash["val"].append((z.detach().float(), y.detach()))

    def test_step(self, batch, batch_idx):
        z, y, _ = self._eval_step(batch, "test")
        idx, _, _, known = self.model.predict_features(z)
        missed = (~(known & (idx == y))).float()  # not accepted as the right person
        self.log("test_fnir", missed.mean(), on_epoch=True, sync_dist=True, batch_size=len(y))

    # ---- calibration
    def _has_val(self) -> bool:
        dm = getattr(self.trainer, "datamodule", None)
        return bool(dm is not None and dm.count("val") > 0)

    def _prior(self) -> float | None:
        return PRIOR_THRESHOLDS.get(self.model.backbone_name)

    def _calibrate_frozen(self, log: bool = True) -> None:
        """Exact hold-out calibration on the cached train+val features (prototypes are means).
        ``--finetune``: the features of the network as it is now (recomputed from the cached
        activations), and the prototypes follow them."""
        sums, counts, z, y = self.trainer.datamodule.prototype_sums(
            ("train", "val"), self.model if self.tuned else None)
        if self.tuned:
            means = sums / np.maximum(counts, 1)[:, None]
            self.model.set_prototypes(torch.from_numpy(means).float())
        with torch.no_grad():
            pred = self.model.head(torch.from_numpy(z).to(self.device)).argmax(1).cpu().numpy()
        cal = calibrate_threshold(z, y, self.model.prototypes.cpu().numpy(), proto_sums=sums,
                                  proto_counts=counts, member=np.ones(len(y), bool), predicted=pred,
                                  target_fpir=self.hparams.target_fpir, prior=self._prior())
        cal["data"] = ("train+val" if self._has_val() else "train") + ", each person held out in turn"
        if self.tuned:
            cal["data"] += (" (features of the fine-tuned network, which was trained on these "
                            "people: the FPIR estimate is optimistic)")
        # kept in the checkpoint: enroll/forget recalibrate on it
        self._gallery = (z, y, "finetuned" if self.tuned else "frozen")
        self._set_calibration(cal, log=log)

    def _gather(self, key: str):
        items = self._stash[key]
        self._stash[key] = []
        dim = int(self.model.config["backbone"]["dim"])
        z = torch.cat([a for a, _ in items]) if items else torch.zeros(0, dim, device=self.device)
        y = torch.cat([b for _, b in items]) if items else torch.zeros(0, dtype=torch.long,
                                                                        device=self.device)
        if self.trainer.world_size > 1:
            n = torch.tensor([len(y)], device=self.device)
            sizes = self.all_gather(n).flatten()
            m = int(sizes.max())
            zp = torch.zeros(m, dim, device=self.device, dtype=z.dtype)
            yp = torch.full((m,), -1, dtype=torch.long, device=self.device)
            zp[:len(y)], yp[:len(y)] = z, y
            zg, yg = self.all_gather(zp), self.all_gather(yp)
            keep = yg.flatten() >= 0
            z, y = zg.reshape(-1, dim)[keep], yg.flatten()[keep]
        return z.cpu().numpy(), y.cpu().numpy()

    def _calibrate_trained(self, key: str) -> None:
        z, y = self._gather(key)
        protos = self.model.head_prototypes()
        self.model.set_prototypes(protos)
        pred = (torch.from_numpy(z).to(self.device) @ protos.T).argmax(1).cpu().numpy() if len(z) \
            else None
        cal = calibrate_threshold(z, y, protos.cpu().numpy(), predicted=pred,
                                  target_fpir=self.hparams.target_fpir, prior=self._prior())
        cal["data"] = ("val (held-out people scored against the trained head; features were "
                       "trained on everyone, so the FPIR estimate is optimistic)" if key == "val"
                       else "train (augmented; no validation set: optimistic)")
        self._gallery = (z, y, key)
        self._set_calibration(cal)

    def _set_calibration(self, cal: dict, log: bool = True) -> None:
        self.calibration = cal
        self.model.threshold = float(cal["threshold"])
        if log:  # every process computes the same calibration (same data, deterministic)
            if cal.get("est_fnir") is not None:
                self.log("calib_fnir", float(cal["est_fnir"]), sync_dist=True)
            self.log("threshold", float(cal["threshold"]), sync_dist=True)

    def on_fit_start(self) -> None:
        if self.frozen:
            sums, counts, _, _ = self.trainer.datamodule.prototype_sums(
                ("train", "val"), self.model if self.tuned else None)
            protos = torch.from_numpy(sums / np.maximum(counts, 1)[:, None]).float()
            self.model.set_prototypes(protos)
            if self.trainer.ckpt_path is None:  # fresh run: start from the prototypes
                self.model.head.imprint(self.model.prototypes)
            self._calibrate_frozen(log=False)

    def on_train_epoch_start(self) -> None:
        self._stash = {"train": [], "val": []}

    def on_train_epoch_end(self) -> None:
        if not self.frozen and not self._has_val():
            self._calibrate_trained("train")
        elif self.frozen and not self._has_val():
            self._calibrate_frozen()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._stash["val"] = []
            return
        if self.frozen:
            self._calibrate_frozen()
        else:
            self._calibrate_trained("val")

    # ---- checkpoints
    def facerec_info(self) -> dict:
        info = dict(self.model.config)
        t = self.model.threshold
        info["threshold"] = t if math.isfinite(t) else None
        info["calibration"] = dict(self.calibration)
        return info

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["facerec"] = self.facerec_info()
        gallery = getattr(self, "_gallery", None)
        if gallery is not None and len(gallery[1]):
            # the features the threshold was calibrated on (plain tensors: weights_only-safe), so
            # that `facerec enroll/forget` can recalibrate with the same held-out procedure
            z, y, source = gallery
            z, y = _cap_gallery(np.asarray(z), np.asarray(y))
            checkpoint["facerec_gallery"] = {
                "features": torch.as_tensor(np.asarray(z, dtype=np.float32)),
                "labels": torch.as_tensor(np.asarray(y, dtype=np.int64)), "source": str(source)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        info = checkpoint.get("facerec") or {}
        self.calibration = dict(info.get("calibration") or {})


#: at most this many stored calibration features per checkpoint (20,000 x 128-d = 10 MB)
GALLERY_MAX = 20_000


def _cap_gallery(z: np.ndarray, y: np.ndarray, cap: int = GALLERY_MAX):
    """A deterministic subsample of at most ``cap`` rows, the same share of every person (at
    least 10 each), so that big datasets do not make checkpoints big."""
    if len(y) <= cap:
        return z, y
    people = np.unique(y)
    per = max(10, cap // len(people))
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == p))[:per] for p in people])
    keep.sort()
    return z[keep], y[keep]


class EpochTimer(L.Callback):
    """Counts the epochs this fit ran and their wall-clock seconds (for the summary and benches)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._t0)


# ------------------------------------------------------------------------------------------ run names
_ADJECTIVES = (
    "agile", "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "daring",
    "eager", "fancy", "fearless", "gentle", "golden", "happy", "humble", "jolly", "keen", "lively",
    "lucky", "mellow", "misty", "nimble", "noble", "patient", "proud", "quick", "quiet", "rapid",
    "serene", "sharp", "shiny", "silent", "smooth", "snowy", "steady", "sunny", "swift", "vivid",
    "wise", "witty", "zesty",
)
_ANIMALS = (
    "albatross", "alpaca", "badger", "beaver", "bison", "cheetah", "condor", "coyote", "crane",
    "dolphin", "eagle", "falcon", "ferret", "gazelle", "gecko", "heron", "ibex", "jackal", "jaguar",
    "koala", "lemur", "leopard", "lynx", "marmot", "meerkat", "narwhal", "ocelot", "otter", "panda",
    "pelican", "puffin", "quokka", "raven", "salmon", "seal", "sparrow", "tapir", "tiger", "toucan",
    "walrus", "wombat", "yak", "zebra",
)


def generate_run_name(rng: random.Random | None = None) -> str:
    """``adjective-animal-NNN`` (e.g. ``swift-otter-042``)."""
    rng = rng or random.Random()
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_ANIMALS)}-{rng.randrange(1000):03d}"


def _launched_externally() -> bool:
    """Several processes started by torchrun / SLURM (not by Lightning from this one)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    ntasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    return world > 1 or ntasks > 1


def resolve_run_name(name: str | None) -> str:
    """``name``, else ``$FACEREC_RUN_NAME`` (so that every DDP process agrees), else a new name;
    under torchrun/SLURM one derived from the job (SLURM job id, torchrun's rendezvous id or
    master address and port), since every process must pick the same."""
    if name:
        return name
    env = os.environ.get("FACEREC_RUN_NAME")
    if env:
        return env
    if _launched_externally():
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        if not job or job == "none":
            addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
            job = f"{addr}:{port}" if addr and port else None
        if not job:
            raise FacerecError("give --name when starting several processes yourself: each "
                               "process would otherwise pick a different run name")
        name = generate_run_name(random.Random(f"facerec-{job}"))
    else:
        name = generate_run_name(random.Random(os.urandom(16)))
    os.environ["FACEREC_RUN_NAME"] = name  # inherited by the processes Lightning starts
    return name


# ----------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Every ``facerec train`` option (see ``facerec train --help``)."""

    data_path: str = "dataset"
    backbone: str = DEFAULT_BACKBONE
    max_epochs: int = 100
    learning_rate: float | None = None  # 1e-2 (frozen backbone: head only) / 1e-3 (timm)
    batch_size: int = 32
    num_workers: int | None = None
    seed: int = 42
    gpus: int | None = None
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    ckpt_path: str | None = None
    patience: int = 20
    name: str | None = None
    runs_dir: str = "runs"
    pretrained: bool = False
    image_size: int = 160
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    scale: float = 16.0
    margin: float = 0.1
    dropout: float = 0.0
    warmup_epochs: float = 1.0
    target_fpir: float = 0.01
    monitor: str = "val_loss"
    finetune: int = 0  # dlib_face: train its last N residual levels too (0: frozen)
    backbone_lr: float | None = None  # their learning rate (default: learning_rate / 100)
    augment: bool = True
    mirror_tta: bool = True
    test: bool = True
    progress: bool = True
    log_every_n_steps: int = 10
    callbacks: list = field(default_factory=list)  # extra Lightning callbacks (sweep pruning...)

    def hparams(self) -> dict:
        out = {}
        for f in fields(self):
            if f.name == "callbacks":
                continue
            v = getattr(self, f.name)
            out[f.name] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        return out


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
    epochs: int
    fit_seconds: float
    warnings: list[str] = field(default_factory=list)

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


def _resume_target(ckpt_path: str, runs_dir: str) -> tuple[str, str, int | None]:
    """(save_dir, name, version) of ``<save_dir>/<name>/version_N/checkpoints/x.ckpt``."""
    p = Path(ckpt_path).resolve()
    parts = p.parts
    if len(parts) >= 4 and p.parent.name == "checkpoints" and p.parents[1].name.startswith("version_"):
        try:
            version = int(p.parents[1].name[len("version_"):])
        except ValueError:
            version = None
        return str(p.parents[3]), p.parents[2].name, version
    return runs_dir, "", None


def _check_resume(ckpt_path: str, labels: list[str], backbone: str, finetune: int = 0) -> None:
    ckpt = read_checkpoint(ckpt_path)
    info = ckpt["facerec"]
    if info["backbone"]["name"] != backbone:
        raise FacerecError(f"--ckpt_path {ckpt_path} was trained with backbone "
                           f"{info['backbone']['name']}, not {backbone}: pass --backbone "
                           f"{info['backbone']['name']}")
    if list(info["labels"]) != list(labels):
        raise FacerecError(f"--ckpt_path {ckpt_path} was trained on other people "
                           f"({len(info['labels'])} labels) than this dataset ({len(labels)}): "
                           "resume needs the same labels.json")
    stored = int(info["backbone"].get("finetune") or 0)
    if stored != int(finetune):
        raise FacerecError(f"--ckpt_path {ckpt_path} was trained with --finetune {stored}, not "
                           f"{finetune}: pass --finetune {stored}")


def _is_url(path: str | os.PathLike) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", str(path)) is not None


def _absolute(path: str | os.PathLike | None) -> str | None:
    """A local path made absolute (symlinks resolved); a URL (s3://...) as it is."""
    if path is None or _is_url(path):
        return None if path is None else str(path)
    return str(Path(path).expanduser().resolve())


def _checkpoint_io():
    """Lightning's checkpoint writer, made atomic for local files: a checkpoint is written beside
    its final name and renamed, so a full or read-only disk never leaves a torn ``.ckpt`` (Lightning
    writes a temporary file in /tmp and copies it over, which fails halfway on a full disk), and
    the error names the checkpoint, not a temporary file."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if _is_url(path):
                return super().save_checkpoint(checkpoint, path, storage_options)
            target = Path(path)
            buffer = io.BytesIO()  # torch.save straight to a file fails with a C++ error, no errno
            torch.save(checkpoint, buffer)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot save checkpoint ({exc.strerror or exc})",
                              str(target)) from None

    return AtomicCheckpointIO()


def _launcher_rank_zero() -> bool:
    """This process is the one that owns the run folder: not a worker started by Lightning's DDP
    launcher, torchrun or SLURM (they share the folder the first process locked)."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"):
        if os.environ.get(var, "0") not in ("", "0"):
            return False
    return True


@contextlib.contextmanager
def _lightning_output(quiet: bool) -> Iterator[None]:
    """Lightning's own chatter: its tips and start-up notes (INFO log records) are dropped when
    ``quiet``; a deprecation warning that Lightning raises about its own code (nothing the user
    can act on) always."""
    names = ("lightning.pytorch", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        if quiet:
            warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is "
                                    "not empty")
            for n in names:
                logging.getLogger(n).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


def _checkpoint_score(path: Path, monitor: str) -> float | None:
    """The monitored value ``path`` was saved with (ModelCheckpoint's record in the file)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply not a candidate
        return None
    for key, state in (ckpt.get("callbacks") or {}).items():
        if ("ModelCheckpoint" in str(key) and isinstance(state, dict)
                and state.get("monitor") == monitor and state.get("current_score") is not None):
            score = float(state["current_score"])
            return score if math.isfinite(score) else None
    return None


def _truly_best(best: str, monitor: str, mode: str) -> str:
    """The best checkpoint among the ``epoch=*`` files beside ``best``.

    Lightning keeps one best file per run, but a run resumed from a checkpoint written under
    another path (e.g. made before run folders were absolute) forgets the earlier best and leaves
    it beside the new one: compare them all by the score each was saved with."""
    if not best:
        return best
    folder = Path(best).parent
    candidates = sorted(folder.glob("epoch=*.ckpt"))
    if len(candidates) < 2:
        return best
    scored = [(s, p) for p in candidates if (s := _checkpoint_score(p, monitor)) is not None]
    if not scored:
        return best
    pick = min(scored, key=lambda sp: sp[0]) if mode == "min" else max(scored, key=lambda sp: sp[0])
    return str(pick[1])


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
    cfg = config or TrainConfig()
    if overrides:
        unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
        if unknown:
            raise TypeError(f"unknown train option(s): {', '.join(sorted(unknown))}")
        cfg = TrainConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(TrainConfig)},
                             **overrides})
    if cfg.max_epochs is None or int(cfg.max_epochs) < 1:
        raise FacerecError("--max_epochs must be at least 1")
    if cfg.batch_size < 1:
        raise FacerecError("--batch_size must be at least 1")
    if not 0 < cfg.target_fpir < 1:
        raise FacerecError("--target_fpir must be between 0 and 1")
    if cfg.finetune is None or int(cfg.finetune) < 0:
        raise FacerecError("--finetune must be 0 (frozen) or more")
    if cfg.backbone_lr is not None and not cfg.backbone_lr > 0:
        raise FacerecError("--backbone_lr must be above 0")
    warns: list[str] = []

    # data
    data_path = cfg.data_path
    try:
        from facerec.datastore import resolve_data_path

        data_path = resolve_data_path(data_path, progress=cfg.progress and _is_rank_zero())
    except ImportError:  # pragma: no cover - datastore is part of facerec
        pass
    kind = backbone_kind(cfg.backbone)
    info = scan_dataset(data_path)
    pending = list(info.warnings)  # printed once every check passed (an error stays one line)
    info.warnings = warns
    k = len(info.labels)
    if k == 1:
        if kind != "embedder":
            raise FacerecError(
                f"the dataset has a single person ({info.labels[0]!r}): a {cfg.backbone} backbone "
                "learns from the differences between people, so it needs at least two; add "
                "photos of other people, or use --backbone dlib_face (person-vs-unknown)")
        prior = PRIOR_THRESHOLDS.get(cfg.backbone, FALLBACK_PRIOR_THRESHOLD)
        pending.append(f"the dataset has a single person ({info.labels[0]!r}): training a "
                       f"person-vs-unknown model whose threshold is {cfg.backbone}'s prior "
                       f"({prior}), not calibrated (no other people to calibrate on); add other "
                       "people to calibrate it")
    # run paths are absolute before Lightning sees them: a checkpoint records its folder, and a
    # resume from another working directory (or with the same relative --runs_dir) must find the
    # same folder, else Lightning forgets which checkpoint was best
    runs_dir, ckpt_path = _absolute(cfg.runs_dir), _absolute(cfg.ckpt_path)
    if ckpt_path:
        _check_resume(ckpt_path, info.labels, cfg.backbone, int(cfg.finetune))
    if cfg.gpus and not torch.cuda.is_available():
        raise FacerecError(f"--gpus {cfg.gpus}: no GPU is available here (CUDA not found); "
                           "drop --gpus to train on the CPU")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    lr = cfg.learning_rate if cfg.learning_rate is not None else (1e-2 if kind == "embedder" else 1e-3)
    timm_model = None
    if kind == "timm":
        timm_model = create_timm_model(cfg.backbone, pretrained=cfg.pretrained)
    elif cfg.pretrained:
        _warn(f"--pretrained ignored: {cfg.backbone} is a frozen, already trained face embedding",
              warns)
    model_config = build_model_config(info.labels, cfg.backbone, pretrained=cfg.pretrained,
                                      image_size=cfg.image_size, scale=cfg.scale,
                                      margin=cfg.margin, dropout=cfg.dropout,
                                      mirror_tta=cfg.mirror_tta, crop=info.crop,
                                      timm_model=timm_model, finetune=int(cfg.finetune))
    pre = model_config["preprocess"]
    if cfg.monitor not in ("val_loss", "val_acc", "val_f1"):
        raise FacerecError(f"--monitor {cfg.monitor!r}: use val_loss, val_acc or val_f1")
    has_val = info.count("val") > 0
    # without a validation split, early stopping and the best checkpoint follow the training loss
    # (or accuracy)
    monitor = cfg.monitor if has_val else ("train_loss" if cfg.monitor == "val_loss" else "train_acc")
    mode = "max" if monitor in _MAXIMIZE else "min"

    module = FaceModule(model_config, learning_rate=lr, weight_decay=cfg.weight_decay,
                        label_smoothing=cfg.label_smoothing, warmup_epochs=cfg.warmup_epochs,
                        backbone_lr_mult=0.1 if cfg.pretrained and kind == "timm" else 1.0,
                        target_fpir=cfg.target_fpir, timm_model=timm_model,
                        backbone_lr=cfg.backbone_lr, train_config=cfg.hparams())
    if module.model.tail is not None:  # --finetune starts from dlib's trained weights
        from facerec.dlib_net import DlibTail, load_dlib_resnet

        module.model.tail.load_state_dict(
            DlibTail(int(cfg.finetune), load_dlib_resnet()).state_dict())
    elif cfg.backbone_lr is not None:
        _warn("--backbone_lr ignored: it is the learning rate of --finetune's levels", warns)
    if module.model.tail is not None:
        # measured (bench/recognition.py --only lfw --finetune 0,1,2): the FPIR of unseen people
        # at the calibrated threshold was 7-47% against a 1% target (docs/training.md)
        pending.append(f"--finetune {cfg.finetune}: the unknown threshold is calibrated on the "
                       "people the network was fine-tuned on, so it accepts unseen people more "
                       "often than --target_fpir says; check it with facerec evaluate on photos of "
                       "people outside the dataset")

    # output layout
    save_dir, name, version = runs_dir, cfg.name, None
    if ckpt_path and not cfg.name:
        rdir, rname, rversion = _resume_target(ckpt_path, runs_dir)
        if rname:
            save_dir, name, version = rdir, rname, rversion
            os.environ["FACEREC_RUN_NAME"] = rname
    name = resolve_run_name(name)

    # one writer per (local) run folder; the DDP workers Lightning starts share their parent's
    lock = (folder_lock(Path(save_dir) / name, "train")
            if _launcher_rank_zero() and not _is_url(save_dir) else contextlib.nullcontext())
    with lock, _lightning_output(quiet=not cfg.progress):
        return _fit(cfg, info, module, kind, save_dir, name, version, ckpt_path, monitor, mode,
                    has_val, pending, pre, warns)


def _fit(cfg: TrainConfig, info: DatasetInfo, module: FaceModule, kind: str, save_dir: str,
         name: str, version: int | None, ckpt_path: str | None, monitor: str, mode: str,
         has_val: bool, pending: list[str], pre: dict, warns: list[str]) -> TrainResult:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
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
    if cfg.patience and cfg.patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience))

    accelerator, devices = cfg.accelerator, _parse_devices(cfg.devices)
    if cfg.gpus is not None:
        if int(cfg.gpus) == 0:
            accelerator, devices = "cpu", "auto" if devices == "auto" else devices
        else:
            accelerator, devices = "gpu", int(cfg.gpus)
    n = info.count("train")
    steps_per_epoch = max(1, n // cfg.batch_size if kind == "timm" and n > cfg.batch_size
                          else math.ceil(n / cfg.batch_size))  # see train_dataloader's drop_last
    try:
        trainer = L.Trainer(
            accelerator=accelerator, devices=devices, strategy=cfg.strategy,
            num_nodes=cfg.num_nodes, precision=cfg.precision, max_epochs=int(cfg.max_epochs),
            logger=logger, callbacks=callbacks, enable_progress_bar=cfg.progress,
            plugins=[_checkpoint_io()],
            enable_model_summary=cfg.progress, num_sanity_val_steps=0,
            limit_val_batches=1.0 if has_val else 0,
            log_every_n_steps=max(1, min(cfg.log_every_n_steps, steps_per_epoch)),
            deterministic=False,
        )
    except FacerecError:
        raise
    except Exception as exc:  # MisconfigurationException, bad precision, no such accelerator
        raise FacerecError(f"cannot set up the trainer: {first_line(exc)}") from None

    # data last: a misconfigured trainer fails before minutes of embedding
    for w in pending:
        _warn(w, warns)
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
    _say(f"train samples: {n_train}")
    _say(f"valid samples: {n_val}")

    # a frozen backbone trains a (K x D) head: one intra-op thread is faster than several (whose
    # fork/join costs more than these tiny matrix products, badly so on a busy machine)
    threads = torch.get_num_threads()
    if kind == "embedder" and not cfg.finetune:  # --finetune runs convolutions: every core
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - t0
        epochs = len(timer.seconds)

        best = ckpt_cb.best_model_path or last_cb.best_model_path
        if ckpt_cb.best_model_path:
            best = _truly_best(best, monitor, mode)
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
                         fit_seconds=fit_seconds, warnings=warns)
    if _is_rank_zero():
        print_train_summary(result, calibration)
    return result


def print_train_summary(result: TrainResult, calibration: dict | None = None, file=None) -> None:
    """``Best checkpoint: PATH`` and the final metrics."""
    out = file or sys.stdout
    print(f"Best checkpoint: {result.best_checkpoint}", file=out)
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
    print(f"{result.epochs} epoch(s) in {result.fit_seconds:.1f}s "
          f"({result.seconds_per_epoch:.2f}s/epoch); TensorBoard: tensorboard --logdir "
          f"{Path(result.run_dir).parent}", file=out)
