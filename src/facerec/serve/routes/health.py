"""``GET /api/health``: the server, its model and its training state."""

from typing import Any

from fastapi import APIRouter

from facerec._version import __version__
from facerec.defaults import DEFAULT_BACKBONE
from facerec.errors import FacerecError
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
            "default_backbone": _backbone_of_crops(state)}


def _backbone_of_crops(state) -> str:
    """The model a training of this work folder uses without --backbone: the one its crops were
    cut for (the default model before any crops exist)."""
    from facerec.cropspec import read_processed_spec
    from facerec.recognition.backbones import backbone_for_crops

    try:
        spec = read_processed_spec(state.workspace.processed)
    except FacerecError:  # a damaged crop.json: training will say so
        return DEFAULT_BACKBONE
    return DEFAULT_BACKBONE if spec is None else backbone_for_crops(spec)
