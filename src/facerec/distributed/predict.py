"""``facerec predict --engine ray``: who is in every photo of folders or fsspec URLs, written as
JSON Lines to an output folder or URL.

Photos are listed by Ray tasks, read, hashed and decoded by CPU tasks, and predicted in a pool of
:class:`PredictWorker` actors, each holding one :class:`facerec.inference.predict.Predictor`
(the checkpoint is sent once through Ray's object store, so workers need no shared disk) and
calling its :meth:`~facerec.inference.predict.Predictor.predict_loaded`: the local engine's
detection, cropping and classification.

Output, ``OUT/predictions.jsonl``: one line per image, sorted by image, each the object of
``facerec predict --json`` for that image (``image``, ``faces``, ``error``, ``width``,
``height``) plus ``sha256``, ``size`` and ``mtime_ns`` of the file (what a rerun compares).
Image names are those the local engine prints: a local path as given (``photos/alice/1.jpg``),
else the URL. ``OUT/.facerec/predict.json`` records the model (its sha256) and the settings;
another model or other settings in the same OUT are refused. Resumable like detect.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from facerec.detection.detect import unchanged
from facerec.distributed.cluster import actor_pool, import_ray, ray_session, use_threads
from facerec.distributed.output import Output, jsonl, read_jsonl, shard_name
from facerec.distributed.pipeline import loaded_image, rows, run_stage
from facerec.distributed.storage import Location, list_tree, modified_ns
from facerec.errors import ConflictError, FacerecError
from facerec.images import IMAGE_EXTS
from facerec.safeio import (META_DIR, atomic_write, atomic_write_jsonl, check_output_location,
                            display_path)

PREDICTIONS = "predictions.jsonl"
SETTINGS = f"{META_DIR}/predict.json"


@dataclass
class PredictSummary:
    """What ``facerec predict --engine ray`` did: ``images`` in the inputs, ``predicted`` now,
    ``already_done`` before (unchanged), ``faces`` in all of them, the ``unreadable`` ones."""

    out: str
    images: int = 0
    predicted: int = 0
    already_done: int = 0
    faces: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    workers: int = 0
    seconds: float = 0.0

    def count(self, record: dict, already_done: bool) -> None:
        if already_done:
            self.already_done += 1
        elif not record.get("error"):
            self.predicted += 1
        if record.get("error"):
            self.unreadable.append((display_path(record["image"]), record["error"]))
        self.faces += len(record.get("faces") or [])


class PredictWorker:
    """Ray actor: one Predictor; one shard of predictions per batch."""

    def __init__(self, model: Any, suffix: str, options: dict, device: str, threads: int,
                 output: Location) -> None:
        import ray

        from facerec.inference.predict import Predictor

        use_threads(threads)
        data = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        folder = tempfile.mkdtemp(prefix="facerec-model-")
        weakref.finalize(self, shutil.rmtree, folder, True)
        path = Path(folder) / f"model{suffix}"
        path.write_bytes(data)
        self.predictor = Predictor(path, device=device, **options)
        self.output = output

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        work = rows(batch)
        results = iter(self.predictor.predict_loaded([
            (item["key"], loaded_image(meta, pixels) if meta["state"] == "new" else None,
             meta.get("error")) for item, meta, pixels in work if meta["state"] != "same"]))
        records = []
        for item, meta, _ in work:
            stat = {"size": item["size"], "mtime_ns": item["mtime_ns"]}
            if meta["state"] == "same":
                records.append({**item["previous"], **stat})
            else:
                records.append({**next(results).to_dict(), "sha256": meta["sha256"], **stat})
        self.output.write_bytes(shard_name("predict", [r["image"] for r in records]),
                                jsonl(records))
        return {"record": [json.dumps(r) for r in records],
                "state": [meta["state"] for _, meta, _ in work]}


# ---------------------------------------------------------------------------------------- inputs
def _inputs(ray: Any, paths: list[str], storage_options: dict) -> list[dict]:
    """Every image of the inputs, as :func:`facerec.inference.predict.collect_images` finds them
    (folders searched recursively for image files; files as given): ``{"root", "rel", "key",
    "size", "mtime_ns"}`` (``key``: the image's name in the results)."""
    entries = []
    for raw in paths:
        location = Location(raw, storage_options)
        if location.is_dir():
            found = [e for e in list_tree(ray, location)
                     if os.path.splitext(e["rel"])[1].lower() in IMAGE_EXTS]
            if not found:
                raise FacerecError(f"no images found in {location.shown()} (looked for "
                                   f"{', '.join(sorted(e[1:] for e in IMAGE_EXTS))})")
            entries += [{"root": location.url, "rel": e["rel"], "key": location.shown(e["rel"]),
                         "size": e["size"], "mtime_ns": e["mtime_ns"]} for e in found]
        elif location.exists() or (location.is_local and os.path.lexists(location.path)):
            entries.append(_single(location))
        else:
            raise FacerecError(f"image not found: {location.shown()}")
    if not entries:
        raise FacerecError("no image given")
    return entries


def _single(location: Location) -> dict:
    """A file given as an input: its folder is the root, the name as given its key."""
    if location.is_local:
        path = location.path
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # a broken link: the reader reports it
            size = mtime = None
        return {"root": str(path.parent), "rel": path.name, "key": display_path(path),
                "size": size, "mtime_ns": mtime}
    fs, full = location.fs()
    info = fs.info(full)
    parent, name = location.url.rstrip("/").rsplit("/", 1)
    return {"root": parent, "rel": name, "key": location.url, "size": info.get("size"),
            "mtime_ns": modified_ns(info)}


def _model(checkpoint: str, storage_options: dict, folder: Path) -> tuple[bytes, str, Path]:
    """(the model file's bytes, its suffix, a local copy)."""
    location = Location(checkpoint, storage_options)
    suffix = os.path.splitext(checkpoint)[1] or ".ckpt"
    if location.is_local:
        if not location.path.is_file():
            raise FacerecError(f"checkpoint not found: {checkpoint}")
        return location.path.read_bytes(), suffix, location.path
    try:
        data = location.fs()[0].cat_file(location.fs()[1])
    except FileNotFoundError:
        raise FacerecError(f"checkpoint not found: {checkpoint}") from None
    local = folder / f"model{suffix}"
    local.write_bytes(data)
    return data, suffix, local


# ------------------------------------------------------------------------------------ the stage
def predict_ray(checkpoint: str, inputs: list[str], out: str, *, threshold: float | None = None,
                device: str = "auto", runtime: str = "torch", mode: str = "auto",
                batch_size: int = 16, progress: bool = True, address: str | None = None,
                workers: int | None = None, threads: int | None = None,
                num_cpus: int | None = None, storage_options: dict | None = None
                ) -> PredictSummary:
    """``facerec predict`` on Ray (see the module docstring); the results are in
    ``OUT/predictions.jsonl``. ``address``, ``workers``, ``threads``, ``num_cpus``: as
    :func:`facerec.distributed.detect.detect_ray`."""
    from facerec.inference.predict import Predictor

    import_ray()  # without the extra: one line, before anything is read or written
    started = time.perf_counter()
    storage_options = storage_options or {}
    target = Location(out, storage_options)
    if target.is_local:
        check_output_location(target.path, [p for p in inputs if "://" not in p], "--out folder")
    with tempfile.TemporaryDirectory(prefix="facerec-model-") as folder:
        model, suffix, local = _model(checkpoint, storage_options, Path(folder))
        # the checkpoint is checked here, once (a bad one is one line, before any worker starts)
        probe = Predictor(local, device="cpu", runtime=runtime, threshold=threshold, mode=mode)
        settings = {"model_sha256": hashlib.sha256(model).hexdigest(), "runtime": runtime,
                    "mode": mode, "threshold": probe.threshold, "crop": probe.crop.to_dict()}
        del probe
    summary = PredictSummary(out=target.shown(PREDICTIONS))
    with Output(target, "predict") as output, ray_session(address, num_cpus) as ray:
        _settings(output, settings)
        done = _merge(output, fetch=True)
        entries = _inputs(ray, list(inputs), storage_options)
        summary.images = len(entries)
        todo = []
        for entry in entries:
            previous = done.get(entry["key"])
            if entry["mtime_ns"] is not None and previous is not None and unchanged(
                    previous, SimpleNamespace(st_size=entry["size"],
                                              st_mtime_ns=entry["mtime_ns"])):
                summary.count(previous, already_done=True)
            else:
                todo.append({**entry, "previous": previous})
        pool = actor_pool(ray, workers, device, threads)
        summary.workers = pool.size
        options = {"threshold": threshold, "runtime": runtime, "mode": mode,
                   "batch_size": batch_size}
        kwargs = {"model": ray.put(model), "suffix": suffix, "options": options,
                  "device": pool.device, "threads": pool.threads, "output": target}
        _run(ray, todo, kwargs, pool, batch_size, storage_options, summary, progress)
        _merge(output, fetch=False)
    summary.seconds = time.perf_counter() - started
    return summary


def _run(ray: Any, todo: list[dict], kwargs: dict, pool: Any, batch_size: int,
         storage_options: dict, summary: PredictSummary, progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="photo", desc=f"predict (ray, {pool.size} workers)",
               disable=not progress or not todo, file=sys.stderr)
    try:
        for results in run_stage(ray, todo, PredictWorker, kwargs, pool, batch_size,
                                 storage_options):
            for record, state in results:
                summary.count(record, already_done=state == "same")
            bar.update(len(results))
    finally:
        bar.close()


def _settings(output: Output, settings: dict) -> None:
    """Record the model and settings of OUT's predictions; refuse others where there are some."""
    path = output.fetch(SETTINGS)
    try:
        old = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        old = None
    has_results = output.location.exists(PREDICTIONS) or bool(output.shards("predict"))
    if old is not None and old != settings and has_results:
        what = ", ".join(k for k in settings if old.get(k) != settings[k])
        raise ConflictError(f"{output.location.shown()} holds predictions made with another "
                            f"{what}: use another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(settings, indent=1), "utf-8"))
    output.publish(SETTINGS)


def _merge(output: Output, fetch: bool) -> dict[str, dict]:
    """Fold the shards into ``predictions.jsonl`` (one line per image, sorted); its records."""
    path = output.fetch(PREDICTIONS) if fetch else output.stage / PREDICTIONS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    records = {r["image"]: r for r in read_jsonl(data) if isinstance(r.get("image"), str)}
    new, shards = output.take_shards("predict")
    if new or not fetch:
        records.update({r["image"]: r for r in new if isinstance(r.get("image"), str)})
        atomic_write_jsonl(path, records)
        output.publish(PREDICTIONS)
        output.drop(shards)
    return records


def print_predict_summary(summary: PredictSummary, file=None) -> None:
    """What ``facerec predict --engine ray`` prints: the unreadable images (stderr, as the local
    engine lists them), one line of counts and where the predictions are."""
    out = file or sys.stdout
    for image, why in summary.unreadable[:20]:
        print(f"facerec predict: skipped {image}: {why}", file=sys.stderr)
    if len(summary.unreadable) > 20:
        print(f"facerec predict: ... and {len(summary.unreadable) - 20} more (see "
              f"{summary.out})", file=sys.stderr)
    print(f"{summary.images} image(s): {summary.predicted} predicted now, {summary.already_done} "
          f"already done, {len(summary.unreadable)} unreadable; {summary.faces} face(s) in "
          f"{summary.seconds:.1f}s (ray, {summary.workers} workers)", file=out)
    print(f"Predictions: {summary.out}", file=out)
