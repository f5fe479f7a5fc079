"""The work folder of ``facerec run`` and ``facerec serve``: the one owner of its layout.

::

    WORK/processed/   crops + manifest.jsonl (detect), sorted into person folders (annotate)
    WORK/dataset/     train/val/test/<person>/*.jpg, labels.json, split.json (split)
    WORK/runs/        <run>/version_N/checkpoints/*.ckpt, hparams.yaml (train)
    WORK/report/      report.json, confusion_matrix.png, ... of the test split (evaluate)

The photos folder detect read is not part of it (facerec never writes there); it is known when
the caller gives it (``facerec run PHOTOS``, ``facerec serve --photos PHOTOS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """The folders of one work folder (nothing is created or read until asked)."""

    root: Path
    photos: Path | None = None      # the photos detect read, when the caller knows them

    PROCESSED = "processed"
    DATASET = "dataset"
    RUNS = "runs"
    REPORT = "report"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.photos is not None:
            object.__setattr__(self, "photos", Path(self.photos))

    @property
    def processed(self) -> Path:
        """Crops from detect, sorted by annotate (and the people page)."""
        return self.root / self.PROCESSED

    @property
    def dataset(self) -> Path:
        """The split of the person folders of :attr:`processed`."""
        return self.root / self.DATASET

    @property
    def test_split(self) -> Path:
        return self.dataset / "test"

    @property
    def runs(self) -> Path:
        """Training runs: ``<run>/version_N/checkpoints/*.ckpt``."""
        return self.root / self.RUNS

    @property
    def report(self) -> Path:
        """The evaluation report of the best checkpoint on the test split."""
        return self.root / self.REPORT

    def has_test_split(self) -> bool:
        """Whether the test split holds any crop (too few photos per person leave it empty)."""
        return any(self.test_split.glob("*/*"))

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` (inside the work folder) relative to it, POSIX (a ``/files/`` URL of serve)."""
        return Path(path).relative_to(self.root).as_posix()

    def best_checkpoint(self) -> Path | None:
        """The best checkpoint of the newest run under :attr:`runs` (``last.ckpt`` only when a run
        has nothing else), or None. The newest run is the checkpoints folder holding the most
        recently written checkpoint."""
        if not self.runs.is_dir():
            return None
        found = [p for p in self.runs.glob("**/checkpoints/*.ckpt") if p.is_file()]
        if not found:
            return None
        newest_dir = max((p.parent for p in found),
                         key=lambda d: max(f.stat().st_mtime for f in d.glob("*.ckpt")))
        best = [p for p in newest_dir.glob("*.ckpt") if p.name != "last.ckpt"]
        return max(best or list(newest_dir.glob("*.ckpt")), key=lambda p: p.stat().st_mtime)
