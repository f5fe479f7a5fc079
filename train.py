"""The original tutorial's entry point, kept for compatibility:

    python train.py --max_epochs 1000 --data_path dataset --learning_rate 0.01 --backbone resnet18

is ``facerec train`` with the same flags (see ``facerec train --help``; default data: dataset).
Run it with the project's virtualenv (``.venv/bin/python train.py ...``); with another Python it
says so in one line.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from facerec.cli import run_script
    except ImportError:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from facerec.cli import run_script

    sys.exit(run_script("train", sys.argv[1:], __file__))
