"""The original tutorial's prediction script, kept for compatibility:

    python predict.py --checkpoint_path runs/.../epoch=712-step=7129.ckpt --image_path photo.jpg

prints ``Predicted class: person_a``. It is ``facerec predict`` with the same flags (see
``facerec predict --help``: folders, several faces, --json, --threshold, --save_annotated). Run it
with the project's virtualenv (``.venv/bin/python predict.py ...``); with another Python it says so
in one line.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from facerec.cli import run_script
    except ImportError:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from facerec.cli import run_script

    sys.exit(run_script("predict", sys.argv[1:], __file__))
