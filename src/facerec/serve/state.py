"""What the routes of ``facerec serve`` share: the server's settings (:class:`ServeConfig`) and
one :class:`ServeState` per application, which every route gets through ``Depends``
(:data:`State`)."""

# no ``from __future__ import annotations``: FastAPI reads the ``State`` annotation at runtime
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from facerec.errors import NotFoundError
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

    @classmethod
    def open(cls, config: ServeConfig) -> "ServeState":
        """Check the work folder, load the model (``--checkpoint_path``, else the best of the
        newest run, else none yet), and make the trainer."""
        workspace = config.workspace
        if not workspace.processed.is_dir():
            raise NotFoundError(f"no processed/ folder in {workspace.root} (give a `facerec run` "
                                "work folder, or any folder with processed/)")
        recogniser = Recogniser(device=config.device)
        checkpoint = config.checkpoint or workspace.best_checkpoint()
        if checkpoint is not None:
            recogniser.load(checkpoint)
        edit_lock = threading.Lock()
        trainer = TrainManager(workspace, recogniser, edit_lock, device=config.device)
        return cls(config, workspace, recogniser, trainer, edit_lock,
                   ManifestCache(workspace.processed))


async def get_state(request: Request) -> ServeState:
    """The dependency: the :class:`ServeState` of the application serving ``request``."""
    return request.app.state.serve


#: a route parameter ``state: State`` receives the application's :class:`ServeState`
State = Annotated[ServeState, Depends(get_state)]
