"""Run ``facerec train`` / ``facerec sweep`` on cloud GPUs through SkyPilot (the Grid AI run, open).

:func:`build_task` turns a facerec command plus resources (``--accelerators T4:1``, ``--use_spot``,
``--num_nodes N``, ``--datastore NAME:VERSION``) into a SkyPilot task (a dict); :func:`task_yaml`
writes it as YAML; :func:`run_sky` hands it to ``sky launch`` (a cluster you keep, ``sky down``
it) or ``sky jobs launch`` (a managed job: the controller recovers spot preemptions and tears the
machines down). SkyPilot is optional: ``pip install "facerec[cloud]"``.

The task:

* ``resources``: accelerators, spot, cloud; ``num_nodes`` for several machines.
* ``file_mounts``: the datastore's store (a bucket, mounted; a local store is copied) at
  ``/facerec-store``, with ``FACEREC_STORE`` pointing there, so ``--data_path datastore://NAME/V``
  pulls into the machine's cache once and verifies every hash.
* ``setup``: installs the facerec that is running here: its source checkout becomes the task's
  ``workdir`` (SkyPilot syncs it, skipping what ``.gitignore`` lists) and setup runs
  ``pip install .`` there; ``--pip SPEC`` installs something else (a wheel or git URL). facerec
  is not published on PyPI, so without a checkout ``--pip`` is required.
* ``run``: the facerec command. For ``train`` on several nodes it first maps SkyPilot's
  variables (SKYPILOT_NODE_IPS, SKYPILOT_NODE_RANK, SKYPILOT_NUM_NODES,
  SKYPILOT_NUM_GPUS_PER_NODE) to Lightning's (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE)
  and passes ``--num_nodes``/``--devices``. For ``sweep`` on several nodes every node runs a
  worker of the same Optuna study, which needs a shared ``--storage`` database.
* ``detect`` and ``predict`` run on a Ray cluster made of the nodes (``--engine ray``, see
  :mod:`facerec.distributed`): the first node starts the Ray head (port 6379; SkyPilot's own Ray
  uses 6380), the others join it, and the first node waits for all of them and runs the command
  with ``--engine ray --ray_address auto`` (and one worker per GPU of the cluster). Setup installs
  ``.[ray,s3,gcs]``; the photos and ``--out`` should be bucket URLs, which every node reads and
  writes.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerec._version import __version__
from facerec.errors import FacerecError

COMMANDS = ("train", "sweep")
#: the stages that run on a Ray cluster made of the nodes (--engine ray)
RAY_COMMANDS = ("detect", "predict")
STORE_MOUNT = "/facerec-store"
MASTER_PORT = 29500
RAY_PORT = 6379  # SkyPilot runs its own Ray on 6380
_GPU_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(?::(\d+(?:\.\d+)?))?")
_CLUSTER_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_BUCKETS = ("s3://", "gs://", "r2://", "cos://", "oci://", "https://")


@dataclass
class LaunchPlan:
    """A SkyPilot task, plus notes worth telling the user (printed by the CLI to stderr)."""

    name: str
    task: dict[str, Any]
    command: list[str]  # the facerec command run on every node, as written in `run`
    notes: list[str] = field(default_factory=list)

    @property
    def yaml(self) -> str:
        return task_yaml(self.task)


# ---------------------------------------------------------------------------------- flag helpers
def _command_flags(cmd: Sequence[str]) -> dict[str, Any]:
    """The flags given in CMD (``train ...`` or ``sweep ...``), read by that command's own flag
    schema, as text, by name; flags that are not its own are ignored."""
    from facerec.training.config import add_train_arguments

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    if cmd[0] == "sweep":
        from facerec.training.sweep import add_sweep_arguments

        add_sweep_arguments(parser, positional=False)
    else:
        add_train_arguments(parser, as_text=True, positional=False)
    try:
        args, _ = parser.parse_known_args(list(cmd[1:]))
    except argparse.ArgumentError as exc:
        raise FacerecError(f"in the facerec command: {exc}") from None
    return {k: v for k, v in vars(args).items() if v is not None}


def _pop_flag(args: list[str], flag: str, takes_value: bool) -> str | bool | None:
    """Remove FLAG (and its value) from ARGS; return its value, True for a switch, None if absent."""
    found: str | bool | None = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == flag:
            if takes_value:
                if i + 1 >= len(args):
                    raise FacerecError(f"{flag} needs a value")
                found = args[i + 1]
                del args[i:i + 2]
            else:
                found = True
                del args[i]
            continue
        if takes_value and a.startswith(flag + "="):
            found = a.split("=", 1)[1]
            del args[i]
            continue
        i += 1
    return found


def _rename_legacy_gpus(cmd: list[str]) -> None:
    """``--gpus TYPE:COUNT`` in CMD, launch's old name, becomes --accelerators (``--gpus N``,
    train's GPU count, stays)."""
    for i, a in enumerate(cmd[:-1]):
        if a == "--gpus" and not cmd[i + 1].isdigit():
            cmd[i] = "--accelerators"


def parse_gpus(spec: str) -> tuple[str, float]:
    """``T4:1`` -> ("T4", 1); ``A100`` -> ("A100", 1)."""
    m = _GPU_RE.fullmatch(str(spec).strip())
    if not m:
        raise FacerecError(f"invalid --accelerators {spec!r}: expected TYPE[:COUNT], e.g. T4:1 or A100:8")
    count = float(m.group(2)) if m.group(2) else 1.0
    if count <= 0:
        raise FacerecError(f"invalid --accelerators {spec!r}: the count must be positive")
    return m.group(1), count


def _normalize_command(command: Sequence[str]) -> list[str]:
    cmd = list(command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if cmd and Path(cmd[0]).name == "facerec":
        cmd = cmd[1:]
    if not cmd:
        raise FacerecError("no facerec command to launch: use `facerec launch [flags] -- train ...`")
    if cmd[0] not in COMMANDS + RAY_COMMANDS:
        raise FacerecError(f"facerec launch runs {', '.join(COMMANDS + RAY_COMMANDS[:-1])} or "
                           f"{RAY_COMMANDS[-1]}, not {cmd[0]!r}: use `facerec launch [flags] -- "
                           "train ...`")
    return cmd


def _store_mount(store: str) -> tuple[Any, str | None]:
    """file_mounts value for the store, and a note if it is a local folder (copied each launch)."""
    if store.startswith(_BUCKETS):
        return {"source": store.rstrip("/"), "mode": "MOUNT"}, None
    if "://" in store and not store.startswith("file://"):
        raise FacerecError(f"SkyPilot cannot mount store {store}: use an s3://, gs://, r2:// or "
                           "https:// (Azure) bucket, or a local folder")
    local = Path(store.removeprefix("file://")).expanduser().absolute()
    return str(local), (f"the datastore store is the local folder {local}: SkyPilot copies all of it "
                        "to every machine at each launch; a bucket store (--store s3://...) is "
                        "uploaded once and mounted")


# ------------------------------------------------------------------------------------------ task
def build_task(command: Sequence[str], *, accelerators: str | None = None, use_spot: bool = False,
               num_nodes: int | None = None, datastore: str | None = None, store: str | None = None,
               cloud: str | None = None, name: str | None = None, pip: str | None = None,
               managed: bool = False) -> LaunchPlan:
    """The SkyPilot task that runs COMMAND (``train ...`` or ``sweep ...``, ``facerec`` optional).

    ``--accelerators``, ``--use_spot`` and ``--datastore`` may also be written inside COMMAND
    (they are not train or sweep flags) and are taken out of it. ``--num_nodes`` in COMMAND and
    ``num_nodes`` must agree. ``store`` defaults to ``$FACEREC_STORE`` (then
    ``~/.facerec/datastores``).
    """
    cmd = _normalize_command(command)
    sub, notes = cmd[0], []
    accelerators, datastore, use_spot = _take_launch_flags(cmd, accelerators, datastore, use_spot)
    if sub in RAY_COMMANDS:
        if datastore or store:
            raise FacerecError(f"--datastore and --store are for train and sweep; {sub} reads its "
                               "photos from the URLs in its command (s3://..., gs://...)")
        return _ray_task(cmd, accelerators, use_spot, num_nodes, cloud, name, pip, notes)
    given = _command_flags(cmd)
    nodes, cmd_nodes = _nodes(sub, given, num_nodes)
    resources, per_node = _resources(cloud, accelerators, use_spot)
    devices = given.get("devices")
    if devices is not None and accelerators and devices not in ("auto", "-1"):
        try:
            if int(devices) != int(per_node):
                raise FacerecError(f"--devices {devices} in the facerec command disagrees with "
                                   f"--accelerators {accelerators} ({int(per_node)} per node)")
        except ValueError:
            pass  # a device list such as 0,1: leave it to Lightning
    datastore = _data(cmd, given.get("data_path"), datastore, notes)
    run = _run_script(cmd, given, nodes, cmd_nodes, bool(accelerators), devices is None)

    name = name or f"facerec-{sub}"
    if not _CLUSTER_RE.fullmatch(name):
        raise FacerecError(f"invalid --name {name!r}: lowercase letters, digits and '-', "
                           "starting with a letter")
    task: dict[str, Any] = {"name": name}
    if nodes > 1:
        task["num_nodes"] = nodes
    if resources:
        task["resources"] = resources
    if datastore is not None:
        mount, note = _store_mount(store or _default_store_url())
        if note:
            notes.append(note)
        task["file_mounts"] = {STORE_MOUNT: mount}
        task["envs"] = {"FACEREC_STORE": STORE_MOUNT}
    elif store:
        notes.append("--store is only used with a datastore (--datastore or --data_path datastore://)")
    task.update(_setup(pip, notes))
    task["run"] = run
    if managed and use_spot and sub == "train":
        notes.append("a managed spot job restarts the command after a preemption: make training "
                     "resume from its last checkpoint, or the run starts over")
    return LaunchPlan(name=name, task=task, command=cmd, notes=notes)


def _default_store_url() -> str:
    from facerec.datastore import default_store_url

    return default_store_url()


def _take_launch_flags(cmd: list[str], accelerators: str | None, datastore: str | None,
                       use_spot: bool) -> tuple[str | None, str | None, bool]:
    """Launch's own flags written after the command (``facerec launch -- train ...
    --accelerators T4:1``), taken out of CMD and merged with the ones given before it."""
    _rename_legacy_gpus(cmd)
    current = {"--accelerators": accelerators, "--datastore": datastore, "--use_spot": use_spot}
    for flag in current:
        value = _pop_flag(cmd, flag, takes_value=flag != "--use_spot")
        if value is None:
            continue
        if current[flag] and current[flag] != value:
            raise FacerecError(f"{flag} given twice with different values ({current[flag]} and "
                               f"{value})")
        current[flag] = value
    return current["--accelerators"], current["--datastore"], bool(current["--use_spot"])


def _nodes(sub: str, given: dict[str, Any], num_nodes: int | None) -> tuple[int, int | None]:
    """(machines, the train command's own --num_nodes): launch's --num_nodes and the train
    command's are the same thing (for a sweep, launch's is the number of machines running
    workers)."""
    in_cmd = given.get("num_nodes") if sub == "train" else None
    cmd_nodes = None
    if in_cmd is not None:
        try:
            cmd_nodes = int(in_cmd)
        except ValueError:
            raise FacerecError(f"invalid --num_nodes {in_cmd!r} in the facerec command") from None
    if num_nodes is not None and cmd_nodes is not None and num_nodes != cmd_nodes:
        raise FacerecError(f"--num_nodes {num_nodes} disagrees with --num_nodes {cmd_nodes} "
                           "in the facerec command")
    nodes = num_nodes or cmd_nodes or 1
    if nodes < 1:
        raise FacerecError(f"--num_nodes must be at least 1, not {nodes}")
    return nodes, cmd_nodes


def _resources(cloud: str | None, accelerators: str | None,
               use_spot: bool) -> tuple[dict[str, Any], float]:
    """SkyPilot's ``resources`` and the GPUs per node."""
    resources: dict[str, Any] = {}
    per_node = 0.0
    if cloud:
        resources["cloud"] = cloud.lower()
    if accelerators:
        gpu_type, per_node = parse_gpus(accelerators)
        count = int(per_node) if float(per_node).is_integer() else per_node
        resources["accelerators"] = f"{gpu_type}:{count}"
    if use_spot:
        resources["use_spot"] = True
    return resources, per_node


def _data(cmd: list[str], data_path: str | None, datastore: str | None,
          notes: list[str]) -> str | None:
    """The datastore the command trains on (``--datastore NAME[:VERSION]`` <->
    ``--data_path datastore://NAME/VERSION``; the flag is added to CMD), or None."""
    from facerec.datastore import SCHEME, parse_data_url, parse_ref

    if data_path is not None and data_path.startswith(SCHEME):
        ds_name, ds_version = parse_data_url(data_path)
        if datastore is not None and parse_ref(datastore) != (ds_name, ds_version):
            raise FacerecError(f"--datastore {datastore} disagrees with --data_path {data_path}")
        datastore = f"{ds_name}:{ds_version}" if ds_version else ds_name
    elif datastore is not None:
        if data_path is not None:
            raise FacerecError(f"--datastore {datastore} and --data_path {data_path} both name the "
                               "data: keep one")
        ds_name, ds_version = parse_ref(datastore)
        cmd += ["--data_path", f"{SCHEME}{ds_name}" + (f"/{ds_version}" if ds_version else "")]
    elif data_path is not None:
        notes.append(f"--data_path {data_path} must exist on the cloud machine; upload local data "
                     "with `facerec datastore create` and pass --datastore NAME:VERSION")
    else:
        notes.append("no --datastore or --data_path: the command will look for its default data "
                     "folder on the cloud machine")
    if datastore is not None and parse_ref(datastore)[1] is None:
        notes.append(f"--datastore {datastore} has no version: the machine will use the latest "
                     "succeeded version when it starts; pin one (NAME:VERSION) for reproducible runs")
    return datastore


def _run_script(cmd: list[str], given: dict[str, Any], nodes: int, cmd_nodes: int | None,
                gpus: bool, devices_unset: bool) -> str:
    """The task's ``run``: the command, with Lightning's multi-node environment from SkyPilot's."""
    run_cmd = shlex.join(["facerec", *cmd])
    lines = ["set -e"]
    if cmd[0] == "train":
        if nodes > 1 and not gpus:
            raise FacerecError("multi-node training needs GPUs: add --accelerators TYPE:COUNT")
        extra = []
        if gpus and devices_unset:
            extra.append('--devices "$SKYPILOT_NUM_GPUS_PER_NODE"')
        if nodes > 1:
            lines += [
                "# Lightning's multi-node environment, from SkyPilot's",
                'export MASTER_ADDR="$(echo "$SKYPILOT_NODE_IPS" | head -n1)"',
                f'export MASTER_PORT="${{MASTER_PORT:-{MASTER_PORT}}}"',
                'export NODE_RANK="$SKYPILOT_NODE_RANK"',
                'export WORLD_SIZE="$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))"',
            ]
            if cmd_nodes is None:
                extra.append('--num_nodes "$SKYPILOT_NUM_NODES"')
        run_cmd = " ".join([run_cmd, *extra])
    elif nodes > 1:
        storage = given.get("storage")
        if not storage or storage.startswith("sqlite"):
            raise FacerecError("a sweep on several nodes needs a shared study database that every "
                               "node reaches: add --storage postgresql://USER:PASS@HOST/DB (or "
                               "mysql://...) to the sweep command")
    return "\n".join([*lines, run_cmd]) + "\n"


def _setup(pip: str | None, notes: list[str], target: str = ".") -> dict[str, str]:
    """What the machines install: PIP, else this source checkout (``target``: with extras,
    ``.[ray,s3]``) synced as the workdir."""
    if pip:
        return {"setup": "set -e\n" + f"pip install {shlex.quote(pip)}\n"}
    source = source_checkout()
    if source is None:
        raise FacerecError("facerec is not installed from a source checkout and is not on "
                           "PyPI: pass --pip SPEC (e.g. a wheel or git URL the cloud machine "
                           "can install)")
    notes.append(f"the facerec source at {source} is synced to the machines as the workdir "
                 f"and installed there (pip install {target})")
    return {"workdir": str(source), "setup": f"set -e\npip install {shlex.quote(target)}\n"}


# ------------------------------------------------------------------------------ Ray stages
def _flag_value(cmd: list[str], flag: str) -> str | None:
    """The value of FLAG in CMD (``--flag V`` or ``--flag=V``), the last one given; else None."""
    found = None
    for i, a in enumerate(cmd):
        if a == flag and i + 1 < len(cmd):
            found = cmd[i + 1]
        elif a.startswith(flag + "="):
            found = a.split("=", 1)[1]
    return found


def _ray_task(cmd: list[str], accelerators: str | None, use_spot: bool, num_nodes: int | None,
              cloud: str | None, name: str | None, pip: str | None,
              notes: list[str]) -> LaunchPlan:
    """The task that runs ``detect``/``predict`` on a Ray cluster of ``num_nodes`` machines."""
    sub = cmd[0]
    nodes = num_nodes or 1
    if nodes < 1:
        raise FacerecError(f"--num_nodes must be at least 1, not {nodes}")
    engine, address = _flag_value(cmd, "--engine"), _flag_value(cmd, "--ray_address")
    if engine not in (None, "ray"):
        raise FacerecError(f"--engine {engine}: facerec launch runs {sub} on a Ray cluster "
                           "(--engine ray)")
    if address not in (None, "auto"):
        raise FacerecError(f"--ray_address {address}: the task starts its own Ray cluster (auto)")
    out = _flag_value(cmd, "--out")
    if sub == "predict" and out is None:
        raise FacerecError("predict on a Ray cluster writes its predictions to --out: add "
                           "--out s3://BUCKET/PREFIX")
    for flag, value in (("--out", out), ("--checkpoint_path", _flag_value(cmd, "--checkpoint_path"))):
        if value is not None and not value.startswith(_BUCKETS):
            notes.append(f"{flag} {value} is a path on the first node: use a bucket URL "
                         "(s3://..., gs://...) to find it there")
    notes.append(f"the photos of `{sub}` are read by every node: give them as a bucket URL "
                 "(s3://..., gs://...); the machines need read and write access to it")
    cmd = [*cmd] + (["--engine", "ray"] if engine is None else []) + (
        ["--ray_address", "auto"] if address is None else [])
    name = name or f"facerec-{sub}"
    if not _CLUSTER_RE.fullmatch(name):
        raise FacerecError(f"invalid --name {name!r}: lowercase letters, digits and '-', "
                           "starting with a letter")
    resources, _ = _resources(cloud, accelerators, use_spot)
    task: dict[str, Any] = {"name": name}
    if nodes > 1:
        task["num_nodes"] = nodes
    if resources:
        task["resources"] = resources
    task.update(_setup(pip, notes, ".[ray,s3,gcs]"))
    task["run"] = _ray_run_script(cmd, bool(accelerators) and _flag_value(cmd, "--ray_workers") is None)
    return LaunchPlan(name=name, task=task, command=cmd, notes=notes)


def _ray_run_script(cmd: list[str], one_worker_per_gpu: bool) -> str:
    """The task's ``run`` for a Ray stage: the first node starts the Ray head, waits for the
    others (up to 10 minutes) and runs the command; the others join the head (retrying while
    it starts)."""
    run_cmd = shlex.join(["facerec", *cmd])
    if one_worker_per_gpu:
        run_cmd += ' --ray_workers "$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))"'
    wait = ('import os, time, ray\n'
            'ray.init(address="auto", logging_level="ERROR")\n'
            'want, end = int(os.environ.get("SKYPILOT_NUM_NODES", "1")), time.time() + 600\n'
            'while sum(n["Alive"] for n in ray.nodes()) < want and time.time() < end:\n'
            '    time.sleep(5)\n'
            'print("Ray cluster:", sum(n["Alive"] for n in ray.nodes()), "of", want, "nodes")')
    return "\n".join([
        "set -e",
        "export RAY_USAGE_STATS_ENABLED=0",
        'HEAD_IP="$(echo "$SKYPILOT_NODE_IPS" | head -n1)"',
        'if [ "$SKYPILOT_NODE_RANK" = "0" ]; then',
        f"  ray status --address 127.0.0.1:{RAY_PORT} >/dev/null 2>&1 || "
        f"ray start --head --port {RAY_PORT} --disable-usage-stats --include-dashboard=false",
        f"  python -c {shlex.quote(wait)}",
        f"  {run_cmd}",
        "else",
        "  for i in $(seq 60); do  # join the head (it may still be starting): up to 5 minutes",
        "    ps -C raylet >/dev/null 2>&1 && break",
        f'    ray start --address "$HEAD_IP:{RAY_PORT}" --disable-usage-stats && break',
        "    sleep 5",
        "  done",
        "fi",
    ]) + "\n"


def source_checkout() -> Path | None:
    """The source checkout this facerec runs from (the folder holding its pyproject.toml), or
    None when it was installed from a wheel."""
    root = Path(__file__).resolve().parents[3]  # <root>/src/facerec/training/launch.py
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'^name\s*=\s*"facerec"', text, re.MULTILINE) else None


# ------------------------------------------------------------------------------------------ yaml
class _Dumper:
    """YAML dumper that writes multi-line strings (setup, run) as literal blocks."""

    _cls = None

    @classmethod
    def get(cls):
        if cls._cls is None:
            import yaml

            class Dumper(yaml.SafeDumper):
                pass

            def str_presenter(dumper, data):
                style = "|" if "\n" in data else None
                return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

            Dumper.add_representer(str, str_presenter)
            cls._cls = Dumper
        return cls._cls


def task_yaml(task: dict[str, Any]) -> str:
    import yaml

    header = f"# SkyPilot task written by facerec {__version__} (facerec launch)\n"
    return header + yaml.dump(task, Dumper=_Dumper.get(), sort_keys=False, default_flow_style=False)


def write_yaml(plan: LaunchPlan, path: str | os.PathLike | None = None) -> Path:
    out = Path(path) if path else Path("runs") / "launch" / f"{plan.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plan.yaml)
    return out


# ------------------------------------------------------------------------------------------- sky
def sky_executable() -> str | None:
    """The ``sky`` command, on PATH or next to this Python (a venv that is not activated)."""
    found = shutil.which("sky")
    if found:
        return found
    local = Path(sys.executable).parent / "sky"
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


def sky_command(yaml_path: str | os.PathLike, name: str, *, managed: bool = False, yes: bool = False,
                down: bool = False) -> list[str]:
    exe = sky_executable() or "sky"
    if managed:
        cmd = [exe, "jobs", "launch", "-n", name, str(yaml_path)]
    else:
        cmd = [exe, "launch", "-c", name, str(yaml_path)]
        if down:
            cmd.append("--down")
    if yes:
        cmd.append("--yes")
    return cmd


def run_sky(yaml_path: str | os.PathLike, name: str, *, managed: bool = False, yes: bool = False,
            down: bool = False) -> int:
    """Run ``sky launch`` / ``sky jobs launch`` on the YAML; its exit status."""
    if sky_executable() is None:
        raise FacerecError(f'SkyPilot is not installed: pip install "facerec[cloud]" (then `sky check`), '
                           f"or launch the task yourself: sky launch -c {name} {yaml_path}")
    cmd = sky_command(yaml_path, name, managed=managed, yes=yes, down=down)
    print("+ " + shlex.join(cmd), file=sys.stderr)
    try:
        return subprocess.call(cmd)
    except OSError as exc:
        raise FacerecError(f"cannot run {cmd[0]}: {exc}") from exc
