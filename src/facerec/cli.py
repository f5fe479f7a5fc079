"""The ``facerec`` command line: parses arguments and calls the library. No logic lives here.

Each subcommand has an ``_add_<name>(subparsers)`` function that declares its flags and binds
``func`` to a small runner that calls the library API. The dialect (docs/cli.md): the command's
main input is positional, what it writes is ``--out``, the model it uses ``--checkpoint_path``,
the model family ``--backbone``; earlier names stay as hidden aliases; a usage error prints the
subcommand's usage; every ``--help`` ends with the exit-status table (``errors.EXIT_MEANINGS``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any  # an argparse subparsers action (its class is private)

from facerec._version import __version__
from facerec.defaults import DEFAULT_BACKBONE, DEFAULT_DETECTOR, MAX_SIDE, MIN_FACE_SIZE
from facerec.errors import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_MEANINGS, EXIT_OK, EXIT_PARTIAL,
                            EXIT_USAGE, FacerecError, InvalidInputError, NotFoundError,
                            UnsupportedError, exit_status)
from facerec.safeio import oserror_message
from facerec.training.config import add_train_arguments, config_from_args


def _hidden_alias(p: argparse.ArgumentParser, old: str, dest: str, **kw) -> None:
    """OLD, a flag's previous name, still works for one release but is not shown in --help."""
    p.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


def _main_input(p: argparse.ArgumentParser, dest: str, metavar: str, help: str, *,
                default: Any = None, nargs: str = "?", old: str | None = None) -> None:
    """The command's main input as its positional argument DEST (docs/cli.md); OLD, the flag that
    named it before, still works, hidden. Given both ways, the values add up (nargs "*") or the
    positional wins. DEFAULT fills DEST when neither is given (see _Parser.parse_known_args)."""
    shown = f" (default: {default})" if default not in (None, []) else ""
    p.add_argument(dest, nargs=nargs, metavar=metavar, default=argparse.SUPPRESS,
                   help=help + shown)
    if old is not None:
        extra = {"nargs": "+", "action": "extend"} if nargs in ("*", "+") else {}
        p.add_argument(old, dest=f"{dest}_flag", default=argparse.SUPPRESS, metavar=metavar,
                       help=argparse.SUPPRESS, **extra)
    p.set_defaults(**{f"_input_{dest}": (default, nargs)})


def _exit_table() -> str:
    """The exit statuses, as every command's --help ends (errors.EXIT_MEANINGS; README's table)."""
    return "exit status:\n" + "\n".join(f"  {code:<4} {meaning}"
                                         for code, meaning in EXIT_MEANINGS.items())


def _add_json(p: argparse.ArgumentParser, what: str = "the summary") -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as JSON on stdout (other messages go to stderr)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="where the networks run: auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", default=None, metavar="N",
                   help="CPU threads for the networks (default: $FACEREC_THREADS, else the CPUs "
                   "not busy with other work; see docs/speed.md)")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_cache_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache_dir", default=None, help="embedding cache folder (default: "
                   "$FACEREC_CACHE_DIR/embeddings, else ~/.cache/facerec/embeddings)")


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="torch or onnxruntime (a .onnx model always runs on onnxruntime)")


@contextlib.contextmanager
def _stdout_for(args: argparse.Namespace) -> Iterator[None]:
    """With --json, whatever the command prints while it runs goes to stderr: stdout is the JSON.
    File descriptor 1 too, for the processes it starts (sweep --parallel workers, DDP)."""
    if not args.json:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _plain(obj):
    """OBJ (dataclasses, mappings, sequences) as JSON-able values; anything else as it is
    (``json.dumps(default=str)`` writes paths as text). Not ``dataclasses.asdict``: it rebuilds a
    Counter from (key, value) pairs, counting the pairs."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(o) for o in obj]
    return obj


def _report(args: argparse.Namespace, result, print_text, **extra) -> None:
    """RESULT as JSON (with --json; EXTRA added) or as the command's text."""
    if getattr(args, "json", False):
        import json

        data = _plain(result)
        if extra:
            data = {**data, **{k: _plain(v) for k, v in extra.items()}}
        print(json.dumps(data, indent=1, default=str))
    else:
        print_text(result)


# ----------------------------------------------------------------------------------------- detect
def _add_detect(sub: Any) -> None:
    p = sub.add_parser(
        "detect",
        help="find and crop every face in a folder of photos",
        description="Detect every face in RAW_DIR (recursively), save crops to OUT and write "
        "OUT/manifest.jsonl. Resumable: a rerun skips photos already done.",
    )
    _main_input(p, "raw_dir", "RAW_DIR", "folder of photos", default="raw")
    p.add_argument("--out", default="processed", help="output folder (default: processed)")
    p.add_argument("--backbone", default=None,
                   help=f"the face model the crops are for: its crop recipe (default: "
                   f"{DEFAULT_BACKBONE})")
    add_detect_options(p)
    _hidden_alias(p, "--size", "crop_size", type=int)
    _hidden_alias(p, "--margin", "crop_margin", type=float)
    _add_device(p)
    _add_quiet(p)
    _add_json(p)
    p.set_defaults(func=_run_detect)


def add_detect_options(p: argparse.ArgumentParser, *, batch_flag: str = "--batch_size") -> None:
    """detect's options, declared once: ``facerec detect`` and ``facerec run`` take the same
    (run names the detector's batch ``--detect_batch_size``: its ``--batch_size`` is train's)."""
    # The numbers live with each model (Embedder.crop) and are printed by detect itself: naming
    # them here would import the model registry (numpy) into every `--help`.
    recipe = ("default: as the crops already in the output folder, else the recipe of the "
              f"--backbone model, {DEFAULT_BACKBONE} by default")
    p.add_argument("--crop_size", type=int, default=None, help=f"crop side in pixels ({recipe})")
    p.add_argument("--crop_margin", type=float, default=None,
                   help="context added around the face box, as a fraction of its size (default: "
                   "as --crop_size)")
    p.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                   help="5-point similarity-aligned crops instead of box crops (default: as "
                   "--crop_size)")
    p.add_argument("--min_face_size", type=int, default=MIN_FACE_SIZE,
                   help="smallest face to find, in pixels")
    p.add_argument("--detector", default=None,
                   help="the face detector, by registered name: yunet (OpenCV Zoo's YuNet) or "
                   f"mtcnn (default: the output folder's, else {DEFAULT_DETECTOR})")
    p.add_argument("--thresholds", type=float, nargs=3, default=None, metavar=("P", "R", "O"),
                   help="mtcnn: P-Net, R-Net, O-Net score thresholds (default: 0.6 0.7 0.7)")
    p.add_argument("--min_score", type=float, default=None,
                   help="keep faces whose score (0..1, every detector) is at least this (default: "
                   "the detector's operating point: yunet 0.7, mtcnn 0.9; predict, enroll and "
                   "verify apply the same)")
    p.add_argument("--max_side", type=int, default=MAX_SIDE,
                   help="detect on a copy downscaled to this longest side (0: never downscale)")
    p.add_argument(batch_flag, dest="detect_batch_size", type=int, default=8,
                   help="photos per detector batch")


def detect_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`add_detect_options` parsed, as :func:`facerec.pipeline.run_pipeline`'s
    ``detect`` mapping: the detector's name and settings, and how to crop."""
    settings = {"min_face_size": args.min_face_size, "max_side": args.max_side or None}
    if args.thresholds:
        settings["thresholds"] = tuple(args.thresholds)
    return {"detector": args.detector, "settings": settings, "size": args.crop_size,
            "margin": args.crop_margin, "align": args.align, "min_score": args.min_score,
            "batch_size": args.detect_batch_size, "backbone": getattr(args, "backbone", None)}


def _run_detect(args: argparse.Namespace) -> int:
    from facerec.detection.detect import detect_folder, get_detector, print_detect_summary

    from facerec.recognition.backbones import detect_settings_for

    d = detect_settings_for(args.out, detect_settings(args))
    detector = get_detector(d["detector"], device=args.device, **d["settings"])
    summary = detect_folder(args.raw_dir, args.out, detector=detector, size=d["size"],
                            margin=d["margin"], align=d["align"], min_score=d["min_score"],
                            batch_size=d["batch_size"], progress=not args.quiet)
    _report(args, summary, print_detect_summary)
    return EXIT_PARTIAL if summary.skipped else EXIT_OK


# --------------------------------------------------------------------------------------- annotate
def _add_annotate(sub: Any) -> None:
    p = sub.add_parser(
        "annotate",
        help="group loose face crops by person, set aside poor ones (undoable)",
        description="Group the loose crops of PROCESSED into person_01/, person_02/, ... (largest "
        "first; rename them), suggest crops for people who already have a folder (_suggested/), "
        "move poor crops to _rejected/ and, in album folders, other people's faces to _others/. "
        "Every move is logged in PROCESSED/.facerec/moves.jsonl; --undo puts the last run back.",
    )
    _main_input(p, "processed_dir", "PROCESSED", "folder of crops from `facerec detect`",
                default="processed")
    p.add_argument("--undo", action="store_true", help="put back the files moved by the last run")
    p.add_argument("--dry_run", action="store_true", help="show what would move, move nothing")
    p.add_argument("--albums", dest="albums", action="store_const", const=True, default=None,
                   help="treat every person folder as an album (default: only folders that "
                   "`facerec detect` filled from per-person albums)")
    p.add_argument("--no_albums", dest="albums", action="store_const", const=False,
                   help="never move crops out of person folders as other people")
    p.add_argument("--cluster_distance", type=float, default=None,
                   help="Ward-linkage merge distance for clustering (default: 1.0; lower: more, "
                   "smaller clusters)")
    _hidden_alias(p, "--threshold", "cluster_distance", type=float)
    p.add_argument("--suggest_distance", type=float, default=None,
                   help="max distance to a known person to suggest a crop for them (default: 0.55)")
    p.add_argument("--min_score", type=float, default=None,
                   help="reject crops whose detector score is below this (default: the "
                   "detector's, 0.9 for mtcnn)")
    p.add_argument("--min_face_size", type=float, default=24,
                   help="reject faces smaller than this many pixels in the photo")
    _hidden_alias(p, "--min_face", "min_face_size", type=float)
    p.add_argument("--keep_poor", action="store_true",
                   help="do not reject low-score, tiny or badly fitted crops")
    p.add_argument("--backbone", default=None,
                   help="the face model that embeds the crops (a face embedder's name; default: "
                   f"the model the crops were cut for: {DEFAULT_BACKBONE} for crops made by "
                   "facerec detect's defaults)")
    _hidden_alias(p, "--embedder", "backbone")
    _add_device(p)
    p.add_argument("--batch_size", type=int, default=64,
                   help="face chips per embedding-network batch (default: 64)")
    _add_cache_dir(p)
    _add_quiet(p)
    _add_json(p)
    p.set_defaults(func=_run_annotate)


def _run_annotate(args: argparse.Namespace) -> int:
    from facerec.annotate import annotate, print_annotate_summary, print_undo_summary, undo
    from facerec.recognition.embed import embedder_class, get_embedder

    if args.undo:
        _report(args, undo(args.processed_dir), print_undo_summary)
        return EXIT_OK
    from facerec.cropspec import read_processed_spec
    from facerec.recognition.backbones import backbone_for_crops

    name = args.backbone or backbone_for_crops(read_processed_spec(args.processed_dir))
    embedder = get_embedder(name, device=args.device, **(
        {"batch_size": args.batch_size} if "batch_size" in embedder_class(name).settings
        else {}))
    result = annotate(args.processed_dir, threshold=args.cluster_distance,
                      suggest_distance=args.suggest_distance, albums=args.albums,
                      reject=not args.keep_poor, min_score=args.min_score, min_face=args.min_face_size,
                      dry_run=args.dry_run, embedder=embedder, cache=args.cache_dir,
                      progress=not args.quiet)
    _report(args, result, print_annotate_summary)
    return EXIT_OK


# ------------------------------------------------------------------------------------------ split
def _add_split(sub: Any) -> None:
    p = sub.add_parser(
        "split",
        help="make dataset/{train,val,test}/<person>/ from the person folders",
        description="Split the person folders of PROCESSED into OUT/train, OUT/val and OUT/test "
        "(stratified per person; all crops of one photo, and near-duplicates, in the same split; "
        "stable as photos are added), and write OUT/labels.json and OUT/split.json. Files are "
        "hard-linked where possible, else copied; PROCESSED is left untouched.",
    )
    _main_input(p, "processed_dir", "PROCESSED",
                "folder with one subfolder of crops per person", default="processed")
    p.add_argument("--out", default="dataset", help="output folder (default: dataset)")
    p.add_argument("--val", type=float, default=0.1, help="fraction for validation")
    p.add_argument("--test", type=float, default=0.1, help="fraction for test")
    p.add_argument("--seed", type=int, default=42, help="hash seed of the assignment (default: 42)")
    p.add_argument("--force", action="store_true",
                   help="rebuild OUT even if it was made from other input")
    p.add_argument("--dedup", choices=("embedding", "none"), default="embedding",
                   help="keep near-duplicate photos together, found by face embedding "
                   "(embedding), or only crops of the very same photo (none)")
    p.add_argument("--copy", action="store_true", help="always copy (no hard links)")
    _add_cache_dir(p)
    _add_quiet(p)
    _add_json(p)
    p.set_defaults(func=_run_split)


def _run_split(args: argparse.Namespace) -> int:
    from facerec.split import print_split_summary, split_dataset

    result = split_dataset(args.processed_dir, args.out, val=args.val, test=args.test,
                           seed=args.seed, force=args.force, dedup=args.dedup,
                           link=not args.copy, cache=args.cache_dir, progress=not args.quiet)
    _report(args, result, print_split_summary)
    return EXIT_OK


# -------------------------------------------------------------------------------------- datastore
def _add_datastore(sub: Any) -> None:
    p = sub.add_parser(
        "datastore",
        help="versioned, verified datasets in a store: create, list, show, pull",
        description="Immutable, versioned, hash-verified copies of a dataset folder in a store: a "
        "local folder, s3://bucket/prefix, gs://bucket/prefix (any fsspec URL). Train on one "
        "with --data_path datastore://NAME/VERSION.",
    )
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", default=None, metavar="URL",
                       help="the store (default: $FACEREC_STORE, else ~/.facerec/datastores)")
    actions = p.add_subparsers(dest="datastore_command", metavar="ACTION")
    actions.required = True
    c = actions.add_parser("create", parents=[store], help="upload a folder as the next version",
                           description="Upload SOURCE as a new immutable version of NAME. Files "
                           "already in the store are not uploaded again; rerun an interrupted "
                           "upload to resume it.")
    _main_input(c, "source", "SOURCE", "folder to upload", default="dataset", old="--source")
    c.add_argument("--name", required=True, help="datastore name, e.g. face_detection")
    _add_quiet(c)
    c.set_defaults(func=_run_datastore_create)
    ls = actions.add_parser("list", parents=[store], help="table of datastores and versions")
    ls.add_argument("name", nargs="?", help="only this datastore")
    _add_json(ls)
    ls.set_defaults(func=_run_datastore_list)
    s = actions.add_parser("show", parents=[store], help="one version and its files")
    s.add_argument("ref", metavar="NAME[:VERSION]",
                   help="NAME:VERSION or datastore://NAME/VERSION (default version: the latest "
                   "succeeded)")
    s.add_argument("--files", action="store_true", help="list every file")
    _add_json(s)
    s.set_defaults(func=_run_datastore_show)
    pl = actions.add_parser("pull", parents=[store], help="download a version, verifying every hash")
    pl.add_argument("ref", metavar="NAME[:VERSION]",
                    help="NAME:VERSION or datastore://NAME/VERSION (default version: the latest "
                    "succeeded)")
    pl.add_argument("--out", metavar="DIR", help="destination folder (required)")
    _hidden_alias(pl, "--to", "out")
    pl.set_defaults(usage_error=pl.error)
    _add_quiet(pl)
    pl.set_defaults(func=_run_datastore_pull)


def _run_datastore_create(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, print_created

    print_created(Datastore(args.store).create(args.name, args.source, progress=not args.quiet))
    return EXIT_OK


def _run_datastore_list(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, print_versions

    ds = Datastore(args.store)
    _report(args, ds.list(args.name), lambda versions: print_versions(versions, ds.url))
    return EXIT_OK


def _run_datastore_show(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, parse_ref, print_version

    _report(args, Datastore(args.store).show(*parse_ref(args.ref)),
            lambda info: print_version(info, all_files=args.files))
    return EXIT_OK


def _run_datastore_pull(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, parse_ref

    if not args.out:
        args.usage_error("the following arguments are required: --out")
    ds = Datastore(args.store)
    info = ds.show(*parse_ref(args.ref))
    path = ds.pull(info.name, info.version, to=args.out, progress=not args.quiet)
    print(f"Pulled {info.ref} into {path} ({info.num_files} files, every sha256 verified)")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- launch
def _add_launch(sub: Any) -> None:
    p = sub.add_parser(
        "launch",
        help="run train or sweep on cloud GPUs with SkyPilot",
        usage="facerec launch [flags] -- train|sweep [their flags]",
        description="Write a SkyPilot task running a facerec train or sweep command (everything "
        "after --) and launch it with `sky launch` (or `sky jobs launch` with --managed). Needs "
        'pip install "facerec[cloud]"; --dry_run only prints the task.',
    )
    p.add_argument("--accelerators", metavar="TYPE[:COUNT]",
                   help="GPUs per node, e.g. T4:1, A100:8 (default: none, a CPU machine)")
    _hidden_alias(p, "--gpus", "accelerators")
    p.add_argument("--use_spot", action="store_true", help="spot/preemptible machines")
    p.add_argument("--num_nodes", type=int, help="number of machines (default: 1)")
    p.add_argument("--datastore", metavar="NAME[:VERSION]",
                   help="train on this datastore (adds --data_path datastore://NAME/VERSION)")
    p.add_argument("--store", metavar="URL",
                   help="the datastore's store, mounted on the machines (default: $FACEREC_STORE)")
    p.add_argument("--cloud", help="aws, gcp, azure, kubernetes, ... (default: SkyPilot chooses)")
    p.add_argument("--name", help="cluster / job name (default: facerec-train or facerec-sweep)")
    p.add_argument("--pip", metavar="SPEC",
                   help="what setup installs (default: this facerec source checkout, synced as "
                   "the workdir)")
    p.add_argument("--managed", action="store_true",
                   help="a managed job (sky jobs launch): spot recovery, machines torn down after")
    p.add_argument("--out", metavar="PATH", help="task file (default: runs/launch/NAME.yaml)")
    _hidden_alias(p, "--yaml", "out")
    p.add_argument("--dry_run", action="store_true", help="print the task YAML and stop")
    _hidden_alias(p, "--dryrun", "dry_run", action="store_true")
    p.add_argument("--yes", "-y", action="store_true", help="no confirmation prompt from sky")
    p.add_argument("--down", action="store_true", help="tear the cluster down when the job ends")
    p.add_argument("facerec_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the facerec command: train ... or sweep ...")
    p.set_defaults(func=_run_launch)


def _run_launch(args: argparse.Namespace) -> int:
    from facerec.training.launch import build_task, run_sky, write_yaml

    plan = build_task(args.facerec_command, accelerators=args.accelerators, use_spot=args.use_spot,
                      num_nodes=args.num_nodes, datastore=args.datastore, store=args.store,
                      cloud=args.cloud, name=args.name, pip=args.pip, managed=args.managed)
    for note in plan.notes:
        print(f"facerec launch: note: {note}", file=sys.stderr)
    if args.dry_run:
        print(plan.yaml, end="")
        return EXIT_OK
    path = write_yaml(plan, args.out)
    print(f"facerec launch: wrote {path}", file=sys.stderr)
    return run_sky(path, plan.name, managed=args.managed, yes=args.yes, down=args.down)


# ------------------------------------------------------------------------------------------ train
def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a face classifier on a dataset from `facerec split`",
        description="Train a face classifier on DATA/{train,val,test}/<person>/ + labels.json "
        "with PyTorch Lightning. Writes OUT/<name>/version_N/ (checkpoints, hparams.yaml, "
        f"TensorBoard events). The default backbone, {DEFAULT_BACKBONE}, is a frozen face "
        "embedding (computed once per crop and cached): only the head trains, in seconds on a "
        "CPU. Any timm model name (resnet18, resnet200d, efficientnet_b0, ...) is fine-tuned end "
        "to end. The checkpoint holds a threshold calibrated on the data, below which a face is "
        "'unknown'. Prints one line per epoch, then the result and the next step.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="YAML of train options (field names, e.g. 'max_epochs: 10'), or a run's "
                   "hparams.yaml; flags given on the command line win")
    add_train_arguments(p)
    _add_json(p, "the result (best checkpoint, metrics, threshold...)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from facerec.training import train
    from facerec.training.config import read_config_file

    base = read_config_file(args.config) if args.config else None
    with _stdout_for(args):
        result = train(config_from_args(args, base))
    _report(args, result, lambda r: _print_next_predict(r.best_checkpoint, r.data_path))
    return EXIT_OK


def _print_next_predict(checkpoint: str | None, data_path: str | None) -> None:
    """The next step after a training: a prediction with its checkpoint, typed as it works here,
    on a crop of the dataset's test split (else val, else train), so that it runs as printed."""
    from pathlib import Path

    from facerec.hints import command_line

    if not checkpoint:
        return
    example = "PHOTO"
    for split in ("test", "val", "train"):
        found = sorted(Path(data_path or "").glob(f"{split}/*/*")) if data_path else []
        if found:
            example = str(found[0])
            break
    print("Next: " + command_line("predict", example, "--checkpoint_path", checkpoint))


# ------------------------------------------------------------------------------------------ sweep
def _add_sweep(sub: Any) -> None:
    from facerec.training.sweep import add_sweep_arguments

    p = sub.add_parser(
        "sweep",
        help="train a grid of models (hyperparameter sweep) and pick the best",
        description="Train one model per combination of the values given to the train flags, "
        "through an Optuna study; any `facerec train` flag takes a value or a sweep: "
        "uniform(a,b,n) (n values drawn in [a,b], seeded by --seed), loguniform(a,b,n), "
        "range(a,b,step), or a list \"['resnet18','resnet200d']\". Artifacts go to "
        "RUNS_DIR/NAME/NAME-expK/version_0/. Rerun the same command to resume; run it on other "
        "machines with the same --storage to share the work.",
        epilog="example (4 experiments): facerec sweep --max_epochs 10 --learning_rate "
        "\"uniform(0,0.0001,2)\" --backbone \"['resnet18','resnet200d']\"",
    )
    p.set_defaults(func=_run_sweep, sweep_flags=add_sweep_arguments(p))
    _add_json(p, "every trial and the best")


def _run_sweep(args: argparse.Namespace) -> int:
    from facerec.training.sweep import print_sweep_table, run_sweep, spec_from_args

    with _stdout_for(args):
        result = run_sweep(spec_from_args(args, args.sweep_flags), name=args.name,
                           root=args.runs_dir, storage=args.storage, parallel=args.parallel,
                           max_trials=args.max_trials, prune=not args.no_prune)
    _report(args, result, print_sweep_table, best=result.best)
    return EXIT_OK if result.best is not None else EXIT_FAILED


# ---------------------------------------------------------------------------------------- predict
def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="name the faces in photos, crops or folders with a trained checkpoint",
        description="Detect every face in each image (a face crop, a full photo or a folder, "
        "searched recursively), crop it as `facerec detect` does and classify it. One face: "
        "'Predicted class: NAME'; several: one line per face with its box and confidence. NAME is "
        "'unknown' below the checkpoint's threshold. A small image (both sides <= 400 px) in "
        "which no face is found is read as an already cropped face if it looks like one. "
        "Unreadable images in a folder are reported and skipped (exit status 3); a bad "
        "checkpoint, a missing path or a single unreadable image is one line (exit status 2).",
    )
    _main_input(p, "image_path", "PATH", "image file(s) or folder(s), or video file(s) "
                "(.mp4 .mov .mkv .webm ...)", nargs="*", old="--image_path")
    p.add_argument("--checkpoint_path", required=True,
                   help="checkpoint from `facerec train` (.ckpt) or model from `facerec export` (.onnx)")
    p.add_argument("--source", metavar="URL",
                   help="a live video instead of files: webcam index (0) or device, rtsp:// or "
                   "http:// URL (runs until the stream ends or Ctrl-C)")
    p.add_argument("--fps", type=float, default=5.0,
                   help="videos: frames per second to analyse (default: 5)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="videos: stop after this many seconds of video")
    p.add_argument("--embed_every", type=float, default=1.0, metavar="SECONDS",
                   help="videos: a face followed by its box alone (one face, clearly the same "
                   "place as a frame before) is recognised anew at least this often (0: every "
                   "frame)")
    p.add_argument("--threshold", type=float, default=None,
                   help="unknown below this confidence (default: the checkpoint's; -1: never unknown)")
    p.add_argument("--json", action="store_true",
                   help='print [{"image": PATH, "faces": [{"box": [x, y, w, h], "label": NAME, '
                   '"confidence": C, ...}], "error": null}] instead of text')
    p.add_argument("--csv", metavar="FILE", help="also write one row per face to FILE")
    p.add_argument("--save_annotated", metavar="DIR",
                   help="write copies of the images with boxes and names drawn to DIR (a video: "
                   "a video file, e.g. out.mp4)")
    _add_runtime(p)
    p.add_argument("--crops", action="store_true",
                   help="every image is one face crop: no detection")
    _add_device(p)
    p.add_argument("--batch_size", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--timing", action="store_true",
                   help="print the time spent loading, detecting, embedding and classifying")
    _add_quiet(p)
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from facerec.inference.predict import run_predict
    from facerec.inference.video import is_video, run_video

    paths = list(args.image_path or []) + ([args.source] if args.source else [])
    if not paths:
        raise InvalidInputError("give PATH (photos, folders or videos) or --source URL")
    videos = [p for p in args.image_path or [] if is_video(p)]
    if args.source or videos:
        if len(videos) != len(args.image_path or []):
            raise InvalidInputError("give videos and photos in separate calls")
        if args.csv or args.crops:
            raise InvalidInputError(f"{'--csv' if args.csv else '--crops'} is for photos; "
                                    "videos report tracks (text or --json)")
        run_video(args.checkpoint_path, paths, fps=args.fps, threshold=args.threshold,
                  device=args.device, runtime=args.runtime, as_json=args.json,
                  annotate_path=args.save_annotated, batch_size=min(args.batch_size, 8),
                  max_seconds=args.duration, progress=not args.quiet, timing=args.timing,
                  embed_every=args.embed_every)
        return EXIT_OK
    results = run_predict(args.checkpoint_path, args.image_path, threshold=args.threshold,
                          device=args.device, runtime=args.runtime, as_json=args.json,
                          csv_path=args.csv, annotate_dir=args.save_annotated,
                          mode="crops" if args.crops else "auto", batch_size=args.batch_size,
                          progress=not args.quiet, timing=args.timing)
    return EXIT_PARTIAL if any(r.error for r in results) else EXIT_OK


# ------------------------------------------------------------------------- enroll, forget, verify
def _add_enroll(sub: Any) -> None:
    p = sub.add_parser(
        "enroll",
        help="add a person (or more photos of one) to a checkpoint without retraining",
        description="Detect the face in each photo (the largest; a group photo of similar-sized "
        "faces is refused unless --pick says which), embed it with the checkpoint's backbone, add "
        "or extend the person's prototype, recalibrate the unknown threshold (each person held "
        "out in turn, as in training) and write a new checkpoint next to the old one, printed as "
        "'Saved checkpoint: PATH'. The old checkpoint is never changed.",
    )
    p.add_argument("--checkpoint_path", required=True, help="checkpoint (.ckpt) to start from")
    p.add_argument("--name", required=True, help="the person's name (a new or a known person)")
    p.add_argument("photos", nargs="+", metavar="PHOTO",
                   help="photos, face crops or folders of them (searched recursively)")
    p.add_argument("--pick", choices=("largest", "center"),
                   help="in photos with several faces take the largest / the one nearest the "
                   "centre (default: refuse photos whose faces are of similar size)")
    p.add_argument("--out", help="the new checkpoint's path (default: <old stem>-enroll-NAME.ckpt "
                   "beside the old one; never overwritten)")
    p.add_argument("--force", action="store_true",
                   help="enroll even faces the model already recognises as someone else, and "
                   "accept a recalibration that makes more than 1%% of the other people's stored "
                   "faces unknown (both refused by default)")
    _add_device(p)
    _add_json(p, "the result")
    p.set_defaults(func=_run_enroll)


def _run_enroll(args: argparse.Namespace) -> int:
    from facerec.inference.enroll import enroll

    r = enroll(args.checkpoint_path, args.name, args.photos, pick=args.pick, out=args.out,
               device=args.device, force=args.force)
    _print_membership(r, args.json)
    return EXIT_OK


def _print_membership(r, as_json: bool) -> None:
    from facerec.inference.enroll import print_enroll_result

    if as_json:
        import json

        print(json.dumps(r.to_dict(), indent=1))
        print(f"Saved checkpoint: {r.checkpoint}", file=sys.stderr)
    else:
        print_enroll_result(r)


def _add_forget(sub: Any) -> None:
    p = sub.add_parser(
        "forget",
        help="remove a person from a checkpoint without retraining",
        description="Remove the person's prototype, class and stored features, recalibrate the "
        "unknown threshold and write a new checkpoint next to the old one ('Saved checkpoint: "
        "PATH'). The old checkpoint is never changed.",
    )
    p.add_argument("--checkpoint_path", required=True, help="checkpoint (.ckpt) to start from")
    p.add_argument("--name", required=True, help="the person to remove")
    p.add_argument("--out", help="the new checkpoint's path (default: <old stem>-forget-NAME.ckpt)")
    _add_json(p, "the result")
    p.set_defaults(func=_run_forget)


def _run_forget(args: argparse.Namespace) -> int:
    from facerec.inference.enroll import forget

    r = forget(args.checkpoint_path, args.name, out=args.out)
    _print_membership(r, args.json)
    return EXIT_OK


def _add_verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="same person or not (two photos), or rank the enrolled people (one photo + checkpoint)",
        description="1:1: 'Same person: yes|no (distance D <= threshold T)', the cosine distance "
        "between the two faces' features. Without a checkpoint: the --backbone embedder and its "
        "default threshold (calibrated on lfw-dev pairs, see docs/enroll-verify.md); with one: its "
        "backbone and a threshold calibrated on its own faces. 1:N (one photo and "
        "--checkpoint_path): every enrolled person ranked by distance, with the checkpoint's "
        "unknown threshold.",
    )
    p.add_argument("photos", nargs="*", metavar="PHOTO", help="two photos (1:1) or one (1:N)")
    p.add_argument("--pairs", metavar="FILE",
                   help="a CSV/TSV of path_a,path_b[,same] pairs (paths relative to the file): "
                   "each photo embedded once; with labels, the accuracy at the threshold, 10-fold "
                   "accuracy and TAR at FAR 1%% (exit 3 when a pair has a photo without a face)")
    p.add_argument("--checkpoint_path", help="use this checkpoint's backbone and calibration")
    p.add_argument("--max_distance", type=float, default=None,
                   help="same person at or below this cosine distance (default: calibrated, see "
                   "above)")
    _hidden_alias(p, "--threshold", "max_distance", type=float)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help="the face embedder, when there is no checkpoint")
    p.add_argument("--pick", choices=("largest", "center"),
                   help="in photos with several faces take the largest / the one nearest the centre")
    p.add_argument("--top", type=int, default=10, help="1:N: people listed (default: 10)")
    _add_json(p, "the result")
    _add_device(p)
    p.set_defaults(func=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from facerec.inference.verify import run_verify

    result = run_verify(args.photos, checkpoint=args.checkpoint_path, threshold=args.max_distance,
                        backbone=args.backbone, pick=args.pick, as_json=args.json, top=args.top,
                        device=args.device, pairs=args.pairs)
    if args.pairs is not None and result["summary"]["failed"]:
        return EXIT_PARTIAL
    return EXIT_OK


# --------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, macro-F1, per-person precision/recall, confusion matrix, open-set rates",
        description="Predict every image of DATA_PATH/<person>/ and compare with the folder names: "
        "accuracy, macro-F1, per-person precision and recall, the confusion matrix and the "
        "misclassified files. With --unknown_dir (photos of people not in the dataset): FPIR "
        "(impostors accepted as someone) and FNIR (genuine faces rejected or misidentified) at the "
        "threshold, and TPIR at FPIR = 1%.",
    )
    _main_input(p, "data_path", "DATA", "folder with one subfolder of images per person",
                default="dataset/test", old="--data_path")
    p.add_argument("--checkpoint_path", required=True, help="checkpoint (.ckpt) or exported .onnx")
    p.add_argument("--unknown_dir", metavar="DIR",
                   help="images of people the model was not trained on (searched recursively)")
    p.add_argument("--threshold", type=float, default=None,
                   help="unknown threshold (default: the checkpoint's)")
    p.add_argument("--input", choices=("auto", "crops", "photos"), default="auto",
                   help="crops: every image is a face crop; photos: detect faces first; auto: "
                   "crops for a `facerec split` dataset, else photos")
    p.add_argument("--pick", choices=("largest", "center"), default="largest",
                   help="the face a photo with several faces is labelled by (default: largest)")
    _add_json(p, "the report")
    p.add_argument("--out", metavar="DIR",
                   help="write report.json, confusion_matrix.png, predictions.csv, misclassified.csv")
    _hidden_alias(p, "--report", "out")
    _add_runtime(p)
    _add_device(p)
    p.add_argument("--batch_size", type=int, default=16, help="images per batch (default: 16)")
    _add_quiet(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from facerec.inference.evaluate import evaluate, print_report, write_report

    report = evaluate(args.checkpoint_path, args.data_path, unknown_dir=args.unknown_dir,
                      threshold=args.threshold, input=args.input, pick=args.pick,
                      runtime=args.runtime, device=args.device, batch_size=args.batch_size,
                      progress=not args.quiet)
    if args.out:
        write_report(report, args.out)
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=1))
    else:
        print_report(report)
        if args.out:
            print(f"Report written to {args.out}/")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- export
def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (for onnxruntime)",
        description="Export a checkpoint to ONNX: the whole classifier for timm backbones; the "
        "whole dlib_face classifier from the aligned face chip on (dlib's face ResNet included; dlib "
        "only cuts the chip). Labels, threshold "
        "and preprocessing travel in the model's metadata, so `facerec predict --checkpoint_path "
        "model.onnx` runs it on onnxruntime. The export is checked against torch.",
    )
    p.add_argument("--checkpoint_path", required=True, help="checkpoint from `facerec train`")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="onnx (the only one)")
    p.add_argument("--out", default=None,
                   help="output file (default: the checkpoint's path with .onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--no_verify", action="store_true",
                   help="do not compare onnxruntime's outputs with torch's")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from facerec.recognition.export import export_onnx, print_export_summary

    print_export_summary(export_onnx(args.checkpoint_path, args.out, opset=args.opset,
                                     verify=not args.no_verify))
    return EXIT_OK


# -------------------------------------------------------------------------------------------- run
def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="the whole pipeline: photos -> trained model and its report",
        description="detect -> annotate -> split -> train -> evaluate, inside OUT (the work "
        "folder). PHOTOS holds one subfolder per person (albums) or loose photos: those are "
        "clustered into person_01, person_02, ... and the run stops before training with a table "
        "of the clusters, so that you name them (rename the folders, or `facerec serve OUT`); the "
        "next run trains. A rerun with nothing changed (the same crops in the same person "
        "folders, the same options) trains nothing and prints the model it made last time; "
        "--retrain trains again. Takes every detect and train option.",
    )
    p.add_argument("photos", metavar="PHOTOS",
                   help="folder of photos: one subfolder per person (albums), or loose photos")
    p.add_argument("--out", default="facerec-work", metavar="WORK",
                   help="the work folder: processed/, dataset/, runs/, report/")
    _hidden_alias(p, "--work", "out")
    p.add_argument("--retrain", action="store_true",
                   help="train again even when nothing changed since the last run")
    p.add_argument("--train_unnamed", action="store_true",
                   help="train even while some clusters are still named person_NN")
    p.add_argument("--val", type=float, default=0.1, help="validation fraction per person")
    p.add_argument("--test", type=float, default=0.1, help="test fraction per person")
    _add_device(p)
    _add_quiet(p)
    _add_json(p)
    add_detect_options(p.add_argument_group("detect (as `facerec detect`)"),
                       batch_flag="--detect_batch_size")
    # every train option but those run sets itself (data, run folder, resume, progress)
    add_train_arguments(p, skip=("data_path", "runs_dir", "ckpt_path", "progress"))
    p.set_defaults(func=_run_run)


def _run_run(args: argparse.Namespace) -> int:
    from facerec.pipeline import run_pipeline

    with _stdout_for(args):
        result = run_pipeline(args.photos, args.out, train=config_from_args(args),
                              detect=detect_settings(args), val=args.val, test=args.test,
                              device=args.device, progress=not args.quiet, retrain=args.retrain,
                              train_unnamed=args.train_unnamed)
    _report(args, result, lambda r: None)
    return EXIT_OK


# ------------------------------------------------------------------------------------------ serve
def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="label, train and recognise in the browser, and a REST API",
        description="Serve WORK (a `facerec run` work folder, or any folder with processed/): "
        "the People page (name clusters, merge, move crops, undo), the Train page and the "
        "Recognise page, and the REST API (OpenAPI docs at /docs). Binds 127.0.0.1; any other "
        "--host requires a token (generated and printed once when not given), sent as "
        "'Authorization: Bearer TOKEN' or by opening the printed ?token= link.",
    )
    _main_input(p, "work_dir", "WORK", "work folder with processed/ (`facerec run`'s --out)",
                default="facerec-work")
    p.add_argument("--checkpoint_path", default=None,
                   help="model to recognise with (default: the newest in WORK/runs)")
    p.add_argument("--photos", default=None, metavar="DIR",
                   help="the photos folder detect read, to show each crop's source photo")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free)")
    p.add_argument("--token", default=None,
                   help="require this token (default: $FACEREC_TOKEN; generated for a non-loopback "
                   "--host)")
    _add_device(p)
    p.add_argument("--max_upload_mb", type=int, default=20, help="largest image upload (default: 20)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        from facerec.serve import ServeConfig, run_server
    except ImportError as exc:
        raise UnsupportedError(f"facerec serve needs the serve extra ({exc.name} is missing): "
                               "pip install 'facerec[serve]'") from None
    if args.photos and not Path(args.photos).is_dir():
        raise NotFoundError(f"photos folder not found: {args.photos}")
    config = ServeConfig(work_dir=Path(args.work_dir),
                         checkpoint=Path(args.checkpoint_path) if args.checkpoint_path else None,
                         photos_dir=Path(args.photos) if args.photos else None,
                         token=args.token, device=args.device, host=args.host,
                         max_upload_bytes=args.max_upload_mb * 1024 * 1024)
    try:
        run_server(config, port=args.port)
    except OSError as exc:  # e.g. an unreadable work folder while starting: one line, exit 2
        raise FacerecError(f"{exc.strerror or exc}: {exc.filename or args.work_dir}") from None
    return EXIT_OK


# ------------------------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """Usage errors exit with EXIT_USAGE (argparse's own 2 is facerec's bad-input status) and
    print the usage of the command they are about (an unknown flag of ``facerec predict``: predict's
    usage, not the list of commands); every default is shown in --help as "(default: X)"."""

    def __init__(self, *args, strict: bool = True, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self._strict = strict  # a command's parser: arguments it does not know are its error
        self.subcommands: dict[str, argparse.ArgumentParser] = {}

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(**kwargs)
        self.subcommands = action.choices  # name -> parser, filled by add_parser
        return action

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for key in [k for k in vars(namespace) if k.startswith("_input_")]:
            dest = key[len("_input_"):]
            default, nargs = getattr(namespace, key)
            given = [getattr(namespace, name) for name in (dest, f"{dest}_flag")
                     if hasattr(namespace, name)]
            if nargs in ("*", "+"):
                value = [v for values in given for v in values] or list(default or [])
            else:
                value = given[0] if given else default
            for name in (key, f"{dest}_flag"):
                if hasattr(namespace, name):
                    delattr(namespace, name)
            setattr(namespace, dest, value)
        if extras and self._strict:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


class _DefaultsFormatter(argparse.HelpFormatter):
    """Wraps at spaces only (a path such as docs/enroll-verify.md is never split at its hyphen);
    a text of several lines (the exit-status epilog) keeps its lines."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False,
                             break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines() or [""]:
            body = " ".join(line.split())
            lead = indent + " " * (len(line) - len(line.lstrip(" ")))
            hang = lead + "     " if line.startswith(" ") else lead
            out.append(textwrap.fill(body, width, initial_indent=lead, subsequent_indent=hang,
                                     break_on_hyphens=False, break_long_words=False)
                       if body else "")
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("(default" in text or default in (None, False, argparse.SUPPRESS)
                or not action.option_strings and action.nargs in ("+", "*")):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="facerec", strict=False,
        description="Build your own face-recognition model from your own photos.",
        epilog="How the commands name things: docs/cli.md.\n\n" + _exit_table(),
    )
    parser.add_argument("--version", action="version", version=f"facerec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_run, _add_detect, _add_annotate, _add_split, _add_datastore, _add_train,
                _add_sweep, _add_predict, _add_enroll, _add_forget, _add_verify, _add_evaluate,
                _add_export, _add_launch, _add_serve):
        add(sub)
    for command in command_parsers(parser).values():  # every --help ends with the exit statuses
        command.epilog = (command.epilog + "\n\n" if command.epilog else "") + _exit_table()
    return parser


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name ("predict", "datastore pull", ...), the parents of
    subcommands (datastore) included."""
    found: dict[str, argparse.ArgumentParser] = {}
    for child in getattr(parser, "subcommands", {}).values():
        found[child.prog.removeprefix("facerec ")] = child
        found.update(command_parsers(child))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    # Hidden: --debug anywhere on the line (or FACEREC_DEBUG=1) shows the traceback instead of the
    # one-line message.
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FACEREC_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        if hasattr(args, "threads"):  # the commands that run networks (they take --device)
            from facerec.threads import apply_thread_policy

            plan = apply_thread_policy(args.threads)
            if getattr(args, "verbose", False):
                print(f"facerec {args.command}: {plan.describe()}", file=sys.stderr)
        return int(args.func(args) or 0)
    except FacerecError as exc:
        if debug:
            raise
        print(f"facerec {args.command}: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except ModuleNotFoundError as exc:  # an optional dependency (extra) is not installed
        from facerec.extras import missing_extra

        error = missing_extra(exc, f"facerec {args.command}")
        if debug or error is None:
            raise
        print(f"facerec {args.command}: error: {error}", file=sys.stderr)
        return exit_status(error)
    except OSError as exc:  # read-only or full disk, permissions, too many open files...
        if debug:
            raise
        print(f"facerec {args.command}: error: {oserror_message(exc)}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print(f"facerec {args.command}: interrupted (rerun to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_script(command: str, argv: Sequence[str], script: str, after=None) -> int:
    """Run ``facerec COMMAND ARGV`` for one of the original tutorial's scripts (its file: SCRIPT:
    ``python process_raw_data.py``...); ``after(status)`` runs when it is done. A dependency that
    this Python lacks (the system Python instead of the project's virtualenv) is one line on
    stderr that says how to run the script, exit status 2, never a traceback."""
    import importlib.util

    from facerec.hints import SCRIPT_NEEDS, missing_dependency_line

    asks_help = any(a in ("-h", "--help") for a in argv)  # --help needs no dependency
    for module in () if asks_help else SCRIPT_NEEDS.get(command, ()):
        if importlib.util.find_spec(module) is None:
            print(missing_dependency_line(script, module), file=sys.stderr)
            return 2
    try:
        status = main([command, *argv])
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if not top or top == "facerec":  # facerec's own module missing: a bug, shown as it is
            raise
        print(missing_dependency_line(script, top), file=sys.stderr)
        return 2
    if after is not None:
        after(status)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
