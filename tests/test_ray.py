"""`--engine ray`: detect, predict and annotate's embedding on a local Ray (2 CPUs) give the local
engine's answers; reruns skip what is done; a worker killed mid-batch is retried and its photos
recorded once; shards a killed run left are merged; s3:// in and out (a real moto server); the
one-line error without the extra. Ray is started once for the module and shut down after it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import _checkpoints
import _facecrops
from facerec.cli import main
from facerec.detection.detect import detect_folder
from facerec.errors import ConflictError
from facerec.manifest import read_manifest

PEOPLE = ("ben_afflek", "madonna", "mindy_kaling")
# Ray Data's own DataContext warns about its deprecated fields when it is copied to workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: `make test` installs facerec[ray] (pyproject's all)")
        pytest.skip("ray is not installed (pip install 'facerec[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, no dashboard, for the whole module."""
    _require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    import _ray_helpers

    ray.cloudpickle.register_pickle_by_value(_ray_helpers)  # workers lack the tests folder
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def raw(tmp_path_factory, celebrities) -> Path:
    """15 photos (3 albums of 4, 3 loose) and 4 files that are not photos (one hidden)."""
    root = tmp_path_factory.mktemp("ray") / "raw"
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for photo in sorted((celebrities / "train" / person).glob("*.jpg"))[:4]:
            shutil.copy2(photo, root / person)
    for person in PEOPLE:
        photo = sorted((celebrities / "val" / person).glob("*.jpg"))[0]
        shutil.copy2(photo, root / f"{person}-{photo.name}")
    data = photo.read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "empty.jpg").write_bytes(b"")
    (root / "madonna" / "notes.txt").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def local_out(tmp_path_factory, raw) -> Path:
    out = tmp_path_factory.mktemp("local") / "processed"
    detect_folder(raw, out, batch_size=4, progress=False)
    return out


@pytest.fixture(scope="module")
def ray_out(tmp_path_factory, raw, local_ray) -> tuple[Path, object]:
    from facerec.distributed.detect import detect_ray

    out = tmp_path_factory.mktemp("ray-out") / "processed"
    summary = detect_ray(raw, out, batch_size=4, workers=2, progress=False)
    return out, summary


def _assert_same_manifest(a: dict, b: dict, tol: float = 0.5, ignore: tuple = ()) -> None:
    """The same records; faces in the same order, boxes and landmarks within ``tol`` pixels
    (``ignore``: fields that may differ, such as a store's modification times)."""
    assert a.keys() == b.keys()
    skip = {"faces", *ignore}
    for path in a:
        ra, rb = a[path], b[path]
        assert ({k: v for k, v in ra.items() if k not in skip}
                == {k: v for k, v in rb.items() if k not in skip}), path
        assert [f["crop"] for f in ra["faces"]] == [f["crop"] for f in rb["faces"]], path
        for fa, fb in zip(ra["faces"], rb["faces"]):
            np.testing.assert_allclose(fa["box"], fb["box"], atol=tol)
            np.testing.assert_allclose(fa["landmarks"], fb["landmarks"], atol=tol)
            np.testing.assert_allclose(fa["crop_box"], fb["crop_box"], atol=tol)
            assert abs(fa["score"] - fb["score"]) < 1e-3


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".facerec" not in p.parts}


def _assert_same_crops(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        if name == "manifest.jsonl":
            continue
        pa = np.asarray(Image.open(a / name), dtype=np.int16)
        pb = np.asarray(Image.open(b / name), dtype=np.int16)
        assert pa.shape == pb.shape and np.abs(pa - pb).mean() < 1.0, name


# ------------------------------------------------------------------------------------- detect
def test_detect_on_ray_gives_the_local_engines_output(raw, local_out, ray_out):
    out, summary = ray_out
    local, mine = read_manifest(local_out), read_manifest(out)
    _assert_same_manifest(local, mine)
    assert (out / ".facerec" / "crop.json").read_text() == (
        local_out / ".facerec" / "crop.json").read_text()
    _assert_same_crops(local_out, out)
    # several batches, a bad file of each kind, hidden files ignored, everything counted once
    assert summary.files == 18 and summary.photos_read == 15 and summary.already_done == 0
    assert dict(summary.skipped) == {"truncated": 1, "empty file": 1, "not an image": 1}
    assert summary.faces == sum(len(r["faces"]) for r in mine.values()) >= 15
    assert ".hidden.jpg" not in mine
    assert not list((out / ".facerec" / "shards").glob("*")), "shards are merged and removed"
    assert not (out / ".facerec" / "lock.json").exists()


def test_rerun_on_ray_skips_done_photos_and_redoes_changed_ones(raw, ray_out, tmp_path, local_ray):
    from facerec.distributed.detect import detect_ray

    out = tmp_path / "processed"
    shutil.copytree(ray_out[0], out)
    again = detect_ray(raw, out, batch_size=4, workers=1, progress=False)
    assert again.photos_read == 0 and again.already_done == 15 and again.faces == ray_out[1].faces
    # a touched file is hashed and kept; a changed one is detected again
    work = tmp_path / "raw"
    shutil.copytree(raw, work)
    shutil.copytree(ray_out[0], tmp_path / "processed2")  # copy2: the same modification times
    touched, changed = sorted((work / "madonna").glob("*.jpg"))[:2]
    os.utime(touched, ns=(1, 1))
    Image.open(changed).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed)
    third = detect_ray(work, tmp_path / "processed2", batch_size=4, progress=False)
    assert third.photos_read == 1 and third.already_done == 14
    records = read_manifest(tmp_path / "processed2")
    assert records[f"madonna/{touched.name}"]["mtime_ns"] == 1
    assert records[f"madonna/{changed.name}"]["sha256"] == hashlib.sha256(
        changed.read_bytes()).hexdigest()


def test_a_worker_killed_mid_batch_is_retried_and_each_photo_recorded_once(
        raw, local_out, tmp_path, local_ray):
    from _ray_helpers import CrashOnce

    from facerec.distributed.detect import detect_ray

    marker = tmp_path / "crashed"
    out = tmp_path / "processed"
    summary = detect_ray(raw, out, detector=CrashOnce(marker), batch_size=4, workers=1,
                         progress=False)
    assert marker.exists(), "the worker should have died once"
    assert summary.photos_read == 15 and summary.already_done == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    paths = [json.loads(line)["path"] for line in lines]
    assert len(paths) == len(set(paths)) == 18
    _assert_same_manifest(read_manifest(local_out), read_manifest(out))
    listed = {f["crop"] for r in read_manifest(out).values() for f in r["faces"]}
    on_disk = set(_files(out)) - {"manifest.jsonl"}
    assert listed == on_disk  # no duplicate, orphan or temporary file


def test_an_error_in_a_worker_is_one_line_and_releases_the_output(raw, tmp_path, local_ray):
    from _ray_helpers import FailsInWorker

    from facerec.distributed.detect import detect_ray
    from facerec.errors import FacerecError

    out = tmp_path / "processed"
    with pytest.raises(FacerecError, match="^the detector refused this batch$"):
        detect_ray(raw, out, detector=FailsInWorker(tmp_path / "unused"), batch_size=4,
                   progress=False)
    assert not (out / ".facerec" / "lock.json").exists()


def test_shards_left_by_a_killed_run_are_merged_first(raw, ray_out, tmp_path, local_ray):
    """A run killed after some batches: their shards are in .facerec/shards but not yet in the
    manifest. The next run merges them and does not detect those photos again."""
    from facerec.distributed.detect import detect_ray

    out = tmp_path / "processed"
    shutil.copytree(ray_out[0], out)
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    kept, shard = lines[:5], lines[5:]
    (out / "manifest.jsonl").write_text("".join(kept) + '{"path": "torn')
    (out / ".facerec" / "shards").mkdir(exist_ok=True)
    (out / ".facerec" / "shards" / "detect-killed.jsonl").write_text("".join(shard))
    summary = detect_ray(raw, out, batch_size=4, progress=False)
    assert summary.photos_read == 0 and summary.already_done == 15
    assert (out / "manifest.jsonl").read_text() == "".join(lines)
    assert not list((out / ".facerec" / "shards").glob("*"))


def test_cli_engine_ray_and_its_flags(raw, tmp_path, capsys, local_ray):
    """The CLI resolves the recipe as the local engine's does: the output folder's recorded one
    (here 112 px aligned, no crops yet) wins over the --backbone model's."""
    from facerec.cropspec import CropSpec, read_processed_spec, write_processed_spec

    out = tmp_path / "processed"
    write_processed_spec(out, CropSpec(112, 0.1, True, {"name": "mtcnn"}), has_crops=False)
    argv = ["detect", str(raw), "--out", str(out), "--quiet", "--json", "--batch_size", "8"]
    assert main([*argv, "--engine", "ray", "--ray_workers", "1"]) == 3  # partial: 3 bad files
    summary = json.loads(capsys.readouterr().out)
    assert summary["photos_read"] == 15 and summary["skipped"] == {
        "truncated": 1, "empty file": 1, "not an image": 1}
    spec = read_processed_spec(out)
    assert (spec.size, spec.margin, spec.align, spec.detector_name) == (112, 0.1, True, "mtcnn")
    assert spec.detector["min_score"] == 0.9  # the detector's operating point, as local
    crops = sorted(out.rglob("*.jpg"))
    assert crops and all(Image.open(c).size == (112, 112) for c in crops)
    assert main([*argv, "--ray_address", "auto"]) == 2
    assert "--ray_address is for --engine ray" in capsys.readouterr().err


def test_without_the_extra_engine_ray_is_one_line(raw, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    assert main(["detect", str(raw), "--out", str(tmp_path / "o"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'facerec[ray]'" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


# ------------------------------------------------------------------------------------ predict
@pytest.fixture(scope="module")
def dlib_ckpt(celebrities) -> Path:
    return _checkpoints.checkpoint("dlib", celebrities)


def test_predict_on_ray_gives_the_local_engines_answers(raw, dlib_ckpt, tmp_path, local_ray):
    from facerec.distributed.predict import predict_ray
    from facerec.inference.predict import run_predict

    folder = str(raw / "madonna")
    loose = next(str(p) for p in sorted(raw.glob(f"{PEOPLE[0]}-*.jpg")))
    local = [r.to_dict() for r in run_predict(str(dlib_ckpt), [folder, loose], progress=False,
                                               out=open(os.devnull, "w"))]
    out = tmp_path / "predictions"
    summary = predict_ray(str(dlib_ckpt), [folder, loose], str(out), batch_size=2, workers=2,
                          progress=False)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    mine = {r["image"]: r for r in map(json.loads, lines)}
    assert sorted(mine) == sorted(r["image"] for r in local) == [r["image"] for r in map(
        json.loads, lines)]
    for expected in local:
        got = mine[expected["image"]]
        assert got["error"] == expected["error"] and got["width"] == expected["width"]
        assert [f["label"] for f in got["faces"]] == [f["label"] for f in expected["faces"]]
        for fa, fb in zip(got["faces"], expected["faces"]):
            np.testing.assert_allclose(fa["box"], fb["box"], atol=0.5)
            assert abs(fa["confidence"] - fb["confidence"]) < 1e-3
        assert got["sha256"] == hashlib.sha256(Path(got["image"]).read_bytes()).hexdigest()
    assert summary.images == 5 and summary.predicted == 5 and summary.unreadable == []
    assert any(r["faces"] for r in local)
    again = predict_ray(str(dlib_ckpt), [folder, loose], str(out), progress=False)
    assert again.predicted == 0 and again.already_done == 5 and again.faces == summary.faces
    assert (out / "predictions.jsonl").read_text().splitlines() == lines
    with pytest.raises(ConflictError, match="threshold"):
        predict_ray(str(dlib_ckpt), [folder], str(out), threshold=0.99, progress=False)


def test_cli_predict_on_ray_lists_unreadable_images(raw, dlib_ckpt, tmp_path, capsys, local_ray):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy2(raw / "truncated.jpg", folder)
    shutil.copy2(next(iter(sorted((raw / "madonna").glob("*.jpg")))), folder / "m.jpg")
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--checkpoint_path", str(dlib_ckpt), "--quiet"]
    assert main([*argv, "--engine", "ray", "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "truncated.jpg" in captured.err
    assert "2 image(s): 1 predicted now" in captured.out and "predictions.jsonl" in captured.out
    assert main([*argv, "--out", str(out)]) == 2  # the local engine prints, it has no --out
    assert main([*argv, "--engine", "ray"]) == 2
    assert "add --out DIR" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- annotate
def test_annotate_embedding_on_ray_equals_local(celebrities, tmp_path, local_ray):
    from facerec.annotate import annotate
    from facerec.distributed.embed import RayEmbedEngine
    from facerec.recognition.embed import embed_files, get_embedder

    processed = tmp_path / "processed"
    shutil.copytree(_facecrops.template("loose", celebrities), processed)
    crops = sorted(processed.glob("*.jpg"))
    embedder = get_embedder("dlib_face", device="cpu")
    local = embed_files(crops, embedder, cache=False, progress=False, mirror=True)
    with RayEmbedEngine(workers=2, batch_size=8) as engine:
        mine = embed_files(crops, embedder, cache=False, progress=False, mirror=True,
                           engine=engine)
        assert engine.pool_size == 2
        np.testing.assert_allclose(mine, local, atol=1e-4)
        # annotate itself: the same plan, the embeddings cached as they came back
        expected = annotate(processed, dry_run=True, embedder=embedder, cache=False,
                            progress=False)
        cache = tmp_path / "cache"
        result = annotate(processed, dry_run=True, embedder=embedder, cache=cache,
                          progress=False, embed_engine=engine)
    assert result.embedded == len(crops) and result.embedded_cached == 0
    assert [(m.src, m.dst) for m in result.moves] == [(m.src, m.dst) for m in expected.moves]
    rerun = annotate(processed, dry_run=True, embedder=embedder, cache=cache, progress=False)
    assert rerun.embedded == 0 and rerun.embedded_cached == len(crops)


# ------------------------------------------------------------------------------------------ s3
@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 HTTP server (moto) on 127.0.0.1 and a free port (as test_datastore's)."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def test_detect_from_s3_to_s3(raw, local_out, s3_endpoint, local_ray):
    import s3fs

    from facerec.distributed.detect import detect_ray

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, key="testing",
                           secret="testing")
    bucket = f"facerec-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    # everything the Ray workers need, explicitly (they do not see this test's environment)
    options = {"client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
               "key": "testing", "secret": "testing"}
    fs.put(str(raw), f"{bucket}/raw", recursive=True)
    summary = detect_ray(f"s3://{bucket}/raw", f"s3://{bucket}/processed", batch_size=4,
                         progress=False, storage_options=options)
    assert summary.photos_read == 15 and summary.out_dir == f"s3://{bucket}/processed"
    local = Path(str(local_out) + "-from-s3")
    fs.get(f"{bucket}/processed", str(local), recursive=True)
    _assert_same_manifest(read_manifest(local_out), read_manifest(local), ignore=("mtime_ns",))
    _assert_same_crops(local_out, local)
    assert not fs.exists(f"{bucket}/processed/.facerec/lock.json")
    assert not fs.exists(f"{bucket}/processed/.facerec/shards")
    again = detect_ray(f"s3://{bucket}/raw", f"s3://{bucket}/processed", batch_size=4,
                       progress=False, storage_options=options)
    assert again.photos_read == 0 and again.already_done == 15
    # the CLI's resolution reads the recipe recorded in the bucket, as it does a local folder's
    from facerec.distributed.detect import detect_settings_at
    from facerec.recognition.backbones import detect_settings_for

    from facerec.cropspec import CropSpec

    recorded = CropSpec(112, 0.1, True, {"name": "mtcnn"}).to_dict()
    fs.pipe(f"{bucket}/other/.facerec/crop.json", json.dumps(recorded).encode())
    choices = {"detector": None, "size": None, "margin": None, "align": None, "backbone": None}
    got = detect_settings_at(f"s3://{bucket}/other", choices, options)
    assert (got["size"], got["margin"], got["align"], got["detector"]) == (112, 0.1, True, "mtcnn")
    assert detect_settings_at(f"s3://{bucket}/processed", choices, options) == \
        detect_settings_for(local_out, choices)
    assert detect_settings_at(f"s3://{bucket}/nothing", choices, options) == \
        detect_settings_for(None, choices)
    assert detect_settings_at(f"s3://{bucket}/other", {**choices, "size": 150}, options)[
        "size"] == 150  # what is given wins
