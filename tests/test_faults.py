"""Hostile input and faults for detect and predict (issue 9): every entry recorded, no traceback,
no hang, the user's photos never touched, outputs never over inputs, one writer per folder,
read-only and full disks as one line and exit status 2.

The corpus is built in a temp folder from real photos (``celebrities``) plus every kind of entry a
photo folder can hold: names that are not UTF-8, hold a newline, start with a dash or are 240 bytes
long; wrong extensions, BMP/TIFF/CMYK/16-bit/RGBA; empty, truncated and non-image files; a folder
named like an image; a FIFO, a socket, broken links, a link loop, a linked file and a linked folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import _checkpoints
from facerec.cli import main
from facerec.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
NON_UTF8 = os.fsdecode(b"latin1_\xe9\xff.jpg")  # surrogate-escaped str of those bytes


def _photos(celebrities: Path, n: int) -> list[Path]:
    return sorted((celebrities / "train" / "ben_afflek").glob("*.jpg"))[:n]


def build_hostile(root: Path, celebrities: Path) -> Path:
    """A photo folder with one of everything; returns it. See the module docstring."""
    raw = root / "raw"
    (raw / "album").mkdir(parents=True)
    good = _photos(celebrities, 3)
    shutil.copy(good[0], raw / "good.jpg")
    shutil.copy(good[1], raw / "album" / "in_album.jpg")
    shutil.copy(good[2], raw / NON_UTF8)
    shutil.copy(good[0], raw / "new\nline.jpg")
    shutil.copy(good[1], raw / "-rf.jpg")
    shutil.copy(good[2], raw / ("a" * 236 + ".jpg"))
    face = Image.open(good[0]).convert("RGB")
    face.save(raw / "png_named.jpg", format="PNG")          # wrong extension
    face.save(raw / "photo.bmp")
    face.save(raw / "photo.tiff")
    face.convert("CMYK").save(raw / "cmyk.jpg")
    face.convert("RGBA").save(raw / "rgba.png")
    Image.fromarray((__import__("numpy").asarray(face.convert("L"), dtype="uint16") * 257),
                    ).save(raw / "sixteen.png")
    (raw / "empty.jpg").write_bytes(b"")
    (raw / "truncated.jpg").write_bytes(good[0].read_bytes()[:2000])
    (raw / "notes.txt").write_text("not a photo\n")
    (raw / "folder.jpg").mkdir()                             # a folder named like an image
    shutil.copy(good[0], raw / "folder.jpg" / "inside.jpg")
    os.mkfifo(raw / "pipe.jpg")
    with contextlib.suppress(OSError):                       # socket paths are length-limited
        cwd = os.getcwd()
        os.chdir(raw)
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind("sock.jpg")
            sock.close()
        finally:
            os.chdir(cwd)
    os.symlink("nowhere.jpg", raw / "dangling.jpg")
    os.symlink("loop_b.jpg", raw / "loop_a.jpg")
    os.symlink("loop_a.jpg", raw / "loop_b.jpg")
    os.symlink("good.jpg", raw / "linked.jpg")
    outside = root / "elsewhere"
    outside.mkdir()
    shutil.copy(good[1], outside / "linked_dir_photo.jpg")
    os.symlink(outside, raw / "linked_folder")
    (raw / ".hidden.jpg").write_bytes(b"hidden files are ignored")
    return raw


def entries(raw: Path) -> set[str]:
    """What must be recorded: every non-hidden entry that is not a real folder (independent of
    facerec's own walker)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(raw):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            if not name.startswith("."):
                out.add((here / name).relative_to(raw).as_posix())
    return out


def snapshot(folder: Path) -> dict[str, tuple]:
    """lstat type + content hash of everything under ``folder`` (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
            elif stat.S_ISLNK(st.st_mode):
                out[str(p)] = ("link", os.readlink(p))
            else:
                out[str(p)] = (stat.S_IFMT(st.st_mode),)
    return out


def cli(*argv, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``facerec ARGV`` in a fresh process (a hang fails the test instead of blocking it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "facerec.cli", *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, celebrities) -> Path:
    return build_hostile(tmp_path_factory.mktemp("hostile"), celebrities)


@pytest.fixture(scope="module")
def detected(hostile, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess, dict]:
    before = snapshot(hostile)
    out = tmp_path_factory.mktemp("detected") / "processed"
    proc = cli("detect", hostile, "--out", out, "--quiet", timeout=240)  # the FIFO must not hang
    return hostile, out, proc, before


# ----------------------------------------------------------------------------------------- detect
def test_detect_records_every_entry_and_touches_nothing(detected):
    raw, out, proc, before = detected
    assert proc.returncode == 3, proc.stderr[-3000:]  # partial success: some entries skipped
    assert "Traceback" not in proc.stderr
    records = read_manifest(out)
    assert set(records) == entries(raw)                      # exactly one record per entry
    assert snapshot(raw) == before                           # inputs byte- and link-identical
    errors = {path: r["error"] for path, r in records.items() if r["error"]}
    assert errors["pipe.jpg"] == "not a file: a FIFO"
    assert errors["dangling.jpg"].startswith("unreadable: broken link to nowhere.jpg")
    assert errors["loop_a.jpg"] == "unreadable: symlink loop"
    assert errors["linked_folder"] == "not a file: a linked folder (not followed)"
    assert errors["empty.jpg"].startswith("empty file")
    assert errors["truncated.jpg"].startswith(("truncated", "corrupt"))
    assert errors["notes.txt"].startswith("not an image")
    if "sock.jpg" in records:
        assert errors["sock.jpg"] == "not a file: a socket"
    for ok in ("good.jpg", "album/in_album.jpg", NON_UTF8, "new\nline.jpg", "-rf.jpg",
               "a" * 236 + ".jpg", "png_named.jpg", "photo.bmp", "photo.tiff", "cmyk.jpg",
               "rgba.png", "sixteen.png", "folder.jpg/inside.jpg", "linked.jpg"):
        assert records[ok]["error"] is None, (ok, records[ok]["error"])
        assert records[ok]["faces"], ok


def test_detect_non_utf8_name_is_lossless_and_its_crop_name_safe(detected):
    _, out, proc, _ = detected
    record = read_manifest(out)[NON_UTF8]
    assert os.fsencode(record["path"]) == b"latin1_\xe9\xff.jpg"
    assert record["path_readable"] == "latin1_\\xe9\\xff.jpg"
    for face in record["faces"]:
        face["crop"].encode("ascii")                         # crop names are plain ASCII
        assert (out / face["crop"]).is_file()
    for line in (out / "manifest.jsonl").read_bytes().splitlines():
        json.loads(line)                                     # every line is valid JSON text


def test_detect_rerun_counts_each_file_once(detected):
    raw, out, _, _ = detected
    proc = cli("detect", raw, "--out", out, "--quiet", timeout=240)
    assert proc.returncode == 3, proc.stderr[-3000:]  # partial success: some files skipped
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.strip("│ \n").split("│")
        if len(parts) == 2:
            rows[parts[0].strip()] = parts[1].strip()
    skipped = sum(int(v) for k, v in rows.items() if k.startswith("skipped:"))
    assert rows["photos read"] == "0"
    assert int(rows["already done (skipped)"]) + skipped == int(rows["files"]) == len(entries(raw))


def test_detect_refuses_an_output_overlapping_its_input(hostile, tmp_path):
    before = snapshot(hostile)
    for out in (hostile, hostile / "processed", hostile.parent):
        line = one_line_error(cli("detect", hostile, "--out", out))
        assert "overlaps the input" in line
    assert snapshot(hostile) == before


def test_detect_second_writer_is_refused_naming_the_holder(tmp_path, celebrities):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(_photos(celebrities, 1)[0], raw / "a.jpg")
    out = tmp_path / "processed"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom facerec.safeio import folder_lock\n"
         "with folder_lock(sys.argv[1], 'annotate'):\n    print('held', flush=True)\n"
         "    sys.stdin.readline()\n", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_line_error(cli("detect", raw, "--out", out, "--quiet"))
        assert "being written by facerec annotate" in line and f"pid {holder.pid}" in line
        assert not (out / "manifest.jsonl").exists()
    finally:
        holder.communicate("\n", timeout=30)
    proc = cli("detect", raw, "--out", out, "--quiet")        # released: now it runs
    assert proc.returncode == 0, proc.stderr
    assert set(read_manifest(out)) == {"a.jpg"}


def test_two_concurrent_detect_runs_lose_no_record(tmp_path, celebrities):
    """Two writers started together on one output folder: one runs, the other is refused (or
    runs after it); every record of the one that ran is in the manifest."""
    raws = []
    for k, photos in enumerate((_photos(celebrities, 4)[:2], _photos(celebrities, 4)[2:])):
        raws.append(tmp_path / f"raw{k}")
        raws[-1].mkdir()
        for p in photos:
            shutil.copy(p, raws[-1] / p.name)
    out = tmp_path / "processed"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [subprocess.Popen([sys.executable, "-m", "facerec.cli", "detect", str(r), "--out",
                               str(out), "--quiet"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in raws]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    ran = [raw for raw, (rc, _) in zip(raws, results) if rc == 0]
    refused = [err for rc, err in results if rc != 0]
    assert ran, results
    for err in refused:
        assert "being written by facerec detect" in err and "Traceback" not in err
    expected = {p.name for raw in ran for p in raw.iterdir()}
    assert set(read_manifest(out)) == expected


# ------------------------------------------------------------------------- read-only / full disk
@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """A small tmpfs at ``path`` (skips where mounting is not allowed: not root, no privileges)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_detect_into_a_read_only_folder_is_one_line(tmp_path, celebrities):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(_photos(celebrities, 1)[0], raw / "a.jpg")
    with tmpfs(tmp_path / "ro", "ro", "size=1m") as ro:
        line = one_line_error(cli("detect", raw, "--out", ro / "processed", "--quiet"))
        assert "Read-only file system" in line and str(ro) in line


def test_detect_on_a_full_disk_is_one_line_and_the_manifest_stays_whole(tmp_path, celebrities):
    raw = tmp_path / "raw"
    raw.mkdir()
    for p in _photos(celebrities, 9):
        shutil.copy(p, raw / p.name)
    with tmpfs(tmp_path / "full", "size=64k") as full:
        out = full / "processed"
        line = one_line_error(cli("detect", raw, "--out", out, "--quiet"))
        assert "No space left on device" in line
        manifest = (out / "manifest.jsonl").read_bytes()
        assert manifest == b"" or manifest.endswith(b"\n")   # no torn line
        for path, record in read_manifest(out).items():      # what is recorded is really there
            assert all((out / f["crop"]).is_file() for f in record["faces"]), path
        assert not list(out.rglob(".*.tmp-*"))


# ---------------------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def dlib_ckpt(celebrities) -> Path:
    return _checkpoints.checkpoint("dlib", celebrities)


def test_save_annotated_refuses_the_input_folder(dlib_ckpt, tmp_path, celebrities):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in _photos(celebrities, 2):
        shutil.copy(p, photos / p.name)
    before = snapshot(photos)
    for target in (photos, photos / "annotated", tmp_path):
        line = one_line_error(cli("predict", "--checkpoint_path", dlib_ckpt, "--image_path",
                                  photos, "--save_annotated", target))
        assert "--save_annotated folder" in line and "overlaps the input" in line
    line = one_line_error(cli("predict", "--checkpoint_path", dlib_ckpt, "--image_path", photos,
                              "--csv", photos / "out.csv"))
    assert "--csv file" in line
    assert snapshot(photos) == before


def test_save_annotated_names_never_collide_nor_replace_foreign_files(dlib_ckpt, tmp_path,
                                                                     celebrities, capsys):
    a, b = _photos(celebrities, 2)
    for folder, photo in (("a", a), ("b", b)):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "photos" / folder / "x.jpg")
    out = tmp_path / "annotated"
    out.mkdir()
    (out / "x.jpg").write_bytes(b"the user's own file")       # there before facerec
    assert main(["predict", "--checkpoint_path", str(dlib_ckpt), "--image_path",
                 str(tmp_path / "photos" / "a"), "--save_annotated", str(out)]) == 0
    assert (out / "x.jpg").read_bytes() == b"the user's own file"
    assert "not replacing" in capsys.readouterr().err

    both = ["predict", "--checkpoint_path", str(dlib_ckpt), "--image_path",
            str(tmp_path / "photos" / "a" / "x.jpg"), str(tmp_path / "photos" / "b" / "x.jpg"),
            "--save_annotated", str(out)]
    assert main(both) == 0                                   # same name twice: both kept
    written = sorted(p.name for p in out.glob("x_*.jpg"))
    assert len(written) == 2, written
    assert Image.open(out / written[0]).size != (0, 0)
    capsys.readouterr()
    assert main(both) == 0                                   # a rerun refreshes its own files
    assert "not replacing" not in capsys.readouterr().err
    (out / written[0]).write_bytes(b"edited by the user")    # ours, but changed since
    assert main(both) == 0
    assert (out / written[0]).read_bytes() == b"edited by the user"
    assert "not replacing" in capsys.readouterr().err


def test_predict_folder_survives_every_hostile_entry(dlib_ckpt, hostile, tmp_path):
    before = snapshot(hostile)
    out_csv = tmp_path / "out.csv"
    proc = cli("predict", "--checkpoint_path", dlib_ckpt, "--image_path", hostile, "--csv",
               out_csv, "--json", timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]  # partial success: some could not be read
    assert "Traceback" not in proc.stderr
    results = {r["image"]: r for r in json.loads(proc.stdout)}
    shown = lambda rel: str(hostile / rel)  # noqa: E731
    assert results[shown("good.jpg")]["faces"]
    assert results[shown("latin1_\\xe9\\xff.jpg")]["faces"]  # readable form of the bytes
    assert results[shown("dangling.jpg")]["error"].startswith("unreadable: broken link")
    assert results[shown("loop_a.jpg")]["error"] == "unreadable: symlink loop"
    assert results[shown("pipe.jpg")]["error"] == "not a file: a FIFO"
    text = out_csv.read_text(encoding="utf-8")
    assert "latin1_\\xe9\\xff.jpg" in text
    assert snapshot(hostile) == before


def test_predict_single_link_loop_says_so(dlib_ckpt, hostile):
    line = one_line_error(cli("predict", "--checkpoint_path", dlib_ckpt, "--image_path",
                              hostile / "loop_a.jpg"))
    assert "symlink loop" in line and "not found" not in line


def test_predict_annotated_into_a_full_disk_is_one_line(dlib_ckpt, tmp_path, celebrities):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in _photos(celebrities, 4):
        shutil.copy(p, photos / p.name)
    with tmpfs(tmp_path / "full", "size=48k") as full:
        line = one_line_error(cli("predict", "--checkpoint_path", dlib_ckpt, "--image_path",
                                  photos, "--save_annotated", full / "annotated"))
        assert "No space left on device" in line
        assert not list(full.rglob(".*.tmp-*"))


# --------------------------------------------------------------------------------------- messages
def test_bomb_message_is_a_whole_sentence(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from facerec.images import ImageLoadError, load_image

    Image.new("RGB", (120, 120)).save(tmp_path / "big.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "big.png")
    assert info.value.reason == "too large"
    assert not str(info.value).endswith((",", " "))


def test_oserror_anywhere_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    import facerec.detection.detect

    def boom(*_args, **_kwargs):
        raise OSError(24, "Too many open files", str(tmp_path / "x"))

    monkeypatch.setattr(facerec.detection.detect, "detect_folder", boom)
    (tmp_path / "raw").mkdir()
    assert main(["detect", str(tmp_path / "raw"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"facerec detect: error: Too many open files: {tmp_path / 'x'}\n"
    with pytest.raises(OSError):
        main(["detect", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--debug"])
    monkeypatch.setenv("FACEREC_DEBUG", "1")
    with pytest.raises(OSError):
        main(["detect", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])


def test_a_lock_holder_that_died_does_not_block(tmp_path):
    """The kernel drops a dead process's lock: a kill -9 never leaves a folder locked."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom facerec.safeio import folder_lock\n"
         "with folder_lock(sys.argv[1], 'detect'):\n    print('held', flush=True)\n"
         "    time.sleep(600)\n", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    from facerec.safeio import folder_lock

    with folder_lock(tmp_path, "test"):
        assert json.loads((tmp_path / ".facerec" / "lock.json").read_text())["command"] == "test"
    assert not (tmp_path / ".facerec" / "lock.json").exists()
