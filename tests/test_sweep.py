"""`facerec sweep`: the distribution syntax, the grid, and Optuna studies run with stand-in train
functions (failures, --max_trials, resume, joining, --parallel, pruning, artifacts), then one
real sweep of the tutorial's shape through facerec.training.train on a tiny synthetic dataset."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

import _sweep_fakes as fakes
from facerec.cli import build_parser, main
from facerec.errors import FacerecError
from facerec.training.sweep import (
    SweepSpec,
    parse_sweep_value,
    print_sweep_table,
    run_sweep,
    spec_from_args,
)

TUTORIAL = ["--learning_rate", "uniform(0,0.0001,2)", "--backbone", "['resnet18','resnet200d']"]


def _spec(*argv: str) -> SweepSpec:
    args = build_parser().parse_args(["sweep", *argv])
    return spec_from_args(args, args.sweep_flags)


def _fake_spec(*argv: str) -> SweepSpec:
    """2 learning rates x backbones a, b (the tutorial's shape, fake backbones)."""
    return _spec("--learning_rate", "[0.001, 0.002]", "--backbone", "['a','b']", *argv)


def _sweep(tmp_path, spec, **kw):
    kw.setdefault("train_fn", fakes.fake_train)
    kw.setdefault("prune", False)
    kw.setdefault("name", "s")
    return run_sweep(spec, root=tmp_path / "runs", log=lambda msg: None, **kw)


def _states(result) -> list[str]:
    return sorted(t.state for t in result.trials)


# ------------------------------------------------------------------------------------- syntax
def test_each_distribution_syntax():
    a = parse_sweep_value("uniform(0,0.0001,2)", "--learning_rate", seed=42)
    assert len(a) == 2 and a == sorted(a) and all(0 <= v <= 1e-4 for v in a) and a[0] != a[1]
    # deterministic for a seed (every worker and rerun agrees), different for another seed
    assert parse_sweep_value("uniform(0,0.0001,2)", "--learning_rate", seed=42) == a
    assert parse_sweep_value("uniform(0,0.0001,2)", "--learning_rate", seed=7) != a
    assert all(float(f"{v:.4g}") == v for v in a)  # rounded to 4 significant digits

    b = parse_sweep_value("loguniform(1e-5, 1e-2, 3)", "--learning_rate")
    assert len(b) == 3 and all(1e-5 <= v <= 1e-2 for v in b) and len(set(b)) == 3

    assert parse_sweep_value("['resnet18','resnet200d']", "--backbone") == ["resnet18", "resnet200d"]
    assert parse_sweep_value("[1, 2.5]", "--x") == [1, 2.5]
    assert parse_sweep_value("[resnet18, resnet200d]", "--backbone") == ["resnet18", "resnet200d"]
    assert parse_sweep_value("range(0,10,3)", "--x") == [0, 3, 6, 9]
    assert parse_sweep_value("range(3)", "--x") == [0, 1, 2]
    assert parse_sweep_value("range(2, 4)", "--x") == [2, 3]
    assert parse_sweep_value("range(0, 1, 0.25)", "--x") == [0, 0.25, 0.5, 0.75]
    for plain in ("resnet18", "0.001", "datastore://faces/2", "runs/x(1)", "", "16-mixed"):
        assert parse_sweep_value(plain, "--x") is None


@pytest.mark.parametrize("text, why", [
    ("uniform(1,0,2)", "low end must be below the high end"),
    ("uniform(0,1)", "takes 3 numbers"),
    ("uniform(0,1,2,3)", "takes 3 numbers"),
    ("uniform(0,1,0)", "whole number >= 1"),
    ("uniform(0,1,2.5)", "whole number >= 1"),
    ("uniform(a,b,2)", "is not a number"),
    ("uniform(0,1,", "unclosed parenthesis"),
    ("loguniform(0,1,2)", "0 < low < high"),
    ("normal(0,1,2)", "unknown distribution normal()"),
    ("__import__('os')", "unknown distribution __import__()"),
    ("range(0,0)", "is empty"),
    ("range(0,5,0)", "step"),
    ("range(1,2,3,4)", "1 to 3 numbers"),
    ("['unclosed", "unclosed list"),
    ("[]", "empty"),
    ("[1, [2]]", "not a plain value"),
    ("['a' 'b', c d]", "cannot read the list"),
])
def test_bad_syntax_is_a_one_line_error_naming_the_flag(text, why):
    with pytest.raises(FacerecError) as err:
        parse_sweep_value(text, "--learning_rate")
    msg = str(err.value)
    assert msg.startswith("--learning_rate: ") and why in msg and "\n" not in msg


# ------------------------------------------------------------------------------- flags & grid
def test_tutorial_example_is_four_experiments():
    spec = _spec("--max_epochs", "3", *TUTORIAL)
    assert spec.size == 4 and len(spec.combos()) == 4
    assert list(spec.grid) == ["learning_rate", "backbone"]  # the order of `facerec train --help`
    lrs = spec.grid["learning_rate"]
    assert all(isinstance(v, float) and 0 <= v <= 1e-4 for v in lrs)
    assert spec.grid["backbone"] == ["resnet18", "resnet200d"]
    assert spec.combos()[1] == {"learning_rate": lrs[0], "backbone": "resnet200d"}
    assert spec.index_of({"learning_rate": lrs[1], "backbone": "resnet18"}) == 2
    # flags that are not swept keep train's types and defaults
    assert spec.fixed["max_epochs"] == 3 and spec.fixed["batch_size"] == 32
    assert spec.fixed["seed"] == 42 and spec.fixed["augment"] is True
    assert spec.environment["devices"] == "auto" and "devices" not in spec.fixed
    # the generated name is the same for the same sweep (resume, other machines), not for another
    assert _spec("--max_epochs", "3", *TUTORIAL).default_name() == spec.default_name()
    assert _spec("--max_epochs", "4", *TUTORIAL).default_name() != spec.default_name()
    assert _spec("--max_epochs", "3", *TUTORIAL, "--num_workers", "2").default_name() == spec.default_name()


def test_values_are_converted_and_checked_like_train():
    assert _spec("--batch_size", "uniform(16,64,3)").grid["batch_size"] == \
        [int(round(v)) for v in parse_sweep_value("uniform(16,64,3)", "--batch_size", seed=42)]
    assert all(isinstance(v, int) for v in _spec("--batch_size", "uniform(16,64,3)").grid["batch_size"])
    assert _spec("--max_epochs", "range(1,4)").grid["max_epochs"] == [1, 2, 3]
    assert _spec("--monitor", "val_acc").fixed["monitor"] == "val_acc"
    cases = [
        (["--batch_size", "[16, 'x']"], "--batch_size: invalid value 'x'"),
        (["--max_epochs", "[1.5, 2]"], "--max_epochs: invalid value 1.5"),
        (["--max_epochs", "ten"], "--max_epochs: invalid value 'ten'"),
        (["--monitor", "['val_loss','val_acc']"], "--monitor cannot be swept"),
        (["--monitor", "val_bad"], "--monitor: invalid choice"),
        (["--num_workers", "[0, 2]"], "--num_workers describes the machine"),
        (["--backbone", "['a','a']"], "'a' appears twice"),
    ]
    for argv, msg in cases:
        with pytest.raises(FacerecError, match=msg.replace("(", r"\(")):
            _spec(*argv)


def test_every_train_flag_reaches_train():
    from facerec.training.config import TrainConfig

    spec = _spec(*TUTORIAL)
    kwargs = {**spec.fixed, **spec.environment, **spec.combos()[0]}
    config = TrainConfig().replace(**kwargs)  # raises on a name that is not a train option
    assert config.augment is True and config.progress is True and config.test is True
    # every train flag but the run folder's is a sweep flag, switches included
    assert {"dropout", "warmup_epochs", "log_every_n_steps", "augment", "progress"} <= set(kwargs)
    assert not {"name", "runs_dir", "ckpt_path"} & set(kwargs)
    off = _spec("--no_augment", "--quiet", "--dropout", "[0.1, 0.2]")
    assert off.fixed["augment"] is False and off.environment["progress"] is False
    assert off.grid["dropout"] == [0.1, 0.2]


def test_config_file_fills_in_the_flags_not_given(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text("max_epochs: 3\ndropout: 0.2\naugment: false\nlearning_rate: 0.5\n"
                      "runs_dir: elsewhere\n")
    spec = _spec("--config", str(config), "--learning_rate", "[0.001, 0.002]")
    assert spec.grid == {"learning_rate": [0.001, 0.002]}  # the command line wins
    assert spec.fixed["max_epochs"] == 3 and spec.fixed["dropout"] == 0.2
    assert spec.fixed["augment"] is False and "runs_dir" not in spec.fixed  # the sweep's own
    assert spec.default_name() != _spec("--learning_rate", "[0.001, 0.002]").default_name()


def test_bad_syntax_fails_before_anything_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["sweep", "--runs_dir", str(runs), "--learning_rate", "uniform(1,0,2)"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facerec sweep: error: --learning_rate:") and len(err.splitlines()) == 1
    assert not runs.exists()


@pytest.mark.parametrize("argv, msg", [
    (["--devices", "2"], "one device"), (["--devices", "0,1"], "one device"),
    (["--gpus", "2"], "--parallel 2"), (["--num_nodes", "2"], "shared --storage"),
])
def test_each_trial_trains_on_one_device(tmp_path, argv, msg):
    with pytest.raises(FacerecError, match=msg):
        _sweep(tmp_path, _fake_spec(*argv))
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- running (fakes)
def test_artifacts_table_and_best_checkpoint(tmp_path, capsys):
    spec = _fake_spec("--max_epochs", "2")
    result = _sweep(tmp_path, spec, name=None)
    name = spec.default_name()
    assert result.name == name and _states(result) == ["COMPLETE"] * 4
    sweep_dir = tmp_path / "runs" / name
    assert (sweep_dir / "optuna.db").is_file()
    for k, params in enumerate(spec.combos()):
        run = sweep_dir / f"{name}-exp{k}" / "version_0"
        ckpts = list((run / "checkpoints").glob("*.ckpt"))
        assert len(ckpts) == 1 and (run / "hparams.yaml").is_file()
        seen = json.loads(ckpts[0].read_text())  # what train was called with
        assert seen["learning_rate"] == params["learning_rate"] and seen["backbone"] == params["backbone"]
        assert seen["max_epochs"] == 2 and seen["name"] == f"{name}-exp{k}"
        assert seen["runs_dir"] == str(sweep_dir) and seen["augment"] is True
        assert seen["devices"] == 1  # one device per trial
    values = [t.value for t in result.trials]
    assert values == sorted(values)  # val_loss: lower is better, best first
    assert values[0] == pytest.approx(1.0) and result.best.params == {"learning_rate": 0.001,
                                                                        "backbone": "a"}
    print_sweep_table(result)
    out = capsys.readouterr().out
    best = sweep_dir / f"{name}-exp0" / "version_0" / "checkpoints" / "epoch=0-step=1.ckpt"
    assert out.strip().splitlines()[-1] == f"Best checkpoint: {best}"
    rows = [line for line in out.splitlines() if "COMPLETE" in line]
    assert len(rows) == 4 and "1.0000" in rows[0] and "2.5000" in rows[-1]
    assert "4/4 experiments done" in out


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    spec = _spec("--learning_rate", "[0.001, 0.002]", "--backbone", "['bad','a']")
    result = _sweep(tmp_path, spec)
    assert _states(result) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    failed = [t for t in result.trials if t.state == "FAIL"]
    assert all(t.params["backbone"] == "bad" and "boom: cannot build bad" in t.error for t in failed)
    assert [t.state for t in result.trials][:2] == ["COMPLETE", "COMPLETE"]  # failures sorted last
    assert result.best.params["backbone"] == "a"
    print_sweep_table(result)
    assert "RuntimeError: boom: cannot build bad" in capsys.readouterr().out


def test_no_completed_trial_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("facerec.training.sweep.study.default_train_fn", lambda: fakes.fake_train)
    monkeypatch.setattr("facerec.training.sweep.study._check_train_options", lambda spec: None)
    argv = ["sweep", "--runs_dir", str(tmp_path), "--name", "x", "--no_prune", "--data_path", str(tmp_path),
            "--backbone", "['bad']", "--learning_rate", "[0.1, 0.2]"]
    assert main(argv) == 1
    assert "Best checkpoint: none (no trial completed)" in capsys.readouterr().out


def test_sweep_json_is_the_only_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("facerec.training.sweep.study.default_train_fn", lambda: fakes.fake_train)
    monkeypatch.setattr("facerec.training.sweep.study._check_train_options", lambda spec: None)
    argv = ["sweep", "--runs_dir", str(tmp_path), "--name", "j", "--no_prune", "--data_path",
            str(tmp_path), "--backbone", "['a','b']", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)  # trial banners and the table went to stderr
    assert out["name"] == "j" and len(out["trials"]) == 2
    assert out["best"]["params"]["backbone"] in ("a", "b") and out["best"]["state"] == "COMPLETE"


def test_max_trials_then_a_rerun_resumes_the_same_study(tmp_path):
    spec = _fake_spec()
    first = _sweep(tmp_path, spec, name=None, max_trials=2)
    assert len(first.trials) == 2 and first.ran == 2 and first.complete == 2
    again = _sweep(tmp_path, _fake_spec(), name=None)  # same command: same name, same SQLite study
    assert again.name == first.name and again.ran == 2
    assert len(again.trials) == 4 and _states(again) == ["COMPLETE"] * 4
    assert sorted(t.exp for t in again.trials) == [f"{first.name}-exp{k}" for k in range(4)]
    done = _sweep(tmp_path, _fake_spec(), name=None)  # nothing left to do
    assert done.ran == 0 and len(done.trials) == 4
    assert _sweep(tmp_path, _fake_spec(), name=None, max_trials=0).ran == 0


def test_a_rerun_retries_failed_experiments(tmp_path, monkeypatch):
    monkeypatch.setenv(fakes.FAIL_ENV, "b")
    first = _sweep(tmp_path, _fake_spec())
    assert _states(first) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    monkeypatch.delenv(fakes.FAIL_ENV)  # "fixed", rerun
    again = _sweep(tmp_path, _fake_spec())
    assert again.retried == 2 and again.ran == 2 and again.complete == 4
    retried = [t for t in again.trials if t.params["backbone"] == "b" and t.state == "COMPLETE"]
    assert len(retried) == 2
    for t in retried:  # the failed attempt kept version_0; the retry went to version_1
        assert "/version_1/" in t.checkpoint
    assert _sweep(tmp_path, _fake_spec()).retried == 0


def test_a_rerun_resumes_after_ctrl_c(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, _fake_spec(), train_fn=fakes.interrupted_once_train)
    again = _sweep(tmp_path, _fake_spec(), train_fn=fakes.interrupted_once_train)
    assert again.retried == 1 and again.complete == 4
    interrupted = [t for t in again.trials if t.state == "FAIL"]
    assert len(interrupted) == 1 and interrupted[0].error == "interrupted"


def test_a_rerun_resumes_after_a_worker_is_killed(tmp_path, monkeypatch):
    """Deterministic: the worker kills itself at a known point (the one grid point of
    crash_once_train); the heartbeat's grace period is far longer than the test, so nothing
    depends on timing: the rerun knows the trial is lost because its process on this host is
    gone."""
    monkeypatch.setattr("facerec.training.sweep.study.GRACE_PERIOD", 24 * 3600)
    first = _sweep(tmp_path, _fake_spec(), parallel=2, train_fn=fakes.crash_once_train)
    assert _states(first) == ["COMPLETE", "COMPLETE", "COMPLETE", "RUNNING"]  # the others went on
    (lost,) = [t for t in first.trials if t.state == "RUNNING"]
    assert lost.params == {"learning_rate": 0.001, "backbone": "b"} and first.best is not None
    again = _sweep(tmp_path, _fake_spec(), train_fn=fakes.crash_once_train)
    assert again.retried == 1 and again.ran == 1 and again.complete == 4
    assert [t.state for t in again.trials if t.number == lost.number] == ["FAIL"]


def test_joining_by_study_name_adopts_the_stored_sweep(tmp_path):
    _sweep(tmp_path, _fake_spec(), name="shared", max_trials=1)
    joined = _sweep(tmp_path, _spec(), name="shared")  # `facerec sweep --study shared`, no sweep flags
    assert joined.spec.size == 4 and joined.ran == 3 and joined.complete == 4
    with pytest.raises(FacerecError, match="already holds a different sweep.*--learning_rate"):
        _sweep(tmp_path, _spec("--learning_rate", "[0.5, 0.7]", "--backbone", "['a','b']"),
               name="shared")


def test_data_path_datastore_is_resolved_once_before_the_trials(tmp_path, monkeypatch):
    from facerec.datastore import Datastore

    monkeypatch.setenv("FACEREC_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "dataset"
    (source / "train" / "p").mkdir(parents=True)
    (source / "train" / "p" / "x.jpg").write_bytes(b"not really a jpeg")
    Datastore().create("faces", source, progress=False)
    calls = []
    import facerec.datastore as ds

    real = ds.resolve_data_path
    monkeypatch.setattr(ds, "resolve_data_path", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    result = _sweep(tmp_path, _fake_spec("--data_path", "datastore://faces/1"))
    assert len(calls) == 1 and result.complete == 4
    seen = json.loads(Path(result.best.checkpoint).read_text())
    local = tmp_path / "cache" / "datastores" / "faces" / "1"
    assert seen["data_path"] == str(local) and (local / "train" / "p" / "x.jpg").is_file()


def test_parallel_workers_share_one_grid(tmp_path):
    spec = _fake_spec()
    start = time.monotonic()
    result = _sweep(tmp_path, spec, parallel=2, train_fn=fakes.slow_train)
    assert result.ran == 4 and _states(result) == ["COMPLETE"] * 4
    assert sorted(t.exp for t in result.trials) == [f"s-exp{k}" for k in range(4)]  # no duplicate
    pids = {json.loads(Path(t.checkpoint).read_text())["pid"] for t in result.trials}
    assert len(pids) == 2 and os.getpid() not in pids
    assert time.monotonic() - start < 60


def test_pruning_stops_hopeless_trials(tmp_path):
    spec = _spec("--backbone", "['a','b','c','d']", "--max_epochs", "5")
    result = _sweep(tmp_path, spec, prune=True, train_fn=fakes.curve_train)
    by_state = {}
    for t in result.trials:
        by_state.setdefault(t.state, []).append(t)
    assert len(by_state["COMPLETE"]) == 2 and len(by_state["PRUNED"]) == 2
    for t in by_state["PRUNED"]:  # stopped after the warm-up epoch, not at max_epochs
        assert json.loads(Path(t.checkpoint).read_text())["epochs"] == 2
        assert t.value == pytest.approx(9.9)
    assert result.best.value == pytest.approx(0.2)


def test_unknown_backbone_or_dataset_fails_before_anything_runs(tmp_path, capsys):
    data = tmp_path / "dataset"
    data.mkdir()
    base = ["sweep", "--runs_dir", str(tmp_path / "runs"), "--learning_rate", "[0.1, 0.2]"]
    assert main([*base, "--data_path", str(data), "--backbone", "['resnet18','resnet2000x']"]) == 2
    assert "unknown backbone 'resnet2000x'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main([*base, "--data_path", str(tmp_path / "nope"), "--backbone", "resnet18"]) == 2
    assert f"dataset folder not found: {tmp_path / 'nope'}" in capsys.readouterr().err
    (sweep_dir,) = (tmp_path / "runs").iterdir()
    assert [p.name for p in sweep_dir.iterdir()] == ["optuna.db"]  # no experiment started


def test_cli_sweep_end_to_end_with_a_stand_in_train(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("facerec.training.sweep.study.default_train_fn", lambda: fakes.fake_train)
    monkeypatch.setattr("facerec.training.sweep.study._check_train_options", lambda spec: None)  # fake backbones
    argv = ["sweep", "--runs_dir", str(tmp_path), "--name", "cli", "--no_prune", "--data_path", str(tmp_path),
            "--learning_rate", "[0.002, 0.001]", "--backbone", "[a, b]", "--max_epochs", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Best checkpoint: {tmp_path}/cli/cli-exp2/version_0/checkpoints/epoch=0-step=1.ckpt" in out
    assert main([*argv, "--parallel", "0"]) == 2


# ----------------------------------------------------------------------------- real training
def _synthetic_dataset(root: Path, people: int = 3, train: int = 6, val: int = 2, test: int = 2) -> Path:
    """Face-crop-shaped images whose person is its colour and stripe pattern: learnable."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = [f"person_{i}" for i in range(people)]
    for split, n in (("train", train), ("val", val), ("test", test)):
        for i, person in enumerate(labels):
            folder = root / split / person
            folder.mkdir(parents=True)
            for j in range(n):
                img = rng.integers(0, 60, (48, 48, 3)).astype(np.uint8)
                img[:, :, i % 3] += 150
                img[:: 2 + i] += 40
                Image.fromarray(img).save(folder / f"{j}.jpg")
    (root / "labels.json").write_text(json.dumps({"labels": labels}))
    return root


@pytest.mark.slow
def test_real_sweep_of_the_tutorials_shape(tmp_path, capsys):
    """2 learning rates x 2 backbones (resnet18 and a tiny timm model), 1 epoch, real facerec.training.train."""
    data = _synthetic_dataset(tmp_path / "dataset")
    argv = ["sweep", "--runs_dir", str(tmp_path / "runs"), "--data_path", str(data),
            "--max_epochs", "1", "--learning_rate", "uniform(0,0.0001,2)",
            "--backbone", "['resnet18','test_resnet']", "--image_size", "32",
            "--batch_size", "8", "--num_workers", "0", "--accelerator", "cpu", "--quiet"]
    start = time.monotonic()
    assert main(argv) == 0
    seconds = time.monotonic() - start
    out = capsys.readouterr().out
    runs = tmp_path / "runs"
    (sweep_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    name = sweep_dir.name
    for k in range(4):
        run = sweep_dir / f"{name}-exp{k}" / "version_0"
        assert (run / "hparams.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
        assert len(list((run / "checkpoints").glob("epoch=0-step=*.ckpt"))) == 1
    best = out.strip().splitlines()[-1]
    assert best.startswith(f"Best checkpoint: {sweep_dir}/{name}-exp")
    from facerec.recognition.model import load_checkpoint

    clf = load_checkpoint(best.split(": ", 1)[1])
    assert clf.labels == ["person_0", "person_1", "person_2"]
    assert clf.backbone_name in ("resnet18", "test_resnet")
    assert "4/4 experiments done (4 complete)" in out
    print(f"\nreal 4-experiment sweep: {seconds:.1f} s")
    assert math.isfinite(seconds)


def test_finetune_can_be_swept():
    spec = _spec("--backbone", "dlib_face", "--finetune", "[0, 1, 2]", "--backbone_lr",
                 "[0.0001, 0.001]")
    assert spec.grid["finetune"] == [0, 1, 2]
    assert spec.grid["backbone_lr"] == [0.0001, 0.001]
    kwargs = {**spec.fixed, **spec.environment, **spec.combos()[5]}
    assert kwargs["finetune"] == 2 and kwargs["backbone_lr"] == 0.001
    with pytest.raises(FacerecError, match="--finetune: invalid value 1.5"):
        _spec("--finetune", "[1.5, 2]")
