"""What the people page shows: the folders of ``processed/`` as groups of crops, read fast.

Folders are read with ``os.scandir`` (file types come with the directory entries, no ``stat`` per
crop), so listing 10,000 crops costs milliseconds; the page then asks for one page of crop names
at a time and the browser loads thumbnails lazily. Nothing here writes: the actions are
:func:`facerec.annotate.move_crops`, :func:`~facerec.annotate.rename_person` and
:func:`~facerec.annotate.undo`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from facerec.annotate import OTHERS, REJECTED, SINGLETONS, SUGGESTED
from facerec.crops import IMAGE_EXTS, Manifest, is_person_folder

#: sections of the page, in order
KINDS = ("person", "loose", "suggested", "singletons", "others", "rejected", "other")


def _crop_names(folder: Path) -> list[str]:
    """Sorted image file names directly in ``folder`` (hidden files and symlinks skipped)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it
                          if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
                          and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS)
    except OSError:
        return []


def _subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it
                          if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _group(processed: Path, folder: str, kind: str, name: str) -> dict[str, Any]:
    names = _crop_names(processed / folder if folder else processed)
    prefix = f"{folder}/" if folder else ""
    return {"folder": folder, "kind": kind, "name": name, "count": len(names),
            "cover": [prefix + n for n in names[:4]]}


def list_groups(processed: Path) -> list[dict[str, Any]]:
    """Every group of crops: person folders (``person_NN`` clusters and named people), loose
    crops, ``_suggested/<person>``, ``_singletons``, ``_others/<album>``, ``_rejected`` (and its
    per-person subfolders). Empty bookkeeping folders are left out; empty person folders are not
    (the user made them)."""
    groups: list[dict[str, Any]] = []
    loose = _group(processed, "", "loose", "loose crops")
    if loose["count"]:
        groups.append(loose)
    for name in _subfolders(processed):
        if is_person_folder(name):
            groups.append(_group(processed, name, "person", name))
        elif name == SINGLETONS:
            groups.append(_group(processed, name, "singletons", "seen once"))
        elif name in (SUGGESTED, OTHERS, REJECTED):
            kind = {SUGGESTED: "suggested", OTHERS: "others", REJECTED: "rejected"}[name]
            if name == REJECTED:
                groups.append(_group(processed, name, kind, "rejected"))
            for sub in _subfolders(processed / name):
                groups.append(_group(processed, f"{name}/{sub}", kind, sub))
        else:
            groups.append(_group(processed, name, "other", name))
    groups = [g for g in groups if g["count"] or g["kind"] == "person"]
    groups.sort(key=lambda g: KINDS.index(g["kind"]))  # stable: names stay sorted within a kind
    return groups


def list_crops(processed: Path, folder: str, offset: int, limit: int) -> dict[str, Any]:
    """One page of the crops of ``folder`` (relative to processed/, already checked)."""
    names = _crop_names(processed / folder if folder else processed)
    prefix = f"{folder}/" if folder else ""
    return {"folder": folder, "total": len(names), "offset": offset, "limit": limit,
            "crops": [prefix + n for n in names[offset:offset + limit]]}


class ManifestCache:
    """``processed/manifest.jsonl`` parsed once, and again only when the file changes."""

    def __init__(self, processed: Path) -> None:
        self.processed = processed
        self._key: tuple[int, int] | None = None
        self._manifest: Manifest | None = None
        self._lock = threading.Lock()

    def get(self) -> Manifest:
        path = self.processed / "manifest.jsonl"
        try:
            st = path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = (0, 0)
        with self._lock:
            if self._manifest is None or key != self._key:
                self._manifest = Manifest(self.processed)
                self._key = key
            return self._manifest


def crop_info(manifest: Manifest, rel: str, photos_root: Path | None) -> dict[str, Any]:
    """Where a crop comes from: the source photo (served only when ``--photos`` was given), the
    face box in the photo and in the crop, the detector score."""
    hit = manifest.by_name.get(Path(rel).name)
    out: dict[str, Any] = {"crop": rel, "source": None, "photo_url": None, "box": None,
                           "width": None, "height": None, "score": None, "box_in_crop": None}
    if hit is None:
        return out
    record, face, _ = hit
    source = str(record.get("path", ""))
    out.update(source=source, box=face.get("box"), width=record.get("width"),
               height=record.get("height"), score=face.get("score"))
    if photos_root is not None and source:
        from urllib.parse import quote

        out["photo_url"] = "/photos/" + quote(source)
    box, matrix = face.get("box"), face.get("crop_transform")
    try:
        x, y, w, h = (float(v) for v in box)
        (a, b, c), (d, e, f) = matrix
        corners = [(a * px + b * py + c, d * px + e * py + f)
                   for px, py in ((x, y), (x + w, y), (x, y + h), (x + w, y + h))]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        out["box_in_crop"] = [round(min(xs), 1), round(min(ys), 1), round(max(xs), 1),
                              round(max(ys), 1)]
    except (TypeError, ValueError):
        pass  # an old manifest without crop_transform: the page shows the crop alone
    return out
