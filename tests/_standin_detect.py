"""Stand-in for ``facerec.detect.detect_folder`` used only while that stage is unavailable.

Writes the same contract (160x160 RGB JPEG crops with a 0.2 margin around the MTCNN box, and
``manifest.jsonl``) with facenet-pytorch's MTCNN (a test/bench reference installed by the Makefile).
Once ``from facerec.detect import detect_folder`` works, :func:`detect` uses the real thing.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def detect(raw_dir: Path, out_dir: Path, size: int = 160, margin: float = 0.2) -> None:
    """Run the project's detector when it exists, else the stand-in below."""
    try:
        from facerec.detect import detect_folder
    except ImportError:
        _standin(Path(raw_dir), Path(out_dir), size=size, margin=margin)
    else:
        detect_folder(raw_dir, out_dir, size=size, margin=margin, progress=False)


def _standin(raw_dir: Path, out_dir: Path, size: int, margin: float) -> None:
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(2)
    mtcnn = MTCNN(keep_all=True, device="cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for photo in sorted(p for p in raw_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        rel = photo.relative_to(raw_dir).as_posix()
        data = photo.read_bytes()
        img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
        boxes, probs, points = mtcnn.detect(img, landmarks=True)
        parts = Path(rel).parts
        folder = out_dir / parts[0] if len(parts) > 1 else out_dir
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", photo.stem)[:40]
        digest = hashlib.sha256(data).hexdigest()
        faces = []
        for i, (b, s, lm) in enumerate(zip(boxes if boxes is not None else [], probs if probs is not None else [],
                                           points if points is not None else [])):
            x1, y1, x2, y2 = (float(v) for v in b)
            w, h = x2 - x1, y2 - y1
            side = max(w, h) * (1 + 2 * margin)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            cb = [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]
            crop = img.crop(tuple(int(round(v)) for v in cb)).resize((size, size), Image.BILINEAR)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{stem}_{digest[:8]}_{i}.jpg"
            crop.save(folder / name, quality=95)
            faces.append({"box": [x1, y1, w, h], "score": float(s),
                          "landmarks": np.asarray(lm, dtype=float).tolist(),
                          "crop": (folder / name).relative_to(out_dir).as_posix(), "crop_box": cb})
        lines.append(json.dumps({"path": rel, "sha256": digest, "width": img.width,
                                 "height": img.height, "faces": faces, "error": None}))
    (out_dir / "manifest.jsonl").write_text("\n".join(lines) + "\n")
