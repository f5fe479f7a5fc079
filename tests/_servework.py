"""A small ``facerec serve`` work folder from real crops, built once per test session.

``processed/`` is the loose crops of :mod:`_facecrops` (18 celebrity photos of 3 people) after a real
``facerec annotate``: three clusters ``person_01..03``, ``_singletons`` and ``_rejected``. Tests copy
it (the server moves files). ``photos/`` holds real copies of the photos the crops came from (not
symlinks: the server refuses to follow a symlink out of the photos folder).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import _facecrops

_BUILT: dict[str, Path] = {}


def template(celebrities: Path) -> Path:
    """Read-only work folder: ``processed/`` (annotated) and ``photos/``."""
    if "work" in _BUILT:
        return _BUILT["work"]
    from facerec.annotate import annotate

    root = _facecrops._root() / "serve-work"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(_facecrops.template("loose", celebrities), root / "processed")
    annotate(root / "processed", progress=False, cache=_facecrops.cache_dir())
    shutil.copytree(_facecrops._root() / "raw-loose", root / "photos", symlinks=False)
    _BUILT["work"] = root
    return root


def copy_of(celebrities: Path, dest: Path) -> Path:
    shutil.copytree(template(celebrities), dest)
    return dest


def cluster_of(processed: Path, person: str) -> str:
    """The ``person_NN`` folder whose crops are mostly of ``person`` (from the photos' names)."""
    best, share = "", 0.0
    for folder in sorted(processed.glob("person_*")):
        names = [p.name for p in folder.glob("*.jpg")]
        votes = Counter(next((q for q in _facecrops.PEOPLE if n.startswith(q)), "") for n in names)
        if names and votes[person] / len(names) > share:
            best, share = folder.name, votes[person] / len(names)
    assert share > 0.5, f"no cluster of {person} in {processed}"
    return best


def snapshot(processed: Path) -> dict[str, str]:
    """relative path -> file name, for every crop (bookkeeping aside)."""
    return {p.relative_to(processed).as_posix(): p.name for p in processed.rglob("*.jpg")
            if ".facerec" not in p.parts}
