"""The main job: a folder of photos -> a trained model and its report, in one call.

``facerec run PHOTOS --work WORK`` chains the stages with their defaults::

    detect   PHOTOS            -> WORK/processed   (crops + manifest.jsonl; resumable)
    annotate WORK/processed                        (albums: set aside other people's faces;
                                                    loose photos: cluster into person_01, ...)
    split    WORK/processed    -> WORK/dataset     (train/val/test, labels.json)
    train    WORK/dataset      -> WORK/runs/<run>/version_N/checkpoints/*.ckpt
    evaluate the best checkpoint on WORK/dataset/test -> WORK/report/

The folders are a :class:`~facerec.workspace.Workspace`; split, train and evaluate are
:func:`facerec.workflow.train_and_evaluate`, which the server's Train page runs too.

Rerunning it after adding photos redoes only what changed upstream (detection and embeddings
are cached) and trains a new version. With loose photos the people are named person_01, ...:
rename those folders in WORK/processed and rerun to get named predictions.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from facerec.errors import NotFoundError
from facerec.safeio import check_output_location
from facerec.workspace import Workspace


@dataclass
class PipelineResult:
    work_dir: str
    best_checkpoint: str
    report_dir: str
    labels: list[str]
    accuracy: float | None
    seconds: dict[str, float] = field(default_factory=dict)


def run_pipeline(photos: str | os.PathLike, work_dir: str | os.PathLike = "facerec-work", *,
                 backbone: str = "dlib_face", max_epochs: int = 100, val: float = 0.1,
                 test: float = 0.1, seed: int = 42, device: str = "auto",
                 progress: bool = True, out=None) -> PipelineResult:
    """Run every stage on ``photos`` inside ``work_dir``; print each stage's summary to ``out``."""
    from facerec.annotate import annotate, print_annotate_summary
    from facerec.crops import is_person_folder
    from facerec.detection.detect import FaceDetector, detect_folder, print_detect_summary
    from facerec.workflow import TrainOptions, train_and_evaluate

    out = out or sys.stdout
    ws = Workspace(Path(work_dir), photos=Path(photos))
    if Path(photos).is_dir():
        check_output_location(ws.root, [photos], "--work folder")
    processed = ws.processed
    seconds: dict[str, float] = {}

    def header(name: str) -> None:
        print(f"\n== {name} ==", file=out, flush=True)

    def stage(name: str) -> None:
        header(name)
        seconds[name] = time.perf_counter()

    def done(name: str) -> None:
        seconds[name] = round(time.perf_counter() - seconds[name], 2)

    stage("detect")
    summary = detect_folder(photos, processed, detector=FaceDetector(device=device), progress=progress)
    print_detect_summary(summary, file=out)
    done("detect")
    if summary.faces == 0:
        raise NotFoundError(f"no faces found in {photos} ({summary.photos_read} photos read, "
                            f"{sum(summary.skipped.values())} files skipped): nothing to train on")

    stage("annotate")
    print_annotate_summary(annotate(processed, progress=progress), file=out)
    done("annotate")
    people = sorted(p.name for p in processed.iterdir() if p.is_dir() and is_person_folder(p.name))
    if not people:
        raise NotFoundError(f"no person folders in {processed}: no usable faces were found in "
                            f"{photos}")

    # split -> train -> evaluate: the same workflow as the server's Train page
    options = TrainOptions(max_epochs=max_epochs, backbone=backbone, val=val, test=test, seed=seed)
    result = train_and_evaluate(ws, options, device=device, progress=progress, out=out,
                                on_stage=header)
    seconds.update(result.seconds)

    print(f"\nBest checkpoint: {result.best_checkpoint}", file=out)
    print("Stage seconds: " + "  ".join(f"{k}={v}" for k, v in seconds.items()), file=out)
    print(f"Next: facerec predict --checkpoint_path {result.best_checkpoint} --image_path PHOTO",
          file=out)
    if any(name.startswith("person_") for name in people):
        print(f"People were found by clustering (person_01, ...): rename the folders in {processed} "
              "to their names and rerun to train on named people.", file=out)
    return PipelineResult(str(ws.root), result.best_checkpoint, str(ws.report),
                          result.train.labels, result.accuracy, seconds)
