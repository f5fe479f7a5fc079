"""The output folder of a Ray stage: one writer, shards written by the actors, and their merge
into the file the local engine writes (``manifest.jsonl`` for detect, ``predictions.jsonl`` for
predict).

* **One writer.** A local folder takes :func:`facerec.safeio.folder_lock`, as the local engine
  does. A store without locks (``s3://``...) gets a lease object, ``.facerec/lock.json`` (who,
  where, since when): a second writer is refused while it is there; one left by a killed run on
  this machine is taken over, one from another machine is named in the error (delete it if that
  run is gone).
* **Shards.** Each actor batch writes ``.facerec/shards/<stage>-<hash of its photos>.jsonl`` (one
  JSON record per photo, the format of the final file) after its crops, so a retried batch
  rewrites the same shard and a photo is recorded once.
* **Merge.** At the start (what a killed run left) and at the end, the shards' records are
  appended to the final file and it is rewritten with one line per photo, sorted; then the
  shards are deleted. For a remote output the final file is merged in a local working copy
  (:attr:`Output.stage`) and uploaded whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from facerec.distributed.storage import Location
from facerec.errors import ConflictError, FacerecError
from facerec.safeio import META_DIR, folder_lock

SHARDS = f"{META_DIR}/shards"
LEASE = f"{META_DIR}/lock.json"


def shard_name(stage: str, keys: list[str]) -> str:
    """The shard of one batch (by the photos in it: a retried batch writes the same shard)."""
    digest = hashlib.sha1("\n".join(keys).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return f"{SHARDS}/{stage}-{digest}.jsonl"


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def read_jsonl(data: bytes) -> list[dict]:
    """The complete JSON objects of a JSON Lines file (a torn line is skipped)."""
    out = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


class Output:
    """An output folder of a Ray stage, held for writing in a ``with`` block."""

    def __init__(self, location: Location, command: str) -> None:
        self.location = location
        self.command = command
        self.stage = location.path if location.is_local else None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Output:
        try:
            if self.location.is_local:
                self._stack.enter_context(folder_lock(self.location.path, self.command))
            else:
                self._stack.enter_context(_lease(self.location, self.command))
                self.stage = Path(self._stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="facerec-stage-")))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def fetch(self, rel: str) -> Path:
        """The working copy of ``rel`` (downloaded first for a remote output)."""
        local = self.stage / rel
        if not self.location.is_local:
            local.unlink(missing_ok=True)
            self.location.get(rel, local)
        return local

    def publish(self, rel: str) -> None:
        """Make the working copy of ``rel`` the output's (upload it for a remote output)."""
        if not self.location.is_local and (self.stage / rel).exists():
            self.location.put(self.stage / rel, rel)

    def shards(self, stage: str) -> list[str]:
        return [rel for rel in self.location.files(SHARDS)
                if rel.rsplit("/", 1)[-1].startswith(f"{stage}-") and rel.endswith(".jsonl")]

    def take_shards(self, stage: str) -> tuple[list[dict], list[str]]:
        """(the records of the shards of ``stage``, the shards), in shard order."""
        names = self.shards(stage)
        records = [r for rel in names for r in read_jsonl(self.location.read_bytes(rel))]
        return records, names

    def drop(self, names: list[str]) -> None:
        for rel in names:
            self.location.remove(rel)


# --------------------------------------------------------------------------------- the lease
def _alive_here(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # another machine's: cannot tell, so it holds
    try:
        os.kill(int(info.get("pid", -1)), 0)
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _lease(location: Location, command: str) -> Iterator[None]:
    """One writer for a store without file locks (see the module docstring)."""
    try:
        held = json.loads(location.read_bytes(LEASE))
    except FileNotFoundError:
        held = None
    except (OSError, ValueError):
        held = {}
    if held is not None and _alive_here(held):
        raise ConflictError(
            f"{location.shown()} is being written by facerec {held.get('command', '?')}, pid "
            f"{held.get('pid', '?')} on {held.get('host', '?')}, since {held.get('since', '?')}; "
            f"wait for it to finish (if that run is gone, delete {location.shown(LEASE)})")
    token = os.urandom(8).hex()
    info = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token}
    location.write_bytes(LEASE, json.dumps(info).encode("utf-8"))
    try:
        if json.loads(location.read_bytes(LEASE)).get("token") != token:
            raise ConflictError(f"{location.shown()} was taken by another facerec run just now")
    except (FileNotFoundError, ValueError):
        raise FacerecError(f"cannot hold {location.shown(LEASE)}: it vanished") from None
    try:
        yield
    finally:
        location.remove(LEASE)
