"""The Train page's API: start split + train + evaluate (:class:`~facerec.serve.training.
TrainManager`, one job at a time) and follow its jobs."""

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from facerec.errors import FacerecError, NotFoundError, shown
from facerec.safeio import first_line
from facerec.serve.state import ServeState, State
from facerec.workflow import TrainOptions

router = APIRouter()

#: a seed is what the random generators take: 0 .. 2**32 - 1
SEED_MAX = 2**32 - 1


class TrainBody(BaseModel):
    """The training options; every field is checked here (422) before anything is touched:
    the dataset is only rebuilt for options that a training can run with."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_epochs: int = Field(30, ge=1, le=1000, strict=True)
    # None: the model the crops were cut for (train's rule)
    backbone: str | None = Field(None, min_length=1, max_length=100)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)
    seed: int = Field(42, ge=0, le=SEED_MAX, strict=True)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str | None) -> str | None:
        from facerec.recognition.backbones import backbone_for

        if name is None:
            return None
        try:
            backbone_for(name)
        except FacerecError as exc:
            raise ValueError(first_line(exc, 200)) from None
        return name

    @model_validator(mode="after")
    def _leaves_train(self) -> "TrainBody":
        if self.val + self.test >= 1.0:  # the rule of facerec split
            raise ValueError(f"val + test is {self.val + self.test:g}: it must leave crops "
                             "to train on (below 1)")
        return self


@router.post("/api/train", status_code=202)
def train(body: TrainBody, state: State) -> dict[str, Any]:
    """Start split + train + evaluate on the person folders; the new model then recognises.
    Poll `GET /api/train/{id}`."""
    state.recover()  # a run of processed/ killed midway is finished before split reads it
    return _public(state, state.trainer.start(TrainOptions(**body.model_dump())).to_dict())


@router.get("/api/train/{job_id}")
def train_status(job_id: str, state: State) -> dict[str, Any]:
    """state (running, done, failed), stage, epoch, per-epoch metrics, result or error."""
    job = state.trainer.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no such training job: {shown(job_id)}")
    return _public(state, job.to_dict())


@router.get("/api/train")
def train_jobs(state: State) -> dict[str, Any]:
    """Every job of this server run, newest last."""
    return {"jobs": [_public(state, j.to_dict()) for j in state.trainer.jobs.values()]}


def _public(state: ServeState, job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it: its error and checkpoint without the server's own paths."""
    if job.get("error"):
        job["error"] = state.public_text(job["error"])
    if job.get("result") and job["result"].get("checkpoint"):
        job["result"]["checkpoint"] = state.public_path(job["result"]["checkpoint"])
    return job
