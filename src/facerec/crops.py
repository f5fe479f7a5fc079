"""The crops in ``processed/``: which are loose, which belong to a person, and what the detect
manifest knows about each (source photo, detector score, face size, landmarks in crop pixels).

Crops are looked up in ``processed/manifest.jsonl`` by file name (``facerec detect`` makes names
unique across photos), so a crop that ``annotate`` or the user moved to another folder is still
found. A crop the manifest does not know (added by hand, renamed) falls back to its content hash as
its "source" and has no score or landmarks.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.errors import InvalidInputError, NotFoundError, shown
from facerec.images import IMAGE_EXTS
from facerec.manifest import read_manifest, sha256_file


#: a person's name: at most this many characters
NAME_MAX = 100
#: Unicode categories a name must not hold: controls, format characters (bidi overrides, zero
#: widths), surrogates, line and paragraph separators
_UNSEEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def check_person_name(name: object, what: str = "person name") -> str:
    """A person's name, the one rule for every name that becomes a person (a folder of
    ``processed/`` or ``dataset/``, a checkpoint's label, an enrolled name): a non-empty string of
    at most :data:`NAME_MAX` characters, no control or format characters (a right-to-left
    override would make ``x\\u202ey`` display as another name), no slashes, no leading or
    trailing spaces, not ``.``/``..``, not starting with '.' or '_' (bookkeeping folders)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"invalid {what}: it must not be empty")
    if len(name) > NAME_MAX:
        raise InvalidInputError(f"invalid {what} {shown(name, 40)}: {len(name)} characters "
                                f"long (at most {NAME_MAX})")
    if any(unicodedata.category(ch) in _UNSEEN for ch in name):
        raise InvalidInputError(f"invalid {what} {shown(name, 40)}: it holds control or invisible "
                                "formatting characters")
    if "/" in name or "\\" in name or name.startswith((".", "_")) or name != name.strip():
        raise InvalidInputError(f"invalid {what} {shown(name, 40)}: one folder name, no slashes, "
                                "no leading or trailing spaces, not starting with '.' or '_'")
    return name


def is_person_folder(name: str) -> bool:
    """Folders starting with ``_`` or ``.`` are bookkeeping (``_rejected``...), not people."""
    return bool(name) and not name.startswith(("_", "."))


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted; hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image(p))


def person_folders(processed: Path) -> dict[str, list[Path]]:
    """``{person: [crop paths]}`` for every person folder (including empty ones)."""
    out: dict[str, list[Path]] = {}
    for child in sorted(processed.iterdir()):
        if child.is_dir() and is_person_folder(child.name):
            out[child.name] = list_images(child)
    return out


@dataclass
class CropInfo:
    """What is known about one crop file."""

    path: Path                      # absolute path now
    rel: str                        # posix path relative to processed/
    source: str                     # source photo (manifest path) or "sha256:<content hash>"
    score: float | None = None
    face_size: float | None = None  # min(w, h) of the detector box, original pixels
    landmarks: np.ndarray | None = None  # 5x2, crop pixels

    @property
    def folder(self) -> str:
        """First-level folder ('' for a loose crop)."""
        parts = self.rel.split("/")
        return parts[0] if len(parts) > 1 else ""


class Manifest:
    """Crop file name -> (photo record, face entry), from ``processed/manifest.jsonl``."""

    def __init__(self, processed: str | os.PathLike) -> None:
        self.processed = Path(processed)
        self.by_name: dict[str, tuple[dict, dict, int]] = {}
        for record in read_manifest(self.processed).values():
            for index, face in enumerate(record.get("faces") or []):
                crop = face.get("crop")
                if isinstance(crop, str):
                    self.by_name[Path(crop).name] = (record, face, index)

    def __len__(self) -> int:
        return len(self.by_name)

    def info(self, path: Path, size: tuple[int, int] | None = None) -> CropInfo:
        """:class:`CropInfo` for a crop file under ``processed``. ``size``: the crop's (w, h) if
        known (read from the file header otherwise; only needed for landmarks)."""
        path = Path(path)
        rel = path.relative_to(self.processed).as_posix()
        hit = self.by_name.get(path.name)
        if hit is None:
            return CropInfo(path=path, rel=rel, source="sha256:" + sha256_file(path))
        record, face, _ = hit
        info = CropInfo(path=path, rel=rel, source=record["path"])
        score = face.get("score")
        info.score = float(score) if isinstance(score, (int, float)) else None
        box = face.get("box")
        if isinstance(box, (list, tuple)) and len(box) == 4:
            info.face_size = float(min(box[2], box[3]))
        info.landmarks = _landmarks_in_crop(face, path, size)
        return info


def _landmarks_in_crop(face: dict, path: Path, size: tuple[int, int] | None) -> np.ndarray | None:
    lm = face.get("landmarks")
    try:
        pts = np.asarray(lm, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return None
    if pts.shape[0] != 5 or not np.all(np.isfinite(pts)):
        return None
    matrix = face.get("crop_transform")
    if matrix is not None:
        try:
            m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
            return pts @ m[:, :2].T + m[:, 2]
        except (TypeError, ValueError):
            pass
    box = face.get("crop_box")
    if not (isinstance(box, (list, tuple)) and len(box) == 4):
        return None
    if size is None:
        try:
            from PIL import Image

            with Image.open(path) as img:
                size = img.size
        except OSError:
            return None
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        return None
    w, h = size
    return np.stack([(pts[:, 0] - x0) * w / (x1 - x0), (pts[:, 1] - y0) * h / (y1 - y0)], axis=1)


def require_folder(processed: str | os.PathLike, what: str = "processed folder") -> Path:
    path = Path(processed)
    if not path.exists():
        raise NotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise InvalidInputError(f"{what} is not a folder: {path}")
    return path
