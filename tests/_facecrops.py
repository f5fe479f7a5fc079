"""Real face crops for the embed/annotate/split tests, built once per test session.

18 photos of 3 people from ``celebrities`` (including two group photos and a near-duplicate pair),
run through ``facerec detect`` twice: as per-person albums and as loose photos. Each builder returns
a read-only template folder; tests copy it (annotate moves files).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld")
GROUP_PHOTOS = {  # labelled person + someone else
    "elton_john": "httpssmediacacheakpinimgcomxfcfcbaeaeddabbjpg.jpg",  # with Cher
    "jerry_seinfeld": "httpwwweonlinecomresizewwweonlinecomeolimagesEntireSitersxjerryseinfeldjulialouisdreyfusjwjpg.jpg",
}
NEAR_DUPLICATES = ("train/ben_afflek/httpssmediacacheakpinimgcomxeebdfdbaaajpg.jpg",
                   "val/ben_afflek/httpbpblogspotcomedLMjVpRGkSWexgsXjkNIAAAAAAAADWgFFtAUqBlhAsjpg.jpg")

_ROOT: Path | None = None
_BUILT: dict[str, Path] = {}


def _root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="facerec-test-crops-"))
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def chosen_photos(celebrities: Path) -> list[tuple[str, Path]]:
    """(person, photo) pairs: 6 photos per person."""
    out = []
    for person in PEOPLE:
        files = sorted((celebrities / "train" / person).glob("*.jpg"))
        picks = [f for f in files if f.name != GROUP_PHOTOS.get(person)][:5]
        if person in GROUP_PHOTOS:
            picks.append(celebrities / "train" / person / GROUP_PHOTOS[person])
        else:
            picks = picks[:4] + [celebrities / p for p in NEAR_DUPLICATES]
        out += [(person, p) for p in picks]
    return out


def cache_dir() -> Path:
    """Embedding cache shared by the whole test session (never the user's ~/.cache)."""
    path = _root() / "embedding-cache"
    path.mkdir(exist_ok=True)
    return path


def _build(kind: str, celebrities: Path) -> Path:
    from facerec.detection.detect import detect_folder

    raw = _root() / f"raw-{kind}"
    out = _root() / f"processed-{kind}"
    for person, photo in chosen_photos(celebrities):
        split = photo.parent.parent.name
        if kind == "albums":
            target = raw / person / f"{split}__{photo.name}"
        else:
            target = raw / f"{person}__{split}__{photo.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(photo)
    # MTCNN's box crops (the legacy recipe, dlib_face's) with every detection kept (min_score 0):
    # the fixtures' expectations (which crops are poor, annotate's rejections, dlib's distances)
    # are MTCNN's and dlib_face's, whatever the default detector and model
    detect_folder(raw, out, detector="mtcnn", size=160, margin=0.2, align=False, min_score=0.0,
                  progress=False)
    return out


def template(kind: str, celebrities: Path) -> Path:
    """Detected crops: ``kind`` = "albums" (processed/<person>/) or "loose" (processed/*.jpg)."""
    if kind not in _BUILT:
        _BUILT[kind] = _build(kind, celebrities)
    return _BUILT[kind]


def copy_of(kind: str, celebrities: Path, dest: Path) -> Path:
    shutil.copytree(template(kind, celebrities), dest)
    return dest


def truth(processed: Path) -> dict[str, tuple[str, bool]]:
    """Crop file name -> (person from the photo's path, is the largest face of its photo)."""
    out = {}
    for line in (processed / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        faces = record.get("faces") or []
        if not faces:
            continue
        person = next(p for p in PEOPLE if p in record["path"])
        biggest = max(range(len(faces)), key=lambda i: faces[i]["box"][2] * faces[i]["box"][3])
        for i, face in enumerate(faces):
            out[Path(face["crop"]).name] = (person, i == biggest)
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """relative path -> (size, mtime_ns, first bytes) of every file outside .facerec/."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not rel.startswith(".facerec/"):
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns, p.read_bytes()[:64])
    return out
