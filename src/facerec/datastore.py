"""Versioned, immutable, verified datastores on any fsspec filesystem (the Grid AI datastore, open).

A *store* is any fsspec URL: a local folder (default ``$FACEREC_STORE`` or ``~/.facerec/datastores``),
``s3://bucket/prefix`` (s3fs), ``gs://bucket/prefix`` (gcsfs), ... Inside it::

    facerec-store.json                         format marker
    objects/<sha256[:2]>/<sha256>              every file's bytes, named by their hash (content-addressed)
    datastores/<NAME>/<VERSION>/status.json    Uploading | Failed | Succeeded, sizes, times, digest
    datastores/<NAME>/<VERSION>/manifest.json  every file's path, sha256 and size: the commit point

Guarantees:

* **Deduplication.** An object is uploaded only if no object of that hash and size is in the store,
  so identical files (inside a dataset, across versions, across names) are uploaded once.
* **Honest status.** ``create`` claims the next version with an ``Uploading`` status, uploads the
  missing objects, then writes ``manifest.json`` *last*: a version is ``Succeeded`` exactly when its
  manifest exists. An upload that raises (network error, Ctrl-C) is marked ``Failed``; one killed
  hard stays ``Uploading``.
* **Resume.** The next ``create`` of the same NAME from the same content (same manifest digest)
  reuses that unfinished version number and uploads only the objects still missing. An unfinished
  version whose content differs from the new upload is marked ``Failed`` (superseded) and a new
  version number is used. Two ``create`` of the same NAME must not run at the same time.
* **Immutability.** A committed manifest is never rewritten; a new upload is a new version.
* **Verification.** ``pull`` checks the sha256 of every file it writes or keeps; a corrupted or
  missing object is a :class:`~facerec.errors.FacerecError` naming the object.

``resolve_data_path("datastore://NAME/VERSION")`` pulls a version once into the local cache
(``datastores/`` under :func:`facerec.cache.cache_root`) and returns that folder; the train and sweep commands
call it on ``--data_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from facerec.errors import (ConflictError, FacerecError, InvalidInputError, NotFoundError,
                            UnsupportedError)
from facerec.manifest import sha256_file
from facerec.safeio import (META_DIR, atomic_write, atomic_write_bytes, check_output_location,
                            display_path, folder_lock, oserror_message, remove_temporaries)

STORE_ENV = "FACEREC_STORE"
DEFAULT_STORE = "~/.facerec/datastores"
SCHEME = "datastore://"
MARKER = ".facerec-datastore.json"  # written in every folder that `pull` fills
FORMAT = 1

UPLOADING, FAILED, SUCCEEDED = "Uploading", "Failed", "Succeeded"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 1 << 20
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "r2"}


# ------------------------------------------------------------------------------------------ types
@dataclass(frozen=True)
class FileEntry:
    """One file of a version: its path relative to the dataset root (POSIX), sha256 and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class VersionInfo:
    """One version of a datastore, as ``list``/``show``/``create`` report it."""

    name: str
    version: int
    status: str  # Uploading | Failed | Succeeded
    size: int  # bytes, all files (duplicates counted)
    num_files: int
    created: str  # ISO 8601, UTC
    digest: str  # sha256 of the manifest's file list: identical content <=> identical digest
    store: str
    error: str | None = None
    files: tuple[FileEntry, ...] | None = None  # filled by show()
    uploaded_files: int = 0  # filled by create(): objects actually sent
    uploaded_bytes: int = 0
    resumed: bool = False  # filled by create(): it finished an interrupted upload of this version

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def data_path(self) -> str:
        return f"{SCHEME}{self.name}/{self.version}"


# ---------------------------------------------------------------------------------------- helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def format_created(iso: str) -> str:
    """``2024-05-01T10:03:00+00:00`` -> ``2024-05-01 12:03`` in the local time zone."""
    try:
        return _dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(iso or "")


def _digest(files: list[FileEntry]) -> str:
    rows = [[f.path, f.sha256, f.size] for f in sorted(files, key=lambda f: f.path)]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()


def _store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the store (or the disk) failed": shown as one-line FacerecErrors."""
    errors: list[type[BaseException]] = [OSError]
    boto = sys.modules.get("botocore.exceptions")  # s3fs lets NoCredentialsError & co through
    if boto is not None:
        errors.append(boto.BotoCoreError)
    return tuple(errors)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write a local file so that it is never seen half-written (temp file + rename), with the
    permissions of any new file (0666 less the umask, as the sources usually have)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _is_temporary(name: str) -> bool:
    """A half-written file of a killed run: ``.<name>.<random>.tmp`` (mkstemp) or
    ``.<name>.tmp-<pid>`` (:func:`facerec.safeio.atomic_write`)."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name)


_LOCAL_WRITE_ERRORS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False, dynamic_ncols=True)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInputError(
                 f"invalid datastore name {name!r}: use letters, digits, '.', '_' or '-' "
                 "(starting with a letter or digit, at most 100 characters)")
    return name


def _parse_version(version: int | str | None) -> int | None:
    if version is None or version == "" or str(version).lower() == "latest":
        return None
    try:
        v = int(version)
    except (TypeError, ValueError):
        raise InvalidInputError(f"invalid datastore version {version!r}: a number such as 1, or "
                                "'latest'")
    if v < 1:
        raise InvalidInputError(f"invalid datastore version {version!r}: versions start at 1")
    return v


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME``, ``NAME:3``, ``NAME:latest`` or the URL form ``datastore://NAME/3`` -> (NAME, 3
    or None): every command takes either spelling."""
    if str(ref).startswith(SCHEME):
        return parse_data_url(ref)
    name, _, version = str(ref).partition(":")
    return validate_name(name), _parse_version(version)


def parse_data_url(url: str) -> tuple[str, int | None]:
    """``datastore://NAME``, ``datastore://NAME/3`` (or ``NAME:3``, ``NAME/latest``) -> (NAME, version)."""
    if not str(url).startswith(SCHEME):
        raise InvalidInputError(f"not a datastore URL: {url!r} (expected {SCHEME}NAME[/VERSION])")
    rest = str(url)[len(SCHEME):].strip("/")
    name, sep, version = rest.partition("/")
    if not sep:
        name, _, version = rest.partition(":")
    if "/" in version:
        raise InvalidInputError(f"invalid datastore URL {url!r}: expected {SCHEME}NAME[/VERSION]")
    return validate_name(name), _parse_version(version)


def default_store_url() -> str:
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def default_cache_dir() -> Path:
    """facerec's cache root: pulls go to its ``datastores/<name>/<version>``."""
    from facerec.cache import cache_root

    return cache_root()


def _scan_source(source: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d != META_DIR)  # facerec's locks, journals
        for fn in sorted(filenames):
            if fn == MARKER or fn.startswith(f".{MARKER}."):
                continue
            files.append(Path(dirpath) / fn)
    return files


def _safe_relpath(path: str) -> str:
    """Reject manifest paths that could write outside the target folder."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or p.as_posix() != path:
        raise InvalidInputError(f"refusing unsafe path {path!r} in a datastore manifest")
    return path


# -------------------------------------------------------------------------------------- datastore
class Datastore:
    """Versioned datastores in one store (any fsspec URL).

    ``storage_options`` go to the fsspec filesystem, e.g.
    ``Datastore("s3://bucket/stores", storage_options={"client_kwargs": {"endpoint_url": URL}})``.
    Without them the usual configuration applies (AWS_* env vars and ``~/.aws``, gcloud
    credentials, fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>`` env vars and config files).
    """

    #: upload/download batches: at most this many objects / bytes per concurrent request batch
    batch_files = 64
    batch_bytes = 64 << 20
    #: files larger than this are streamed one by one instead of read into memory
    large_file = 64 << 20

    def __init__(self, store_url: str | os.PathLike | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        url = os.fspath(store_url) if store_url else default_store_url()
        if not _URL_RE.match(url):
            url = str(Path(url).expanduser().absolute())
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            hint = ""
            if url.startswith(("s3://", "s3a://")):
                hint = ' (pip install "facerec[s3]")'
            elif url.startswith(("gs://", "gcs://")):
                hint = ' (pip install "facerec[gcs]")'
            raise FacerecError(f"cannot open store {url}: {exc}{hint}") from exc
        self.root = root.rstrip("/") or root
        self._local = isinstance(self.fs, LocalFileSystem)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self._object_store = protocol in _OBJECT_STORES

    def __repr__(self) -> str:
        return f"Datastore({self.url!r})"

    # ----------------------------------------------------------------------------- store layout
    def _p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _object_path(self, sha: str) -> str:
        return self._p("objects", sha[:2], sha)

    # ------------------------------------------------------------------------------- raw access
    def _read_json(self, path: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise FacerecError(f"unreadable {path} in store {self.url}: {exc}") from exc

    def _write_bytes(self, path: str, data: bytes) -> None:
        if self._local:
            _atomic_write(Path(path), data)
        else:
            self.fs.pipe_file(path, data)

    def _write_many(self, blobs: dict[str, bytes]) -> None:
        """Write several objects; on object stores the requests run concurrently."""
        if self._local:
            for path, data in blobs.items():
                _atomic_write(Path(path), data)
        elif self._object_store:
            self.fs.pipe(blobs)
        else:
            for path, data in blobs.items():
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self.fs.pipe_file(path, data)

    def _cat_many(self, paths: list[str]) -> dict[str, bytes | Exception]:
        """path -> content, or the exception reading it raised; concurrent on object stores."""
        if not paths:
            return {}
        if not self._object_store:
            out: dict[str, bytes | Exception] = {}
            for path in paths:
                try:
                    out[path] = self.fs.cat_file(path)
                except FileNotFoundError as exc:
                    out[path] = exc
            return out
        from fsspec.asyn import AsyncFileSystem, sync

        if isinstance(self.fs, AsyncFileSystem):  # s3fs, gcsfs, adlfs: one GET each, concurrently
            async def gather():
                return await asyncio.gather(*(self.fs._cat_file(p) for p in paths),
                                            return_exceptions=True)

            return dict(zip(paths, sync(self.fs.loop, gather)))
        out = self.fs.cat(paths, on_error="return")
        return out if isinstance(out, dict) else {paths[0]: out}

    def _find(self, base: str, detail: bool = False):
        self.fs.invalidate_cache()
        try:
            return self.fs.find(base, detail=detail)
        except FileNotFoundError:
            return {} if detail else []

    def _object_sizes(self) -> dict[str, int]:
        """sha256 -> size of every object in the store (one listing, not one request per file)."""
        sizes = {}
        for path, info in self._find(self._p("objects"), detail=True).items():
            sha = path.rsplit("/", 1)[-1]
            if _SHA_RE.fullmatch(sha):
                sizes[sha] = int(info.get("size") or 0)
        return sizes

    def _check_format(self, create: bool = False) -> None:
        path = self._p("facerec-store.json")
        meta = self._read_json(path)
        if meta is None:
            if create:
                self._write_bytes(path, _json_bytes({"format": FORMAT, "created": _now()}))
        elif int(meta.get("format", 0)) > FORMAT:
            raise UnsupportedError(f"store {self.url} uses format {meta.get('format')}, newer "
                                   f"than this facerec understands ({FORMAT}): upgrade facerec")

    # --------------------------------------------------------------------------------- versions
    def _scan(self, name: str | None = None) -> dict[tuple[str, int], dict[str, str]]:
        """(name, version) -> {"status": path?, "manifest": path?} from one recursive listing."""
        base = self._p("datastores", name) if name else self._p("datastores")
        prefix = self._p("datastores") + "/"
        found: dict[tuple[str, int], dict[str, str]] = {}
        for path in self._find(base):
            parts = path[len(prefix):].split("/") if path.startswith(prefix) else []
            if (len(parts) == 3 and parts[1].isdigit() and parts[2] in ("status.json", "manifest.json")
                    and (name is None or parts[0] == name)):
                found.setdefault((parts[0], int(parts[1])), {})[parts[2].split(".")[0]] = path
        return found

    def _info(self, name: str, version: int, status: dict | None, manifest: dict | None) -> VersionInfo:
        meta = manifest or status or {}
        if manifest is not None:
            state = SUCCEEDED
        else:
            state = (status or {}).get("status")
            state = state if state in (UPLOADING, FAILED) else FAILED
        files = None
        if manifest is not None:
            files = tuple(FileEntry(f["path"], f["sha256"], int(f["size"])) for f in manifest["files"])
        return VersionInfo(
            name=name, version=version, status=state, size=int(meta.get("size", 0)),
            num_files=int(meta.get("num_files", 0)), created=str(meta.get("created", "")),
            digest=str(meta.get("digest", "")), store=self.url,
            error=None if state == SUCCEEDED else (status or {}).get("error"), files=files)

    def list(self, name: str | None = None) -> list[VersionInfo]:
        """Every version of every datastore (or of NAME), sorted by name then version."""
        if name is not None:
            validate_name(name)
        try:
            scanned = self._scan(name)
            status_paths = [p["status"] for p in scanned.values() if "status" in p]
            raw = {k: v for k, v in self._cat_many(status_paths).items() if isinstance(v, bytes)}
        except _store_errors() as exc:
            raise FacerecError(f"cannot read store {self.url}: {exc}") from exc
        infos = []
        for (ds_name, version), paths in sorted(scanned.items()):
            status = json.loads(raw[paths["status"]]) if paths.get("status") in raw else None
            manifest = None
            if "manifest" in paths and status is None:
                manifest = self._read_json(paths["manifest"])
            info = self._info(ds_name, version, status, manifest)
            if "manifest" in paths and info.status != SUCCEEDED:
                info = replace(info, status=SUCCEEDED, error=None)
            if "manifest" not in paths and status and status.get("status") == SUCCEEDED:
                info = replace(info, status=FAILED, error="manifest.json is missing")
            infos.append(replace(info, files=None))
        return infos

    def _resolve_version(self, name: str, version: int | str | None) -> int:
        validate_name(name)
        version = _parse_version(version)
        infos = self.list(name)
        if not infos:
            names = sorted({i.name for i in self.list()})
            known = f" (datastores there: {', '.join(names)})" if names else " (the store is empty)"
            raise NotFoundError(f"no datastore named {name!r} in {self.url}{known}")
        if version is None:
            ok = [i.version for i in infos if i.status == SUCCEEDED]
            if not ok:
                states = ", ".join(f"{i.version} {i.status}" for i in infos)
                raise NotFoundError(f"datastore {name!r} has no succeeded version yet ({states})")
            return max(ok)
        if version not in {i.version for i in infos}:
            have = ", ".join(str(i.version) for i in infos)
            raise NotFoundError(f"datastore {name!r} has no version {version} (versions: {have})")
        return version

    def show(self, name: str, version: int | str | None = None) -> VersionInfo:
        """One version with its file list (``files`` is None for an unfinished version).
        VERSION None or 'latest': the latest succeeded version."""
        v = self._resolve_version(name, version)
        try:
            manifest = self._read_json(self._p("datastores", name, str(v), "manifest.json"))
            status = self._read_json(self._p("datastores", name, str(v), "status.json"))
        except _store_errors() as exc:
            raise FacerecError(f"cannot read store {self.url}: {exc}") from exc
        return self._info(name, v, status, manifest)

    def _manifest(self, name: str, version: int) -> dict:
        manifest = self._read_json(self._p("datastores", name, str(version), "manifest.json"))
        if manifest is None:
            status = self._read_json(self._p("datastores", name, str(version), "status.json")) or {}
            raise ConflictError(
                 f"datastore {name}:{version} is {status.get('status', FAILED)}, not Succeeded: "
                 "it cannot be used (rerun `facerec datastore create` to finish it)")
        for f in manifest.get("files", []):
            _safe_relpath(f["path"])
            if not _SHA_RE.fullmatch(f["sha256"]):
                raise InvalidInputError(f"bad sha256 {f['sha256']!r} in {name}:{version} manifest")
        return manifest

    # ----------------------------------------------------------------------------------- create
    def create(self, name: str, source: str | os.PathLike, progress: bool = True) -> VersionInfo:
        """Upload folder SOURCE as a new immutable version of NAME (see the module doc for resume)."""
        validate_name(name)
        src = Path(source).expanduser()
        if not src.is_dir():
            raise NotFoundError(f"source folder not found: {src}")
        paths = _scan_source(src)
        if not paths:
            raise NotFoundError(f"source folder is empty: {src}")

        try:
            total = sum(p.stat().st_size for p in paths)
        except OSError as exc:
            raise FacerecError(f"cannot read {src}: {exc}") from exc
        entries = []
        with _progress(total, f"hashing {src.name or src}", progress) as bar:
            for p in paths:
                try:
                    sha = sha256_file(p)
                    size = p.stat().st_size
                except OSError as exc:
                    raise FacerecError(f"cannot read {p}: {exc}") from exc
                entries.append(FileEntry(p.relative_to(src).as_posix(), sha, size))
                bar.update(size)
        digest = _digest(entries)
        size = sum(e.size for e in entries)
        if not self._local:  # object stores: no folder to lock (one writer per NAME is documented)
            return self._create(name, src, entries, digest, size, progress)
        try:
            lock = folder_lock(self.root, "datastore create")
            with lock:
                self._remove_temporaries()
                return self._create(name, src, entries, digest, size, progress)
        except OSError as exc:  # the store folder itself: read-only, missing permission...
            raise FacerecError(f"cannot write to store {self.url}: {oserror_message(exc)}") from None

    def _remove_temporaries(self) -> int:
        """Delete the half-written objects and status files that killed uploads left (only called
        while holding the store's lock, so no other upload can be writing them)."""
        removed = 0
        for sub in ("objects", "datastores"):
            base = Path(self._p(sub))
            if not base.is_dir():
                continue
            for dirpath, _, filenames in os.walk(base):
                for fn in filenames:
                    if _is_temporary(fn):
                        Path(dirpath, fn).unlink(missing_ok=True)
                        removed += 1
        return removed

    def _create(self, name: str, src: Path, entries: list[FileEntry], digest: str, size: int,
                progress: bool) -> VersionInfo:
        try:
            self._check_format(create=True)
            version, created = self._claim_version(name, digest)
            resumed = self.fs.exists(self._p("datastores", name, str(version), "status.json"))
            status = {"format": FORMAT, "name": name, "version": version, "status": UPLOADING,
                      "created": created, "updated": _now(), "digest": digest, "size": size,
                      "num_files": len(entries), "source": str(src.absolute()),
                      "upload_id": uuid.uuid4().hex, "error": None}
            status_path = self._p("datastores", name, str(version), "status.json")
            self._write_bytes(status_path, _json_bytes(status))
        except _store_errors() as exc:
            raise FacerecError(f"cannot write to store {self.url}: {exc}") from exc

        try:
            sent_files, sent_bytes = self._upload(src, entries, progress)
            self._commit(name, version, created, digest, entries)
            status.update(status=SUCCEEDED, updated=_now(), committed=_now())
            self._write_bytes(status_path, _json_bytes(status))
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{exc}"
            try:
                status.update(status=FAILED, updated=_now(), error=reason)
                if not self.fs.exists(self._p("datastores", name, str(version), "manifest.json")):
                    self._write_bytes(status_path, _json_bytes(status))
            except Exception:  # best effort: the store may be what failed
                pass
            if isinstance(exc, _store_errors()):
                raise FacerecError(
                    f"upload of {name}:{version} to {self.url} failed: {exc} "
                    "(rerun the same command to resume it)") from exc
            raise
        return VersionInfo(name=name, version=version, status=SUCCEEDED, size=size,
                           num_files=len(entries), created=created, digest=digest, store=self.url,
                           uploaded_files=sent_files, uploaded_bytes=sent_bytes, resumed=resumed)

    def _claim_version(self, name: str, digest: str) -> tuple[int, str]:
        """Version number for an upload of content DIGEST: an unfinished one with that content
        (resume), else max + 1; unfinished versions with other content are marked Failed."""
        scanned = self._scan(name)
        resume = None
        for (_, version), paths in sorted(scanned.items()):
            if "manifest" in paths or "status" not in paths:
                continue
            status = self._read_json(paths["status"]) or {}
            if status.get("digest") == digest and resume is None:
                resume = (version, status.get("created") or _now())
            elif status.get("status") == UPLOADING:
                status.update(status=FAILED, updated=_now(),
                              error="abandoned: a later upload of this name has other content")
                self._write_bytes(paths["status"], _json_bytes(status))
        if resume:
            return resume
        return max((v for _, v in scanned), default=0) + 1, _now()

    def _upload(self, src: Path, entries: list[FileEntry], progress: bool) -> tuple[int, int]:
        existing = self._object_sizes()
        todo: dict[str, FileEntry] = {}
        for e in entries:
            if existing.get(e.sha256) != e.size and e.sha256 not in todo:
                todo[e.sha256] = e
        total = sum(e.size for e in todo.values())
        sent = 0
        with _progress(total, "uploading", progress) as bar:
            batch: dict[str, bytes] = {}
            batch_bytes = 0

            def flush() -> None:
                nonlocal batch, batch_bytes
                if batch:
                    self._write_many(batch)
                    bar.update(batch_bytes)
                    batch, batch_bytes = {}, 0

            for e in todo.values():
                local = src / e.path
                if e.size > self.large_file:
                    flush()
                    self._put_large(local, e)
                    bar.update(e.size)
                    continue
                data = local.read_bytes()
                if len(data) != e.size or hashlib.sha256(data).hexdigest() != e.sha256:
                    raise ConflictError(f"{local} changed during the upload: rerun to upload it "
                                        "again")
                batch[self._object_path(e.sha256)] = data
                batch_bytes += e.size
                if len(batch) >= self.batch_files or batch_bytes >= self.batch_bytes:
                    flush()
            flush()
            sent = len(todo)
        return sent, total

    def _put_large(self, local: Path, e: FileEntry) -> None:
        remote = self._object_path(e.sha256)
        if self._local:
            dest = Path(remote)
            dest.parent.mkdir(parents=True, exist_ok=True)

            def write(tmp: Path) -> None:
                shutil.copyfile(local, tmp)
                if sha256_file(tmp) != e.sha256:
                    raise ConflictError(f"{local} changed during the upload: rerun to upload it "
                                        "again")

            atomic_write(dest, write)
            return
        self.fs.put_file(str(local), remote)
        if sha256_file(local) != e.sha256:
            self.fs.rm_file(remote)
            raise ConflictError(f"{local} changed during the upload: rerun to upload it again")

    def _commit(self, name: str, version: int, created: str, digest: str,
                entries: list[FileEntry]) -> None:
        path = self._p("datastores", name, str(version), "manifest.json")
        if self.fs.exists(path):  # another writer committed this version: never overwrite it
            raise ConflictError(f"datastore {name}:{version} was committed by another upload; "
                                "rerun to create a new version")
        manifest = {"format": FORMAT, "name": name, "version": version, "created": created,
                    "committed": _now(), "digest": digest, "size": sum(e.size for e in entries),
                    "num_files": len(entries),
                    "files": [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in entries]}
        self._write_bytes(path, _json_bytes(manifest))

    # ------------------------------------------------------------------------------------- pull
    def pull(self, name: str, version: int | str | None = None, to: str | os.PathLike | None = None,
             progress: bool = True) -> Path:
        """Download a succeeded version into TO (default: the local cache) and verify every file.

        Files already there with the right hash are kept (an interrupted pull resumes). TO must be
        empty, or a folder an earlier ``pull`` filled: files that the previous pull wrote and that
        this version lacks are deleted; files you added yourself are left alone.
        """
        v = self._resolve_version(name, version)
        try:
            manifest = self._manifest(name, v)
        except _store_errors() as exc:
            raise FacerecError(f"cannot read store {self.url}: {exc}") from exc
        target = Path(to).expanduser() if to is not None else default_cache_dir() / "datastores" / name / str(v)
        if target.exists() and not target.is_dir():
            raise InvalidInputError(f"{target} exists and is not a folder")
        if self._local:
            check_output_location(target, [self.root], what="--to")
        try:
            with folder_lock(target, "datastore pull"):
                return self._pull_into(name, v, manifest, target, progress)
        except _store_errors() as exc:
            if isinstance(exc, OSError) and exc.errno in _LOCAL_WRITE_ERRORS and exc.filename \
                    and _inside(exc.filename, target):
                hint = (": free some space, then rerun the same command to resume it"
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
                raise FacerecError(f"cannot pull {name}:{v} into {display_path(target)}: "
                                   f"{oserror_message(exc)}{hint}") from None
            raise FacerecError(f"pull of {name}:{v} into {target} failed: {exc} "
                               "(rerun the same command to resume it)") from exc

    def _pull_into(self, name: str, version: int, manifest: dict, target: Path, progress: bool) -> Path:
        files = [FileEntry(f["path"], f["sha256"], int(f["size"])) for f in manifest["files"]]
        marker_path = target / MARKER
        old = _read_marker(target)
        if target.exists() and not target.is_dir():
            raise InvalidInputError(f"{target} exists and is not a folder")
        if old is None and target.is_dir() and any(
                not c.name.startswith(f".{MARKER}.") and c.name != META_DIR
                for c in target.iterdir()):
            raise ConflictError(f"refusing to pull {name}:{version} into {target}: the folder is "
                                "not empty and was not filled by `facerec datastore pull`")
        if old is not None:  # half-written files of a killed pull (we hold the folder's lock)
            remove_temporaries(target)
        wanted = {f.path for f in files}
        for stale in set((old or {}).get("files", [])) - wanted:  # written by the previous pull
            try:
                (target / _safe_relpath(stale)).unlink(missing_ok=True)
            except FacerecError:
                pass
        marker = {"store": self.url, "name": name, "version": version, "digest": manifest["digest"],
                  "complete": False, "files": sorted(wanted)}
        _atomic_write(marker_path, _json_bytes(marker))

        # keep what is already there and verified; fetch each missing hash once
        need: dict[str, list[FileEntry]] = {}
        present_bytes = sum(f.size for f in files)
        with _progress(present_bytes, f"verifying {name}:{version}", progress) as bar:
            for f in files:
                local = target / f.path
                ok = (local.is_file() and local.stat().st_size == f.size
                      and sha256_file(local) == f.sha256)
                if not ok:
                    need.setdefault(f.sha256, []).append(f)
                bar.update(f.size)
        total = sum(group[0].size for group in need.values())
        with _progress(total, f"pulling {name}:{version}", progress) as bar:
            small = [(sha, g) for sha, g in need.items() if g[0].size <= self.large_file]
            for sha, group in need.items():
                if group[0].size > self.large_file:
                    self._get_large(name, version, target, group)
                    bar.update(group[0].size)
            for chunk in _batches(small, self.batch_files, self.batch_bytes):
                paths = [self._object_path(sha) for sha, _ in chunk]
                blobs = {k.rsplit("/", 1)[-1]: val for k, val in self._cat_many(paths).items()}
                for sha, group in chunk:
                    data = blobs.get(sha)
                    if isinstance(data, FileNotFoundError) or data is None:
                        raise NotFoundError(self._missing_msg(name, version, sha, group[0].path))
                    if isinstance(data, BaseException):
                        raise data
                    got = hashlib.sha256(data).hexdigest()
                    if got != sha:
                        raise FacerecError(self._corrupt_msg(name, version, sha, got, group[0].path))
                    for f in group:
                        _atomic_write(target / f.path, data)
                    bar.update(group[0].size)
        marker["complete"] = True
        _atomic_write(marker_path, _json_bytes(marker))
        return target

    def _get_large(self, name: str, version: int, target: Path, group: list[FileEntry]) -> None:
        sha, first = group[0].sha256, target / group[0].path
        first.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            try:
                self.fs.get_file(self._object_path(sha), str(tmp))
            except FileNotFoundError:
                raise NotFoundError(self._missing_msg(name, version, sha, group[0].path)) from None
            got = sha256_file(tmp)
            if got != sha:
                raise FacerecError(self._corrupt_msg(name, version, sha, got, group[0].path))
            for f in group[1:]:
                (target / f.path).parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target / f.path, lambda copy: shutil.copyfile(tmp, copy))

        atomic_write(first, write)

    def _missing_msg(self, name: str, version: int, sha: str, path: str) -> str:
        return (f"datastore {name}:{version} is damaged: object {self._object_path(sha)} for "
                f"{path!r} is missing from {self.url}; rerun `facerec datastore create` from the "
                "original folder to upload it again")

    def _corrupt_msg(self, name: str, version: int, sha: str, got: str, path: str) -> str:
        return (f"datastore {name}:{version} is corrupted: object {self._object_path(sha)} for "
                f"{path!r} has sha256 {got[:12]}..., expected {sha[:12]}...; delete that object "
                "from the store and rerun `facerec datastore create` from the original folder")

    # ---------------------------------------------------------------------------------- resolve
    def resolve(self, name: str, version: int | str | None = None,
                cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
        """Local, verified folder for NAME:VERSION, pulled into the cache on first use only."""
        cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        explicit = _parse_version(version)
        if explicit is not None:
            target = cache / "datastores" / name / str(explicit)
            marker = _read_marker(target)
            try:
                v = self._resolve_version(name, explicit)
                manifest = self._manifest(name, v)
            except FacerecError as exc:
                if (marker and marker.get("complete") and marker.get("name") == name
                        and isinstance(exc.__cause__, _store_errors())):
                    print(f"facerec: store {self.url} unreachable ({exc.__cause__}); using the cached "
                          f"{name}:{explicit} in {target}", file=sys.stderr)
                    return target
                raise
        else:
            v = self._resolve_version(name, None)
            manifest = self._manifest(name, v)
            target = cache / "datastores" / name / str(v)
        # several processes (DDP workers, SLURM tasks) may resolve at once: one pulls, the others
        # wait for it and then find the cache complete
        with _file_lock(target.parent / f".{target.name}.lock"):
            if _is_pulled(target, manifest):
                return target
            try:
                return self._pull_into(name, v, manifest, target, progress)
            except _store_errors() as exc:
                raise FacerecError(f"pull of {name}:{v} into {target} failed: {exc}") from exc


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on PATH between processes (POSIX flock; no lock where unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _inside(path: str | bytes | os.PathLike, folder: Path) -> bool:
    try:
        p, f = Path(os.fsdecode(path)).absolute(), folder.absolute()
    except (TypeError, ValueError):
        return False
    return p == f or f in p.parents


def _is_pulled(target: Path, manifest: dict) -> bool:
    """TARGET holds a complete pull of MANIFEST's content (cheap: names and sizes, not hashes)."""
    marker = _read_marker(target)
    if not marker or not marker.get("complete") or marker.get("digest") != manifest["digest"]:
        return False
    try:
        return all((target / f["path"]).stat().st_size == int(f["size"]) for f in manifest["files"])
    except OSError:
        return False


def _read_marker(target: Path) -> dict | None:
    try:
        return json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _batches(items: list, max_items: int, max_bytes: int) -> Iterator[list]:
    batch, nbytes = [], 0
    for item in items:
        batch.append(item)
        nbytes += item[1][0].size
        if len(batch) >= max_items or nbytes >= max_bytes:
            yield batch
            batch, nbytes = [], 0
    if batch:
        yield batch


def resolve_data_path(data_path: str | os.PathLike, *, store_url: str | None = None,
                      storage_options: dict[str, Any] | None = None,
                      cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """``datastore://NAME[/VERSION]`` -> verified local cache folder (pulled once); a local path is
    returned as is. VERSION omitted or ``latest``: the latest succeeded version. The store is
    STORE_URL, else ``$FACEREC_STORE``, else ``~/.facerec/datastores``."""
    text = os.fspath(data_path)
    if not text.startswith(SCHEME):
        if _URL_RE.match(text):
            raise UnsupportedError(
                    f"unsupported data path {text!r}: use a local folder or {SCHEME}NAME[/VERSION] "
                    "(upload remote data with `facerec datastore create` first)")
        return Path(text)
    name, version = parse_data_url(text)
    return Datastore(store_url, storage_options).resolve(name, version, cache_dir=cache_dir,
                                                         progress=progress)


# ---------------------------------------------------------------------------------------- display
_STATUS_STYLE = {SUCCEEDED: "green", UPLOADING: "yellow", FAILED: "red"}


def print_versions(infos: list[VersionInfo], store: str, console=None) -> None:
    """The ``facerec datastore list`` table: Name, Version, Size, Created, Status."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not infos:
        console.print(f"No datastores in {store}. Create one with: "
                      "facerec datastore create --name NAME --source dataset/", highlight=False)
        return
    table = Table(title=f"Datastores in {store}", title_justify="left")
    table.add_column("Name", style="bold")
    table.add_column("Version", justify="right")
    table.add_column("Size", justify="right")
    table.add_column("Created")
    table.add_column("Status")
    for i in infos:
        table.add_row(i.name, str(i.version), human_size(i.size), format_created(i.created),
                      f"[{_STATUS_STYLE.get(i.status, 'white')}]{i.status}[/]")
    console.print(table)


def print_created(info: VersionInfo) -> None:
    """The summary line of ``facerec datastore create``."""
    if info.resumed:
        print(f"Resumed the interrupted upload of {info.ref} (same content): only the missing "
              "files were uploaded")
    print(f"Created datastore {info.ref} in {info.store}: {info.num_files} files, "
          f"{human_size(info.size)} ({info.uploaded_files} new objects, "
          f"{human_size(info.uploaded_bytes)} uploaded)")
    from facerec.hints import command_line

    print("Use it with: " + command_line("train", str(info.data_path)))


def print_version(info: VersionInfo, all_files: bool = False, console=None) -> None:
    """The ``facerec datastore show`` report: details, then files per top-level folder."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    style = _STATUS_STYLE.get(info.status, "white")
    lines = [
        f"[bold]{info.name}:{info.version}[/]  [{style}]{info.status}[/]",
        f"store:    {info.store}",
        f"created:  {format_created(info.created)}",
        f"size:     {human_size(info.size)} in {info.num_files} files",
        f"digest:   {info.digest}",
    ]
    if info.error:
        lines.append(f"error:    {info.error}")
    if info.status == SUCCEEDED:
        lines.append(f"use with: facerec train {info.data_path}")
    console.print("\n".join(lines), highlight=False)
    if not info.files:
        return
    if all_files:
        table = Table("Path", "Size", "sha256")
        for f in info.files:
            table.add_row(f.path, human_size(f.size), f.sha256[:12])
    else:
        groups: dict[str, list[int]] = {}
        for f in info.files:
            top = f.path.split("/", 1)[0] if "/" in f.path else "."
            g = groups.setdefault(top, [0, 0])
            g[0] += 1
            g[1] += f.size
        table = Table("Folder", "Files", "Size")
        for top, (count, size) in sorted(groups.items()):
            table.add_row(top, str(count), human_size(size))
    console.print(table)
