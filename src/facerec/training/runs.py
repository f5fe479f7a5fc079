"""A run's folder: its name (generated, or from the launcher), the resume target, atomic
checkpoint writes, the truly best checkpoint, Lightning's console output."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from facerec.errors import FacerecError
from facerec.recognition.checkpoint import Checkpoint
from facerec.safeio import atomic_write

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


def resume_target(ckpt_path: str, runs_dir: str) -> tuple[str, str, int | None]:
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


def check_resume(ckpt_path: str, labels: list[str], backbone: str, finetune: int = 0) -> None:
    info = Checkpoint.read(ckpt_path).info
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


def is_url(path: str | os.PathLike) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", str(path)) is not None


def absolute_path(path: str | os.PathLike | None) -> str | None:
    """A local path made absolute (symlinks resolved); a URL (s3://...) as it is."""
    if path is None or is_url(path):
        return None if path is None else str(path)
    return str(Path(path).expanduser().resolve())


def atomic_checkpoint_io():
    """Lightning's checkpoint writer, made atomic for local files: a checkpoint is written beside
    its final name and renamed, so a full or read-only disk never leaves a torn ``.ckpt`` (Lightning
    writes a temporary file in /tmp and copies it over, which fails halfway on a full disk), and
    the error names the checkpoint, not a temporary file."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if is_url(path):
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


def owns_run_folder() -> bool:
    """This process is the one that owns the run folder: not a worker started by Lightning's DDP
    launcher, torchrun or SLURM (they share the folder the first process locked)."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"):
        if os.environ.get(var, "0") not in ("", "0"):
            return False
    return True


@contextlib.contextmanager
def lightning_output(verbose: bool = False) -> Iterator[None]:
    """Lightning's own chatter, off unless ``verbose`` (``facerec train --verbose``): its tips
    (``try installing [litlogger]``), start-up notes (GPU/TPU available), "Restoring states from
    the checkpoint" of every validate/test (INFO log records), and a deprecation warning that
    Lightning raises about its own code (nothing the user can act on; dropped always). What the
    user reads instead: :func:`epoch_lines`, then the summary."""
    names = ("lightning.pytorch", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        if not verbose:
            warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is "
                                    "not empty")
            for n in names:
                logging.getLogger(n).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


def format_metric(name: str, value: float) -> str:
    """A metric as a person reads it: accuracies as percentages (``val_acc 95.0%``), losses and
    other scores with three decimals (``val_loss 0.447``, ``val_f1 0.950``)."""
    return f"{name} {value:.1%}" if name.endswith("_acc") else f"{name} {value:.3f}"


def epoch_lines(keys: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc",
                                          "val_f1")):
    """A Lightning callback that shows training as one line per epoch (``epoch  3/30
    train_loss 0.912  train_acc 87.5%  val_loss 0.447 ...``), on stdout of the first process; on a
    terminal the line is rewritten in place, with a bar. Replaces Lightning's progress bars."""
    import sys

    import lightning.pytorch as L

    class EpochLines(L.Callback):
        def __init__(self) -> None:
            self.width = 0   # of the line written in place (a terminal), 0 when none is open

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.global_rank != 0:
                return
            out = sys.stdout
            metrics = trainer.callback_metrics
            shown = [format_metric(k, float(metrics[k])) for k in keys if k in metrics]
            total = trainer.max_epochs or 0
            epoch = trainer.current_epoch + 1
            head = f"epoch {epoch:>{len(str(total))}}/{total}" if total > 0 else f"epoch {epoch}"
            if out.isatty() and total > 0:
                done = round(20 * min(epoch, total) / total)
                line = f"{head} [{'#' * done}{'-' * (20 - done)}]  " + "  ".join(shown)
                out.write("\r" + line.ljust(self.width))
                out.flush()
                self.width = len(line)
            else:
                print(f"{head}  " + "  ".join(shown), file=out, flush=True)

        def on_train_end(self, trainer, pl_module) -> None:
            if self.width:
                sys.stdout.write("\n")
                sys.stdout.flush()
                self.width = 0

    return EpochLines()


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


def truly_best(best: str, monitor: str, mode: str) -> str:
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
