"""Safe output for every stage: where outputs may go, one writer per folder, atomic writes.

The rules every command that writes follows (one place, so they cannot drift apart):

* :func:`check_output_location`: an output never overlaps an input (the user's photos are only
  ever read: no command writes into, over or beside them);
* :func:`folder_lock`: one writer per output folder; a second writer is refused with a one-line
  message naming the holder (a lock file under ``<folder>/.facerec/``, via the ``filelock``
  package, which works on every OS and is released by the kernel when a process dies);
* :func:`atomic_write`: a file is written under a temporary name and renamed, so a killed run never
  leaves a half-written file under the real name;
* :func:`display_path` and :func:`first_line`: readable, one-line forms of names and errors.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from facerec.errors import ConflictError, InvalidInputError

META_DIR = ".facerec"  # facerec's own files inside an output folder (hidden: never a person/photo)
_LOCK = "lock"
_LOCK_INFO = "lock.json"
_held = threading.local()  # .depth: resolved folder -> nesting depth held by this thread


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type), without terminal escapes."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = "".join(ch for ch in line if ch.isprintable())
    return line if len(line) <= limit else line[: limit - 3] + "..."


_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def error_summary(exc: BaseException, limit: int = 200) -> str:
    """One whole, printable line saying why ``exc`` happened: terminal escapes removed (a file
    can carry them into an error), the line that names the cause preferred over a preamble (torch's
    "Weights only load failed. In PyTorch 2.6 ..." is followed by the unsupported global), a
    heading ending in ':' joined to what follows, and a long line shortened at a word boundary
    with '...' rather than cut mid-word."""
    text = _ANSI.sub("", str(exc))
    lines = [first_line(Exception(line), limit=10 ** 6) for line in text.splitlines()
             if line.strip()]
    if not lines:
        return type(exc).__name__
    cause = next((line for line in lines if re.search(r"unsupported global|GLOBAL ", line, re.I)),
                 None)
    line = cause or lines[0]
    if cause is None and line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1].strip()}"
    line = line.strip()
    if len(line) <= limit:
        return line
    cut = line[: limit - 4]
    space = max(cut.rfind(" "), cut.rfind(","))
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + " ..."


def display_path(path: str | os.PathLike) -> str:
    """A printable form of a path. File names that are not valid UTF-8 reach Python as
    'surrogate-escaped' strings (lossless, but they cannot be printed or written as UTF-8); their
    undecodable bytes are shown as ``\\xNN``."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def oserror_message(exc: OSError) -> str:
    """One line for any OSError: what went wrong and on which path."""
    what = exc.strerror or first_line(exc)
    if exc.filename is not None:
        return f"{what}: {display_path(os.fsdecode(exc.filename))}"
    return what


# --------------------------------------------------------------------------- outputs vs inputs
def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output_location(output: str | os.PathLike, inputs: Iterable[str | os.PathLike],
                          what: str = "output") -> None:
    """Refuse an output (folder or file) that is, contains or lies inside an input folder.

    File inputs count as their folder: writing beside a user's photo is writing into their
    folder. Paths are resolved (symlinks too), so a link cannot smuggle an output inside."""
    out = Path(os.path.realpath(output))  # realpath: a link loop cannot make this raise
    for raw in inputs:
        source = Path(os.path.realpath(raw))
        folder = source if source.is_dir() else source.parent
        if _overlap(out, folder) or out == source:
            raise InvalidInputError(
                f"{what} {display_path(output)} overlaps the input {display_path(raw)}: choose a "
                "folder outside it (facerec never writes into or over the photos it reads)")


# ------------------------------------------------------------------------------------- locking
def _holder(meta: Path) -> str:
    try:
        info = json.loads((meta / _LOCK_INFO).read_text(encoding="utf-8"))
        return (f"facerec {info.get('command', '?')}, pid {info.get('pid', '?')} on "
                f"{info.get('host', '?')}, since {info.get('since', '?')}")
    except (OSError, ValueError):
        return "another facerec process"


@contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold the writer lock of ``folder`` (created if needed) for the duration of the block.

    A second writer, in this or another process, is refused at once with a
    :class:`~facerec.errors.ConflictError` naming the holder. Re-entrant within one thread
    (``facerec run`` holds processed/ while detect and annotate take it again); another thread of
    the same process is refused like another process (flock locks belong to the open file, not the
    process)."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    meta = folder / META_DIR
    meta.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    held: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    lock = FileLock(str(meta / _LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConflictError(f"{display_path(folder)} is being written by {_holder(meta)}; wait for "
                            "it to finish, or use another folder") from None
    held[key] = 1
    try:
        info = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write(meta / _LOCK_INFO, lambda tmp: tmp.write_text(json.dumps(info), encoding="utf-8"))
        yield
    finally:
        held.pop(key, None)
        (meta / _LOCK_INFO).unlink(missing_ok=True)
        lock.release()


# ------------------------------------------------------------------------------ atomic writing
def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it over ``path``.

    The temporary name (``.<name>.tmp-<pid>``) is hidden, so readers never see it as a photo or a
    crop, and :func:`remove_temporaries` can clean what a killed run left."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_jsonl(path: str | os.PathLike, records: dict) -> None:
    """``records``' values as JSON Lines in the order of their sorted keys, written atomically
    and fsynced (a manifest, predictions.jsonl)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for key in sorted(records):
                handle.write(json.dumps(records[key]) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Remove the half-written files of :func:`atomic_write` that a killed run left."""
    for tmp in Path(folder).rglob(".*.tmp-*"):
        if tmp.is_file():
            tmp.unlink()
