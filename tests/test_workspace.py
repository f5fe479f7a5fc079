"""The work folder's layout (:class:`facerec.workspace.Workspace`) and where its model is found."""

from __future__ import annotations

import os
from pathlib import Path

from facerec.workspace import Workspace


def test_layout(tmp_path):
    ws = Workspace(str(tmp_path), photos=str(tmp_path.parent / "photos"))
    assert ws.root == tmp_path and ws.photos == tmp_path.parent / "photos"
    assert (ws.processed, ws.dataset, ws.runs, ws.report) == (
        tmp_path / "processed", tmp_path / "dataset", tmp_path / "runs", tmp_path / "report")
    assert ws.test_split == tmp_path / "dataset" / "test"
    assert not tmp_path.joinpath("processed").exists()  # nothing is created
    assert not ws.has_test_split()
    (ws.test_split / "alice").mkdir(parents=True)
    assert not ws.has_test_split()  # an empty person folder is no test split
    (ws.test_split / "alice" / "a.jpg").write_bytes(b"")
    assert ws.has_test_split()
    assert ws.relative(ws.report / "confusion_matrix.png") == "report/confusion_matrix.png"
    assert Workspace(tmp_path).photos is None


def _ckpt(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ckpt")
    os.utime(path, (mtime, mtime))
    return path


def test_best_checkpoint_is_the_best_of_the_newest_run(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.best_checkpoint() is None  # no runs/
    ws.runs.mkdir()
    assert ws.best_checkpoint() is None  # no checkpoint
    old = ws.runs / "run-a" / "version_0" / "checkpoints"
    _ckpt(old / "epoch=9-val_acc=0.99.ckpt", 1000)
    new = ws.runs / "run-b" / "version_0" / "checkpoints"
    _ckpt(new / "last.ckpt", 2003)
    best = _ckpt(new / "epoch=3-val_acc=0.90.ckpt", 2001)
    _ckpt(new / "epoch=1-val_acc=0.80.ckpt", 2000)
    assert ws.best_checkpoint() == best  # newest run; its newest non-last checkpoint
    only_last = _ckpt(ws.runs / "run-c" / "version_0" / "checkpoints" / "last.ckpt", 3000)
    assert ws.best_checkpoint() == only_last  # a run with nothing but last.ckpt
