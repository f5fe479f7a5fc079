"""Face embeddings: the registry, dlib's descriptor on real (box) crops, the cache, quality flags.

These are about the legacy model ``dlib_face`` and name it (the default model, ``sface``, has
tests/test_sface.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import _facecrops
from facerec.crops import Manifest, list_images
from facerec.recognition.embed import (
    EmbeddingCache,
    EmbedStats,
    Embedder,
    EMBEDDERS,
    available_embedders,
    embed_files,
    get_embedder,
    register_embedder,
)
from facerec.errors import FacerecError


@pytest.fixture(scope="module")
def loose(celebrities: Path) -> Path:
    return _facecrops.template("loose", celebrities)


@pytest.fixture(scope="module")
def main_crops(loose: Path) -> list[tuple[Path, str]]:
    """(crop, person) for the main face of every photo."""
    truth = _facecrops.truth(loose)
    return [(p, truth[p.name][0]) for p in list_images(loose) if truth[p.name][1]]


def test_registry_names_and_unknown():
    assert "dlib_face" in available_embedders()
    emb = get_embedder("dlib_face")
    assert emb.name == "dlib_face" and emb.dim == 128
    assert get_embedder("dlib_face") is emb  # models load once
    with pytest.raises(FacerecError, match="unknown embedder 'nope'"):
        get_embedder("nope")


def test_same_person_is_closer_than_other_people(main_crops):
    emb = get_embedder("dlib_face")
    images = [Image.open(p) for p, _ in main_crops]
    vecs = emb.embed_images(images)
    assert vecs.shape == (len(images), 128) and vecs.dtype == np.float32
    assert np.all(np.isfinite(vecs))
    people = np.array([person for _, person in main_crops])
    d = emb.distances(vecs, vecs)
    np.fill_diagonal(d, np.inf)
    nearest = people[np.argmin(d, axis=1)]
    assert np.mean(nearest == people) >= 0.9
    same = d[(people[:, None] == people[None, :]) & np.isfinite(d)]
    other = d[people[:, None] != people[None, :]]
    assert np.median(same) < emb.same_person_threshold < np.median(other)


def test_inputs_pil_numpy_grey_are_equivalent(main_crops):
    emb = get_embedder("dlib_face")
    img = Image.open(main_crops[0][0]).convert("RGB")
    a, b = emb.embed_images([img, np.asarray(img)])
    np.testing.assert_allclose(a, b, atol=1e-6)
    grey = emb.embed_images([img.convert("L")])[0]
    assert np.isfinite(grey).all() and np.linalg.norm(grey - a) < 0.3


def test_cache_hits_by_content_and_matches_fresh(main_crops, tmp_path):
    paths = [p for p, _ in main_crops[:6]]
    cache = EmbeddingCache(tmp_path / "cache")
    cold = EmbedStats()
    first = embed_files(paths, "dlib_face", cache=cache, progress=False, stats=cold)
    assert cold.computed == 6 and cold.cached == 0 and cold.seconds_per_face > 0
    # a renamed copy hits the cache too (keyed by content, not by name)
    copy = tmp_path / "renamed.jpg"
    shutil.copy(paths[0], copy)
    warm = EmbedStats()
    second = embed_files([*paths, copy], "dlib_face", cache=EmbeddingCache(tmp_path / "cache"),
                         progress=False, stats=warm)
    assert warm.computed == 0 and warm.cached == 7
    np.testing.assert_array_equal(second[:6], first)
    np.testing.assert_array_equal(second[6], first[0])
    fresh = get_embedder("dlib_face").embed_images([Image.open(p) for p in paths])
    np.testing.assert_allclose(first, fresh, atol=1e-6)
    assert (tmp_path / "cache" / f"{get_embedder('dlib_face').cache_id}.sqlite").is_file()


def test_worker_processes_give_the_same_vectors(main_crops):
    paths = [p for p, _ in main_crops[:8]]
    serial = embed_files(paths, "dlib_face", cache=False, progress=False, workers=1)
    parallel = embed_files(paths, "dlib_face", cache=False, progress=False, workers=2,
                           batch_size=3)
    np.testing.assert_allclose(parallel, serial, atol=1e-6)


def test_unreadable_crop_is_nan_or_error(main_crops, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = main_crops[0][0]
    vecs, quality = embed_files([good, bad], "dlib_face", cache=False, progress=False,
                                on_error="nan", return_quality=True)
    assert np.isfinite(vecs[0]).all() and np.isnan(vecs[1]).all()
    assert quality[0].ok and not quality[1].ok and "unreadable" in quality[1].error
    with pytest.raises(FacerecError, match="broken.jpg"):
        embed_files([good, bad], "dlib_face", cache=False, progress=False)
    with pytest.raises(FacerecError, match="missing.jpg"):
        embed_files([tmp_path / "missing.jpg"], "dlib_face", cache=False, progress=False)


def test_quality_flags_a_fit_that_disagrees_with_the_detector(loose, main_crops):
    manifest = Manifest(loose)
    path = main_crops[0][0]
    info = manifest.info(path)
    assert info.landmarks is not None and info.landmarks.shape == (5, 2)
    wrong = info.landmarks + np.array([0.0, 45.0])  # eyes 45 px too low
    _, (good, bad) = embed_files([path, path], "dlib_face", cache=False, progress=False,
                                 return_quality=True, landmarks=[info.landmarks, wrong])
    assert good.ok and good.fit_error < 0.3
    assert not bad.ok and bad.fit_error > 0.45 and bad.reasons


def test_quality_flags_a_non_face():
    emb = get_embedder("dlib_face")
    flat = np.full((160, 160, 3), 128, dtype=np.uint8)
    _, (q,) = emb.embed_with_quality([flat])
    landmarks_far = np.array([[20, 20], [140, 20], [80, 80], [30, 140], [130, 140]], float)
    _, (q2,) = emb.embed_with_quality([flat], landmarks=[landmarks_far])
    assert not q2.ok  # dlib's fit lands nowhere near where a detector put the eyes
    assert q.eye_distance is not None


def test_another_embedder_can_be_registered_by_name(main_crops, tmp_path):
    @register_embedder("test_mean_colour")
    class MeanColour(Embedder):
        name = "test_mean_colour"
        dim = 3

        def __init__(self, device="auto"):
            self.device = device

        def embed_raw(self, images, boxes=None):
            vecs = np.array([np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(0) / 255
                             for im in images], dtype=np.float32)
            return vecs, [{} for _ in images]

    try:
        assert "test_mean_colour" in available_embedders()
        paths = [p for p, _ in main_crops[:3]]
        vecs = embed_files(paths, "test_mean_colour", cache=EmbeddingCache(tmp_path), progress=False)
        assert vecs.shape == (3, 3) and np.all((vecs >= 0) & (vecs <= 1))
        assert (tmp_path / "test_mean_colour-v1.sqlite").is_file()
    finally:
        EMBEDDERS._classes.pop("test_mean_colour", None)


def test_crop_and_mirror_in_one_call_cached_together(main_crops, tmp_path):
    """embed_files(mirror=True): (N, 2, 128) = the crop's descriptor and its mirrored chip's, the
    same as embed_views; both cached, and the crop's view is what embed_files alone returns."""
    emb = get_embedder("dlib_face")
    paths = [p for p, _ in main_crops[:5]]
    cache = EmbeddingCache(tmp_path / "cache")
    cold = EmbedStats()
    both = embed_files(paths, emb, cache=cache, progress=False, mirror=True, stats=cold)
    assert both.shape == (5, 2, 128) and cold.computed == 5
    views, _ = emb.embed_views([Image.open(p) for p in paths])
    np.testing.assert_allclose(both, views, atol=1e-5)
    # the mirror is a different view of the same face: close, not identical
    d = np.linalg.norm(both[:, 0] - both[:, 1], axis=1)
    assert np.all(d > 1e-4) and np.all(d < emb.same_person_threshold)
    warm = EmbedStats()
    again = embed_files(paths, emb, cache=cache, progress=False, mirror=True, stats=warm)
    assert warm.cached == 5 and warm.computed == 0
    np.testing.assert_array_equal(again, both)
    single = embed_files(paths, emb, cache=cache, progress=False)
    np.testing.assert_array_equal(single, both[:, 0])
    assert (tmp_path / "cache" / f"{emb.cache_id}-mirror.sqlite").is_file()
    assert emb.cache_id == "dlib_face-v3"
