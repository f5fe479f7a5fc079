"""Datastores on a local folder and on a real S3-compatible server (moto, started here on
127.0.0.1) through s3fs: upload, list, pull with hash verification, corruption, resume, dedup."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from facerec.cli import main
from facerec.datastore import (FAILED, MARKER, SUCCEEDED, UPLOADING, Datastore, parse_data_url,
                               parse_ref, resolve_data_path)
from facerec.errors import FacerecError

SRC_ROOT = Path(__file__).resolve().parents[1] / "src"


# --------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP server (moto) on 127.0.0.1 and a free port, with fake credentials."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def _s3_options(endpoint: str) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}


def _new_bucket(endpoint: str) -> str:
    import s3fs

    bucket = f"facerec-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**_s3_options(endpoint)).mkdir(bucket)
    return bucket


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Datastore:
    """An empty store: a local folder, or a prefix in a fresh bucket on the moto server."""
    if request.param == "local":
        return Datastore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    return Datastore(f"s3://{_new_bucket(endpoint)}/stores", storage_options=_s3_options(endpoint))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Never touch ~/.facerec: default store and cache live in the test's folder."""
    monkeypatch.setenv("FACEREC_STORE", str(tmp_path / "default-store"))
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path / "cache"))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def source(tmp_path) -> Path:
    """A small split dataset: 5 files, 4 distinct contents (a duplicate across train/val)."""
    root = tmp_path / "dataset"
    _write(root / "train" / "alice" / "a1.jpg", os.urandom(3000))
    _write(root / "train" / "alice" / "a2.jpg", os.urandom(2000))
    _write(root / "train" / "bob" / "b1.jpg", os.urandom(2500))
    dup = os.urandom(1500)
    _write(root / "train" / "bob" / "b2.jpg", dup)
    _write(root / "val" / "bob" / "b2-copy.jpg", dup)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER and ".facerec" not in p.relative_to(root).parts}


def _objects(ds: Datastore) -> dict[str, int]:
    return ds._object_sizes()


# ------------------------------------------------------------------------------------------ tests
def test_create_list_pull_roundtrip(store, source, tmp_path):
    info = store.create("faces", source, progress=False)
    assert (info.name, info.version, info.status) == ("faces", 1, SUCCEEDED)
    assert info.num_files == 5 and info.size == 3000 + 2000 + 2500 + 1500 * 2
    assert info.uploaded_files == 4 and info.uploaded_bytes == 9000  # the duplicate went up once
    assert info.data_path == "datastore://faces/1"

    [listed] = store.list()
    assert (listed.name, listed.version, listed.status, listed.size, listed.num_files) == (
        "faces", 1, SUCCEEDED, 10500, 5)

    shown = store.show("faces")
    assert (shown.version, shown.status, len(shown.files)) == (1, SUCCEEDED, 5)
    assert {f.path for f in shown.files} == set(_tree(source))
    for f in shown.files:
        assert f.sha256 == hashlib.sha256((source / f.path).read_bytes()).hexdigest()

    out = store.pull("faces", 1, to=tmp_path / "pulled", progress=False)
    assert _tree(out) == _tree(source)
    marker = json.loads((out / MARKER).read_text())
    assert marker["complete"] and marker["digest"] == info.digest
    assert len(_objects(store)) == 4


def test_two_versions_of_the_same_name(store, source, tmp_path):
    v1 = store.create("faces", source, progress=False)
    old = _tree(source)
    (source / "train" / "alice" / "a2.jpg").write_bytes(os.urandom(2100))  # changed
    _write(source / "val" / "alice" / "a3.jpg", os.urandom(1200))  # added
    (source / "train" / "bob" / "b1.jpg").unlink()  # removed
    v2 = store.create("faces", source, progress=False)

    assert (v1.version, v2.version) == (1, 2) and v1.digest != v2.digest
    assert v2.uploaded_files == 2 and v2.uploaded_bytes == 2100 + 1200  # only the new contents
    assert [(i.version, i.status) for i in store.list("faces")] == [(1, SUCCEEDED), (2, SUCCEEDED)]
    assert store.show("faces").version == 2  # latest
    assert store.show("faces", 1).digest == v1.digest  # version 1 is untouched
    assert _tree(store.pull("faces", 1, to=tmp_path / "v1", progress=False)) == old
    assert _tree(store.pull("faces", 2, to=tmp_path / "v2", progress=False)) == _tree(source)
    assert len(_objects(store)) == 4 + 2


def test_identical_files_are_not_uploaded_twice(store, source, monkeypatch):
    store.create("faces", source, progress=False)
    written: list[str] = []
    real = store._write_many
    monkeypatch.setattr(store, "_write_many", lambda blobs: (written.extend(blobs), real(blobs)))
    again = store.create("faces", source, progress=False)  # same content: a new version, 0 uploads
    other = store.create("faces-copy", source, progress=False)  # other name, same files
    assert (again.version, again.uploaded_files) == (2, 0)
    assert (other.version, other.uploaded_files, other.status) == (1, 0, SUCCEEDED)
    assert written == [] and len(_objects(store)) == 4


def test_corrupted_object_is_detected(store, source, tmp_path):
    info = store.create("faces", source, progress=False)
    victim = next(f for f in store.show("faces").files if f.path == "train/alice/a1.jpg")
    store.fs.pipe_file(store._object_path(victim.sha256), os.urandom(victim.size))  # same size
    with pytest.raises(FacerecError, match=r"corrupted: object .* 'train/alice/a1.jpg'"):
        store.pull("faces", info.version, to=tmp_path / "pulled", progress=False)
    assert not (tmp_path / "pulled" / "train" / "alice" / "a1.jpg").exists()
    assert not json.loads((tmp_path / "pulled" / MARKER).read_text())["complete"]

    store.fs.rm_file(store._object_path(victim.sha256))
    with pytest.raises(FacerecError, match="is missing from"):
        store.pull("faces", info.version, to=tmp_path / "pulled", progress=False)


def test_interrupted_upload_is_marked_failed_and_resumes(store, source, monkeypatch):
    store.batch_files = 1  # one object per request, so the upload can fail in the middle
    real, calls = store._write_many, []

    def flaky(blobs):
        calls.append(list(blobs))
        if len(calls) == 3:
            raise ConnectionError("network down")
        real(blobs)

    monkeypatch.setattr(store, "_write_many", flaky)
    with pytest.raises(FacerecError, match="rerun the same command to resume"):
        store.create("faces", source, progress=False)
    [failed] = store.list()
    assert (failed.version, failed.status) == (1, FAILED) and "network down" in failed.error
    assert len(_objects(store)) == 2
    with pytest.raises(FacerecError, match="not Succeeded"):
        store.pull("faces", 1, progress=False)

    monkeypatch.setattr(store, "_write_many", real)
    done = store.create("faces", source, progress=False)
    assert (done.version, done.status, done.uploaded_files) == (1, SUCCEEDED, 2)  # the 2 missing
    assert [(i.version, i.status) for i in store.list()] == [(1, SUCCEEDED)]
    assert len(_objects(store)) == 4


def _kill_during_upload(store_dir: Path, source: Path) -> None:
    """Run `create` in a child process that dies (os._exit, no cleanup) after 2 objects."""
    script = textwrap.dedent(f"""
        import os
        from facerec.datastore import Datastore
        ds = Datastore({str(store_dir)!r})
        ds.batch_files = 1
        real, n = ds._write_many, [0]
        def dying(blobs):
            n[0] += 1
            if n[0] == 3:
                os._exit(9)
            real(blobs)
        ds._write_many = dying
        ds.create("faces", {str(source)!r}, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()


def test_killed_upload_stays_uploading_then_resumes(tmp_path, source):
    _kill_during_upload(tmp_path / "store", source)
    ds = Datastore(tmp_path / "store")
    [killed] = ds.list()
    assert (killed.version, killed.status) == (1, UPLOADING)
    assert not (tmp_path / "store" / "datastores" / "faces" / "1" / "manifest.json").exists()
    done = ds.create("faces", source, progress=False)
    assert (done.version, done.uploaded_files) == (1, 2)
    assert [(i.version, i.status) for i in ds.list()] == [(1, SUCCEEDED)]


def test_killed_upload_superseded_by_other_content_is_failed(tmp_path, source):
    _kill_during_upload(tmp_path / "store", source)
    _write(source / "val" / "alice" / "new.jpg", os.urandom(700))
    ds = Datastore(tmp_path / "store")
    done = ds.create("faces", source, progress=False)
    assert done.version == 2 and done.uploaded_files == 3  # 2 left over + the new file
    v1, v2 = ds.list()
    assert (v1.status, v2.status) == (FAILED, SUCCEEDED) and "abandoned" in v1.error
    with pytest.raises(FacerecError, match="no datastore named"):
        ds.show("nobody")
    assert ds.show("faces").version == 2


def test_status_needs_the_manifest(tmp_path, source):
    ds = Datastore(tmp_path / "store")
    ds.create("faces", source, progress=False)
    (tmp_path / "store" / "datastores" / "faces" / "1" / "manifest.json").unlink()
    [info] = ds.list()
    assert info.status == FAILED and "manifest" in info.error
    with pytest.raises(FacerecError, match="no succeeded version"):
        ds.show("faces")


def test_pull_resumes_keeps_user_files_and_drops_stale_ones(tmp_path, source):
    ds = Datastore(tmp_path / "store")
    ds.create("faces", source, progress=False)
    (source / "train" / "bob" / "b1.jpg").unlink()
    ds.create("faces", source, progress=False)
    out = tmp_path / "pulled"
    ds.pull("faces", 1, to=out, progress=False)
    (out / "train" / "alice" / "a1.jpg").write_bytes(os.urandom(3000))  # same size, other bytes
    (out / "train" / "alice" / "a2.jpg").unlink()
    _write(out / "notes.txt", b"mine")
    ds.pull("faces", 2, to=out, progress=False)  # same folder, next version
    tree = _tree(out)
    assert tree.pop("notes.txt") == b"mine"
    assert tree == _tree(source)  # tampered file fixed, deleted one back, b1.jpg (v1 only) gone

    foreign = tmp_path / "foreign"
    _write(foreign / "keep.txt", b"x")
    with pytest.raises(FacerecError, match="not empty"):
        ds.pull("faces", to=foreign, progress=False)


def test_resolve_data_path_pulls_once_into_the_cache(tmp_path, source, monkeypatch):
    store_dir = tmp_path / "default-store"  # $FACEREC_STORE (see _isolated_env)
    ds = Datastore()
    assert ds.url == str(store_dir)
    ds.create("faces", source, progress=False)

    assert resolve_data_path("dataset") == Path("dataset")
    assert resolve_data_path(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(FacerecError, match="unsupported data path"):
        resolve_data_path("s3://bucket/dataset")

    path = resolve_data_path("datastore://faces/1", progress=False)
    assert path == tmp_path / "cache" / "datastores" / "faces" / "1"
    assert _tree(path) == _tree(source)

    pulls = []
    real = Datastore._pull_into
    monkeypatch.setattr(Datastore, "_pull_into", lambda self, *a: (pulls.append(a), real(self, *a))[1])
    assert resolve_data_path("datastore://faces", progress=False) == path  # latest = 1, cached
    assert pulls == []
    (path / "train" / "alice" / "a1.jpg").unlink()  # a damaged cache is pulled again
    assert _tree(resolve_data_path("datastore://faces/1", progress=False)) == _tree(source)
    assert len(pulls) == 1
    with pytest.raises(FacerecError, match="has no version 7"):
        resolve_data_path("datastore://faces/7")


def test_concurrent_resolves_pull_once(tmp_path, source, monkeypatch):
    """DDP workers / SLURM tasks resolving together: one pulls, the others reuse its copy."""
    from concurrent.futures import ThreadPoolExecutor

    Datastore().create("faces", source, progress=False)
    pulls = []
    real = Datastore._pull_into
    monkeypatch.setattr(Datastore, "_pull_into", lambda self, *a: (pulls.append(a), real(self, *a))[1])
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: resolve_data_path("datastore://faces/1", progress=False),
                              range(4)))
    assert len(set(paths)) == 1 and _tree(paths[0]) == _tree(source)
    assert len(pulls) == 1


def test_resolve_data_path_from_s3(s3_endpoint, source, tmp_path):
    url = f"s3://{_new_bucket(s3_endpoint)}"
    Datastore(url, storage_options=_s3_options(s3_endpoint)).create("faces", source, progress=False)
    path = resolve_data_path("datastore://faces/1", store_url=url,
                             storage_options=_s3_options(s3_endpoint),
                             cache_dir=tmp_path / "c", progress=False)
    assert path == tmp_path / "c" / "datastores" / "faces" / "1"
    assert _tree(path) == _tree(source)


def test_refs_and_urls():
    assert parse_ref("faces") == ("faces", None)
    assert parse_ref("faces:3") == ("faces", 3)
    assert parse_ref("faces:latest") == ("faces", None)
    assert parse_data_url("datastore://face_detection/2") == ("face_detection", 2)
    assert parse_data_url("datastore://faces") == ("faces", None)
    assert parse_data_url("datastore://faces:4") == ("faces", 4)
    for bad in ("fa ces", "../x", "", "faces:0", "faces:abc"):
        with pytest.raises(FacerecError):
            parse_ref(bad)
    with pytest.raises(FacerecError):
        parse_data_url("datastore://faces/1/2")


def test_cli_against_s3(s3_endpoint, source, tmp_path, capsys, monkeypatch):
    """The CLI with a bucket store, configured the standard way (AWS_ENDPOINT_URL)."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    url = f"s3://{_new_bucket(s3_endpoint)}/stores"
    assert main(["datastore", "create", "--name", "face_detection", "--source", str(source),
                 "--store", url, "--quiet"]) == 0
    assert main(["datastore", "create", "--name", "face_detection", "--source", str(source),
                 "--store", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Created datastore face_detection:2" in out and "0 new objects" in out
    assert " train datastore://face_detection/1" in out  # the next step, in the dialect of docs/cli.md

    assert main(["datastore", "list", "--store", url]) == 0
    table = capsys.readouterr().out
    for column in ("Name", "Version", "Size", "Created", "Status"):
        assert column in table
    rows = [line for line in table.splitlines() if "face_detection" in line]
    assert len(rows) == 2 and all("Succeeded" in r and "10.3 KiB" in r for r in rows)

    assert main(["datastore", "show", "face_detection:1", "--store", url]) == 0
    shown = capsys.readouterr().out
    assert "face_detection:1" in shown and "train" in shown and "val" in shown

    assert main(["datastore", "pull", "face_detection", "--to", str(tmp_path / "got"),
                 "--store", url, "--quiet"]) == 0
    assert "Pulled face_detection:2" in capsys.readouterr().out
    assert _tree(tmp_path / "got") == _tree(source)

    assert main(["datastore", "pull", "nobody:1", "--to", str(tmp_path / "x"), "--store", url]) == 2
    assert "no datastore named 'nobody'" in capsys.readouterr().err


def test_cli_local_default_store(source, tmp_path, capsys):
    assert main(["datastore", "list"]) == 0
    assert "No datastores in" in capsys.readouterr().out
    assert main(["datastore", "create", "--name", "faces", "--source", str(source / "nope")]) == 2
    assert "source folder not found" in capsys.readouterr().err
    assert main(["datastore", "create", "--name", "faces", "--source", str(source), "--quiet"]) == 0
    assert (tmp_path / "default-store" / "datastores" / "faces" / "1" / "manifest.json").is_file()


def test_one_cache_root_for_every_cache(monkeypatch, tmp_path):
    from facerec import datastore
    from facerec.recognition import dlib_net, embed
    from facerec.cache import cache_root

    monkeypatch.delenv("FACEREC_CACHE", raising=False)
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path / "c"))
    assert embed.default_cache_dir() == tmp_path / "c" / "embeddings"
    assert dlib_net._conversion_cache_dir() == tmp_path / "c" / "models"
    assert datastore.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FACEREC_CACHE_DIR")
    monkeypatch.setenv("FACEREC_CACHE", str(tmp_path / "old"))  # the old name, still read
    assert cache_root() == tmp_path / "old"
    monkeypatch.delenv("FACEREC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "facerec"
