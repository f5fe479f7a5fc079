"""The main job: a folder of photos -> a trained model and its report, in one call.

``facerec run PHOTOS --out WORK`` chains the stages with their defaults::

    detect   PHOTOS            -> WORK/processed   (crops + manifest.jsonl; resumable)
    annotate WORK/processed                        (albums: set aside other people's faces;
                                                    loose photos: cluster into person_01, ...)
    split    WORK/processed    -> WORK/dataset     (train/val/test, labels.json)
    train    WORK/dataset      -> WORK/runs/<run>/version_N/checkpoints/*.ckpt
    evaluate the best checkpoint on WORK/dataset/test -> WORK/report/

The folders are a :class:`~facerec.workspace.Workspace`; split, train and evaluate are
:func:`facerec.workflow.train_and_evaluate`, which the server's Train page runs too.

Two stops keep a run from doing work nobody asked for:

* **Unnamed clusters.** Loose photos are clustered into ``person_01``, ``person_02``...; a model
  that predicts ``person_03`` helps nobody, so the run stops before training with a table of the
  clusters (crops, an example crop and its photo) and the two ways to name them (rename the
  folders, or the People page of ``facerec serve WORK``); the next run trains
  (``train_unnamed=True`` trains on them as they are).
* **Nothing changed.** The training's input (every crop of every person folder, by path, size and
  time) and its options (the detect and train options, the split fractions) are recorded in
  ``WORK/.facerec/run.json`` after each training; a rerun with the same input and options trains
  nothing and reports the model it made last time (``retrain=True`` trains again).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from facerec.errors import NotFoundError
from facerec.safeio import META_DIR, atomic_write, check_output_location, display_path
from facerec.workspace import Workspace

#: the record of the last training of a work folder (WORK/.facerec/run.json)
RUN_RECORD = "run.json"
#: how many example rows the table of unnamed clusters shows at most
_CLUSTER_ROWS = 30


@dataclass
class PipelineResult:
    work_dir: str
    best_checkpoint: str | None
    report_dir: str | None
    labels: list[str]
    accuracy: float | None
    seconds: dict[str, float] = field(default_factory=dict)
    #: "trained"; "unchanged" (nothing changed since the last run: its model); "needs_names"
    #: (stopped before training: clusters person_NN to name first)
    status: str = "trained"
    #: with "needs_names": one row per unnamed cluster (name, crops, example crop, its photo)
    clusters: list[dict[str, Any]] = field(default_factory=list)


def run_pipeline(photos: str | os.PathLike, work_dir: str | os.PathLike = "facerec-work", *,
                 train: Any = None, detect: Mapping[str, Any] | None = None,
                 backbone: str | None = None, max_epochs: int | None = None, val: float = 0.1,
                 test: float = 0.1, seed: int | None = None, device: str = "auto",
                 progress: bool = True, retrain: bool = False, train_unnamed: bool = False,
                 out=None) -> PipelineResult:
    """Run every stage on ``photos`` inside ``work_dir``; print each stage's summary to ``out``.

    ``train``: a :class:`~facerec.training.TrainConfig` or a mapping of its fields (the train
    options; ``backbone``, ``max_epochs`` and ``seed`` override it, ``seed`` also seeds the
    split). ``detect``: the detector's name and settings and how to crop (``facerec run``'s detect
    options: keys ``detector``, ``settings``, ``size``, ``margin``, ``align``, ``min_score``,
    ``batch_size``). See the module docstring for ``retrain`` and ``train_unnamed``."""
    from facerec.annotate import annotate, print_annotate_summary
    from facerec.detection.detect import detect_folder, get_detector, print_detect_summary
    from facerec.recognition.backbones import detect_settings_for

    out = out or sys.stdout
    ws = Workspace(Path(work_dir), photos=Path(photos))
    if Path(photos).is_dir():
        check_output_location(ws.root, [photos], "--out folder")
    options = _train_options(train, backbone=backbone, max_epochs=max_epochs, seed=seed,
                             val=val, test=test)
    detect = dict(detect or {})
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
    detect = detect_settings_for(processed, {**detect, "backbone": options.backbone})
    detector = get_detector(detect["detector"], device=device, **detect.get("settings", {}))
    crop = {k: detect[k] for k in ("size", "margin", "align", "min_score", "batch_size")
            if k in detect}
    summary = detect_folder(photos, processed, detector=detector, progress=progress, **crop)
    print_detect_summary(summary, file=out)
    done("detect")
    if summary.faces == 0:
        raise NotFoundError(f"no faces found in {photos} ({summary.photos_read} photos read, "
                            f"{sum(summary.skipped.values())} files skipped): nothing to train on")

    stage("annotate")  # with the model of the crops (annotate's default), on this device
    print_annotate_summary(annotate(processed, device=device, progress=progress), file=out)
    done("annotate")
    people = _people(processed)
    if not people:
        raise NotFoundError(f"no person folders in {processed}: no usable faces were found in "
                            f"{photos}")

    unnamed = [name for name in people if _is_unnamed(name)]
    if unnamed and not train_unnamed:
        clusters = _cluster_rows(processed, unnamed)
        _print_needs_names(ws, clusters, people, out)
        return PipelineResult(str(ws.root), None, None, sorted(people), None, seconds,
                              status="needs_names", clusters=clusters)

    fingerprint = _fingerprint(processed, people, options, detect)
    last = _read_record(ws)
    if not retrain and last is not None and last.get("fingerprint") == fingerprint \
            and Path(str(last.get("best_checkpoint"))).is_file():
        header("train")
        print("Nothing changed since the last run (the same crops in the same person folders, "
              "the same options): no new training; --retrain trains again.", file=out)
        _print_pending(processed, out)
        result = PipelineResult(str(ws.root), last["best_checkpoint"], last.get("report_dir"),
                                list(last.get("labels") or []), last.get("accuracy"), seconds,
                                status="unchanged")
        _print_ending(ws, result, out)
        return result

    # split -> train -> evaluate: the same workflow as the server's Train page
    from facerec.workflow import train_and_evaluate

    trained = train_and_evaluate(ws, options, device=device, progress=progress, out=out,
                                 on_stage=header)
    seconds.update(trained.seconds)
    result = PipelineResult(str(ws.root), trained.best_checkpoint,
                            str(trained.report_dir) if trained.report_dir else None,
                            list(trained.train.labels), trained.accuracy, seconds)
    _write_record(ws, fingerprint, result)
    print("\nStage seconds: " + "  ".join(f"{k}={v}" for k, v in seconds.items()), file=out)
    _print_pending(processed, out)
    _print_ending(ws, result, out)
    return result


def _train_options(train: Any, *, backbone: str | None, max_epochs: int | None,
                   seed: int | None, val: float, test: float):
    """The workflow's TrainOptions from a TrainConfig (or a mapping of its fields) and the
    keyword overrides. Fields the workflow sets itself (the data, the run folder, the progress
    bars, the callbacks) are not options."""
    from facerec.workflow import TrainOptions

    given: dict[str, Any] = {}
    if train is not None:
        if isinstance(train, Mapping):
            given = dict(train)
        else:  # a TrainConfig: the fields that differ from the defaults
            from facerec.training import TrainConfig

            default = TrainConfig()
            given = {f.name: getattr(train, f.name) for f in fields(train)
                     if getattr(train, f.name) != getattr(default, f.name)}
    for key in ("data_path", "runs_dir", "progress", "callbacks", "ckpt_path"):
        given.pop(key, None)
    for key, value in (("backbone", backbone), ("max_epochs", max_epochs), ("seed", seed)):
        if value is not None:
            given[key] = value
    # no backbone given: the model the crops were cut for (train's rule)
    return TrainOptions(max_epochs=int(given.pop("max_epochs", 100)),
                        backbone=given.pop("backbone", None), val=val, test=test,
                        seed=int(given.pop("seed", 42)), extra=given)


def _people(processed: Path) -> dict[str, list[str]]:
    """Person folders of processed/ that hold crops -> their crops' names (sorted)."""
    from facerec.crops import IMAGE_EXTS, is_person_folder

    people = {}
    for folder in sorted(p for p in processed.iterdir() if p.is_dir() and is_person_folder(p.name)):
        crops = sorted(f.name for f in folder.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith("."))
        if crops:
            people[folder.name] = crops
    return people


def _is_unnamed(name: str) -> bool:
    from facerec.annotate import is_unnamed_cluster

    return is_unnamed_cluster(name)


# ------------------------------------------------------------------------------- unnamed clusters
def _cluster_rows(processed: Path, unnamed: list[str]) -> list[dict[str, Any]]:
    """One row per unnamed cluster: its name, crop count, an example crop (the detector's most
    confident face of it) and the photo that crop comes from."""
    from facerec.crops import Manifest

    manifest = Manifest(processed)
    people = _people(processed)
    rows = []
    for name in unnamed:
        crops = people[name]

        def score(crop: str) -> float:
            hit = manifest.by_name.get(crop)
            return float((hit[1].get("score") or 0.0) if hit else 0.0)

        example = max(crops, key=score)
        hit = manifest.by_name.get(example)
        rows.append({"cluster": name, "crops": len(crops),
                     "example": str(processed / name / example),
                     "photo": str(hit[0].get("path")) if hit else None})
    rows.sort(key=lambda r: (-r["crops"], r["cluster"]))
    return rows


def _print_needs_names(ws: Workspace, clusters: list[dict[str, Any]],
                       people: dict[str, list[str]], out) -> None:
    """The stop before training: the unnamed clusters (plain text, so that every path is whole
    and can be copied) and the two ways to name them."""
    from facerec.annotate import REJECTED, SINGLETONS
    from facerec.hints import command_line

    processed = display_path(_relative(ws.processed))
    print(f"\n== name the people ==\nThe loose photos gave {len(clusters)} unnamed cluster(s): "
          "name them before training (a model that answers 'person_03' helps nobody). Nothing "
          "was trained.\n", file=out)
    rows = [("cluster", "crops", "example crop (from photo)")]
    rows += [(r["cluster"], str(r["crops"]), f"{display_path(_relative(r['example']))} (from "
              f"{display_path(r['photo'] or '?')})") for r in clusters[:_CLUSTER_ROWS]]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, count, example in rows:
        print(f"  {name:<{width[0]}}  {count:>{width[1]}}  {example}", file=out)
    if len(clusters) > _CLUSTER_ROWS:
        print(f"  ... and {len(clusters) - _CLUSTER_ROWS} more in {processed}/", file=out)
    named = [n for n in people if not _is_unnamed(n)]
    if named:
        print(f"Already named: {', '.join(named)}.", file=out)
    singles = ws.processed / SINGLETONS
    n_single = sum(1 for f in singles.iterdir() if f.is_file()) if singles.is_dir() else 0
    if n_single:
        print(f"{n_single} face(s) seen once wait in {processed}/{SINGLETONS}/ (not trained on; "
              "move one into a person's folder to use it).", file=out)
    first = clusters[0]["cluster"]
    print("\nName them in one of two ways, then run the same command again to train:\n"
          f"  1. rename each folder to the person's name, e.g. mv {processed}/{first} "
          f"{processed}/alice\n"
          "     (to merge two clusters, move the crops of one into the other; to leave one out, "
          f"move it into {processed}/{REJECTED}/)\n"
          f"  2. or in the browser: {command_line('serve', str(_relative(ws.root)), *_photos_arg(ws))}"
          "\n     and open http://127.0.0.1:8000/ (People page: rename, merge, move, undo)",
          file=out)


def _photos_arg(ws: Workspace) -> list[str]:
    return ["--photos", str(_relative(ws.photos))] if ws.photos is not None else []


def _relative(path: str | os.PathLike) -> Path:
    """PATH relative to the current folder when inside it, else as it is."""
    p = Path(path)
    try:
        return p.absolute().relative_to(Path.cwd())
    except ValueError:
        return p


# ------------------------------------------------------------------------------------ the ending
def _print_pending(processed: Path, out) -> None:
    """Crops that wait for the user (suggestions) are not trained on: say so."""
    from facerec.annotate import SUGGESTED

    suggested = processed / SUGGESTED
    if not suggested.is_dir():
        return
    waiting = {p.name: sum(1 for f in p.iterdir() if f.is_file())
               for p in sorted(suggested.iterdir()) if p.is_dir()}
    waiting = {k: v for k, v in waiting.items() if v}
    if waiting:
        print(f"{sum(waiting.values())} new crop(s) wait in {_relative(suggested)}/ "
              f"({', '.join(f'{k}: {v}' for k, v in waiting.items())}), not trained on: move the "
              "right ones into the person's folder (or accept them on facerec serve's People "
              "page), then rerun.", file=out)


def _print_ending(ws: Workspace, result: PipelineResult, out) -> None:
    """The last lines: the result, then the next step (a prediction on one of the photos, held
    out of training when there is one: a command that works as printed)."""
    from facerec.hints import command_line

    if result.accuracy is not None:
        print(f"Test accuracy: {result.accuracy:.1%} (report: {_relative(result.report_dir)}/)"
              if result.report_dir else f"Test accuracy: {result.accuracy:.1%}", file=out)
    elif result.report_dir:
        print(f"Report: {_relative(result.report_dir)}/", file=out)
    print(f"Best checkpoint: {result.best_checkpoint}", file=out)
    photo = _example_photo(ws)
    print("Next: " + command_line("predict", str(_relative(photo)) if photo else "PHOTO",
                                  "--checkpoint_path", result.best_checkpoint)
          + (f"   (or any photo; {photo.name} was held out of training)" if photo and
             _split_of(ws, photo) == "test" else ""), file=out)


def _split_of(ws: Workspace, photo: Path) -> str | None:
    try:
        sources = json.loads((ws.dataset / "split.json").read_text(encoding="utf-8"))["sources"]
        return sources[photo.relative_to(ws.photos).as_posix()]["split"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _example_photo(ws: Workspace) -> Path | None:
    """A photo of the photos folder to predict on: one of the test split's (held out of
    training) when the split recorded one, else the first photo."""
    from facerec.crops import IMAGE_EXTS

    if ws.photos is None or not ws.photos.is_dir():
        return None
    try:
        sources = json.loads((ws.dataset / "split.json").read_text(encoding="utf-8"))["sources"]
        for source, where in sorted(sources.items()):
            if isinstance(where, dict) and where.get("split") == "test" \
                    and (ws.photos / source).is_file():
                return ws.photos / source
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    for path in sorted(ws.photos.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTS and path.is_file() and not any(
                part.startswith(".") for part in path.relative_to(ws.photos).parts):
            return path
    return None


# ------------------------------------------------------------------------------ nothing changed
def _fingerprint(processed: Path, people: dict[str, list[str]], options: Any,
                 detect: Mapping[str, Any]) -> str:
    """What a training of this work folder depends on: every crop of every person folder (path,
    size, modification time), the train options (not the machine's: devices, workers), the split
    fractions and the detect options (not its batch size)."""
    from facerec.training.config import cli_fields

    environment = {f.name for f in cli_fields() if f.metadata.get("environment")}
    crops = []
    for name, files in people.items():
        for crop in files:
            st = (processed / name / crop).stat()
            crops.append([name, crop, st.st_size, st.st_mtime_ns])
    opts = {"max_epochs": options.max_epochs, "backbone": options.backbone, "val": options.val,
            "test": options.test, "seed": options.seed,
            "extra": {k: v for k, v in sorted(options.extra.items()) if k not in environment}}
    how = {k: v for k, v in detect.items() if k != "batch_size"}  # speed, not results
    blob = json.dumps({"crops": crops, "options": opts, "detect": how}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _record_path(ws: Workspace) -> Path:
    return ws.root / META_DIR / RUN_RECORD


def _read_record(ws: Workspace) -> dict | None:
    try:
        data = json.loads(_record_path(ws).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_record(ws: Workspace, fingerprint: str, result: PipelineResult) -> None:
    path = _record_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"fingerprint": fingerprint, "best_checkpoint": result.best_checkpoint,
            "report_dir": result.report_dir, "labels": result.labels,
            "accuracy": result.accuracy, "time": time.time()}
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n",
                                                  encoding="utf-8"))
