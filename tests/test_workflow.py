"""One split -> train -> evaluate workflow (:func:`facerec.workflow.train_and_evaluate`) behind
both ``facerec run`` and the server's Train page, with one device mapping."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import facerec.workflow as workflow
from facerec.workflow import TrainEvalResult, TrainOptions, lightning_devices
from facerec.workspace import Workspace


def _trained(ws: Workspace) -> SimpleNamespace:
    return SimpleNamespace(best_checkpoint=str(ws.runs / "r" / "version_0" / "checkpoints" / "b.ckpt"),
                           labels=["alice", "bob"], threshold=0.5, metrics={"val_acc": 1.0},
                           epochs=2, max_epochs=2, last_epoch=2, best_epoch=2, stopped_early=None)


@pytest.fixture()
def calls(monkeypatch):
    """Replace train_and_evaluate with a recorder that returns a result without a test split."""
    seen: list[tuple[Workspace, TrainOptions, dict]] = []

    def fake(workspace, options, **kwargs):
        seen.append((workspace, options, kwargs))
        for name in workflow.STAGES:
            if kwargs.get("on_stage"):
                kwargs["on_stage"](name)
        return TrainEvalResult(split=SimpleNamespace(counts={"alice": {"train": 1}}),
                               train=_trained(workspace), seconds={"split": 0.1, "train": 1.0,
                                                                   "evaluate": 0.0})

    monkeypatch.setattr(workflow, "train_and_evaluate", fake)
    return seen


def test_run_pipeline_uses_train_and_evaluate(calls, monkeypatch, tmp_path):
    import facerec.annotate as ann
    import facerec.detection.detect as det
    from facerec.pipeline import run_pipeline

    photos, work = tmp_path / "photos", tmp_path / "work"
    photos.mkdir()

    import facerec.recognition.embed as emb

    def detect_folder(raw, processed, **kwargs):
        (Path(processed) / "alice").mkdir(parents=True)
        (Path(processed) / "alice" / "a_0.jpg").write_bytes(b"crop")
        return SimpleNamespace(faces=3, photos_read=3, skipped={})

    monkeypatch.setattr(det, "get_detector", lambda name, **kwargs: None)
    monkeypatch.setattr(det, "detect_folder", detect_folder)
    monkeypatch.setattr(det, "print_detect_summary", lambda summary, file: None)
    monkeypatch.setattr(emb, "get_embedder", lambda name, **kwargs: None)
    annotated = []
    monkeypatch.setattr(ann, "annotate", lambda processed, **kw: annotated.append(kw))
    monkeypatch.setattr(ann, "print_annotate_summary", lambda result, file: None)
    out = io.StringIO()
    result = run_pipeline(photos, work, max_epochs=7, val=0.2, test=0.3, seed=5, device="cpu",
                          progress=False, out=out)
    [(ws, options, kwargs)] = calls
    assert ws == Workspace(work, photos=photos)
    # no --backbone: the model the crops were cut for decides (when training starts)
    assert options == TrainOptions(max_epochs=7, backbone=None, val=0.2, test=0.3, seed=5)
    assert annotated == [{"device": "cpu", "progress": False}]
    assert kwargs["device"] == "cpu" and kwargs["out"] is out and not kwargs["progress"]
    assert [line for line in out.getvalue().splitlines() if line.startswith("==")] == [
        "== detect ==", "== annotate ==", "== split ==", "== train ==", "== evaluate =="]
    assert result.best_checkpoint == _trained(ws).best_checkpoint and result.accuracy is None
    assert list(result.seconds) == ["detect", "annotate", "split", "train", "evaluate"]


def test_train_manager_uses_train_and_evaluate(calls, tmp_path):
    from facerec.serve.training import TrainManager

    loaded = []
    recogniser = SimpleNamespace(load=loaded.append)
    edit_lock = threading.Lock()
    ws = Workspace(tmp_path)
    manager = TrainManager(ws, recogniser, edit_lock, device="cuda:1")
    job = manager.start(TrainOptions(max_epochs=3))
    manager.wait(60)
    assert job.state == "done", job.error
    [(seen_ws, options, kwargs)] = calls
    assert seen_ws == ws and options == TrainOptions(max_epochs=3)
    assert kwargs["device"] == "cuda:1" and kwargs["split_lock"] is edit_lock
    assert not kwargs["progress"] and len(kwargs["callbacks"]) == 1
    assert job.result["checkpoint"] == loaded[0] == _trained(ws).best_checkpoint
    assert job.result["split"] == {"alice": {"train": 1}} and job.result["confusion_png"] is None


@pytest.mark.parametrize("device, accelerator, devices", [
    ("cuda:1", "gpu", [1]), ("cuda", "gpu", "1"), ("cpu", "cpu", "auto"), ("auto", "auto", "auto")])
def test_one_device_mapping_for_training(monkeypatch, tmp_path, device, accelerator, devices):
    """train_and_evaluate gives train() the accelerator and devices of lightning_devices."""
    import facerec.split
    import facerec.training

    configs = []
    monkeypatch.setattr(facerec.split, "split_dataset", lambda *a, **k: SimpleNamespace())
    monkeypatch.setattr(facerec.training, "train",
                        lambda config: configs.append(config) or _trained(Workspace(tmp_path)))
    stages: list[str] = []
    lock = threading.Lock()
    result = workflow.train_and_evaluate(Workspace(tmp_path), TrainOptions(), device=device,
                                         progress=False, on_stage=stages.append, split_lock=lock)
    assert lightning_devices(device) == (accelerator, devices)
    assert (configs[0].accelerator, configs[0].devices) == (accelerator, devices)
    assert configs[0].data_path == str(tmp_path / "dataset")
    assert configs[0].runs_dir == str(tmp_path / "runs")
    assert stages == list(workflow.STAGES) and result.report is None and not lock.locked()
    assert set(result.seconds) == set(workflow.STAGES)
