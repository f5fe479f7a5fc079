"""Synthetic video clips for the video tests, encoded with PyAV from real photos.

A clip is a grey canvas on which photos ("layers") are pasted, each visible during given time
intervals and moving along a path (panning and zooming). The ground truth is known exactly: at
time t, the canvas rectangle each layer covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Layer:
    name: str                      # the person the photo shows
    image: Image.Image
    visible: list[tuple[float, float]]  # [start, end) intervals in seconds
    path: Callable[[float], tuple[float, float, float]]  # t -> (x, y, scale) of the top-left corner

    def rect(self, t: float) -> tuple[float, float, float, float] | None:
        if not any(a <= t < b for a, b in self.visible):
            return None
        x, y, s = self.path(t)
        return x, y, x + self.image.width * s, y + self.image.height * s


def render(layers: list[Layer], t: float, size: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, (118, 118, 118))
    for layer in layers:
        r = layer.rect(t)
        if r is None:
            continue
        w, h = round(r[2] - r[0]), round(r[3] - r[1])
        canvas.paste(layer.image.resize((w, h), Image.Resampling.BILINEAR), (round(r[0]), round(r[1])))
    return canvas


def encode(path: Path, layers: list[Layer], seconds: float, fps: int = 10,
           size: tuple[int, int] = (480, 272), codec: str = "mpeg4") -> Path:
    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 1_500_000
        for i in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(np.asarray(render(layers, i / fps, size)),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def truth_at(layers: list[Layer], t: float, box) -> str | None:
    """The layer whose rectangle contains the centre of ``box`` ([x, y, w, h]) at time t."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    hits = [layer.name for layer in layers
            if (r := layer.rect(t)) is not None and r[0] <= cx <= r[2] and r[1] <= cy <= r[3]]
    return hits[-1] if hits else None  # later layers are drawn on top
