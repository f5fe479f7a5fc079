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


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerec",
        description="Build your own face-recognition model from your own photos.",
    )
    parser.add_argument("--version", action="version", version=f"facerec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_detect,):
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
