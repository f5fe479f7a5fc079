"""The Train page's API: start split + train + evaluate (:class:`~facerec.serve.training.
TrainManager`, one job at a time) and follow its jobs."""

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from facerec.defaults import DEFAULT_BACKBONE
from facerec.errors import NotFoundError
from facerec.serve.state import State
from facerec.workflow import TrainOptions

router = APIRouter()


class TrainBody(BaseModel):
    max_epochs: int = Field(30, ge=1, le=1000)
    backbone: str = Field(DEFAULT_BACKBONE, max_length=100)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)
    seed: int = 42


@router.post("/api/train", status_code=202)
def train(body: TrainBody, state: State) -> dict[str, Any]:
    """Start split + train + evaluate on the person folders; the new model then recognises.
    Poll `GET /api/train/{id}`."""
    return state.trainer.start(TrainOptions(**body.model_dump())).to_dict()


@router.get("/api/train/{job_id}")
def train_status(job_id: str, state: State) -> dict[str, Any]:
    """state (running, done, failed), stage, epoch, per-epoch metrics, result or error."""
    job = state.trainer.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no such training job: {job_id}")
    return job.to_dict()


@router.get("/api/train")
def train_jobs(state: State) -> dict[str, Any]:
    """Every job of this server run, newest last."""
    return {"jobs": [j.to_dict() for j in state.trainer.jobs.values()]}
