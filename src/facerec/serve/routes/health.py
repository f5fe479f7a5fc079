"""``GET /api/health``: the server, its model and its training state."""

from typing import Any

from fastapi import APIRouter

from facerec._version import __version__
from facerec.defaults import DEFAULT_BACKBONE
from facerec.serve.state import State

router = APIRouter()


@router.get("/api/health")
def health(state: State) -> dict[str, Any]:
    """Whether the server is up, the model it recognises with, and the training state."""
    job = state.trainer.running()
    model = state.recogniser.info()
    model["checkpoint"] = state.public_path(model["checkpoint"])  # relative: no server paths
    return {"status": "ok", "version": __version__,
            "work_dir": state.workspace.root.resolve().name, "model": model,
            "photos": state.workspace.photos is not None, "training": job.id if job else None,
            "default_backbone": DEFAULT_BACKBONE}
