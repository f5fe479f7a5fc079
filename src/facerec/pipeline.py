"""The main job: a folder of photos -> a trained model and its report, in one call.

``facerec run PHOTOS --work WORK`` chains the stages with their defaults::

    detect   PHOTOS            -> WORK/processed   (crops + manifest.jsonl; resumable)
    annotate WORK/processed                        (albums: set aside other people's faces;
                                                    loose photos: cluster into person_01, ...)
    split    WORK/processed    -> WORK/dataset     (train/val/test, labels.json)
    train    WORK/dataset      -> WORK/runs/<run>/version_N/checkpoints/*.ckpt
    evaluate the best checkpoint on WORK/dataset/test -> WORK/report/

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


def lightning_devices(device: str) -> tuple[str, str | list[int]]:
    """Lightning's (accelerator, devices) for a torch device string: ``cuda:1`` is GPU 1 only
    (not every GPU), ``cuda`` one GPU, ``cpu`` the CPU, ``auto`` whatever Lightning finds."""
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        return "gpu", [int(index)] if index else "1"
    return ("cpu", "auto") if device == "cpu" else ("auto", "auto")


def run_pipeline(photos: str | os.PathLike, work_dir: str | os.PathLike = "facerec-work", *,
                 backbone: str = "dlib_face", max_epochs: int = 100, val: float = 0.1,
                 test: float = 0.1, seed: int = 42, device: str = "auto",
                 progress: bool = True, out=None) -> PipelineResult:
    """Run every stage on ``photos`` inside ``work_dir``; print each stage's summary to ``out``."""
    from facerec.annotate import annotate, print_annotate_summary
    from facerec.crops import is_person_folder
    from facerec.detection.detect import FaceDetector, detect_folder, print_detect_summary
    from facerec.inference.evaluate import evaluate, print_report, write_report
    from facerec.split import print_split_summary, split_dataset
    from facerec.training import TrainConfig, train

    out = out or sys.stdout
    ws = Workspace(Path(work_dir), photos=Path(photos))
    work = ws.root
    if Path(photos).is_dir():
        check_output_location(work, [photos], "--work folder")
    processed, dataset = ws.processed, ws.dataset
    seconds: dict[str, float] = {}

    def stage(name: str):
        print(f"\n== {name} ==", file=out, flush=True)
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

    stage("split")
    print_split_summary(split_dataset(processed, dataset, val=val, test=test, seed=seed, force=True,
                                      progress=progress), file=out)
    done("split")

    stage("train")
    accelerator, devices = lightning_devices(device)
    result = train(TrainConfig(data_path=str(dataset), runs_dir=str(ws.runs), backbone=backbone,
                               max_epochs=max_epochs, seed=seed, progress=progress,
                               accelerator=accelerator, devices=devices))
    done("train")  # train() printed its own summary (Best checkpoint, metrics, threshold)

    stage("evaluate")
    report_dir = ws.report
    accuracy = None
    if ws.has_test_split():
        report = evaluate(result.best_checkpoint, ws.test_split, device=device, progress=progress)
        write_report(report, report_dir)
        print_report(report, file=out)
        accuracy = report.accuracy
        print(f"Report: {report_dir}", file=out)
    else:
        print("no test split (too few photos per person): evaluation skipped", file=out)
    done("evaluate")

    print(f"\nBest checkpoint: {result.best_checkpoint}", file=out)
    print("Stage seconds: " + "  ".join(f"{k}={v}" for k, v in seconds.items()), file=out)
    print(f"Next: facerec predict --checkpoint_path {result.best_checkpoint} --image_path PHOTO",
          file=out)
    if any(name.startswith("person_") for name in people):
        print(f"People were found by clustering (person_01, ...): rename the folders in {processed} "
              "to their names and rerun to train on named people.", file=out)
    return PipelineResult(str(work), result.best_checkpoint, str(report_dir), result.labels,
                          accuracy, seconds)
