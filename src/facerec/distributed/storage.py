"""Where the Ray engine reads photos and writes results: a local folder or any fsspec URL.

A :class:`Location` is a folder given as a path (``photos/``, ``file:///data/photos``) or an
fsspec URL (``s3://bucket/photos``, ``gs://...``, ``memory://`` in tests). It is small and
picklable: Ray tasks and actors receive it and open the file system where they run (fsspec keeps
one instance per process). Local folders are read and written with the local engine's own
functions (:func:`facerec.images.read_file`, :func:`facerec.safeio.atomic_write`), so a local
output is byte for byte what the local engine writes; other stores are written whole-object
(a ``put`` is atomic on object stores).

Listing (:func:`list_tree`) follows :func:`facerec.images.iter_files`: hidden names are skipped,
the output folder is left out, and on a local disk links, FIFOs and other special files are
listed with the reason they cannot be photos (:func:`facerec.images.entry_problem`).
"""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from facerec.errors import FacerecError, InvalidInputError
from facerec.images import ImageLoadError, entry_problem, iter_files, read_file
from facerec.safeio import atomic_write, display_path


class Location:
    """A folder: a local path, or an fsspec URL with ``storage_options`` (credentials, an
    endpoint). ``rel`` paths below are POSIX paths relative to it."""

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None) -> None:
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.url, self.storage_options) == (
            other.url, other.storage_options)

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    @property
    def path(self) -> Path:
        """The local folder (only for a local location)."""
        return Path(self.url.removeprefix("file://"))

    def fs(self) -> tuple[Any, str]:
        """(fsspec file system, root path in it) of a URL."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, root.rstrip("/")

    def full(self, rel: str) -> str:
        """The path of ``rel``: a local path, or the path inside the file system of :meth:`fs`."""
        if self.is_local:
            return str(self.path / rel)
        return posixpath.join(self.fs()[1], rel) if rel else self.fs()[1]

    def shown(self, rel: str = "") -> str:
        """How ``rel`` is named to the user: a local path as given, or the full URL."""
        if self.is_local:
            return display_path(Path(self.url) / rel if rel else Path(self.url))
        return self.url.rstrip("/") + ("/" + rel if rel else "")

    # ------------------------------------------------------------------------------ reading
    def read_bytes(self, rel: str) -> bytes:
        if self.is_local:
            return (self.path / rel).read_bytes()
        fs, root = self.fs()
        return fs.cat_file(posixpath.join(root, rel))

    def exists(self, rel: str = "") -> bool:
        if self.is_local:
            return (self.path / rel).exists()
        fs, root = self.fs()
        return fs.exists(posixpath.join(root, rel) if rel else root)

    def is_dir(self) -> bool:
        if self.is_local:
            return self.path.is_dir()
        fs, root = self.fs()
        return fs.isdir(root)

    def files(self, rel: str) -> list[str]:
        """The files directly in folder ``rel`` (relative to this location), sorted."""
        if self.is_local:
            folder = self.path / rel
            if not folder.is_dir():
                return []
            return sorted(posixpath.join(rel, p.name) for p in folder.iterdir() if p.is_file())
        fs, root = self.fs()
        base = posixpath.join(root, rel)
        try:
            entries = fs.ls(base, detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.join(rel, posixpath.basename(e["name"].rstrip("/")))
                      for e in entries if e.get("type") == "file")

    # ------------------------------------------------------------------------------ writing
    def write(self, rel: str, fill: Callable[[Any], object]) -> None:
        """Write ``rel`` whole: ``fill(target)`` writes the content to ``target`` (a path for a
        local folder, through :func:`~facerec.safeio.atomic_write`; else an in-memory file put
        as one object). A reader never sees a half-written file."""
        if self.is_local:
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, fill)
            return
        buffer = io.BytesIO()
        fill(buffer)
        fs, root = self.fs()
        fs.pipe_file(posixpath.join(root, rel), buffer.getvalue())

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.write(rel, lambda target: target.write_bytes(data) if isinstance(target, Path)
                   else target.write(data))

    def remove(self, rel: str) -> None:
        if self.is_local:
            (self.path / rel).unlink(missing_ok=True)
            return
        fs, root = self.fs()
        try:
            fs.rm_file(posixpath.join(root, rel))
        except FileNotFoundError:
            pass

    def get(self, rel: str, local: Path) -> bool:
        """Copy ``rel`` to the local file ``local``; False when there is no such file."""
        try:
            data = self.read_bytes(rel)
        except FileNotFoundError:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return True

    def put(self, local: Path, rel: str) -> None:
        self.write_bytes(rel, local.read_bytes())


# ------------------------------------------------------------------------------------- inputs
def check_input_folder(source: Location, output: Location | None = None) -> None:
    """The photos folder exists and is a folder, and the output is not inside it (or it in the
    output): facerec never writes into the photos it reads. One-line errors."""
    if not source.exists():
        raise FacerecError(f"input folder not found: {source.shown()}")
    if not source.is_dir():
        raise FacerecError(f"input is not a folder: {source.shown()}")
    if output is not None and not source.is_local and not output.is_local:
        a, b = source.full("").rstrip("/") + "/", output.full("").rstrip("/") + "/"
        same_store = source.url.split("://")[0] == output.url.split("://")[0]
        if same_store and (a.startswith(b) or b.startswith(a)):
            raise InvalidInputError(f"output folder {output.shown()} overlaps the input "
                                    f"{source.shown()}: choose a folder outside it")


def read_photo(source: Location, rel: str) -> bytes:
    """The bytes of photo ``rel``; :class:`~facerec.images.ImageLoadError` when unreadable
    (the local engine's reasons on a local disk)."""
    if source.is_local:
        return read_file(source.path / rel)
    try:
        return source.read_bytes(rel)
    except (OSError, ValueError) as exc:
        raise ImageLoadError("unreadable", str(exc) or type(exc).__name__) from None


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def modified_ns(info: dict) -> int | None:
    """An object's modification time in ns from fsspec's ``info`` (each store names it its own
    way); None when it has none (then every rerun hashes the content)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(value * 1e9) if value < 1e11 else int(value)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                continue
    return None


def _local_row(root: Path, path: Path) -> dict:
    stat, problem = entry_problem(path)
    rel = path.relative_to(root).as_posix()
    if problem is not None:
        return {"rel": rel, "size": None, "mtime_ns": None, "problem": str(problem)}
    return {"rel": rel, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "problem": None}


def top_level(source: Location, exclude: Location | None = None) -> tuple[list[dict], list[str]]:
    """(the entries directly in ``source``, its non-hidden subfolders to list): the first step
    of :func:`list_tree`, done where the listing starts."""
    rows: list[dict] = []
    folders: list[str] = []
    if source.is_local:
        skip = exclude.path.resolve() if exclude is not None and exclude.is_local else None
        for entry in sorted(os.scandir(source.path), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if skip is None or path.resolve() != skip:
                    folders.append(entry.name)
            else:  # files, and links, FIFOs...: recorded with their problem
                rows.append(_local_row(source.path, path))
        return rows, folders
    fs, root = source.fs()
    for info in sorted(fs.ls(root, detail=True), key=lambda i: i["name"]):
        name = posixpath.basename(info["name"].rstrip("/"))
        if name.startswith(".") or not name:
            continue
        if info.get("type") == "directory":
            if exclude is None or not _excluded(source, name, exclude):
                folders.append(name)
        else:
            rows.append({"rel": name, "size": info.get("size"), "mtime_ns": modified_ns(info),
                         "problem": None})
    return rows, folders


def _excluded(source: Location, rel: str, exclude: Location) -> bool:
    if exclude.is_local != source.is_local:
        return False
    return source.full(rel).rstrip("/") == exclude.full("").rstrip("/")


def list_folder(source: Location, folder: str, exclude: Location | None = None) -> list[dict]:
    """Every non-hidden entry under the subfolder ``folder`` of ``source`` (recursively, as
    :func:`facerec.images.iter_files` walks): ``{"rel", "size", "mtime_ns", "problem"}``. Run in a
    Ray task per top-level folder by :func:`list_tree`."""
    if source.is_local:
        skip = exclude.path if exclude is not None and exclude.is_local else None
        return [_local_row(source.path, p) for p in iter_files(source.path / folder, exclude=skip)]
    fs, root = source.fs()
    rows = []
    skip = exclude.full("").rstrip("/") + "/" if exclude is not None and not exclude.is_local \
        else None
    for path, info in sorted(fs.find(posixpath.join(root, folder), detail=True).items()):
        if info.get("type") == "directory" or (skip and (path + "/").startswith(skip)):
            continue
        rel = posixpath.relpath(path, root)
        if not _hidden(rel):
            rows.append({"rel": rel, "size": info.get("size"), "mtime_ns": modified_ns(info),
                         "problem": None})
    return rows


def list_tree(ray: Any, source: Location, exclude: Location | None = None) -> list[dict]:
    """Every entry under ``source``, listed by Ray tasks (one per top-level folder, wherever
    the cluster runs them), sorted by path."""
    rows, folders = top_level(source, exclude)
    task = ray.remote(list_folder)
    for found in ray.get([task.remote(source, folder, exclude) for folder in folders]):
        rows += found
    return sorted(rows, key=lambda r: r["rel"])
