"""``facerec detect --engine ray``: the detect stage on Ray Data, from any folder or fsspec URL
of photos to any output folder or URL.

Photos are listed by Ray tasks (:func:`~facerec.distributed.storage.list_tree`), read, hashed and
decoded by CPU tasks, and detected and cropped in a pool of :class:`DetectWorker` actors (one
detector per actor, batched, on a GPU when the cluster has them) with the library's own
:func:`facerec.detection.cropping.crop_faces`, :func:`~facerec.detection.detect.crop_entry` and
:func:`~facerec.detection.detect.manifest_record`. Each actor writes its crops and then its
batch's manifest records as a shard; the driver merges the shards into ``manifest.jsonl``
(:mod:`facerec.distributed.output`). The output is what ``facerec detect`` writes: the same
crops under the same names, the same ``manifest.jsonl`` and ``.facerec/crop.json``, so annotate,
split and train work on it unchanged.

Resumable as the local engine is: a photo recorded with the same size and modification time is
skipped unread, one with the same content hash is skipped after reading; a batch whose worker
dies is retried by Ray (the actor is restarted) and recorded once; bad files are recorded with
their reason.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from facerec.cropspec import DEFAULT_MARGIN, DEFAULT_SIZE, SPEC_FILE, CropSpec, write_processed_spec
from facerec.defaults import DEFAULT_DETECTOR
from facerec.detection.cropping import crop_faces
from facerec.detection.detect import (DetectSummary, append_records, check_dirs, compact_manifest,
                                      count_record, crop_entry, crop_folder, crop_spec_for,
                                      get_detector, manifest_record, unchanged)
from facerec.distributed.cluster import actor_pool, import_ray, ray_session, use_threads
from facerec.distributed.output import Output, jsonl, shard_name
from facerec.distributed.pipeline import loaded_image, rows, run_stage
from facerec.distributed.storage import Location, check_input_folder, list_tree
from facerec.errors import FacerecError
from facerec.manifest import MANIFEST, read_manifest
from facerec.recognition.backbones import detect_settings_for
from facerec.safeio import META_DIR, remove_temporaries

SPEC = f"{META_DIR}/{SPEC_FILE}"


class DetectWorker:
    """Ray actor: a detector (built once, on the actor's device), crops written to the output,
    one manifest shard per batch."""

    def __init__(self, detector: Any, settings: dict, device: str, threads: int, spec: dict,
                 min_score: float, quality: int, output: Location) -> None:
        use_threads(threads)
        self.detector = (get_detector(detector, device=device, **settings)
                         if isinstance(detector, str) else detector)
        self.spec = CropSpec.from_dict(spec)
        self.min_score = float(min_score)
        self.quality = int(quality)
        self.output = output

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        work = rows(batch)
        new = [(k, loaded_image(meta, pixels)) for k, (_, meta, pixels) in enumerate(work)
               if meta["state"] == "new"]
        found = crop_faces([image for _, image in new], self.detector, self.spec,
                           min_score=self.min_score) if new else []
        faces_of = {k: faces for (k, _), faces in zip(new, found)}
        records = []
        for k, (item, meta, _) in enumerate(work):
            stat = {"size": item["size"], "mtime_ns": item["mtime_ns"]}
            if meta["state"] == "same":  # touched but same content: keep its record
                record = {**item["previous"], **stat}
            elif meta["state"] == "bad":
                record = manifest_record(item["rel"], meta["sha256"], None, None, [],
                                         meta["error"], **stat)
            else:
                record = manifest_record(item["rel"], meta["sha256"], meta["width"],
                                         meta["height"], self.save(faces_of[k], item["rel"]),
                                         None, **stat)
            records.append(record)
        self.output.write_bytes(shard_name("detect", [r["path"] for r in records]),
                                jsonl(records))
        return {"record": [json.dumps(r) for r in records],
                "state": [meta["state"] for _, meta, _ in work]}

    def save(self, faces: list, rel: str) -> list[dict]:
        """Write the crops of photo ``rel``; their manifest entries."""
        if self.output.is_local:  # as the local engine: the album folder exists even without faces
            (self.output.path / crop_folder(rel)).mkdir(parents=True, exist_ok=True)
        entries = []
        for i, face in enumerate(faces):
            entry = crop_entry(face, rel, i)
            self.output.write(entry["crop"], lambda target, crop=face.crop: crop.save(
                target, format="JPEG", quality=self.quality))
            entries.append(entry)
        return entries


def detect_settings_at(out_dir: str | os.PathLike, detect: dict,
                       storage_options: dict | None = None) -> dict:
    """:func:`facerec.recognition.backbones.detect_settings_for` (what ``facerec detect``
    resolves: the choices given, else the recipe recorded in the output, else the backbone's)
    for an output folder or fsspec URL: a store's recorded ``.facerec/crop.json`` is read into a
    temporary folder first."""
    target = Location(out_dir, storage_options)
    if target.is_local:
        return detect_settings_for(target.path, detect)
    with tempfile.TemporaryDirectory(prefix="facerec-spec-") as tmp:
        target.get(SPEC, Path(tmp) / SPEC)
        return detect_settings_for(tmp, detect)


def _check(source: Location, target: Location) -> None:
    if source.is_local and target.is_local:
        check_dirs(source.path, target.path)
        return
    check_input_folder(source, target)
    if target.is_local:
        try:
            target.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FacerecError(f"cannot write to output folder {target.shown()}: "
                               f"{exc.strerror or exc}") from None


def _merge(output: Output, fetch: bool) -> dict[str, dict]:
    """Fold the shards into the manifest (its working copy, published); the manifest's records.
    ``fetch``: take the output's manifest first (at the start of a run)."""
    if fetch:
        output.fetch(MANIFEST)
    records, shards = output.take_shards("detect")
    done = read_manifest(output.stage, repair=True)
    if records or not fetch:
        manifest = os.open(output.stage / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            append_records(manifest, records)
        finally:
            os.close(manifest)
        compact_manifest(output.stage)
        output.publish(MANIFEST)
        output.drop(shards)
        done = read_manifest(output.stage)
    return done


def _plan(entries: list[dict], done: dict[str, dict], summary: DetectSummary,
          source: Location) -> tuple[list[dict], list[dict]]:
    """(photos to read, records of entries that cannot be photos), as the local engine sorts
    them; what is already done is counted in ``summary``."""
    todo, special = [], []
    for entry in entries:
        rel, previous = entry["rel"], done.get(entry["rel"])
        if entry["problem"] is not None:
            record = manifest_record(rel, None, None, None, [], entry["problem"])
            if record != previous:
                special.append(record)
            count_record(summary, record)
        elif entry["mtime_ns"] is not None and unchanged(
                previous, SimpleNamespace(st_size=entry["size"], st_mtime_ns=entry["mtime_ns"])):
            count_record(summary, previous, already_done=True)
        else:
            todo.append({"root": source.url, "rel": rel, "key": rel, "size": entry["size"],
                         "mtime_ns": entry["mtime_ns"], "previous": previous})
    return todo, special


def detect_ray(raw_dir: str | os.PathLike, out_dir: str | os.PathLike = "processed", *,
               detector: Any = None, settings: dict | None = None, size: int = DEFAULT_SIZE,
               margin: float = DEFAULT_MARGIN, align: bool = False, min_score: float | None = None,
               batch_size: int = 8, quality: int = 95, progress: bool = True,
               address: str | None = None, workers: int | None = None, device: str = "auto",
               threads: int | None = None, num_cpus: int | None = None,
               storage_options: dict | None = None) -> DetectSummary:
    """:func:`facerec.detection.detect.detect_folder` on Ray (see the module docstring).

    ``raw_dir``/``out_dir``: folders or fsspec URLs (``storage_options`` for both).
    ``detector``: a registered name (each actor builds it with ``settings`` on its device) or a
    :class:`~facerec.detection.detect.Detector` (sent to the actors as it is); the crop recipe
    and ``min_score`` default as ``detect_folder``'s (``facerec detect --engine ray`` resolves
    them with :func:`detect_settings_at` first, as the local engine does). ``address``: the
    Ray cluster (default: a local Ray with ``num_cpus``); ``workers``: detector actors (default:
    one per GPU, else one per 2 CPUs); ``threads``: torch threads per CPU actor."""
    import_ray()  # without the extra: one line, before anything is read or written
    started = time.perf_counter()
    source, target = Location(raw_dir, storage_options), Location(out_dir, storage_options)
    _check(source, target)
    name = detector if detector is not None else DEFAULT_DETECTOR
    probe = get_detector(name, device="cpu", **(settings or {})) if isinstance(name, str) else name
    spec = crop_spec_for(probe, size, margin, align, min_score)  # min_score None: the detector's
    with Output(target, "detect") as output, ray_session(address, num_cpus) as ray:
        done = _merge(output, fetch=True)  # what a killed run left first
        output.fetch(SPEC)
        write_processed_spec(output.stage, spec,
                             has_crops=any(r.get("faces") for r in done.values()))
        output.publish(SPEC)
        if target.is_local:
            remove_temporaries(target.path)
        entries = list_tree(ray, source, exclude=target)
        if not entries:
            raise FacerecError(f"input folder is empty: {source.shown()}")
        summary = DetectSummary(source.shown(), target.shown(), files=len(entries))
        todo, special = _plan(entries, done, summary, source)
        _write_special(output, special)
        pool = actor_pool(ray, workers, device, threads)
        kwargs = {"detector": name, "settings": settings or {}, "device": pool.device,
                  "threads": pool.threads, "spec": spec.to_dict(), "min_score": spec.detector["min_score"],
                  "quality": quality, "output": target}
        _run(ray, todo, kwargs, pool, batch_size, storage_options or {}, summary, progress)
        _merge(output, fetch=False)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_special(output: Output, special: list[dict]) -> None:
    if special:
        manifest = os.open(output.stage / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            append_records(manifest, special)
        finally:
            os.close(manifest)


def _run(ray: Any, todo: list[dict], kwargs: dict, pool: Any, batch_size: int,
         storage_options: dict, summary: DetectSummary, progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="photo", desc=f"detect (ray, {pool.size} workers)",
               disable=not progress or not todo, file=sys.stderr)
    try:
        for results in run_stage(ray, todo, DetectWorker, kwargs, pool, batch_size,
                                 storage_options):
            for record, state in results:
                if state == "new" and not record.get("error"):
                    summary.photos_read += 1
                count_record(summary, record, already_done=state == "same")
            bar.update(len(results))
    finally:
        bar.close()
