"""Training data: a ``facerec split`` dataset checked against its ``labels.json``
(:func:`scan_dataset`), cached frozen-embedder features or fine-tune activations
(:class:`ViewDataset`, :func:`compute_activations`), augmented images for timm backbones
(:class:`ImageDataset`), and the :class:`FaceDataModule` that serves them."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from facerec.cropspec import CropSpec, read_dataset_spec
from facerec.errors import FacerecError
from facerec.images import IMAGE_EXTS
from facerec.defaults import DEFAULT_BACKBONE
from facerec.recognition.backbones import backbone_for, eval_transform
from facerec.recognition.decision import UNKNOWN
from facerec.recognition.features import combine_views, embed_crop_files
from facerec.recognition.model import FaceClassifier
from facerec.safeio import first_line

SPLITS = ("train", "val", "test")


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def say(msg: str, file=None) -> None:
    if is_rank_zero():
        print(msg, file=file or sys.stdout, flush=True)


def warn_user(msg: str, sink: list[str] | None = None) -> None:
    if sink is not None:
        sink.append(msg)
    if is_rank_zero():
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
    from facerec.recognition.embed import open_image

    key = _activations_key(paths, upto, mirror)
    if key in _ACTIVATIONS:
        return _ACTIVATIONS[key]
    cutter = embedder.input_cutter(embedder.options())
    chips, rows = [], []
    for i, p in enumerate(paths):
        try:
            img = open_image(p.read_bytes())
        except OSError as exc:
            raise FacerecError(f"cannot read {p}: {first_line(exc)}") from None
        except Exception:  # noqa: BLE001 - not an image: left out like an unembeddable crop
            continue
        got, ok_rows = cutter([img])
        if ok_rows:
            chips.append(got[0])
            rows.append(i)
    if progress:
        say(f"fine-tuning: activations of {len(rows)} crops (and mirrors) at level {upto}")
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


#: how each kind of backbone's training data reaches the model
#: (:attr:`facerec.recognition.backbones.Backbone.data`): the :class:`FaceDataModule` method that
#: loads its cached rows per split (None: augmented images read from disk every epoch), and the
#: view an evaluation batch takes (-1: the mean of crop and mirror; None: every view)
SOURCES: dict[str, tuple[str | None, int | None]] = {
    "features": ("load_features", -1),
    "activations": ("load_activations", None),
    "images": (None, None),
}


class FaceDataModule(L.LightningDataModule):
    """``dataset/{train,val,test}/<person>/`` crops + ``labels.json`` (see :func:`scan_dataset`).

    Frozen backbones (``dlib_face``): :meth:`prepare_data` embeds every crop and its mirror once
    (cached by content, see :func:`facerec.recognition.features.embed_crop_files`); batches are
    feature vectors. ``--finetune``: the activations entering the tuned levels, computed once.
    timm backbones: batches are augmented image tensors, loaded by ``num_workers`` processes.
    """

    def __init__(self, data_path: str | os.PathLike = "dataset", backbone: str = DEFAULT_BACKBONE,
                 batch_size: int = 32, num_workers: int | None = None, image_size: int = 160,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                 augment: bool = True, mirror_tta: bool = True, progress: bool = True,
                 info: DatasetInfo | None = None, finetune: int = 0):
        super().__init__()
        self.info = info or scan_dataset(data_path)
        self.labels = self.info.labels
        self.backbone = backbone
        self.finetune = int(finetune or 0)
        self.kind = backbone_for(backbone, self.finetune)
        self.loader_name, self.eval_view = SOURCES[self.kind.data]
        self.batch_size = int(batch_size)
        self.num_workers = int(self.kind.default_num_workers() if num_workers is None
                               else num_workers)
        self.image_size = int(image_size)
        self.mean, self.std = list(mean), list(std)
        self.augment = augment
        self.mirror_tta = mirror_tta
        self.progress = progress
        self.features: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.activations: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.dropped: list[Path] = []
        self.datasets: dict[str, Dataset] = {}

    def embedder(self):
        """The frozen embedder, for crops made by the dataset's crop spec."""
        return self.kind.embedder(crop=self.info.crop)

    # ---- frozen features
    def load_features(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per split: (views (n, V, D) unit rows, labels (n,)); crops that cannot be embedded are
        dropped with a warning."""
        if self.features is not None:
            return self.features
        emb = self.embedder()
        paths = self._all_paths()
        raw = embed_crop_files(paths, emb, mirror=self.mirror_tta,
                               progress=self.progress and is_rank_zero())
        views = combine_views(raw[:, 0], raw[:, 1] if self.mirror_tta else None)
        self.features = self._per_split(views, np.isfinite(views).all(axis=(1, 2)))
        return self.features

    def _all_paths(self) -> list[Path]:
        return [p for s in SPLITS for p, _ in self.info.samples[s]]

    def _per_split(self, rows: np.ndarray, ok: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """ROWS (one per sample of :meth:`_all_paths`, in split order) -> per split (rows,
        labels), without the samples that are not OK (dropped with a warning); every person
        must keep a training crop."""
        samples = [(s, p, y) for s in SPLITS for p, y in self.info.samples[s]]
        self.dropped = [p for (_, p, _), good in zip(samples, ok) if not good]
        if self.dropped:
            warn_user(f"{len(self.dropped)} crop(s) could not be embedded and are left out "
                      f"(first: {self.dropped[0]})", self.info.warnings)
        split_of = np.array([s for s, _, _ in samples])
        labels = np.array([y for _, _, y in samples], dtype=np.int64)
        out = {s: (rows[(split_of == s) & ok], labels[(split_of == s) & ok]) for s in SPLITS}
        if not len(out["train"][1]):
            raise FacerecError(f"no training crop of {self.info.root} could be embedded "
                               f"with {self.backbone}: are they face crops?")
        missing = sorted(set(range(len(self.labels))) - set(out["train"][1].tolist()))
        if missing:
            raise FacerecError(f"no usable training crop for {self.labels[missing[0]]!r}: "
                               f"none could be embedded with {self.backbone}")
        return out

    def load_activations(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``--finetune N``: per split, (activations (n, V, C, H, W) entering the first tuned
        level, labels (n,)); crops without a landmark fit are dropped (as by
        :meth:`load_features`)."""
        if self.activations is not None:
            return self.activations
        emb = self.embedder()
        acts, ok = compute_activations(self._all_paths(), emb, emb.finetune_levels - self.finetune,
                                       mirror=self.mirror_tta,
                                       progress=self.progress and is_rank_zero())
        self.activations = self._per_split(acts, np.asarray(ok, bool))
        return self.activations

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

    def _cached(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """The cached rows per split of this backbone's source (None: images, or not loaded)."""
        return {"load_features": self.features, "load_activations": self.activations
                }.get(self.loader_name or "")

    def prepare_data(self) -> None:
        if self.loader_name:
            getattr(self, self.loader_name)()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.loader_name:
            rows = getattr(self, self.loader_name)()
            for s in SPLITS:
                self.datasets[s] = ViewDataset(*rows[s], augment=(s == "train" and self.augment),
                                               eval_view=self.eval_view)
        else:
            for s in SPLITS:
                tf = face_transforms(self.image_size, self.mean, self.std,
                                     augment=(s == "train" and self.augment))
                self.datasets[s] = ImageDataset(self.info.samples[s], tf)

    def count(self, split: str) -> int:
        cached = self._cached()
        return len(cached[split][1]) if cached is not None else self.info.count(split)

    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        self.setup()
        # cached rows are in memory already: worker processes would only copy them
        workers = 0 if self.loader_name else self.num_workers
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=False, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        # a trainable backbone has batch norm, which fails on a trailing batch of one: drop the
        # incomplete last batch (reshuffled every epoch, so every crop is still seen)
        drop = False
        if self.kind.drops_last_batch:
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
