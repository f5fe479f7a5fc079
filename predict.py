"""The original tutorial's prediction script, kept for compatibility:

    python predict.py --checkpoint_path runs/.../epoch=712-step=7129.ckpt --image_path photo.jpg

prints ``Predicted class: person_a``. It is ``facerec predict`` with the same flags (see
``facerec predict --help``: folders, several faces, --json, --threshold, --save_annotated).
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from facerec.cli import main
    except ImportError:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from facerec.cli import main

    sys.exit(main(["predict", *sys.argv[1:]]))
