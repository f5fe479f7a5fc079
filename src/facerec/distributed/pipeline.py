"""The Ray Data pipeline of a photo stage: photos read, hashed and decoded by CPU tasks, then
batched into an actor pool that holds the model (detect, predict).

Each photo travels as one row: ``item`` (JSON: where it is, its size and modification time, its
record from an earlier run), then ``meta`` (JSON: content hash, state, sizes) and ``pixels`` (the
decoded upright RGB image, uint8) after decoding. Decoding is the local engine's:
:func:`facerec.images.load_image` on the bytes :func:`~facerec.distributed.storage.read_photo`
read, so both engines see the same pixels. A photo whose content hash is that of its earlier
record is not decoded (state ``same``); one that cannot be read or decoded carries its reason
(state ``bad``), never an exception.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from facerec.distributed.cluster import Pool, results
from facerec.distributed.storage import Location, read_photo
from facerec.images import ImageLoadError, LoadedImage, load_image

#: the most blocks the photo list is cut into (each is a few batches when there are more photos)
MAX_BLOCKS = 4096


def decode_item(item: dict, storage_options: dict) -> tuple[dict, bytes]:
    """(meta, pixels) of one photo (see the module docstring)."""
    source = Location(item["root"], storage_options)
    try:
        data = read_photo(source, item["rel"])
    except ImageLoadError as exc:
        return {"state": "bad", "error": str(exc), "sha256": None}, b""
    digest = hashlib.sha256(data).hexdigest()
    previous = item.get("previous") or {}
    if previous.get("sha256") == digest:
        return {"state": "same", "sha256": digest}, b""
    try:
        loaded = load_image(source.full(item["rel"]), data=data)
    except ImageLoadError as exc:
        return {"state": "bad", "error": str(exc), "sha256": digest}, b""
    image = loaded.image if loaded.image.mode == "RGB" else loaded.image.convert("RGB")
    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    meta = {"state": "new", "sha256": digest, "width": loaded.width, "height": loaded.height,
            "scale": loaded.scale, "h": int(pixels.shape[0]), "w": int(pixels.shape[1])}
    comment = loaded.image.info.get("comment")
    if comment:  # PIL writes a photo's JPEG comment into its crops: keep them byte-identical
        comment = comment.encode("utf-8") if isinstance(comment, str) else bytes(comment)
        meta["comment"] = base64.b64encode(comment).decode("ascii")
    return meta, pixels.tobytes()


def decode_batch(batch: dict[str, Any], storage_options: dict) -> dict[str, list]:
    """Ray task: :func:`decode_item` for each row of a batch."""
    metas, pixels = [], []
    for text in batch["item"]:
        meta, data = decode_item(json.loads(text), storage_options)
        metas.append(json.dumps(meta))
        pixels.append(data)
    return {"item": list(batch["item"]), "meta": metas, "pixels": pixels}


def loaded_image(meta: dict, pixels: bytes) -> LoadedImage:
    """The decoded photo of a row, as :func:`facerec.images.load_image` returned it."""
    from PIL import Image

    array = np.frombuffer(pixels, dtype=np.uint8).reshape(meta["h"], meta["w"], 3)
    image = Image.fromarray(array.copy())
    if meta.get("comment"):
        image.info["comment"] = base64.b64decode(meta["comment"])
    return LoadedImage(image, int(meta["width"]), int(meta["height"]), float(meta["scale"]))


def rows(batch: dict[str, Any]) -> list[tuple[dict, dict, bytes]]:
    """(item, meta, pixels) of each row of a decoded batch."""
    return [(json.loads(i), json.loads(m), p)
            for i, m, p in zip(batch["item"], batch["meta"], batch["pixels"])]


def run_stage(ray: Any, items: list[dict], worker: type, worker_kwargs: dict, pool: Pool,
              batch_size: int, storage_options: dict) -> Iterator[list[tuple[dict, str]]]:
    """Run ``items`` through decoding tasks and a pool of ``worker`` actors (built with
    ``worker_kwargs``); yield each finished batch's (record, state) pairs as it arrives."""
    if not items:
        return
    batch_size = max(1, int(batch_size))
    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(items) / batch_size)))
    ds = ray.data.from_items([{"item": json.dumps(item)} for item in items],
                             override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, batch_size=batch_size, num_cpus=pool.decode_cpus,
                        fn_kwargs={"storage_options": storage_options})
    ds = ds.map_batches(worker, batch_size=batch_size, fn_constructor_kwargs=worker_kwargs,
                        **pool.actor_args())
    for batch in results(ds):
        yield [(json.loads(r), str(s)) for r, s in zip(batch["record"], batch["state"])]
