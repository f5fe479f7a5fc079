"""Issue 9, the pipeline stages' part: interrupted work recognised, one writer per folder,
read-only outputs, resumed training keeps the best checkpoint, datastore leftovers, scripts.

Read-only outputs: CI runs as root, where ``chmod`` does not stop writes, so a real read-only
filesystem is used when this process may mount one (a tmpfs remounted read-only); otherwise the
folder is made read-only with chmod when that takes effect (not root); otherwise the test is
skipped with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("process_raw_data.py", "create_training_dataset.py", "train.py", "predict.py")


# ------------------------------------------------------------------------------ item 14: scripts
@pytest.mark.parametrize("script", SCRIPTS)
def test_tutorial_scripts_run_without_the_package_installed(tmp_path, script):
    """``python -S`` hides site-packages (and so any installed facerec): the script must find
    ``src/`` itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([sys.executable, "-S", str(REPO / script), "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


# ---------------------------------------------------------------- item 4: resume keeps the best
def _ckpt_score(path: Path, monitor: str = "val_loss") -> float:
    """The monitored value a checkpoint was saved with (ModelCheckpoint's own record)."""
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    for key, state in ck.get("callbacks", {}).items():
        if "ModelCheckpoint" in key and isinstance(state, dict) and state.get("monitor") == monitor \
                and state.get("current_score") is not None:
            return float(state["current_score"])
    raise AssertionError(f"no {monitor} score in {path}")


def test_resume_with_relative_runs_dir_reports_the_truly_best_checkpoint(tmp_path, monkeypatch,
                                                                        capsys):
    """Resume a run whose --runs_dir is relative (the default) after making the validation set
    harder (swapped val crops: every later epoch scores worse): ``Best checkpoint`` must stay the
    first run's best, the one with the lowest val_loss among the files."""
    import re
    import shutil

    import test_train as tt
    from facerec.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path / "emb-cache"))
    tt.make_dataset(tmp_path / "dataset", counts=(4, 2, 0))
    common = ["train", "--backbone", "fake_face", "--accelerator", "cpu", "--batch_size", "8",
              "--patience", "0", "--no_test", "--quiet", "--runs_dir", "runs"]
    assert main([*common, "--name", "res", "--max_epochs", "4"]) == 0
    capsys.readouterr()
    ckdir = Path("runs/res/version_0/checkpoints")
    # the same people, but every val crop now shows someone else: later epochs are worse
    val = Path("dataset/val")
    names = sorted(p.name for p in val.iterdir())
    shutil.move(str(val / names[0]), str(val / "_tmp"))
    for a, b in zip(names[1:], names):
        shutil.move(str(val / a), str(val / b))
    shutil.move(str(val / "_tmp"), str(val / names[-1]))

    assert main([*common, "--max_epochs", "7", "--ckpt_path",
                 str(ckdir / "last.ckpt")]) == 0
    out = capsys.readouterr().out
    best = Path(re.search(r"^Best checkpoint: (.+)$", out, re.M).group(1))
    files = sorted(ckdir.glob("epoch=*.ckpt"))
    scores = {p.resolve(): _ckpt_score(p) for p in files}
    assert best.resolve() == min(scores, key=scores.get), (best, scores)
    assert torch_epoch(best) <= 3  # from the first run: every resumed epoch was worse


def torch_epoch(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


# ------------------------------------------------------------------------------------ helpers
def _sub_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "src"),
                                                                str(REPO / "tests")]))
    env.pop("FACEREC_RUN_NAME", None)
    env.update(extra)
    return env


def _facerec(args: list[str], cwd: Path, prelude: str = "", **env: str):
    """``facerec ARGS`` in a fresh process (``prelude``: Python run first, e.g. an import that
    registers a test embedder)."""
    code = (f"import sys\n{prelude}\nfrom facerec.cli import main\n"
            f"sys.exit(main({[str(a) for a in args]!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_sub_env(**env),
                          capture_output=True, text=True, timeout=600)


def _one_line(proc, command: str, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"facerec {command}: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def read_only(tmp_path):
    """``make(fill)``: a folder that ``fill(folder)`` may fill, then made read-only. A tmpfs
    remounted read-only where this process may mount (root, as in CI); else chmod (not root);
    else the test is skipped."""
    mounts: list[Path] = []
    changed: list[Path] = []

    def make(fill=lambda folder: None) -> Path:
        folder = tmp_path / f"ro{len(mounts) + len(changed)}"
        folder.mkdir()
        if os.geteuid() == 0:
            ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                                capture_output=True).returncode == 0
            if not ok:
                pytest.skip("running as root (chmod does not stop root) and cannot mount a "
                            "read-only tmpfs here")
            mounts.append(folder)
            fill(folder)
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            fill(folder)
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
                    changed.append(p)
        return folder

    yield make
    for folder in reversed(mounts):
        subprocess.run(["umount", str(folder)], capture_output=True)
    for p in changed:
        p.chmod(0o755)


TRAIN_PRELUDE = "import test_train"  # registers the fake_face embedder
TRAIN_FLAGS = ["--backbone", "fake_face", "--accelerator", "cpu", "--batch_size", "8",
               "--max_epochs", "2", "--patience", "0"]


# --------------------------------------------------------------------------- train: quiet, lock
def test_train_quiet_prints_no_lightning_chatter(tmp_path):
    import test_train as tt

    tt.make_dataset(tmp_path / "dataset", counts=(4, 2, 1))
    proc = _facerec(["train", *TRAIN_FLAGS, "--quiet", "--name", "q"], tmp_path, TRAIN_PRELUDE,
                    FACEREC_CACHE_DIR=str(tmp_path / "cache"), PYTHONWARNINGS="default")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in ("Tip:", "LeafSpec", "deprecated", "GPU available", "TPU available",
                  "Trainable params", "| Name", "Restoring states"):
        assert noise not in proc.stdout + proc.stderr, noise
    assert "Best checkpoint: " in proc.stdout


def test_a_second_train_into_the_same_run_folder_is_refused(tmp_path):
    import test_train as tt
    from facerec.safeio import folder_lock

    tt.make_dataset(tmp_path / "dataset", counts=(3, 1, 0))
    with folder_lock(tmp_path / "runs" / "busy", "train"):
        proc = _facerec(["train", *TRAIN_FLAGS, "--quiet", "--name", "busy"], tmp_path,
                        TRAIN_PRELUDE, FACEREC_CACHE_DIR=str(tmp_path / "cache"))
    _one_line(proc, "train", "is being written by facerec train", f"pid {os.getpid()}")
    assert not (tmp_path / "runs" / "busy" / "version_0").exists()


def test_train_into_a_read_only_runs_dir_is_one_line(tmp_path, read_only):
    import test_train as tt

    tt.make_dataset(tmp_path / "dataset", counts=(3, 1, 0))
    runs = read_only(lambda f: (f / "runs").mkdir())
    proc = _facerec(["train", *TRAIN_FLAGS, "--quiet", "--runs_dir", runs / "runs", "--name",
                     "x"], tmp_path, TRAIN_PRELUDE, FACEREC_CACHE_DIR=str(tmp_path / "cache"))
    _one_line(proc, "train", "Read-only file system")


# -------------------------------------------------------------------------------- split (item 10)
KILL_BEFORE_SPLIT_JSON = """
import os
import re
import facerec.split as _s
_orig = _s._write_json
def _write_json(path, data):
    if path.name == "split.json":
        os._exit(9)  # killed after the crops were linked, before split.json
    return _orig(path, data)
_s._write_json = _write_json
"""


def _processed_with_people(tmp_path: Path) -> Path:
    import test_split as ts

    processed = tmp_path / "processed"
    ts._make(processed, ts._people(3, 8))
    return processed


def test_an_interrupted_split_is_recognised_and_finished_without_force(tmp_path):
    from facerec.split import SPLIT_JSON

    processed = _processed_with_people(tmp_path)
    killed = _facerec(["split", "processed", "--out", "dataset", "--dedup", "none", "--quiet"],
                      tmp_path, KILL_BEFORE_SPLIT_JSON)
    assert killed.returncode == 9
    out = tmp_path / "dataset"
    assert any(out.rglob("*.jpg")) and not (out / SPLIT_JSON).exists()  # half done

    again = _facerec(["split", "processed", "--out", "dataset", "--dedup", "none", "--quiet"],
                     tmp_path)
    assert again.returncode == 0, again.stderr
    notes = [line for line in again.stdout.splitlines() if "interrupted" in line]
    assert len(notes) == 1 and "rebuilding" in notes[0], again.stdout
    assert (out / SPLIT_JSON).is_file() and not (out / ".facerec" / "split-journal.json").exists()
    crops = sorted(p.name for p in processed.rglob("*.jpg"))
    assert sorted(p.name for p in out.rglob("*.jpg")) == crops  # each crop exactly once
    third = _facerec(["split", "processed", "--out", "dataset", "--dedup", "none", "--quiet"],
                     tmp_path)
    assert third.returncode == 0 and "up to date" in third.stdout and "interrupted" not in third.stdout


def test_a_second_split_into_the_same_dataset_is_refused(tmp_path):
    from facerec.safeio import folder_lock

    _processed_with_people(tmp_path)
    with folder_lock(tmp_path / "dataset", "split"):
        proc = _facerec(["split", "processed", "--out", "dataset", "--dedup", "none", "--quiet"],
                        tmp_path)
    _one_line(proc, "split", "is being written by facerec split", f"pid {os.getpid()}")
    assert not list((tmp_path / "dataset").rglob("*.jpg"))


def test_split_into_a_read_only_folder_is_one_line(tmp_path, read_only):
    _processed_with_people(tmp_path)
    ro = read_only()
    proc = _facerec(["split", "processed", "--out", ro / "dataset", "--dedup", "none", "--quiet"],
                    tmp_path)
    _one_line(proc, "split", "Read-only file system")


# ------------------------------------------------------------------------------ datastore (item 13)
def _dataset(root: Path) -> Path:
    for i, rel in enumerate(("train/alice/a.jpg", "train/bob/b.jpg", "val/bob/c.jpg")):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + i))
        path.chmod(0o644)
    return root


KILL_BEFORE_OBJECT_RENAME = """
import os
import re
_real = os.replace
_n = [0]
def _replace(src, dst, *a, **k):
    if "/objects/" in str(dst):
        _n[0] += 1
        if _n[0] == 2:
            os._exit(9)  # killed with the second object written, not yet renamed
    return _real(src, dst, *a, **k)
os.replace = _replace
"""


def test_killed_create_leaves_no_temporary_objects_after_the_next_create(tmp_path):
    from facerec.datastore import Datastore

    source = _dataset(tmp_path / "dataset")
    store = tmp_path / "store"
    killed = _facerec(["datastore", "create", "--store", store, "--name", "faces", "--source",
                       source, "--quiet"], tmp_path, KILL_BEFORE_OBJECT_RENAME)
    assert killed.returncode == 9, killed.stderr
    leftovers = [p for p in (store / "objects").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers  # what the kill left
    done = Datastore(store).create("faces", source, progress=False)
    assert done.version == 1 and done.num_files == 3
    assert not [p for p in store.rglob("*") if p.is_file() and ".tmp" in p.name]


def test_pulled_files_get_normal_permissions(tmp_path, monkeypatch):
    from facerec.datastore import Datastore

    source = _dataset(tmp_path / "dataset")
    old = os.umask(0o022)
    try:
        ds = Datastore(tmp_path / "store")
        ds.large_file = 1000  # files of 1001 and 1002 bytes go the streamed way, one in a batch
        ds.create("faces", source, progress=False)
        target = ds.pull("faces", to=tmp_path / "pulled", progress=False)
    finally:
        os.umask(old)
    modes = {p.relative_to(target).as_posix(): p.stat().st_mode & 0o777
             for p in target.rglob("*.jpg")}
    assert modes == {"train/alice/a.jpg": 0o644, "train/bob/b.jpg": 0o644, "val/bob/c.jpg": 0o644}
    objects = {p.stat().st_mode & 0o777 for p in (tmp_path / "store" / "objects").rglob("*")
               if p.is_file()}
    assert objects == {0o644}


def test_pull_into_a_read_only_folder_is_one_line_without_rerun(tmp_path, read_only):
    from facerec.datastore import Datastore

    source = _dataset(tmp_path / "dataset")
    Datastore(tmp_path / "store").create("faces", source, progress=False)
    ro = read_only(lambda f: (f / "pulled").mkdir())
    proc = _facerec(["datastore", "pull", "--store", tmp_path / "store", "faces", "--to",
                     ro / "pulled", "--quiet"], tmp_path)
    line = _one_line(proc, "datastore", "Read-only file system")
    assert "rerun" not in line and "resume" not in line


def test_a_second_create_into_the_same_store_is_refused(tmp_path):
    from facerec.safeio import folder_lock

    source = _dataset(tmp_path / "dataset")
    with folder_lock(tmp_path / "store", "datastore create"):
        proc = _facerec(["datastore", "create", "--store", tmp_path / "store", "--name", "faces",
                         "--source", source, "--quiet"], tmp_path)
    _one_line(proc, "datastore", "is being written by facerec datastore create",
              f"pid {os.getpid()}")


def test_a_split_dataset_uploads_without_facerec_bookkeeping(tmp_path):
    """dataset/.facerec/ (split's lock) is not data: not uploaded, not pulled."""
    from facerec.datastore import Datastore

    source = _dataset(tmp_path / "dataset")
    (source / ".facerec").mkdir()
    (source / ".facerec" / "lock.json").write_text("{}")
    info = Datastore(tmp_path / "store").create("faces", source, progress=False)
    assert info.num_files == 3


# ------------------------------------------------------------------------------ annotate (item 11)
ANNOTATE = ["annotate", "processed", "--embedder", "fake_face", "--keep_poor", "--quiet"]


def _loose_crops(processed: Path, people=(0, 1, 2), per_person: int = 4) -> Path:
    import zlib

    import test_train as tt

    processed.mkdir(parents=True)
    for p in people:
        for j in range(per_person):
            tt.make_crop(p, seed=zlib.crc32(f"{p}/{j}".encode())).save(processed / f"c{p}_{j}.jpg")
    return processed


def _where(processed: Path) -> dict[str, str]:
    return {p.name: p.parent.relative_to(processed).as_posix() for p in processed.rglob("*.jpg")
            if ".facerec" not in p.parts}


KILL_AFTER_TWO_MOVES = """
import os
import re
import test_train
_real = os.rename
_n = [0]
def _rename(src, dst, *a, **k):
    _n[0] += 1
    if _n[0] == 3:
        os._exit(9)  # killed after two of the planned moves
    return _real(src, dst, *a, **k)
os.rename = _rename
"""


def test_an_interrupted_annotate_is_rolled_back_and_redone_on_the_next_run(tmp_path):
    import shutil

    processed = _loose_crops(tmp_path / "processed")
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copytree(processed, clean / "processed")
    env = {"FACEREC_CACHE_DIR": str(tmp_path / "cache")}
    ref = _facerec(ANNOTATE, clean, TRAIN_PRELUDE, **env)
    assert ref.returncode == 0, ref.stderr
    expected = _where(clean / "processed")
    assert len(set(expected.values())) > 1  # it sorted something

    killed = _facerec(ANNOTATE, tmp_path, KILL_AFTER_TWO_MOVES, **env)
    assert killed.returncode == 9, killed.stderr
    half = _where(processed)
    assert half != expected and sorted(half) == sorted(expected)  # two files moved

    again = _facerec(ANNOTATE, tmp_path, TRAIN_PRELUDE, **env)
    assert again.returncode == 0, again.stderr
    notes = [line for line in again.stdout.splitlines() if "interrupted" in line]
    assert len(notes) == 1 and "put back the 2 file(s)" in notes[0], again.stdout
    assert _where(processed) == expected  # as if the killed run had never happened
    # and --undo now takes back this run only: every crop loose again
    undo = _facerec(["annotate", "--undo", "processed"], tmp_path)
    assert undo.returncode == 0, undo.stderr
    assert set(_where(processed).values()) == {"."}


def test_annotate_with_nothing_to_sort_prints_a_sentence(tmp_path):
    _loose_crops(tmp_path / "processed" / "alice", people=(0,), per_person=3)  # all labelled
    proc = _facerec(ANNOTATE + ["--no_albums"], tmp_path, TRAIN_PRELUDE,
                    FACEREC_CACHE_DIR=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert "nothing to sort" in proc.stdout
    assert not any(ch in proc.stdout for ch in "┏━┃┡│└─")  # no (empty) table


def test_a_second_annotate_of_the_same_folder_is_refused(tmp_path):
    from facerec.safeio import folder_lock

    processed = _loose_crops(tmp_path / "processed")
    with folder_lock(processed, "detect"):
        proc = _facerec(ANNOTATE, tmp_path, TRAIN_PRELUDE, FACEREC_CACHE_DIR=str(tmp_path / "c"))
    _one_line(proc, "annotate", "is being written by facerec detect", f"pid {os.getpid()}")
    assert set(_where(processed).values()) == {"."}


def test_annotate_of_a_read_only_folder_is_one_line(tmp_path, read_only):
    ro = read_only(lambda f: _loose_crops(f / "processed"))
    proc = _facerec(["annotate", ro / "processed", *ANNOTATE[2:]], tmp_path, TRAIN_PRELUDE,
                    FACEREC_CACHE_DIR=str(tmp_path / "cache"))
    _one_line(proc, "annotate", "Read-only file system")
    assert set(_where(ro / "processed").values()) == {"."}


# ------------------------------------------------------------------- item 15: checkpoint messages
def _rejection(path: Path) -> str:
    from facerec.errors import FacerecError
    from facerec.recognition.checkpoint import Checkpoint

    with pytest.raises(FacerecError) as info:
        Checkpoint.read(path)
    return str(info.value)


def test_a_malicious_checkpoint_is_refused_with_the_whole_reason(tmp_path):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, path)
    msg = _rejection(path)
    assert "\n" not in msg and msg.endswith(")")
    assert re.search(r"GLOBAL (posix|os)\.system", msg), msg  # the cause, not torch's preamble


def test_checkpoint_rejections_carry_no_terminal_escapes_and_end_whole(tmp_path):
    module = "os\x1b[2J\x1b[31m" + "_very_long_module_name" * 10
    path = tmp_path / "ansi.ckpt"
    path.write_bytes(b"c" + module.encode() + b"\nsystem\n(S'echo hi'\ntR.")
    msg = _rejection(path)
    assert all(ch.isprintable() for ch in msg) and "[2J" not in msg and "[31m" not in msg, repr(msg)
    assert "GLOBAL os_very_long_module_name" in msg
    assert msg.endswith(" ...)")  # shortened at a word boundary, and says so


# ---------------------------------------------------------------------------- full disk (train)
@pytest.fixture
def small_fs(tmp_path):
    """A 16 KiB tmpfs (room for the run's small files, not for a checkpoint); skipped where this
    process may not mount one."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_train_on_a_full_disk_is_one_line_and_leaves_no_torn_checkpoint(tmp_path, small_fs):
    import test_train as tt
    import torch

    tt.make_dataset(tmp_path / "dataset", counts=(4, 2, 1))
    proc = _facerec(["train", *TRAIN_FLAGS, "--quiet", "--runs_dir", small_fs / "runs", "--name",
                     "f"], tmp_path, TRAIN_PRELUDE, FACEREC_CACHE_DIR=str(tmp_path / "cache"))
    _one_line(proc, "train", "No space left on device")
    for path in (small_fs / "runs").rglob("*"):
        assert ".tmp" not in path.name, path
        if path.suffix == ".ckpt":
            torch.load(path, map_location="cpu", weights_only=True)  # whole, or not there


def test_a_torn_line_in_the_moves_log_does_not_swallow_the_next_event(tmp_path):
    """A kill or a full disk in the middle of writing moves.jsonl leaves a line without its end:
    the next run's events must still be read (the begin of a run is what undo and recovery use)."""
    from facerec.annotate import MoveLog

    log = MoveLog(tmp_path)
    log.append([{"op": "a", "event": "begin"}])
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"op": "b", "event": "mo')  # torn
    log.append([{"op": "c", "event": "begin"}, {"op": "c", "event": "end"}])
    assert [(e["op"], e["event"]) for e in log.events()] == [("a", "begin"), ("c", "begin"),
                                                             ("c", "end")]


def test_pull_into_the_store_itself_is_refused(tmp_path):
    from facerec.datastore import Datastore

    source = _dataset(tmp_path / "dataset")
    Datastore(tmp_path / "store").create("faces", source, progress=False)
    before = sorted(p for p in (tmp_path / "store").rglob("*") if ".facerec" not in p.parts)
    proc = _facerec(["datastore", "pull", "--store", tmp_path / "store", "faces", "--to",
                     tmp_path / "store" / "objects" / "x", "--quiet"], tmp_path)
    _one_line(proc, "datastore", "overlaps the input")
    assert sorted(p for p in (tmp_path / "store").rglob("*") if ".facerec" not in p.parts) == before


def test_a_resumed_create_says_so(tmp_path):
    source = _dataset(tmp_path / "dataset")
    store = tmp_path / "store"
    killed = _facerec(["datastore", "create", "--store", store, "--name", "faces", "--source",
                       source, "--quiet"], tmp_path, KILL_BEFORE_OBJECT_RENAME)
    assert killed.returncode == 9
    again = _facerec(["datastore", "create", "--store", store, "--name", "faces", "--source",
                      source, "--quiet"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("Resumed the interrupted upload of faces:1") == 1
    fresh = _facerec(["datastore", "create", "--store", store, "--name", "other", "--source",
                      source, "--quiet"], tmp_path)
    assert fresh.returncode == 0 and "Resumed" not in fresh.stdout


def test_split_on_a_full_disk_is_one_line_and_the_rerun_finishes_it(tmp_path, small_fs):
    from facerec.split import SPLIT_JSON

    processed = _processed_with_people(tmp_path)
    args = ["split", "processed", "--out", small_fs / "dataset", "--dedup", "none", "--copy",
            "--quiet"]
    full = _facerec(args, tmp_path)
    _one_line(full, "split", "No space left on device")
    assert not (small_fs / "dataset" / SPLIT_JSON).exists()
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)  # space freed
    again = _facerec(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert sum("interrupted" in line for line in again.stdout.splitlines()) == 1
    assert sorted(p.name for p in (small_fs / "dataset").rglob("*.jpg")) == \
        sorted(p.name for p in processed.rglob("*.jpg"))
