"""Huge images in tiny files, for the memory-budget tests and ``bench/serve_memory.py``.

A PNG is written row by row through one zlib stream (a 13000 x 13000 16-bit greyscale PNG of
uniform rows is ~330 KB and is made in about a second without ever holding its pixels); a huge
JPEG is encoded by Pillow in a child process (so the caller's memory stays small); an MJPEG video
whose frames are huge JPEGs is muxed with PyAV from that JPEG's bytes (no decoding, no encoding).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

#: PNG colour type -> samples per pixel
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(path: Path, width: int, height: int, *, bit_depth: int = 8, color_type: int = 2,
        value: int = 0x5A, transparent: bool = False) -> Path:
    """A ``width`` x ``height`` PNG whose every row is the byte ``value`` repeated (a flat grey,
    or a pattern at bit depths below 8). ``color_type``: 0 grey, 2 RGB, 3 palette (a grey
    ramp; ``transparent``: with a tRNS chunk, so it decodes through RGBA), 4 grey + alpha,
    6 RGBA."""
    row_bytes = -(-width * bit_depth * _CHANNELS[color_type] // 8)
    row = b"\0" + bytes([value]) * row_bytes  # filter type 0 (none), then the samples
    head = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    extra = b""
    if color_type == 3:
        levels = 1 << bit_depth
        extra = _chunk(b"PLTE", b"".join(bytes([i * 255 // (levels - 1)] * 3)
                                         for i in range(levels)))
        if transparent:
            extra += _chunk(b"tRNS", bytes([0, 128] + [255] * (levels - 2))[:levels])
    packer = zlib.compressobj(6)
    parts = [packer.compress(row) for _ in range(height)]
    data = b"".join(parts) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", head) + extra + _chunk(b"IDAT", data)
                     + _chunk(b"IEND", b""))
    return path


def jpeg(path: Path, width: int, height: int, *, mode: str = "RGB", quality: int = 30) -> Path:
    """A flat ``width`` x ``height`` JPEG, encoded by Pillow in a child process."""
    code = ("import sys; from PIL import Image; "
            "Image.new(sys.argv[2], (int(sys.argv[3]), int(sys.argv[4])), "
            "(90, 120, 150)[:len(sys.argv[2])] if sys.argv[2] != 'L' else 120)"
            ".save(sys.argv[1], quality=int(sys.argv[5]))")
    subprocess.run([sys.executable, "-c", code, str(path), mode, str(width), str(height),
                    str(quality)], check=True)
    return path


def mjpeg_video(path: Path, frames: list[bytes], fps: int = 2) -> Path:
    """An MJPEG ``.mkv`` whose frames are the given JPEG files' bytes, muxed as they are (the
    stream header says 640 x 480: a decoder learns the real size from each frame)."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuvj420p"
        for i, data in enumerate(frames):
            packet = av.Packet(data)
            packet.stream = stream
            packet.time_base = Fraction(1, fps)
            packet.pts = packet.dts = i
            out.mux(packet)
    return path
