"""What the routes of ``facerec serve`` share: the server's settings (:class:`ServeConfig`) and
one :class:`ServeState` per application, which every route gets through ``Depends``
(:data:`State`)."""

# no ``from __future__ import annotations``: FastAPI reads the ``State`` annotation at runtime
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from facerec.errors import ConflictError, FacerecError, NotFoundError
from facerec.images import MAX_DECODE_BYTES
from facerec.safeio import error_summary
from facerec.serve.people import ManifestCache
from facerec.serve.recognise import Recogniser
from facerec.serve.training import TrainManager
from facerec.workspace import Workspace


@dataclass
class ServeConfig:
    work_dir: Path
    checkpoint: Path | None = None
    photos_dir: Path | None = None
    token: str | None = None            # None: no token needed (loopback only)
    device: str = "auto"
    max_upload_bytes: int = 20 * 1024 * 1024   # per image
    max_files: int = 16                        # per predict request
    max_body_bytes: int = 2 * 1024 * 1024      # any other request body (JSON)
    max_images_at_once: int = 1                # uploads being decoded at once, all requests
    max_held_bytes: int = MAX_DECODE_BYTES     # decoded pixels waiting for or in the model
    max_batch: int = 8                         # images of concurrent requests predicted together
    host: str = "127.0.0.1"

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.work_dir, photos=self.photos_dir)


@dataclass
class ServeState:
    """The objects of one running server (the routes' shared state)."""

    config: ServeConfig
    workspace: Workspace
    recogniser: Recogniser
    trainer: TrainManager
    edit_lock: threading.Lock          # one edit of processed/ at a time (and none during a split)
    manifest: ManifestCache
    notes: list[str] = field(default_factory=list)   # what starting did (runs recovered)

    @classmethod
    def open(cls, config: ServeConfig) -> "ServeState":
        """Check the work folder, finish the runs of processed/ that were killed midway, load
        the model (``--checkpoint_path``, else the best of the newest run, else none yet; a bad
        one is a one-line :class:`~facerec.errors.FacerecError`), and make the trainer."""
        workspace = config.workspace
        if not workspace.processed.is_dir():
            raise NotFoundError(f"no processed/ folder in {workspace.root} (give a `facerec run` "
                                "work folder, or any folder with processed/)")
        edit_lock = threading.Lock()
        notes = recover(workspace.processed, edit_lock)
        recogniser = Recogniser(device=config.device, slots=config.max_images_at_once,
                                held_bytes=config.max_held_bytes, max_batch=config.max_batch)
        checkpoint = config.checkpoint or workspace.best_checkpoint()
        if checkpoint is not None:
            try:
                recogniser.load(checkpoint)
            except (FacerecError, OSError):
                raise
            except Exception as exc:  # a checkpoint that passed the reader but cannot be built
                raise FacerecError(f"{checkpoint}: cannot load this model "
                                   f"({error_summary(exc)})") from exc
        trainer = TrainManager(workspace, recogniser, edit_lock, device=config.device)
        return cls(config, workspace, recogniser, trainer, edit_lock,
                   ManifestCache(workspace.processed), notes)

    def recover(self) -> list[str]:
        """Finish the runs of processed/ killed midway (see :func:`recover`)."""
        return recover(self.workspace.processed, self.edit_lock)

    # ---- what responses may show
    def public_path(self, path) -> str | None:
        """``path`` as a response shows it: relative to the work folder when inside it, else its
        file name only (a response never shows where the server's files are)."""
        if path is None:
            return None
        p, root = Path(path), self.workspace.root
        for inside, base in ((p, root), (p, root.resolve()), (p.resolve(), root.resolve())):
            try:
                return inside.relative_to(base).as_posix()
            except ValueError:
                continue
        return p.name

    def public_text(self, text: str) -> str:
        """A message as a response shows it: paths inside the work folder (or the photos
        folder) relative to it, any other absolute path cut to its file name."""
        folders = [self.workspace.root] + ([self.workspace.photos] if self.workspace.photos
                                           else [])
        variants = sorted({(str(v), f.name) for f in folders
                           for v in (f, f.absolute(), f.resolve())}, key=lambda v: -len(v[0]))
        for root, name in variants:
            if root not in ("", ".", os.sep):
                text = text.replace(root + os.sep, "").replace(root, name)
        return _ABSOLUTE.sub(_file_name, text)


#: an absolute path in a message: starts a word, has two segments or more
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s'\"(\[=]))/[^\s'\"()\[\],;]+/[^\s'\"()\[\],;]*")


def _file_name(match: "re.Match[str]") -> str:
    path = match.group(0)
    top = path.split("/")[1]
    return (path.rstrip("/").rsplit("/", 1)[-1] or path) if os.path.isdir("/" + top) else path


def recover(processed: Path, edit_lock: threading.Lock) -> list[str]:
    """Finish the runs of ``processed`` that were killed midway (an annotate run, a page edit:
    :func:`facerec.annotate.finish_interrupted`), so the pages never show, and a training never
    reads, a half-done state. Skipped while another process writes processed/ (that one
    recovers itself) or when processed/ cannot be written. One line per run finished."""
    from facerec.annotate import finish_interrupted

    try:
        with edit_lock:
            return finish_interrupted(processed)
    except ConflictError:  # processed/ is being written by another process right now
        return []
    except OSError as exc:  # a read-only work folder: served for looking, edits will say so
        return [f"could not finish an interrupted run of processed/: {exc.strerror or exc}"]


async def get_state(request: Request) -> ServeState:
    """The dependency: the :class:`ServeState` of the application serving ``request``."""
    return request.app.state.serve


#: a route parameter ``state: State`` receives the application's :class:`ServeState`
State = Annotated[ServeState, Depends(get_state)]
