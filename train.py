"""The original tutorial's entry point, kept for compatibility:

    python train.py --max_epochs 1000 --data_path dataset --learning_rate 0.01 --backbone resnet18

is ``facerec train`` with the same flags (see ``facerec train --help``; default --data_path dataset).
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from facerec.cli import main
    except ImportError:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from facerec.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
