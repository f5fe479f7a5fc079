#!/usr/bin/env python
"""Seed-compatible entry point: ``python create_training_dataset.py`` splits ``processed/`` into
``dataset/{train,val,test}/<person>/`` and writes ``dataset/labels.json``.

Same as ``facerec split processed --out dataset``; any extra arguments are passed on, e.g.
``python create_training_dataset.py --val 0.15 --test 0.15 --seed 1`` or
``python create_training_dataset.py my_crops --out my_dataset``. Run it with the project's
virtualenv (``.venv/bin/python create_training_dataset.py``); with another Python it says so in
one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from facerec.cli import run_script
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from facerec.cli import run_script

if __name__ == "__main__":
    args = sys.argv[1:]
    source = [] if args and not args[0].startswith("-") else ["processed"]
    # argparse keeps the last --out, so the default can go first
    sys.exit(run_script("split", [*source, "--out", "dataset", *args], __file__))
