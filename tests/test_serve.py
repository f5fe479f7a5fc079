"""``facerec serve``'s REST API through FastAPI's TestClient, on real crops and a real checkpoint:
every route, tokens, Host/Origin checks, path traversal (encoded, symlinks), uploads (oversized,
corrupt, truncated, bombs), concurrent renames and predictions, training from the API."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import urllib.parse
import zlib
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="facerec[serve] is not installed")
from fastapi.testclient import TestClient  # noqa: E402

import _checkpoints  # noqa: E402
import _facecrops  # noqa: E402
import _servework  # noqa: E402
from facerec.cli import main  # noqa: E402
from facerec.serve.app import ServeConfig, create_app, resolve_token  # noqa: E402
from facerec.serve.files import UnsafePath, safe_file  # noqa: E402

BASE = "http://127.0.0.1"
ELTON_PHOTO = "val/elton_john"  # held out: none of these photos made the training crops


@pytest.fixture(autouse=True)
def _cache(monkeypatch):
    # split/train/predict embed crops: use the session's cache, never the user's ~/.cache
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))


@pytest.fixture()
def work(celebrities: Path, tmp_path: Path) -> Path:
    return _servework.copy_of(celebrities, tmp_path / "work")


def client_for(work: Path, **options) -> TestClient:
    return TestClient(create_app(ServeConfig(work_dir=work, **options)), base_url=BASE)


@pytest.fixture()
def client(work: Path) -> TestClient:
    """No model: the labelling routes only (fast to create)."""
    return client_for(work)


@pytest.fixture(scope="module")
def model_client(celebrities: Path, tmp_path_factory) -> TestClient:
    """With the real dlib_face checkpoint of :mod:`_checkpoints` (ben, elton, jerry)."""
    os.environ.setdefault("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))
    work = _servework.copy_of(celebrities, tmp_path_factory.mktemp("serve") / "work")
    return client_for(work, checkpoint=_checkpoints.checkpoint("dlib", celebrities),
                      device="cpu", max_upload_bytes=2 * 1024 * 1024)


def elton_photo(celebrities: Path) -> Path:
    return sorted((celebrities / ELTON_PHOTO).glob("*.jpg"))[0]


def raw_get(app, raw_path: bytes) -> int:
    """GET with the path exactly as given (HTTP clients remove ``..`` segments before sending)."""
    import anyio

    status: list[int] = []

    async def call() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "root_path": "", "query_string": b"",
                 "path": urllib.parse.unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
                 "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80)}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)

    anyio.run(call)
    return status[0]


# ------------------------------------------------------------------------------ pages, health
def test_pages_health_and_openapi_list_every_route(client, work):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["model"]["checkpoint"] is None
    assert health["work_dir"] == work.name  # no absolute path in a response
    for page in ("/people", "/train", "/recognise"):
        r = client.get(page)
        assert r.status_code == 200 and "<html" in r.text and "/static/common.js" in r.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/people"
    assert client.get("/static/people.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/api/predict", "/api/people", "/api/people/{name}/rename", "/api/moves",
                  "/api/undo", "/api/train", "/api/train/{job_id}", "/api/health"):
        assert route in paths, route
    assert client.get("/docs").status_code == 200


def test_predict_without_model_says_how_to_train(client, celebrities):
    r = client.post("/api/predict", files={"files": ("a.jpg", elton_photo(celebrities).read_bytes())})
    assert r.status_code == 503 and "Train page" in r.json()["detail"]


# ------------------------------------------------------------------------------------- people
def test_people_lists_every_folder_and_pages_crops(client, work):
    groups = client.get("/api/people").json()["groups"]
    kinds = {g["kind"] for g in groups}
    assert {"person", "singletons", "rejected"} <= kinds
    assert [g["folder"] for g in groups if g["kind"] == "person"] == ["person_01", "person_02",
                                                                      "person_03"]
    on_disk = _servework.snapshot(work / "processed")
    assert sum(g["count"] for g in groups) == len(on_disk)
    seen = []
    for g in groups:
        offset = 0
        while True:
            page = client.get("/api/crops", params={"folder": g["folder"], "offset": offset,
                                                    "limit": 4}).json()
            assert page["total"] == g["count"] and len(page["crops"]) <= 4
            seen += page["crops"]
            offset += 4
            if offset >= page["total"]:
                break
    assert sorted(seen) == sorted(on_disk)  # every crop once, with its path under processed/


def test_crop_info_gives_source_photo_and_box(work, celebrities):
    client = client_for(work, photos_dir=work / "photos")
    crop = client.get("/api/crops", params={"folder": "person_01", "limit": 1}).json()["crops"][0]
    info = client.get("/api/crops/info", params={"path": crop}).json()
    assert info["source"] and len(info["box"]) == 4 and info["width"] > 0
    x0, y0, x1, y1 = info["box_in_crop"]
    assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 160  # the face inside the 160 px crop
    photo = client.get(info["photo_url"])
    assert photo.status_code == 200
    assert photo.content == (work / "photos" / info["source"]).read_bytes()
    assert client.get("/api/crops/info", params={"path": "../manifest.jsonl"}).status_code == 404


def test_rename_is_undone_by_the_cli(client, work, capsys):
    processed = work / "processed"
    crops = sorted(p.name for p in (processed / "person_01").glob("*.jpg"))
    r = client.post("/api/people/person_01/rename", json={"new_name": "Elton John"})
    assert r.status_code == 200 and r.json()["renamed"][0] == ["person_01", "Elton John"]
    assert sorted(p.name for p in (processed / "Elton John").glob("*.jpg")) == crops
    assert not (processed / "person_01").exists()
    events = [json.loads(line) for line in
              (processed / ".facerec" / "moves.jsonl").read_text().splitlines()]
    assert events[-2]["event"] == "rename" and events[-2]["dst"] == "Elton John"
    assert main(["annotate", str(processed), "--undo"]) == 0  # the CLI undoes a page action
    assert sorted(p.name for p in (processed / "person_01").glob("*.jpg")) == crops
    assert not (processed / "Elton John").exists()


def test_rename_to_existing_name_merges_and_undo_restores(client, work):
    processed = work / "processed"
    before = _servework.snapshot(processed)
    n1, n2 = (len(list((processed / f).glob("*.jpg"))) for f in ("person_01", "person_02"))
    r = client.post("/api/people/person_02/rename", json={"new_name": "person_01"}).json()
    assert r["merged"] and r["moved"] == n2
    assert not (processed / "person_02").exists()
    assert len(list((processed / "person_01").glob("*.jpg"))) == n1 + n2
    assert client.post("/api/undo").json()["restored"] == n2
    assert _servework.snapshot(processed) == before


def test_moves_to_new_person_and_rejected_then_undo_each(client, work):
    processed = work / "processed"
    before = _servework.snapshot(processed)
    crops = client.get("/api/crops", params={"folder": "person_02", "limit": 2}).json()["crops"]
    r = client.post("/api/moves", json={"crops": crops, "to": "someone new"}).json()
    assert r["moved"] == 2
    assert sorted(p.name for p in (processed / "someone new").iterdir()) == \
        sorted(Path(c).name for c in crops)
    single = client.get("/api/crops", params={"folder": "_singletons"}).json()["crops"][0]
    client.post("/api/moves", json={"crops": [single], "to": "_rejected"}).raise_for_status()
    assert (processed / "_rejected" / Path(single).name).is_file()
    client.post("/api/undo").raise_for_status()
    assert (processed / single).is_file()
    client.post("/api/undo").raise_for_status()
    assert not (processed / "someone new").exists()  # created by the move: removed by its undo
    assert _servework.snapshot(processed) == before


def test_moving_every_crop_out_of_a_cluster_removes_it_and_undo_brings_it_back(client, work):
    """An emptied cluster is not left behind as a "0 crops" person; undo restores it."""
    processed = work / "processed"
    before = _servework.snapshot(processed)
    crops = client.get("/api/crops", params={"folder": "person_02"}).json()["crops"]
    assert client.post("/api/moves", json={"crops": crops, "to": "_rejected"}).json()["moved"] \
        == len(crops)
    assert not (processed / "person_02").exists()
    assert "person_02" not in {g["folder"] for g in client.get("/api/people").json()["groups"]}
    r = client.post("/api/undo").json()
    assert r["command"] == "move" and r["what"] == "move to _rejected" and r["crops"] == len(crops)
    assert _servework.snapshot(processed) == before


def test_undo_says_what_it_undid_in_words(client, work):
    n = len(list((work / "processed" / "person_01").glob("*.jpg")))
    client.post("/api/people/person_01/rename", json={"new_name": "Elton John"}).raise_for_status()
    r = client.post("/api/undo").json()
    assert r["what"] == "rename person_01 to Elton John" and r["crops"] == n  # not "1 put back"


def test_cluster_loose_crops_from_the_page_api(client, work):
    """POST /api/cluster is annotate on processed/: loose crops become person_NN clusters, logged
    and undoable like an annotate run."""
    processed = work / "processed"
    assert client.post("/api/undo").json()["command"] == "annotate"  # the template's annotate run
    loose = sorted(p.name for p in processed.glob("*.jpg"))
    assert loose and not list(processed.glob("person_*"))
    r = client.post("/api/cluster")
    assert r.status_code == 200, r.text
    r = r.json()
    assert r["loose"] == len(loose) and len(r["clusters"]) >= 3 and r["op"]
    assert sorted(r["clusters"]) == sorted(p.name for p in processed.glob("person_*"))
    assert not list(processed.glob("*.jpg"))
    undo = client.post("/api/undo").json()
    assert undo["op"] == r["op"] and undo["command"] == "annotate"
    assert sorted(p.name for p in processed.glob("*.jpg")) == loose
    assert "/api/cluster" in client.get("/openapi.json").json()["paths"]


def test_accept_and_refuse_suggestions(client, work):
    processed = work / "processed"
    sugg = processed / "_suggested" / "person_01"
    sugg.mkdir(parents=True)
    crops = sorted((processed / "person_01").glob("*.jpg"))[:3]
    for p in crops:  # as a later annotate run would have suggested them
        p.rename(sugg / p.name)
    groups = client.get("/api/people").json()["groups"]
    assert any(g["kind"] == "suggested" and g["name"] == "person_01" and g["count"] == 3
               for g in groups)
    one = f"_suggested/person_01/{crops[0].name}"
    assert client.post("/api/moves", json={"crops": [one], "to": "_singletons"}).json()["moved"] == 1
    assert (processed / "_singletons" / crops[0].name).is_file()
    r = client.post("/api/moves", json={"folder": "_suggested/person_01", "to": "person_01"})
    assert r.json()["moved"] == 2
    assert all((processed / "person_01" / p.name).is_file() for p in crops[1:])


def test_rename_carries_suggestions_along(client, work):
    processed = work / "processed"
    (processed / "_suggested" / "person_03").mkdir(parents=True)
    crop = sorted((processed / "person_01").glob("*.jpg"))[0]
    crop.rename(processed / "_suggested" / "person_03" / crop.name)
    client.post("/api/people/person_03/rename", json={"new_name": "ben"}).raise_for_status()
    assert (processed / "_suggested" / "ben" / crop.name).is_file()


@pytest.mark.parametrize("name", ["../escape", "a/b", "_rejected", ".hidden", "", "x" * 101,
                                  "bad\\name"])
def test_rename_refuses_bad_names(client, work, name):
    r = client.post("/api/people/person_01/rename", json={"new_name": name})
    assert r.status_code == 400, r.text
    assert (work / "processed" / "person_01").is_dir()


def test_bad_edit_requests(client, work):
    assert client.post("/api/people/nobody/rename", json={"new_name": "x"}).status_code == 404
    assert client.post("/api/people/_rejected/rename", json={"new_name": "x"}).status_code == 400
    assert client.post("/api/people/person_01/rename", json={}).status_code == 422
    for crop in ("../manifest.jsonl", ".facerec/moves.jsonl", "person_01/../../x.jpg",
                 "/etc/passwd", "person_01/nope.jpg", "manifest.jsonl"):
        r = client.post("/api/moves", json={"crops": [crop], "to": "person_02"})
        assert r.status_code in (400, 404), (crop, r.text)
    assert client.post("/api/moves", json={"crops": [], "to": "x"}).status_code == 400
    assert client.post("/api/moves", json={"folder": "../..", "to": "x"}).status_code == 404
    assert client.get("/api/crops", params={"folder": "../"}).status_code == 404
    assert client.get("/api/crops", params={"folder": ".facerec"}).status_code == 404
    assert client.get("/api/train/nope").status_code == 404
    processed = work / "processed"
    (processed / ".facerec" / "moves.jsonl").unlink()  # no operation recorded
    r = client.post("/api/undo")
    assert r.status_code == 409 and "nothing to undo" in r.json()["detail"]


def test_http_status_comes_from_the_error_type_not_its_text(tmp_path, monkeypatch):
    import facerec.annotate as ann
    from facerec.errors import ConflictError, InvalidInputError, NotFoundError

    (tmp_path / "processed").mkdir()
    client = client_for(tmp_path)
    for error, status in ((ConflictError("no such luck: the folder is busy"), 409),
                          (NotFoundError("nobody is called that"), 404),
                          (InvalidInputError("no such thing as a bad name"), 400)):
        def fail(*args, error=error):
            raise error
        monkeypatch.setattr(ann, "rename_person", fail)
        monkeypatch.setattr(ann, "undo", fail)
        r = client.post("/api/people/person_01/rename", json={"new_name": "x"})
        assert (r.status_code, r.json()) == (status, {"detail": str(error)})
        assert client.post("/api/undo").status_code == status


def test_concurrent_renames_of_one_folder(client, work):
    """Eight clients rename person_01 at once: one wins, the others find it gone; one logged op."""
    barrier = threading.Barrier(8)
    codes: dict[int, int] = {}

    def rename(i: int) -> None:
        barrier.wait()
        codes[i] = client.post("/api/people/person_01/rename",
                               json={"new_name": f"name_{i}"}).status_code

    threads = [threading.Thread(target=rename, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes.values()) == [200] + [404] * 7
    winner = next(i for i, c in codes.items() if c == 200)
    processed = work / "processed"
    assert [p.name for p in processed.glob("name_*")] == [f"name_{winner}"]
    begins = [json.loads(line) for line in
              (processed / ".facerec" / "moves.jsonl").read_text().splitlines()]
    assert sum(1 for e in begins if e["event"] == "begin" and e["command"] == "rename") == 1
    client.post("/api/undo").raise_for_status()
    assert (processed / "person_01").is_dir() and not list(processed.glob("name_*"))


def test_people_listing_is_paged_with_10000_crops(tmp_path):
    processed = tmp_path / "work" / "processed"
    big = processed / "person_01"
    big.mkdir(parents=True)
    for i in range(10_000):
        (big / f"face_{i:05d}.jpg").touch()
    client = client_for(tmp_path / "work")
    groups = client.get("/api/people").json()["groups"]
    assert groups[0]["count"] == 10_000 and len(groups[0]["cover"]) == 4
    page = client.get("/api/crops", params={"folder": "person_01", "limit": 60}).json()
    assert page["total"] == 10_000 and len(page["crops"]) == 60
    last = client.get("/api/crops", params={"folder": "person_01", "offset": 9_990}).json()
    assert last["crops"][-1] == "person_01/face_09999.jpg" and len(last["crops"]) == 10
    assert client.get("/api/crops", params={"folder": "person_01", "limit": 100_000}).status_code == 422
    assert "face_0" not in client.get("/people").text  # the page itself never lists crops


# ------------------------------------------------------------------------------ file serving
def test_files_only_from_inside_the_work_folder(client, work, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not yours")
    processed = work / "processed"
    (processed / "person_01" / "link.jpg").symlink_to(secret)           # a file link out
    (processed / "outside").symlink_to(tmp_path, target_is_directory=True)  # a folder link out
    crop = sorted((processed / "person_02").glob("*.jpg"))[0]
    ok = client.get(f"/files/processed/person_02/{crop.name}")
    assert ok.status_code == 200 and ok.content == crop.read_bytes()
    for path in ("/files/processed/person_01/link.jpg", "/files/processed/outside/secret.jpg",
                 "/files/%2e%2e/secret.jpg", "/files/processed/%2e%2e/%2e%2e/secret.jpg",
                 "/files/..%2fsecret.jpg", "/files/processed/..%2f..%2fsecret.jpg",
                 "/files/%252e%252e/secret.jpg", "/files/..%5csecret.jpg",
                 "/files/%2fetc%2fpasswd", "/files//etc/passwd",
                 "/files/processed/.facerec/moves.jsonl", "/files/processed/manifest.jsonl",
                 "/files/processed/person_01/%00.jpg", "/photos/x.jpg"):
        r = client.get(path)
        assert r.status_code == 404 and b"not yours" not in r.content, path
    app = client.app
    for raw in (b"/files/../secret.jpg", b"/files/../../etc/passwd",
                b"/files/processed/../../secret.jpg", b"/files/./processed/../../secret.jpg"):
        assert raw_get(app, raw) == 404, raw
    for rel in ("../secret.jpg", "processed/../../secret.jpg", "/etc/passwd",
                "processed/outside/secret.jpg", "processed\\..\\..\\secret.jpg"):
        with pytest.raises(UnsafePath):
            safe_file(work, rel)


# ------------------------------------------------------------------------- token, Host, Origin
def test_token_protects_every_route(work):
    client = client_for(work, token="s3cret-token")
    for path in ("/api/health", "/api/people", "/people", "/train", "/recognise", "/docs",
                 "/openapi.json", "/static/people.js", "/files/processed/manifest.jsonl"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    assert client.post("/api/undo").status_code == 401
    assert client.post("/api/people/person_01/rename", json={"new_name": "x"}).status_code == 401
    assert (work / "processed" / "person_01").is_dir()
    good = {"Authorization": "Bearer s3cret-token"}
    assert client.get("/api/health", headers=good).status_code == 200
    assert client.get("/api/people?token=s3cret-token").status_code == 401  # API: header only
    # a page link with ?token= sets an HttpOnly cookie, then the pages' fetch() calls work
    assert client.get("/people?token=nope", follow_redirects=False).status_code == 401
    r = client.get("/people?token=s3cret-token", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/people"
    assert "httponly" in r.headers["set-cookie"].lower()
    assert client.get("/api/people").status_code == 200


def test_token_needed_off_loopback():
    assert resolve_token("127.0.0.1", None) == (None, False)
    assert resolve_token("::1", None) == (None, False)
    token, generated = resolve_token("0.0.0.0", None)
    assert generated and len(token) >= 24
    assert resolve_token("0.0.0.0", "given") == ("given", False)


def test_cross_site_posts_and_rebinding_hosts_are_refused(client, work):
    r = client.post("/api/people/person_01/rename", json={"new_name": "x"},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and (work / "processed" / "person_01").is_dir()
    assert client.get("/api/health", headers={"Host": "evil.example:8000"}).status_code == 400
    same = client.post("/api/people/person_01/rename", json={"new_name": "x"},
                       headers={"Origin": BASE})
    assert same.status_code == 200


# ------------------------------------------------------------------------------------ predict
def test_predict_gives_predict_json_schema(model_client, celebrities, capsys):
    photo = elton_photo(celebrities)
    r = model_client.post("/api/predict", files={"files": (photo.name, photo.read_bytes(),
                                                           "image/jpeg")})
    assert r.status_code == 200
    body = r.json()
    assert main(["predict", "--checkpoint_path", model_client.app.state.serve.recogniser.checkpoint,
                 "--image_path", str(photo), "--json", "--device", "cpu", "--quiet"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert body[0]["image"] == photo.name
    assert {k: v for k, v in body[0].items() if k != "image"} == \
        {k: v for k, v in cli[0].items() if k != "image"}
    assert body[0]["faces"][0]["label"] == "elton_john"
    health = model_client.get("/api/health").json()["model"]
    assert health["labels"] == ["ben_afflek", "elton_john", "jerry_seinfeld"]


def _bomb_png(side: int = 20_000) -> bytes:
    """A valid PNG header for side x side pixels (400 MP) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_predict_bad_uploads_get_4xx_with_a_reason(model_client, celebrities):
    good = elton_photo(celebrities).read_bytes()
    cases = {"corrupt.jpg": (b"\xff\xd8\xff" + os.urandom(2000), 400, "corrupt"),
             "text.jpg": (b"hello, not an image\n" * 20, 400, "not an image"),
             "truncated.jpg": (good[: len(good) // 3], 400, "truncated"),
             "empty.jpg": (b"", 400, "empty"),
             "bomb.png": (_bomb_png(), 413, "too large")}
    for name, (data, status, reason) in cases.items():
        r = model_client.post("/api/predict", files={"files": (name, data)})
        assert r.status_code == status and reason in r.json()["detail"], (name, r.text)
    big = b"\xff\xd8" + b"\0" * (2 * 1024 * 1024 + 10)  # over this client's 2 MB limit
    r = model_client.post("/api/predict", files={"files": ("big.jpg", big)})
    assert r.status_code == 413 and "2 MB" in r.json()["detail"]
    huge = model_client.post("/api/predict", content=b"x",
                             headers={"Content-Type": "multipart/form-data; boundary=x",
                                      "Content-Length": str(10**10)})
    assert huge.status_code == 413
    assert model_client.post("/api/predict", json={"x": 1}).status_code == 415
    assert model_client.post("/api/predict", files={"other": ("a.jpg", good)}).status_code == 400
    many = [("files", (f"{i}.jpg", good)) for i in range(17)]
    assert model_client.post("/api/predict", files=many).status_code in (400, 413)
    # several images: the unreadable one is reported in place, the others predicted
    r = model_client.post("/api/predict", files=[("files", ("bad.jpg", b"nope" * 10)),
                                                 ("files", ("good.jpg", good))])
    assert r.status_code == 200
    bad, ok = r.json()
    assert bad["error"].startswith("not an image") and bad["faces"] == []
    assert ok["error"] is None and ok["faces"][0]["label"] == "elton_john"


def test_concurrent_predictions_are_serialized_safely(model_client, celebrities):
    photos = [sorted((celebrities / "val" / p).glob("*.jpg"))[0] for p in
              ("elton_john", "jerry_seinfeld", "ben_afflek")]
    expected = {}
    for p in photos:
        expected[p.name] = model_client.post(
            "/api/predict", files={"files": (p.name, p.read_bytes())}).json()
    failures: list[str] = []

    def worker(k: int) -> None:
        for j in range(3):
            p = photos[(k + j) % len(photos)]
            r = model_client.post("/api/predict", files={"files": (p.name, p.read_bytes())})
            if r.status_code != 200 or r.json() != expected[p.name]:
                failures.append(f"{p.name}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# -------------------------------------------------------------------------------------- train
@pytest.mark.slow
def test_train_from_the_api_swaps_the_model(client, work, celebrities):
    processed = work / "processed"
    for person in ("elton_john", "jerry_seinfeld", "ben_afflek"):
        folder = _servework.cluster_of(processed, person)
        client.post(f"/api/people/{folder}/rename", json={"new_name": person}).raise_for_status()
    r = client.post("/api/train", json={"max_epochs": 4})
    assert r.status_code == 202
    job = r.json()
    assert job["state"] in ("queued", "running") and job["max_epochs"] == 4
    assert client.post("/api/train", json={"max_epochs": 4}).status_code == 409  # one at a time
    client.app.state.serve.trainer.wait(600)
    status = client.get(f"/api/train/{job['id']}").json()
    assert status["state"] == "done", status["error"]
    assert [h["epoch"] for h in status["history"]] == [1, 2, 3, 4]
    assert "train_loss" in status["history"][-1]
    result = status["result"]
    assert result["labels"] == ["ben_afflek", "elton_john", "jerry_seinfeld"]
    assert result["accuracy"] is not None and result["threshold"] is not None
    png = client.get(f"/files/{result['confusion_png']}")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert client.get("/api/health").json()["model"]["checkpoint"] == result["checkpoint"]
    photo = elton_photo(celebrities)
    faces = client.post("/api/predict", files={"files": (photo.name, photo.read_bytes())}).json()
    assert faces[0]["faces"][0]["label"] == "elton_john"
    assert client.get("/api/train").json()["jobs"][0]["id"] == job["id"]


def test_train_failure_is_reported(client, work):
    for folder in list((work / "processed").glob("person_*")):
        for p in folder.glob("*.jpg"):
            p.unlink()
    job = client.post("/api/train", json={"max_epochs": 1}).json()
    client.app.state.serve.trainer.wait(120)
    status = client.get(f"/api/train/{job['id']}").json()
    assert status["state"] == "failed" and status["error"]
    assert client.get("/api/health").json()["model"]["checkpoint"] is None


# ------------------------------------------------------------------------------------------ CLI
def test_cli_serve_errors_are_one_line(tmp_path, capsys, work):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "no processed/ folder" in capsys.readouterr().err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert main(["serve", str(work), "--port", str(busy.getsockname()[1])]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("facerec serve: error: cannot listen on 127.0.0.1:") and "\n" not in err
    finally:
        busy.close()
    assert main(["serve", str(work), "--photos", str(tmp_path / "none")]) == 2
    assert "photos folder not found" in capsys.readouterr().err
