"""The hardening issue: ``facerec serve`` and the edits of ``processed/`` tried as an attacker
would. One test (or a few) per item of the issue; each failed on the code before the fix.

Most tests run the server through FastAPI's TestClient on a small synthetic work folder (edits
never embed, so no model is needed); the interrupted-annotate scenario kills a real ``facerec
annotate`` process (with the fake embedder of :mod:`test_train`). The memory items are in
``test_memory.py``, the browser ones (framing, /docs offline) in ``test_serve_browser.py``.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import urllib.parse
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="facerec[serve] is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from facerec.cli import main  # noqa: E402
from facerec.serve.app import ServeConfig, create_app  # noqa: E402

BASE = "http://127.0.0.1"
BIDI = "x\u202ey"   # shows as "y" then "x" reversed: another name on the page


def _crop(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), (shade, 100, 150)).save(path)


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """WORK/processed with person_01 (3 crops), person_02 (2), _singletons (1) and a manifest."""
    processed = tmp_path / "work" / "processed"
    for i in range(3):
        _crop(processed / "person_01" / f"a{i}.jpg", 10 + i)
    for i in range(2):
        _crop(processed / "person_02" / f"b{i}.jpg", 60 + i)
    _crop(processed / "_singletons" / "s0.jpg", 200)
    (processed / "manifest.jsonl").write_text("")
    return tmp_path / "work"


def client_for(work: Path, **options) -> TestClient:
    return TestClient(create_app(ServeConfig(work_dir=work, **options)), base_url=BASE)


def _log(work: Path) -> bytes:
    path = work / "processed" / ".facerec" / "moves.jsonl"
    return path.read_bytes() if path.exists() else b""


def _crops(processed: Path) -> dict[str, str]:
    """crop name -> folder (relative to processed/), every crop."""
    return {p.name: p.parent.relative_to(processed).as_posix() for p in processed.rglob("*.jpg")
            if ".facerec" not in p.parts}


# --------------------------------------------------------------------------- 2. framing, CSP
def test_every_response_forbids_framing_and_foreign_scripts(work):
    """Item 2: an iframe of /people on another local origin clicked Undo. Every response (pages,
    static files, API, errors, the guard's own refusals, the docs) says DENY and frame-ancestors
    'none', and allows scripts from this server only."""
    client = client_for(work)
    token = client_for(work, token="t0ken")
    answers = [client.get("/people"), client.get("/train"), client.get("/static/people.js"),
               client.get("/api/people"), client.get("/api/crops", params={"folder": "../x"}),
               client.post("/api/undo"), client.get("/docs"),
               client.get("/api/health", headers={"Host": "evil.example"}),        # 400: Host
               client.post("/api/undo", headers={"Origin": "http://evil.example"}),  # 403
               token.get("/people"), token.get("/api/people"),                     # 401
               client.post("/api/moves", content=b"x" * (3 << 20),                  # 413
                           headers={"Content-Type": "application/json"})]
    for r in answers:
        assert r.headers.get("x-frame-options") == "DENY", (r.request.url, r.status_code)
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp, csp
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers.get("x-content-type-options") == "nosniff"
    assert {r.status_code for r in answers} >= {200, 400, 401, 403, 404, 409, 413}


# ------------------------------------------------------------------- 3. interrupted annotate
KILL_AFTER = """
import os
import test_train
_real = os.rename
_n = [0]
def _rename(src, dst, *a, **k):
    _n[0] += 1
    if _n[0] > {moves}:
        os._exit(9)  # kill -9 in the middle of the moves
    return _real(src, dst, *a, **k)
os.rename = _rename
"""


def _killed_annotate_then_page_edits(tmp_path: Path):
    """``facerec annotate`` killed after 10 of its moves while the server runs, then on the
    page: the fullest ``person_NN`` renamed to alice, two crops of the other clusters moved to
    bob. Returns the work and processed folders, the annotate environment, the state right
    after the edits (crop -> folder), where the two crops were before, and the two edits' ops."""
    from test_faults_pipeline import ANNOTATE, _facerec, _loose_crops

    work = tmp_path / "work"
    processed = _loose_crops(work / "processed", per_person=6)
    env = {"FACEREC_CACHE_DIR": str(tmp_path / "cache")}
    client = client_for(work)  # the server runs all along
    killed = _facerec(ANNOTATE, work, KILL_AFTER.format(moves=10), **env)
    assert killed.returncode == 9, killed.stderr
    clusters = sorted(processed.glob("person_*"), key=lambda p: -len(list(p.glob("*.jpg"))))
    assert clusters and any(clusters[0].glob("*.jpg"))  # the page shows a half-made cluster
    r = client.post(f"/api/people/{clusters[0].name}/rename", json={"new_name": "alice"})
    assert r.status_code == 200, r.text
    ops = [r.json()["op"]]
    others = sorted(f"{p.parent.name}/{p.name}" for p in processed.glob("person_*/*.jpg"))
    assert len(others) >= 2
    r = client.post("/api/moves", json={"crops": others[:2], "to": "bob"})
    assert r.status_code == 200 and r.json()["moved"] == 2, r.text
    ops.append(r.json()["op"])
    moved_from = {Path(c).name: str(Path(c).parent) for c in others[:2]}
    return work, processed, env, _crops(processed), moved_from, ops


def _undo_until(client: TestClient, op: str) -> dict:
    """The page's Undo, pressed until it takes back operation ``op`` (a later annotate run may
    have suggested crops: that one goes first)."""
    for _ in range(5):
        r = client.post("/api/undo")
        assert r.status_code == 200, r.text
        if r.json()["op"] == op:
            return r.json()
    raise AssertionError(f"{op} never undone")


def test_interrupted_annotate_then_page_edits_keep_the_users_labelling(tmp_path):
    """Item 3: kill -9 annotate mid-move, rename a cluster to alice and move 2 crops to bob on
    the page, rerun annotate: alice/ and bob/ keep exactly their crops (the first edit finished
    the killed run: nothing is left for the rerun to put back), and the page's Undo then takes
    back the user's own edits, in order, in the right folders."""
    from test_faults_pipeline import ANNOTATE, TRAIN_PRELUDE, _facerec

    work, processed, env, edited, moved_from, ops = _killed_annotate_then_page_edits(tmp_path)
    mine = {name: folder for name, folder in edited.items() if folder in ("alice", "bob")}
    assert sum(1 for f in mine.values() if f == "bob") == 2
    again = _facerec(ANNOTATE, work, TRAIN_PRELUDE, **env)
    assert again.returncode == 0, again.stderr
    assert "interrupted" not in again.stdout  # the page's first edit finished the killed run
    after = _crops(processed)
    assert sorted(after) == sorted(edited)  # no crop lost
    assert {n: f for n, f in after.items() if f in ("alice", "bob")} == mine
    client = client_for(work)
    assert _undo_until(client, ops[1])["restored"] == 2
    assert {n: _crops(processed)[n] for n in moved_from} == moved_from  # back where they were
    assert _undo_until(client, ops[0])["restored"] == 1  # alice: its person_NN again
    assert not (processed / "alice").exists()


def test_recovery_never_reverts_what_later_operations_built_on(tmp_path, monkeypatch):
    """Item 3, a log written before edits finished killed runs (as the issue's was): the rerun
    rolls the killed run back, except what the later rename and move took over."""
    import facerec.annotate as ann
    from test_faults_pipeline import ANNOTATE, TRAIN_PRELUDE, _facerec

    monkeypatch.setattr(ann, "recover_interrupted", lambda *a, **k: [])  # the old edits
    work, processed, env, edited, moved_from, ops = _killed_annotate_then_page_edits(tmp_path)
    monkeypatch.undo()
    mine = {name: folder for name, folder in edited.items() if folder in ("alice", "bob")}
    again = _facerec(ANNOTATE, work, TRAIN_PRELUDE, **env)
    assert again.returncode == 0, again.stderr
    assert "that later operations moved on" in again.stdout, again.stdout
    after = _crops(processed)
    assert sorted(after) == sorted(edited)  # no crop lost
    assert {n: f for n, f in after.items() if f in ("alice", "bob")} == mine
    client = client_for(work)
    assert _undo_until(client, ops[1])["restored"] == 2  # the right folders: bob -> theirs
    assert {n: _crops(processed)[n] for n in moved_from} == moved_from
    assert _undo_until(client, ops[0])["restored"] == 1 and not (processed / "alice").exists()


# --------------------------------------------------------------------------- 5. JSON bodies
def test_json_bodies_are_limited_and_never_echoed(work):
    """Item 5: a 300 MB new_name came back whole in the 400 message. Bodies above the limit are
    413 before they are read (Content-Length) or as soon as they pass it (chunked); a long name
    is refused without being echoed; a bad one is quoted cut short."""
    client = client_for(work, max_body_bytes=1 << 20)
    big = json.dumps({"new_name": "n" * (2 << 20)}).encode()
    r = client.post("/api/people/person_01/rename", content=big,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 200

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    r = client.post("/api/people/person_01/rename", content=chunks(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 200
    r = client.post("/api/people/person_01/rename", json={"new_name": "q" * 500_000})
    assert r.status_code == 422 and len(r.content) < 600 and "qqqq" not in r.text
    r = client.post("/api/people/person_01/rename", json={"new_name": "/" + "z" * 900})
    assert r.status_code == 400 and len(r.content) < 400, r.text
    r = client.post("/api/moves", json={"crops": ["w" * 900], "to": "bob"})
    assert r.status_code in (400, 404) and len(r.content) < 400, r.text
    assert (work / "processed" / "person_01").is_dir() and not (work / "processed" / "bob").exists()


# ------------------------------------------------------------- 6. symlinked folders, 8. files
def test_moves_merges_and_renames_never_go_through_a_link(work, tmp_path):
    """Item 6: ``ln -s /elsewhere processed/linkdir``, then a move or merge into it put crops
    outside the work folder. A link (to a folder inside or outside, or dangling) is never a
    target, nor a bookkeeping folder replaced by a link; nothing moves, the log is unchanged."""
    processed = work / "processed"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (processed / "linkdir").symlink_to(elsewhere, target_is_directory=True)
    (processed / "inside").symlink_to(processed / "person_02", target_is_directory=True)
    (processed / "dangling").symlink_to(tmp_path / "nothing")
    client = client_for(work)
    before, log = _crops(processed), _log(work)
    for target in ("linkdir", "inside", "dangling"):
        r = client.post("/api/moves", json={"crops": ["person_01/a0.jpg"], "to": target})
        assert r.status_code == 400 and "link" in r.json()["detail"], r.text
        r = client.post("/api/people/person_01/rename", json={"new_name": target})
        assert r.status_code == 400 and "link" in r.json()["detail"], r.text
    (processed / "_singletons").rename(processed / "singles")
    (processed / "_singletons").symlink_to(elsewhere, target_is_directory=True)
    r = client.post("/api/moves", json={"crops": ["person_01/a0.jpg"], "to": "_singletons"})
    assert r.status_code == 400, r.text
    assert not any(elsewhere.iterdir())
    assert _crops(processed) == {**before, "s0.jpg": "singles"} and _log(work) == log


def test_annotate_refuses_to_sort_into_a_linked_bookkeeping_folder(tmp_path):
    from test_faults_pipeline import ANNOTATE, TRAIN_PRELUDE, _facerec, _loose_crops

    import test_train

    processed = _loose_crops(tmp_path / "processed")
    test_train.make_crop(4, seed=1).save(processed / "stranger.jpg")  # seen once: _singletons
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (processed / "_singletons").symlink_to(elsewhere, target_is_directory=True)
    before = _crops(processed)
    proc = _facerec(ANNOTATE, tmp_path, TRAIN_PRELUDE, FACEREC_CACHE_DIR=str(tmp_path / "cache"))
    assert not any(elsewhere.iterdir())
    assert proc.returncode == 2 and "is a link" in proc.stderr, (proc.stdout, proc.stderr)
    assert _crops(processed) == before


def test_a_move_onto_a_file_name_leaves_the_log_as_it_was(work):
    """Item 8: ``"to": "manifest.jsonl"`` gave a 500 naming the wrong file with an absolute path,
    and left a ``begin`` without ``end``, so the next Undo restored nothing. Now: 400, nothing
    moved, the log byte for byte as it was, and Undo takes back the user's real last action."""
    client = client_for(work)
    client.post("/api/moves", json={"crops": ["person_01/a0.jpg"], "to": "person_02"}) \
        .raise_for_status()
    log = _log(work)
    for target in ("manifest.jsonl", "person_02/b0.jpg"):
        r = client.post("/api/moves", json={"crops": ["person_01/a1.jpg"], "to": target})
        assert r.status_code == 400, r.text
        assert str(work) not in r.text and "/tmp" not in r.text
    r = client.post("/api/people/person_01/rename", json={"new_name": "manifest.jsonl"})
    assert r.status_code == 400 and _log(work) == log
    undone = client.post("/api/undo").json()
    assert undone["restored"] == 1 and (work / "processed" / "person_01" / "a0.jpg").is_file()


def test_an_edit_that_fails_midway_is_put_back(work, monkeypatch):
    """Item 8, the class: any failure in the middle of a move (a full disk) puts back what was
    moved and leaves the log as it was; the answer names no absolute path."""
    processed = work / "processed"
    client = client_for(work)
    before, log = _crops(processed), _log(work)
    real, calls = os.rename, []

    def full_disk(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "rename", full_disk)
    r = client.post("/api/moves", json={"crops": ["person_01/a0.jpg", "person_01/a1.jpg"],
                                        "to": "carol"})
    monkeypatch.undo()
    assert r.status_code == 500 and "No space left on device" in r.json()["detail"]
    assert str(work) not in r.text and "a1.jpg" in r.text
    assert _crops(processed) == before and _log(work) == log
    assert not (processed / "carol").exists()


# ----------------------------------------------------------------- no absolute path anywhere
def test_no_response_names_a_server_path(work, tmp_path):
    """Errors, health and edit answers show paths relative to the work folder, never the
    server's file layout."""
    client = client_for(work)
    (work / "processed" / ".facerec").mkdir(exist_ok=True)
    answers = [client.get("/api/health"), client.post("/api/undo"),
               client.post("/api/people/nobody/rename", json={"new_name": "x"}),
               client.post("/api/moves", json={"crops": ["person_01/zz.jpg"], "to": "x"}),
               client.post("/api/moves", json={"crops": ["person_01/a0.jpg"], "to": "x"}),
               client.post("/api/undo"), client.get("/api/crops/info", params={"path": "x.jpg"})]
    for r in answers:
        assert str(tmp_path) not in r.text and str(tmp_path.resolve()) not in r.text, r.text
    assert answers[0].json()["work_dir"] == "work"


# ------------------------------------------------------------------------ 7. serve's startup
def test_serve_start_with_a_malformed_checkpoint_is_one_line(work, capsys, celebrities):
    """Item 7: a damaged checkpoint, given or found in WORK/runs, stops ``facerec serve`` with
    one line and exit status 2, whatever is wrong with it (a crafted timm backbone included)."""
    import torch

    import _checkpoints

    good = torch.load(_checkpoints.checkpoint("dlib", celebrities), weights_only=True)
    timm = copy.deepcopy(good)
    timm["facerec"]["backbone"] = {"name": "no_such_net", "kind": "timm", "dim": 128}
    timm["facerec"]["preprocess"].update(input_size=48, mean=[0.5] * 3, std=[0.5] * 3)
    labels = copy.deepcopy(good)
    labels["facerec"]["labels"][0] = BIDI
    garbage = work / "garbage.ckpt"
    garbage.write_bytes(b"PK\x03\x04 not a zip")
    cases = {"garbage": garbage}
    for name, raw in (("timm", timm), ("labels", labels)):
        cases[name] = work / f"{name}.ckpt"
        torch.save(raw, cases[name])
    for name, path in cases.items():
        assert main(["serve", str(work), "--checkpoint_path", str(path), "--port", "0",
                     "--device", "cpu"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("facerec serve: error: ") and "\n" not in err, err
        assert "Traceback" not in err
    found = work / "runs" / "r" / "version_0" / "checkpoints" / "epoch=1.ckpt"
    found.parent.mkdir(parents=True)
    torch.save(timm, found)
    assert main(["serve", str(work), "--port", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such_net" in err and "\n" not in err, err


# -------------------------------------------------------------------------- 9. open redirect
@pytest.mark.parametrize("path", ["//evil.example/", "/\\evil.example/", "/%5Cevil.example/",
                                  "/%2F%2Fevil.example/", "///evil.example/people", "/\t/evil"])
def test_the_token_link_redirects_only_to_this_server(work, path):
    """Item 9: ``GET //evil.example/?token=T`` answered 303 to ``//evil.example/``."""
    import anyio

    app = create_app(ServeConfig(work_dir=work, token="T0ken"))
    raw = path.encode() + b"?token=T0ken"
    sent: list[dict] = []

    async def call() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "root_path": "", "query_string":
                 b"token=T0ken", "path": urllib.parse.unquote(path), "raw_path": raw,
                 "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 8000)}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)

    anyio.run(call)
    assert sent[0]["status"] == 303
    location = dict(sent[0]["headers"])[b"location"].decode("latin-1")
    parts = urllib.parse.urlsplit(urllib.parse.urljoin("http://127.0.0.1:8000/x", location))
    assert parts.netloc == "127.0.0.1:8000", location
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location


# ----------------------------------------------------------------------------- 10. /api/train
@pytest.mark.parametrize("body", [{"seed": 2**64 + 1}, {"seed": -5}, {"seed": True},
                                  {"seed": "7"}, {"val": 0.5, "test": 0.5},
                                  {"val": 0.6, "test": 0.45}, {"backbone": "no_such_net"},
                                  {"max_epochs": 0}, {"max_epochs": 2.5}, {"epochs": 3},
                                  {"val": float("nan")}])
def test_train_options_are_all_checked_before_anything_is_touched(work, body):
    """Item 10: a seed of 2**64+1 or -5, or val 0.5 + test 0.5, got 202, then a traceback on the
    server with the dataset already rebuilt. Every field is checked first: 422, no job, no
    dataset/."""
    client = client_for(work)
    r = client.post("/api/train", content=json.dumps(body),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert client.get("/api/train").json()["jobs"] == []
    assert not (work / "dataset").exists()


# ---------------------------------------------------------------------------------- 12. names
@pytest.mark.parametrize("name", [BIDI, "a\u200bb", "tab\tname", "line\u2028sep", "nul\0",
                                  "bell\x07", "\u2066isolate\u2069"])
def test_person_names_with_control_or_format_characters_are_refused(work, name):
    """Item 12: names took control and bidi-override characters (``x\\u202ey``): display
    spoofing. Renames and moves to a new person refuse them, with the name escaped."""
    client = client_for(work)
    r = client.post("/api/people/person_01/rename", json={"new_name": name})
    assert r.status_code == 400 and "control or invisible" in r.json()["detail"], r.text
    assert name not in r.json()["detail"]  # escaped, never shown as is
    r = client.post("/api/moves", json={"crops": ["person_01/a0.jpg"], "to": name})
    assert r.status_code == 400, r.text
    assert sorted(p.name for p in (work / "processed").iterdir()) == \
        [".facerec", "_singletons", "manifest.jsonl", "person_01", "person_02"]


def test_split_refuses_a_person_folder_that_would_spoof_a_label(work, capsys):
    """Item 12: a folder renamed by hand becomes a label through split: the same name rule."""
    processed = work / "processed"
    (processed / "person_01").rename(processed / BIDI)
    rc = main(["split", str(processed), "--out", str(work / "dataset"), "--dedup", "none",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "control or invisible" in err and "\\u202e" in err, err
    assert not (work / "dataset" / "labels.json").exists()


def test_the_name_rule_lives_in_the_foundation_layer():
    from facerec.crops import check_person_name
    from facerec.recognition import checkpoint

    assert checkpoint.check_person_name is check_person_name
    assert check_person_name("Zoë O'Brien-Łukasz 李") == "Zoë O'Brien-Łukasz 李"


# ------------------------------------------------------------------------------ 13. /docs
def test_docs_are_served_from_local_files_with_no_inline_script(work):
    """Item 13: /docs loaded an unpinned third-party script next to the token cookie (and was
    blank offline). Now its page names only this server's files, and they are served."""
    import re

    client = client_for(work)
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http:" not in page.text and "https:" not in page.text and "//" not in \
        page.text.replace("<!doctype", "")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all(body.strip() == "" and 'src="/' in attrs for attrs, body in scripts)
    for url in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 100, url
    assert client.get("/docs/assets/../../etc/passwd").status_code == 404
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/redoc").status_code == 404  # FastAPI's, from a CDN: gone


# --------------------------------------------- 7. malformed checkpoints, in every command
def _malformed(good: dict) -> dict[str, dict]:
    """The issue's examples: fields of a safely loaded checkpoint that are wrong."""
    def edit(fn):
        ck = copy.deepcopy(good)
        fn(ck["facerec"], ck)
        return ck

    return {
        "no backbone": edit(lambda f, ck: f.pop("backbone")),
        "unknown embedder kwarg": edit(
            lambda f, ck: f["backbone"].setdefault("embedder_kwargs", {}).update(evil=1)),
        "huge num_jitters": edit(
            lambda f, ck: f["backbone"].setdefault("embedder_kwargs", {}).update(
                num_jitters=10 ** 7)),
        "list state_dict": edit(lambda f, ck: ck.update(state_dict=[1, 2, 3])),
        "string threshold": edit(lambda f, ck: f.update(threshold="0.9")),
        "bad crop block": edit(lambda f, ck: f["preprocess"].update(crop={"size": "big"})),
    }


def test_malformed_checkpoints_are_one_line_in_every_command(tmp_path, capsys, celebrities):
    """Item 7: predict, enroll, verify and evaluate each answer a malformed checkpoint with one
    line and exit status 2 (they ended in tracebacks; num_jitters 10**7 hung predict)."""
    import torch

    import _checkpoints

    good = torch.load(_checkpoints.checkpoint("dlib", celebrities), weights_only=True)
    photo = sorted((celebrities / "val" / "madonna").glob("*.jpg"))[0]
    data = _checkpoints.dataset(celebrities)
    for name, raw in _malformed(good).items():
        path = tmp_path / f"{name.replace(' ', '_')}.ckpt"
        torch.save(raw, path)
        for argv in (["predict", str(photo), "--checkpoint_path", str(path)],
                     ["enroll", str(photo), "--checkpoint_path", str(path), "--name", "x",
                      "--out", str(tmp_path / "e.ckpt")],
                     ["verify", str(photo), "--checkpoint_path", str(path)],
                     ["evaluate", str(data / "test"), "--checkpoint_path", str(path)]):
            assert main([*argv, "--device", "cpu"]) == 2, (name, argv[0])
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"facerec {argv[0]}: error: ") and "\n" not in err, (name, err)
            assert "Traceback" not in err
