#!/usr/bin/env python
"""Seed compatibility: the original tutorial's first step, now ``facerec detect``.

    python process_raw_data.py                 # raw/ -> processed/
    python process_raw_data.py photos/ --out faces/
"""

import sys
from pathlib import Path

try:
    from facerec.cli import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from facerec.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    status = main(["detect", *argv])
    if status == 0:
        out = argv[argv.index("--out") + 1] if "--out" in argv else "processed"
        print(
            f"\nNext step: sort the crops in {out}/ into one folder per person "
            f"({out}/<person>/...) and remove the crops that are not faces,\n"
            f"or let facerec do the first pass: facerec annotate {out}"
        )
    sys.exit(status)
