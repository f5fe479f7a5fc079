"""``facerec annotate --engine ray``: the crops annotate must embed, embedded by a pool of Ray
actors (one face model per actor, batched, on a GPU when the cluster has them).

:class:`RayEmbedEngine` is the ``engine`` of :func:`facerec.recognition.embed.embed_files`
(``annotate(..., embed_engine=...)``): ``embed_files`` still reads the crops, looks them up in
the embedding cache and caches the results as they come back, so only the cache misses travel,
and a rerun (or the local engine afterwards) finds them cached. The actors run
:func:`facerec.recognition.embed.embed_bytes`, what the local engine runs on a batch; clustering,
rejection and the moves stay on this machine (annotate works in a local ``processed/``).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from facerec.distributed.cluster import (actor_pool, import_ray, ray_session, results,
                                         use_threads)
from facerec.distributed.pipeline import MAX_BLOCKS


class EmbedWorker:
    """Ray actor: one embedder (built once, on the actor's device)."""

    def __init__(self, name: str, options: dict, device: str, threads: int, mirror: bool) -> None:
        from facerec.recognition.embed import get_embedder

        use_threads(threads)
        self.embedder = get_embedder(name, device=device, **options)
        self.mirror = mirror

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from facerec.recognition.embed import embed_bytes

        boxes = [None if b == "null" else np.asarray(json.loads(b), dtype=np.float64)
                 for b in batch["box"]]
        vecs, metas = embed_bytes(self.embedder, list(batch["data"]), boxes, self.mirror)
        return {"index": list(batch["index"]),
                "vec": [np.asarray(v, dtype=np.float32).tobytes() for v in vecs],
                "meta": [json.dumps(m) for m in metas]}


class RayEmbedEngine:
    """Embeds crops on Ray for :func:`~facerec.recognition.embed.embed_files`; use it in a
    ``with`` block (Ray is started, or joined at ``address``, on the first crop to embed, and a
    Ray started here is shut down at the end)."""

    def __init__(self, address: str | None = None, workers: int | None = None,
                 device: str = "auto", threads: int | None = None, batch_size: int = 64,
                 num_cpus: int | None = None) -> None:
        import_ray()  # without the extra: one line, before annotate reads anything
        self.address, self.workers, self.device = address, workers, device
        self.threads, self.batch_size, self.num_cpus = threads, max(1, int(batch_size)), num_cpus
        self.pool_size = 0
        self._stack = contextlib.ExitStack()
        self._ray: Any = None

    def __enter__(self) -> RayEmbedEngine:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._ray = None

    def __call__(self, embedder: Any, items: list[tuple[bytes, Any]], mirror: bool
                 ) -> Iterator[tuple[list[int], np.ndarray, list[dict]]]:
        if not items:
            return
        if self._ray is None:
            self._ray = self._stack.enter_context(ray_session(self.address, self.num_cpus))
        ray = self._ray
        pool = actor_pool(ray, self.workers, self.device, self.threads)
        self.pool_size = pool.size
        blocks = max(1, min(MAX_BLOCKS, math.ceil(len(items) / self.batch_size)))
        ds = ray.data.from_items([
            {"index": i, "data": data,
             "box": json.dumps(None if box is None else np.asarray(box, dtype=np.float64).tolist())}
            for i, (data, box) in enumerate(items)], override_num_blocks=blocks)
        kwargs = {"name": embedder.name, "options": embedder.options(), "device": pool.device,
                  "threads": pool.threads, "mirror": mirror}
        ds = ds.map_batches(EmbedWorker, batch_size=self.batch_size, fn_constructor_kwargs=kwargs,
                            **pool.actor_args())
        shape = (2, embedder.dim) if mirror else (embedder.dim,)
        for batch in results(ds):
            vecs = np.stack([np.frombuffer(v, dtype=np.float32).reshape(shape)
                             for v in batch["vec"]])
            yield [int(i) for i in batch["index"]], vecs, [json.loads(m) for m in batch["meta"]]
