"""Files the server may send: images inside one root folder (the work folder, or the photos folder
given with ``--photos``), never anything outside it.

A requested path is refused before touching the disk when any segment is empty, ``.``, ``..`` or
hidden (``.facerec/``), or holds a backslash or NUL; then the real path (symlinks resolved) must
still be inside the root's real path, so a symlink out of the work folder is refused too. Only
image files are served: checkpoints, logs and manifests in the work folder stay private.
"""

from __future__ import annotations

import os
from pathlib import Path

#: what the pages show: crops, photos, the confusion matrix
SERVED_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class UnsafePath(Exception):
    """The path leaves its root, is hidden, or is not a servable file."""


def _real_inside(root: Path, rel: str) -> str:
    """The real path of ``rel`` (POSIX, relative, no hidden or ``..`` parts) if it stays inside
    ``root`` once links are resolved; :class:`UnsafePath` otherwise."""
    if not rel or "\\" in rel or "\0" in rel or rel.startswith("/"):
        raise UnsafePath(rel)
    if any(p in ("", ".", "..") or p.startswith(".") for p in rel.split("/")):
        raise UnsafePath(rel)
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, *rel.split("/")))
    if os.path.commonpath([base, real]) != base:
        raise UnsafePath(rel)  # a symlink that points out of the root
    return real


def safe_file(root: Path, rel: str) -> Path:
    """The real path of image file ``rel`` (POSIX, relative) inside ``root``; :class:`UnsafePath`
    otherwise (same answer for "outside" and "missing", so nothing is learnt about other files)."""
    real = _real_inside(root, rel)
    if Path(real).suffix.lower() not in SERVED_EXTS or not os.path.isfile(real):
        raise UnsafePath(rel)
    return Path(real)


def safe_folder(root: Path, rel: str) -> Path:
    """Folder ``rel`` (``""``: the root itself) inside ``root``, by the same rules."""
    if rel in ("", "."):
        return root
    real = _real_inside(root, rel)
    if not os.path.isdir(real):
        raise UnsafePath(rel)
    return root.joinpath(*rel.split("/"))
