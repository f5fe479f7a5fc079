"""Test-time features of frozen embedders: each crop and its mirror image, averaged.

Used by training (cached views per crop), predict/verify/enroll (:func:`embed_pil`) and the ONNX
runtime of ``head`` exports."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows (last axis) scaled to unit length, float32 (zero rows become NaN)."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (v / n).astype(np.float32)


def combine_views(orig: np.ndarray, mirror: np.ndarray | None) -> np.ndarray:
    """The views a frozen backbone offers per crop, unit length: (N, 3, D) = crop, mirror, mean
    (the mean is the test-time feature); (N, 1, D) without a mirror."""
    o = unit_rows(np.asarray(orig, dtype=np.float32))
    if mirror is None:
        return o[:, None, :]
    m = unit_rows(np.asarray(mirror, dtype=np.float32))
    return np.stack([o, m, unit_rows(o + m)], axis=1)


def embed_pil(embedder, images: Sequence[Any], mirror_tta: bool = True) -> np.ndarray:
    """Test-time unit features (N, D) of PIL crops with a frozen embedder (NaN rows on failure):
    the unit mean of the crop's and its mirror image's embeddings, both computed in one batch
    (:meth:`facerec.recognition.embed.Embedder.embed_views`)."""
    if not mirror_tta:
        return combine_views(embedder.embed_images(list(images)), None)[:, -1]
    views, _ = embedder.embed_views(list(images))
    return combine_views(views[:, 0], views[:, 1])[:, -1]


def embed_crop_files(paths: Sequence[str | os.PathLike], embedder, *, mirror: bool = True,
                     cache: Any = None, progress: bool = True) -> np.ndarray:
    """Raw embeddings of crop files and of their mirror images: (N, 2, D) (or (N, 1, D) without
    ``mirror``), NaN where a crop could not be embedded. Both views are computed in one batch and
    cached by the crop's sha256 (the mirror under the embedder's cache id + ``-mirror``), so a
    rerun costs a cache lookup."""
    from facerec.recognition.embed import EmbeddingCache, embed_files

    store = cache if isinstance(cache, EmbeddingCache) else (
        EmbeddingCache(cache) if cache not in (None, True, False) else EmbeddingCache())
    paths = [Path(p) for p in paths]
    if not mirror:
        return embed_files(paths, embedder, cache=store, progress=progress, on_error="nan")[:, None]
    out = embed_files(paths, embedder, cache=store, progress=progress, on_error="nan", mirror=True)
    # a crop whose mirror failed keeps its own embedding for both views
    bad = ~np.isfinite(out[:, 1]).all(axis=1)
    out[bad, 1] = out[bad, 0]
    return out
