"""Every ``facerec train`` option, once: :class:`TrainConfig`.

Each field carries its flag's help, type and kind in its metadata; from that one schema come the
``facerec train`` flags (:func:`add_train_arguments`), the ``facerec sweep`` flags (the same
function with ``as_text=True``: a value or a distribution, converted later), the flags that
``facerec launch`` reads from the command it launches (:mod:`facerec.training.launch`), and
``--config FILE`` (:func:`read_config_file`), which also reads back a run's ``hparams.yaml``.

Field kinds (metadata):

* ``flag``: the option's name when it is not ``--<field>`` (a switch that turns a default-on
  field off: ``augment`` <- ``--no_augment``, ``progress`` <- ``--quiet``; the output folder:
  ``runs_dir`` <- ``--out``, the dialect of docs/cli.md);
* ``aliases``: earlier names of the flag, still accepted and hidden from ``--help``
  (``--runs_dir``); ``data_path`` is also the command's positional argument (``facerec train
  DATA``) and keeps ``--data_path`` hidden, as the tutorial's ``train.py --data_path`` uses it;
* ``environment``: describes the machine, not the experiment (a sweep never sweeps it and keeps it
  out of the sweep's identity, so machines with different GPUs join the same sweep);
* ``run``: names the run's folder (the sweep sets these per trial);
* ``cli=False``: library only (Lightning callbacks).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from facerec.defaults import DEFAULT_BACKBONE
from facerec.errors import FacerecError
MONITORS = ("val_loss", "val_acc", "val_f1")  # what early stopping and the best checkpoint follow


def _opt(default: Any, help: str, *, type: Any = None, group: str = "model", **meta: Any) -> Any:
    """A TrainConfig field with its flag's description."""
    meta = {"help": help, "type": type, "group": group, **meta}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every ``facerec train`` option (see ``facerec train --help``)."""

    # the original tutorial's flags, and the data
    data_path: str = _opt("dataset", "dataset folder or datastore://NAME[/VERSION]", group="data")
    max_epochs: int = _opt(100, "most epochs", group="data")
    learning_rate: float | None = _opt(
        None, "AdamW learning rate", type=float, group="data",
        default_text="0.01 for a frozen face embedder, 0.001 for timm models")
    backbone: str | None = _opt(
        None, "a face embedder (frozen: only the head trains) or a timm model name, e.g. "
        "resnet18", type=str, group="data",
        default_text=f"the face model the dataset's crops were cut for: {DEFAULT_BACKBONE} for "
        "crops made by facerec detect's defaults")
    finetune: int = _opt(0, "dlib_face: also train its last N residual levels (1 to 5; 0: frozen); "
                         "their weights go into the checkpoint", group="data", metavar="N")
    backbone_lr: float | None = _opt(None, "learning rate of the --finetune levels", type=float,
                                     group="data", default_text="learning_rate / 100")
    batch_size: int = _opt(32, "batch size per device", group="data")
    num_workers: int | None = _opt(None, "data loading processes", type=int, group="data",
                                   environment=True, default_text="0 for dlib_face, else up to 4")
    seed: int = _opt(42, "random seed", group="data")
    gpus: int | None = _opt(None, "number of GPUs (shorthand for --accelerator gpu --devices N)",
                            type=int, group="data", environment=True)
    # Lightning
    accelerator: str = _opt("auto", "auto, cpu, gpu, mps, ...", group="lightning", environment=True)
    devices: str = _opt("auto", "how many devices, or which (0,1)", group="lightning",
                        environment=True)
    strategy: str = _opt("auto", "auto, ddp, ddp_spawn, fsdp, ...", group="lightning",
                         environment=True)
    num_nodes: int = _opt(1, "machines", group="lightning", environment=True)
    precision: str | None = _opt(None, "32-true, 16-mixed, bf16-mixed, ...", type=str,
                                 group="lightning", environment=True)
    ckpt_path: str | None = _opt(None, "resume from this checkpoint (e.g. "
                                 "runs/NAME/version_0/checkpoints/last.ckpt)", type=str,
                                 group="lightning", run=True)
    patience: int = _opt(20, "stop after this many epochs without improvement (0: never)",
                         group="lightning")
    monitor: str = _opt("val_loss", "metric for early stopping and the best checkpoint",
                        group="lightning", choices=MONITORS,
                        unswept="the metric that the sweep compares the experiments on")
    name: str | None = _opt(None, "run name", type=str, group="lightning", run=True,
                            default_text="generated, e.g. swift-otter-042")
    runs_dir: str = _opt("runs", "where runs go: OUT/<name>/version_N/", group="lightning",
                         run=True, flag="--out", aliases=("--runs_dir",), metavar="OUT")
    log_every_n_steps: int = _opt(10, "log training metrics every N steps", group="lightning",
                                  environment=True, metavar="N")
    # model
    pretrained: bool = _opt(False, "start a timm backbone from its ImageNet weights (needs them "
                            "downloaded)")
    image_size: int = _opt(160, "input side for timm backbones (the crop size)")
    weight_decay: float = _opt(1e-4, "AdamW weight decay")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy")
    margin: float = _opt(0.1, "cosine margin on the true class while training")
    scale: float = _opt(16.0, "cosine logit scale")
    dropout: float = _opt(0.0, "dropout before the cosine head")
    warmup_epochs: float = _opt(1.0, "epochs of linear learning-rate warm-up before the cosine "
                                "decay")
    target_fpir: float = _opt(0.01, "calibrate the unknown threshold for this false-positive "
                              "identification rate")
    augment: bool = _opt(True, "no training augmentation", flag="--no_augment")
    mirror_tta: bool = _opt(True, "dlib_face: do not average each crop's embedding with its mirror "
                            "image's", flag="--no_mirror")
    test: bool = _opt(True, "do not evaluate the test split at the end", flag="--no_test")
    progress: bool = _opt(True, "no progress: no line per epoch, no bars", flag="--quiet",
                          environment=True)
    verbose: bool = _opt(False, "also Lightning's own messages: devices found, the model "
                         "summary, its tips", environment=True, group="lightning")
    callbacks: list = _opt([], "extra Lightning callbacks (the sweep's pruning...)", cli=False)

    def hparams(self) -> dict:
        """The options as plain values (``hparams.yaml``'s ``train_config``)."""
        out = {}
        for f in cli_fields():
            v = getattr(self, f.name)
            out[f.name] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        return out

    def check(self) -> None:
        """Values that no run could use: a one-line FacerecError naming the flag."""
        if self.max_epochs is None or int(self.max_epochs) < 1:
            raise FacerecError("--max_epochs must be at least 1")
        if self.batch_size < 1:
            raise FacerecError("--batch_size must be at least 1")
        if not 0 < self.target_fpir < 1:
            raise FacerecError("--target_fpir must be between 0 and 1")
        if self.finetune is None or int(self.finetune) < 0:
            raise FacerecError("--finetune must be 0 (frozen) or more")
        if self.backbone_lr is not None and not self.backbone_lr > 0:
            raise FacerecError("--backbone_lr must be above 0")
        if self.monitor not in MONITORS:
            raise FacerecError(f"--monitor {self.monitor!r}: use {', '.join(MONITORS)}")

    def replace(self, **changes: Any) -> TrainConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown train option(s): {', '.join(sorted(unknown))}")
        return TrainConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


# ------------------------------------------------------------------------------------ the schema
def cli_fields() -> list[Field]:
    """The fields that are flags, in ``--help`` order."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def option(f: Field) -> str:
    """The flag of field ``f``: ``--learning_rate``, ``--no_augment``..."""
    return f.metadata.get("flag") or f"--{f.name}"


def is_switch(f: Field) -> bool:
    return isinstance(f.default, bool)


def value_type(f: Field) -> Any:
    """What a flag's text is converted with (None for a switch)."""
    if is_switch(f):
        return None
    return f.metadata.get("type") or type(f.default)


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def default_text(f: Field) -> str | None:
    """The default as ``--help`` shows it (None: a switch, or no default)."""
    if is_switch(f):
        return None
    text = f.metadata.get("default_text")
    if text is None and f.default is not None:
        text = str(f.default)
    return text


_GROUPS = {"data": "data and model (the original tutorial's flags among them)",
           "lightning": "Lightning: devices, runs, checkpoints", "model": "model and training"}


def add_train_arguments(parser: argparse.ArgumentParser, *, as_text: bool = False,
                        skip: Sequence[str] = (), positional: bool = True) -> None:
    """Give PARSER one flag per :class:`TrainConfig` field (except SKIP), in argument groups;
    ``data_path`` is the positional argument DATA (``--data_path`` still works, hidden), unless
    not ``positional`` (a lenient reader of other flags, e.g. ``facerec launch``'s, whose unknown
    flags' values must not be taken for the data).

    Flags that are not given are absent from the parsed namespace (``argparse.SUPPRESS``), so a
    ``--config`` file, or a sweep, can tell "not given" from "given the default". With
    ``as_text`` every value flag takes text (``facerec sweep``: a value or a distribution,
    converted by the field's type later)."""
    groups: dict[str, Any] = {}
    for f in cli_fields():
        if f.name in skip:
            continue
        group = f.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(_GROUPS[group])
        target, meta = groups[group], f.metadata
        help_text = meta["help"]
        shown = default_text(f)
        if shown is not None:
            help_text += f" (default: {shown})"
        if is_switch(f):
            action = "store_false" if f.default else "store_true"
            target.add_argument(option(f), dest=f.name, action=action, default=argparse.SUPPRESS,
                                help=help_text)
            continue
        choices = meta.get("choices")
        metavar = meta.get("metavar") or (
            "{" + ",".join(choices) + "}" if choices else f.name.upper())
        kind = {"type": None if as_text else value_type(f), "choices": None if as_text else choices}
        names = [option(f)]
        if f.name == "data_path" and positional:  # the main input: positional, flag hidden
            target.add_argument("data_path", nargs="?", default=argparse.SUPPRESS,
                                metavar="DATA", help=help_text, **kind)
            help_text = argparse.SUPPRESS
        target.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, metavar=metavar,
                            help=help_text, **kind)
        for alias in meta.get("aliases", ()):  # earlier names, hidden
            target.add_argument(alias, dest=f.name, default=argparse.SUPPRESS, metavar=metavar,
                                help=argparse.SUPPRESS, **kind)


def config_from_args(args: argparse.Namespace | Mapping[str, Any],
                     base: TrainConfig | None = None) -> TrainConfig:
    """BASE (default: the defaults) with the flags present in ARGS."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    given = {f.name: values[f.name] for f in cli_fields() if f.name in values}
    return (base or TrainConfig()).replace(**given)


# ----------------------------------------------------------------------------------- --config
def read_config_file(path: str | Path) -> TrainConfig:
    """A YAML file of train options (field names: ``learning_rate: 0.001``), or a run's
    ``hparams.yaml`` (whose ``train_config`` holds them; its run folder and resume checkpoint are
    not reused, so the file reruns the experiment as a new run)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise FacerecError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise FacerecError(f"--config {path}: expected a mapping of train options, e.g. "
                           "'max_epochs: 10'")
    if isinstance(data.get("train_config"), Mapping):  # hparams.yaml of a run
        data = {k: v for k, v in data["train_config"].items() if k not in ("name", "ckpt_path")}
    by_name = {f.name: f for f in cli_fields()}
    unknown = sorted(set(map(str, data)) - set(by_name))
    if unknown:
        raise FacerecError(f"--config {path}: unknown train option(s): {', '.join(unknown)} "
                           f"(known: {', '.join(by_name)})")
    values = {}
    for key, value in data.items():
        f = by_name[key]
        values[key] = _checked(f, value, f"--config {path}: {key}")
    return TrainConfig().replace(**values)


def _checked(f: Field, value: Any, where: str) -> Any:
    """VALUE converted to field F's type (YAML already typed most values)."""
    if value is None:
        if f.default is None:
            return None
        raise FacerecError(f"{where}: needs a value")
    if is_switch(f):
        if not isinstance(value, bool):
            raise FacerecError(f"{where}: expected true or false, not {value!r}")
        return value
    convert = value_type(f)
    try:
        if convert is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        out = convert(value)
    except (TypeError, ValueError):
        raise FacerecError(f"{where}: expected {convert.__name__}, not {value!r}") from None
    choices = f.metadata.get("choices")
    if choices and out not in choices:
        raise FacerecError(f"{where}: {out!r} is not one of {', '.join(choices)}")
    return out
