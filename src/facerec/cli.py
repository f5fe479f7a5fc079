"""The ``facerec`` command line: parses arguments and calls the library. No logic lives here.

Each subcommand has an ``_add_<name>(subparsers)`` function that declares its flags and binds
``func`` to a small runner that calls the library API.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from facerec import __version__
from facerec.errors import FacerecError


# ----------------------------------------------------------------------------------------- detect
def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="find and crop every face in a folder of photos",
        description="Detect every face in RAW_DIR (recursively) with MTCNN, save crops to OUT and "
        "write OUT/manifest.jsonl. Resumable: a rerun skips photos already done.",
    )
    p.add_argument("raw_dir", nargs="?", default="raw", help="folder of photos (default: raw)")
    p.add_argument("--out", default="processed", help="output folder (default: processed)")
    p.add_argument("--size", type=int, default=160, help="crop side in pixels (default: 160)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="context added around the face box, as a fraction of its size (default: 0.2)")
    p.add_argument("--align", action="store_true",
                   help="5-point similarity-aligned crops instead of box crops")
    p.add_argument("--min_face_size", type=int, default=20, help="smallest face to find, in pixels")
    p.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.7),
                   metavar=("P", "R", "O"), help="P-Net, R-Net, O-Net score thresholds")
    p.add_argument("--min_score", type=float, default=0.0,
                   help="drop faces whose final score is below this (default: keep all)")
    p.add_argument("--max_side", type=int, default=1600,
                   help="detect on a copy downscaled to this longest side (0: never downscale)")
    p.add_argument("--batch_size", type=int, default=8, help="photos per detector batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_detect)


def _run_detect(args: argparse.Namespace) -> int:
    from facerec.detect import FaceDetector, detect_folder, print_detect_summary

    detector = FaceDetector(device=args.device, min_face_size=args.min_face_size,
                            thresholds=tuple(args.thresholds), max_side=args.max_side or None)
    summary = detect_folder(args.raw_dir, args.out, detector=detector, size=args.size,
                            margin=args.margin, align=args.align, min_score=args.min_score,
                            batch_size=args.batch_size, progress=not args.quiet)
    print_detect_summary(summary)
    return 0


# -------------------------------------------------------------------------------------- datastore
def _add_datastore(sub: argparse._SubParsersAction) -> None:
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
    c.add_argument("--name", required=True, help="datastore name, e.g. face_detection")
    c.add_argument("--source", default="dataset", help="folder to upload (default: dataset)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_run_datastore_create)
    ls = actions.add_parser("list", parents=[store], help="table of datastores and versions")
    ls.add_argument("name", nargs="?", help="only this datastore")
    ls.set_defaults(func=_run_datastore_list)
    s = actions.add_parser("show", parents=[store], help="one version and its files")
    s.add_argument("ref", metavar="NAME[:VERSION]", help="default version: the latest succeeded")
    s.add_argument("--files", action="store_true", help="list every file")
    s.set_defaults(func=_run_datastore_show)
    pl = actions.add_parser("pull", parents=[store], help="download a version, verifying every hash")
    pl.add_argument("ref", metavar="NAME[:VERSION]", help="default version: the latest succeeded")
    pl.add_argument("--to", required=True, metavar="DIR", help="destination folder")
    pl.add_argument("--quiet", action="store_true", help="no progress bar")
    pl.set_defaults(func=_run_datastore_pull)


def _run_datastore_create(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, print_created

    print_created(Datastore(args.store).create(args.name, args.source, progress=not args.quiet))
    return 0


def _run_datastore_list(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, print_versions

    ds = Datastore(args.store)
    print_versions(ds.list(args.name), ds.url)
    return 0


def _run_datastore_show(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, parse_ref, print_version

    print_version(Datastore(args.store).show(*parse_ref(args.ref)), all_files=args.files)
    return 0


def _run_datastore_pull(args: argparse.Namespace) -> int:
    from facerec.datastore import Datastore, parse_ref

    ds = Datastore(args.store)
    info = ds.show(*parse_ref(args.ref))
    path = ds.pull(info.name, info.version, to=args.to, progress=not args.quiet)
    print(f"Pulled {info.ref} into {path} ({info.num_files} files, every sha256 verified)")
    return 0


# ----------------------------------------------------------------------------------------- launch
def _add_launch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="run train or sweep on cloud GPUs with SkyPilot",
        usage="facerec launch [flags] -- train|sweep [their flags]",
        description="Write a SkyPilot task running a facerec train or sweep command (everything "
        "after --) and launch it with `sky launch` (or `sky jobs launch` with --managed). Needs "
        'pip install "facerec[cloud]"; --dryrun only prints the task.',
    )
    p.add_argument("--gpus", metavar="TYPE[:COUNT]", help="GPUs per node, e.g. T4:1, A100:8")
    p.add_argument("--use_spot", action="store_true", help="spot/preemptible machines")
    p.add_argument("--num_nodes", type=int, help="number of machines (default: 1)")
    p.add_argument("--datastore", metavar="NAME[:VERSION]",
                   help="train on this datastore (adds --data_path datastore://NAME/VERSION)")
    p.add_argument("--store", metavar="URL",
                   help="the datastore's store, mounted on the machines (default: $FACEREC_STORE)")
    p.add_argument("--cloud", help="aws, gcp, azure, kubernetes, ... (default: SkyPilot chooses)")
    p.add_argument("--name", help="cluster / job name (default: facerec-train or facerec-sweep)")
    p.add_argument("--pip", metavar="SPEC", help="what setup installs (default: facerec==VERSION)")
    p.add_argument("--managed", action="store_true",
                   help="a managed job (sky jobs launch): spot recovery, machines torn down after")
    p.add_argument("--yaml", metavar="PATH", help="task file (default: runs/launch/NAME.yaml)")
    p.add_argument("--dryrun", action="store_true", help="print the task YAML and stop")
    p.add_argument("--yes", "-y", action="store_true", help="no confirmation prompt from sky")
    p.add_argument("--down", action="store_true", help="tear the cluster down when the job ends")
    p.add_argument("facerec_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the facerec command: train ... or sweep ...")
    p.set_defaults(func=_run_launch)


def _run_launch(args: argparse.Namespace) -> int:
    from facerec.launch import build_task, run_sky, write_yaml

    plan = build_task(args.facerec_command, gpus=args.gpus, use_spot=args.use_spot,
                      num_nodes=args.num_nodes, datastore=args.datastore, store=args.store,
                      cloud=args.cloud, name=args.name, pip=args.pip, managed=args.managed)
    for note in plan.notes:
        print(f"facerec launch: note: {note}", file=sys.stderr)
    if args.dryrun:
        print(plan.yaml, end="")
        return 0
    path = write_yaml(plan, args.yaml)
    print(f"facerec launch: wrote {path}", file=sys.stderr)
    return run_sky(path, plan.name, managed=args.managed, yes=args.yes, down=args.down)


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerec",
        description="Build your own face-recognition model from your own photos.",
    )
    parser.add_argument("--version", action="version", version=f"facerec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_detect, _add_datastore, _add_launch):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FacerecError as exc:
        print(f"facerec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"facerec {args.command}: interrupted (rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
