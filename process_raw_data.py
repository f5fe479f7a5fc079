#!/usr/bin/env python
"""Seed compatibility: the original tutorial's first step, now ``facerec detect``.

    python process_raw_data.py                 # raw/ -> processed/
    python process_raw_data.py photos/ --out faces/

Run it with the project's virtualenv (``.venv/bin/python process_raw_data.py``, or after
``. .venv/bin/activate``); with another Python it says so in one line.
"""

import sys
from pathlib import Path

try:
    from facerec.cli import run_script
    from facerec.hints import command_line
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from facerec.cli import run_script
    from facerec.hints import command_line


def _next_step(status: int) -> None:
    if status not in (0, 3):  # 3: some files were skipped, the crops of the others are there
        return
    argv = sys.argv[1:]
    out = argv[argv.index("--out") + 1] if "--out" in argv[:-1] else "processed"
    print(f"\nNext step: sort the crops in {out}/ into one folder per person "
          f"({out}/<person>/...) and remove the crops that are not faces,\n"
          f"or let facerec do the first pass: {command_line('annotate', out)}")


if __name__ == "__main__":
    sys.exit(run_script("detect", sys.argv[1:], __file__, after=_next_step))
