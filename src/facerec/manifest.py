"""``processed/manifest.jsonl``: the record of what ``facerec detect`` found, and file hashing.

A light module (no torch) shared by detect (writes), crops/annotate/split (read) and datastore.
One JSON object per source file; the last line for a path wins (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.jsonl"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | os.PathLike, repair: bool = False) -> dict[str, dict]:
    """Manifest records of ``folder`` by photo path (the last line for a path wins).

    Lines that are not a complete record are skipped. With ``repair``, a torn last line (left by a
    run killed while appending) is cut off the file so the next append starts on a clean line.
    """
    path = Path(folder) / MANIFEST
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            records[record["path"]] = record
    if repair and lines and not lines[-1].endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(len(data) - len(lines[-1]))
    return records
