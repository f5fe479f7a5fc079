"""`facerec launch`: the SkyPilot task it writes (content everywhere; SkyPilot's own parser where
the `cloud` extra is installed), its multi-node run script, and how it calls `sky`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facerec.cli import main
from facerec.errors import FacerecError
from facerec.training.launch import STORE_MOUNT, build_task, parse_gpus, run_sky, sky_command, write_yaml


REPO = Path(__file__).resolve().parents[1]


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def _dryrun(capsys, *argv: str) -> dict:
    assert main(["launch", "--dry_run", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_single_gpu_spot_task_with_a_bucket_datastore(capsys):
    task = _dryrun(capsys, "--accelerators", "T4:1", "--use_spot", "--datastore", "face_detection:2",
                   "--store", "s3://my-bucket/stores", "--cloud", "AWS",
                   "--", "train", "--max_epochs", "5", "--run_name", "first run")
    assert task["name"] == "facerec-train"
    assert task["resources"] == {"cloud": "aws", "accelerators": "T4:1", "use_spot": True}
    assert "num_nodes" not in task
    assert task["file_mounts"] == {STORE_MOUNT: {"source": "s3://my-bucket/stores", "mode": "MOUNT"}}
    assert task["envs"] == {"FACEREC_STORE": STORE_MOUNT}
    # facerec is not on PyPI: the running source checkout is synced and installed
    assert task["workdir"] == str(REPO) and task["setup"] == "set -e\npip install .\n"
    run = task["run"].strip().splitlines()
    assert run[-1] == ("facerec train --max_epochs 5 --run_name 'first run' "
                       '--data_path datastore://face_detection/2 --devices "$SKYPILOT_NUM_GPUS_PER_NODE"')
    assert "MASTER_ADDR" not in task["run"]  # one node: no rendezvous


def test_issue_syntax_with_launch_flags_after_the_command(capsys):
    """`facerec launch -- train ... --accelerators T4:1 --use_spot --num_nodes 2 --datastore NAME:V`."""
    task = _dryrun(capsys, "--store", "gs://bkt", "--", "facerec", "train", "--max_epochs", "3",
                   "--accelerators", "T4:1", "--use_spot", "--num_nodes", "2", "--datastore", "faces:1")
    assert task["resources"] == {"accelerators": "T4:1", "use_spot": True}
    assert task["num_nodes"] == 2
    last = task["run"].strip().splitlines()[-1]
    assert "--accelerators" not in last and "--use_spot" not in last and "--datastore" not in last
    assert last.startswith("facerec train --max_epochs 3 --num_nodes 2 --data_path datastore://faces/1")
    assert task["file_mounts"][STORE_MOUNT]["source"] == "gs://bkt"


def test_multi_node_run_script_sets_lightning_environment(tmp_path):
    """Run the generated `run` script with SkyPilot's variables and a stand-in `facerec`."""
    plan = build_task(["train", "--max_epochs", "2"], accelerators="A100:2", num_nodes=2,
                      datastore="faces:3", store="s3://b/s")
    assert plan.task["num_nodes"] == 2
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "facerec"
    fake.write_text('#!/usr/bin/env bash\n'
                    'echo "ENV $MASTER_ADDR $MASTER_PORT $NODE_RANK $WORLD_SIZE"\n'
                    'echo "ARGS $*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.8", "SKYPILOT_NODE_RANK": "1",
           "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "2"}
    out = subprocess.run(["bash", "-c", plan.task["run"]], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout.splitlines()
    assert out[0] == "ENV 10.0.0.7 29500 1 4"
    assert out[1] == ("ARGS train --max_epochs 2 --data_path datastore://faces/3 "
                      "--devices 2 --num_nodes 2")


def test_old_flag_names_still_work_hidden(capsys):
    """--gpus TYPE:COUNT and --dryrun were launch's names before --accelerators and --dry_run (one
    meaning per flag: train's --gpus is a count, which passes through untouched)."""
    task = _dryrun(capsys, "--", "train", "--gpus", "2", "--gpus", "A100:2")  # train's, then launch's
    assert task["resources"] == {"accelerators": "A100:2"}
    assert "facerec train --gpus 2" in task["run"]
    assert main(["launch", "--dryrun", "--gpus", "T4:1", "--", "train"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["resources"] == {"accelerators": "T4:1"}
    launch_help = _help(capsys, "launch")
    assert "--accelerators" in launch_help and "--dry_run" in launch_help
    assert "--gpus" not in launch_help and "--dryrun" not in launch_help


def test_the_launched_command_is_read_by_its_own_flag_schema(capsys):
    """--num_nodes=3, --data_path=... (the = form) and flags of the sweep are read as the
    command itself would read them."""
    with pytest.raises(FacerecError, match="disagrees"):
        build_task(["train", "--num_nodes=3"], accelerators="T4:1", num_nodes=2)
    plan = build_task(["train", "--data_path=datastore://faces/2"])
    assert plan.command[-2:] != ["--data_path", "datastore://faces/2"]  # not added twice
    with pytest.raises(FacerecError, match="shared study"):
        build_task(["sweep", "--storage=sqlite:///x.db"], accelerators="T4:1", num_nodes=2)


def test_distributed_sweep_needs_a_shared_study(capsys):
    with pytest.raises(FacerecError, match="--storage postgresql://"):
        build_task(["sweep", "--n_trials", "40"], accelerators="T4:1", num_nodes=4)
    with pytest.raises(FacerecError, match="shared study"):
        build_task(["sweep", "--storage", "sqlite:///study.db"], num_nodes=2)
    task = _dryrun(capsys, "--accelerators", "T4:1", "--num_nodes", "4", "--datastore", "faces:1",
                   "--store", "s3://b", "--", "sweep", "--n_trials", "40",
                   "--storage", "postgresql://u:p@db.example.com/optuna")
    assert task["name"] == "facerec-sweep" and task["num_nodes"] == 4
    assert "MASTER_ADDR" not in task["run"] and "--num_nodes" not in task["run"]
    assert task["run"].strip().splitlines()[-1] == (
        "facerec sweep --n_trials 40 --storage postgresql://u:p@db.example.com/optuna "
        "--data_path datastore://faces/1")


def test_local_store_is_copied_and_unpinned_version_noted(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEREC_STORE", str(tmp_path / "store"))
    assert main(["launch", "--dry_run", "--", "train", "--data_path", "datastore://faces"]) == 0
    captured = capsys.readouterr()
    task = yaml.safe_load(captured.out)
    assert task["file_mounts"] == {STORE_MOUNT: str(tmp_path / "store")}
    assert "copies all of it" in captured.err and "has no version" in captured.err
    assert "resources" not in task  # no --accelerators: SkyPilot's default CPU machine


@pytest.mark.parametrize("argv, message", [
    (["--", "split", "processed"], "runs train, sweep, detect or predict"),
    (["--datastore", "a:1", "--", "detect", "s3://b/raw"], "are for train and sweep"),
    (["--", "predict", "s3://b/x", "--checkpoint_path", "s3://b/m.ckpt"], "add --out"),
    (["--", "detect", "s3://b/raw", "--engine", "local"], "on a Ray cluster"),
    (["--", "detect", "s3://b/raw", "--ray_address", "10.0.0.1:6379"], "its own Ray cluster"),
    ([], "no facerec command"),
    (["--num_nodes", "2", "--accelerators", "T4:1", "--", "train", "--num_nodes", "3"], "disagrees"),
    (["--num_nodes", "2", "--", "train"], "needs GPUs"),
    (["--accelerators", "T4:2", "--", "train", "--devices", "4"], "disagrees with --accelerators"),
    (["--datastore", "a:1", "--", "train", "--data_path", "datastore://b/1"], "disagrees"),
    (["--datastore", "a:1", "--", "train", "--data_path", "dataset"], "keep one"),
    (["--accelerators", "T4:x", "--", "train"], "invalid --accelerators"),
    (["--name", "Bad_Name", "--", "train"], "invalid --name"),
    (["--datastore", "a:1", "--store", "ftp://host/x", "--", "train"], "cannot mount"),
])
def test_bad_launches_are_clear_errors(argv, message, capsys):
    assert main(["launch", "--dry_run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_parse_gpus():
    assert parse_gpus("T4:1") == ("T4", 1)
    assert parse_gpus("A100-80GB:8") == ("A100-80GB", 8)
    assert parse_gpus("L4") == ("L4", 1)
    with pytest.raises(FacerecError):
        parse_gpus("T4:0")


def test_without_skypilot_the_yaml_is_written_and_the_error_says_how(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nobin" / "python"))
    assert main(["launch", "--accelerators", "T4:1", "--", "train"]) == 2
    err = capsys.readouterr().err
    written = tmp_path / "runs" / "launch" / "facerec-train.yaml"
    assert written.is_file() and yaml.safe_load(written.read_text())["resources"]["accelerators"] == "T4:1"
    assert 'pip install "facerec[cloud]"' in err and "runs/launch/facerec-train.yaml" in err


def test_sky_is_called_with_the_task(tmp_path, monkeypatch):
    """A stand-in `sky` on PATH records how it is called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sky.log"
    fake = bin_dir / "sky"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\nexit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = build_task(["train"], accelerators="T4:1", use_spot=True, name="faces-run")
    path = write_yaml(plan, tmp_path / "task.yaml")
    assert run_sky(path, plan.name, down=True, yes=True) == 3  # sky's exit status comes back
    assert run_sky(path, plan.name, managed=True) == 3
    assert log.read_text().splitlines() == [f"launch -c faces-run {path} --down --yes",
                                            f"jobs launch -n faces-run {path}"]
    assert sky_command(path, "x", managed=True)[1:3] == ["jobs", "launch"]


@pytest.mark.skipif(importlib.util.find_spec("sky") is None,
                    reason='SkyPilot not installed (pip install "facerec[cloud]")')
def test_skypilot_parses_the_task(tmp_path):
    import sky

    # a local store: SkyPilot checks that it exists, and parsing stays offline (a bucket source
    # may be looked up in the cloud by some SkyPilot versions)
    (tmp_path / "store").mkdir()
    plan = build_task(["train", "--max_epochs", "1"], accelerators="T4:2", use_spot=True, num_nodes=2,
                      datastore="faces:1", store=str(tmp_path / "store"), cloud="aws")
    path = write_yaml(plan, tmp_path / "task.yaml")
    task = sky.Task.from_yaml(str(path))
    assert task.num_nodes == 2
    assert task.file_mounts == {STORE_MOUNT: str(tmp_path / "store")}
    assert "facerec train" in task.run and "MASTER_ADDR" in task.run
    assert task.envs["FACEREC_STORE"] == STORE_MOUNT
    [resources] = list(task.resources)
    assert resources.use_spot and resources.accelerators == {"T4": 2}


def test_setup_installs_what_pip_names_or_refuses_without_a_checkout(capsys, monkeypatch):
    task = _dryrun(capsys, "--accelerators", "T4:1", "--pip", "facerec @ git+https://example.org/f.git",
                   "--", "train")
    assert "workdir" not in task
    assert task["setup"] == "set -e\npip install 'facerec @ git+https://example.org/f.git'\n"
    import facerec.training.launch

    monkeypatch.setattr(facerec.training.launch, "source_checkout", lambda: None)
    assert main(["launch", "--accelerators", "T4:1", "--dry_run", "--", "train"]) == 2
    assert "pass --pip SPEC" in capsys.readouterr().err


# ------------------------------------------------------------------------ detect/predict on Ray
def test_detect_on_a_ray_cluster_of_the_nodes(capsys):
    task = _dryrun(capsys, "--accelerators", "T4:1", "--num_nodes", "4", "--use_spot", "--",
                   "detect", "s3://photos/raw", "--out", "s3://photos/processed")
    assert task["name"] == "facerec-detect" and task["num_nodes"] == 4
    assert task["resources"] == {"accelerators": "T4:1", "use_spot": True}
    assert task["setup"] == "set -e\npip install '.[ray,s3,gcs]'\n" and "file_mounts" not in task
    run = task["run"]
    assert "ray start --head --port 6379" in run and 'ray start --address "$HEAD_IP:6379"' in run
    assert ("facerec detect s3://photos/raw --out s3://photos/processed --engine ray "
            '--ray_address auto --ray_workers "$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))"'
            ) in run
    # predict: the checkpoint and the output are URLs too (a local path is noted)
    assert main(["launch", "--dry_run", "--", "predict", "s3://photos/new", "--checkpoint_path",
                 "model.ckpt", "--out", "s3://photos/predictions", "--ray_workers", "3"]) == 0
    captured = capsys.readouterr()
    task = yaml.safe_load(captured.out)
    assert "resources" not in task and "num_nodes" not in task
    assert task["run"].count("--ray_workers") == 1  # the command's own, kept
    assert "--checkpoint_path model.ckpt is a path on the first node" in captured.err


def _fake(bin_dir: Path, name: str, log: Path, status: int = 0) -> None:
    path = bin_dir / name
    path.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> {log}\nexit {status}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_ray_run_script_starts_the_head_or_joins_it(tmp_path, rank):
    """Run the generated `run` with SkyPilot's variables and stand-ins for ray, python, ps and
    facerec: the first node starts the head, waits for the nodes and runs the stage; the others
    join the head."""
    plan = build_task(["detect", "s3://b/raw", "--out", "s3://b/out"], accelerators="A100:2",
                      num_nodes=2)
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("ray", "python", "facerec"):
        _fake(bin_dir, name, log)
    _fake(bin_dir, "ps", log, status=1)  # no raylet running on this node yet
    (bin_dir / "ray").write_text(  # `ray status`: no cluster yet; `ray start`: fine
        f'#!/usr/bin/env bash\necho "ray $*" >> {log}\n[ "$1" = status ] && exit 1; exit 0\n')
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.8", "SKYPILOT_NODE_RANK": rank,
           "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "2"}
    subprocess.run(["bash", "-c", plan.task["run"]], env=env, check=True, timeout=30)
    calls = log.read_text().splitlines()
    if rank == "0":
        assert calls[0] == "ray status --address 127.0.0.1:6379"
        assert calls[1].startswith("ray start --head --port 6379")
        assert calls[2].startswith("python -c import os, time, ray")
        assert calls[-1] == ("facerec detect s3://b/raw --out s3://b/out --engine ray "
                             "--ray_address auto --ray_workers 4")
    else:
        assert calls == ["ps -C raylet",
                         "ray start --address 10.0.0.7:6379 --disable-usage-stats"]


@pytest.mark.skipif(importlib.util.find_spec("sky") is None,
                    reason='SkyPilot not installed (pip install "facerec[cloud]")')
def test_skypilot_parses_the_ray_task(tmp_path):
    import sky

    plan = build_task(["detect", "s3://b/raw", "--out", "s3://b/processed"],
                      accelerators="T4:1", num_nodes=3, cloud="aws")
    task = sky.Task.from_yaml(str(write_yaml(plan, tmp_path / "task.yaml")))
    assert task.num_nodes == 3
    assert "ray start --head" in task.run and "--engine ray --ray_address auto" in task.run
    [resources] = list(task.resources)
    assert resources.accelerators == {"T4": 1}
