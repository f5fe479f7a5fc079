"""Safe image loading: every photo a user may have, or a clear reason why it was skipped.

``load_image`` applies the EXIF orientation, converts every mode (L, LA, P, RGBA, CMYK, I;16, F...)
to 8-bit RGB, opens HEIC/HEIF through pillow-heif, refuses decompression bombs, and turns corrupt,
truncated, empty and non-image files into :class:`ImageLoadError` with a short reason. Source files
are only ever opened for reading.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facerec.safeio import display_path

try:  # HEIC/HEIF (iPhone photos); optional at import time so a broken install still runs JPEGs
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover - depends on the platform's wheel
    pass

#: file types taken for images when a folder is searched (a file named on the command line, or a
#: photo under detect's input, is tried whatever its name)
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                        ".heic", ".heif"})

# Above this many pixels an image is refused as a possible decompression bomb. Pillow's own hard
# limit (2 x MAX_IMAGE_PIXELS, about 179 MP) leaves room for real 100+ MP camera photos.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)


class ImageLoadError(Exception):
    """A file that cannot be used as a photo. ``reason`` is a short category for summaries."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class LoadedImage:
    """An RGB photo in its upright orientation, plus the size of the original.

    ``image`` may be a downscaled copy (see ``max_side``); ``scale`` is image size / original size,
    so original pixel = image pixel / scale.
    """

    image: Image.Image
    width: int
    height: int
    scale: float = 1.0


def iter_files(root: Path, exclude: Path | None = None) -> Iterator[Path]:
    """Every non-hidden entry under ``root`` that is not a real folder, recursively, in a stable
    (sorted) order: regular files, but also links (to files, to folders, dangling, looping), FIFOs
    and sockets, so that a caller can report each one (see :func:`entry_problem`). Real folders
    are walked; linked folders are yielded, never followed (no loops, no escaping ``root``)."""
    exclude = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        entries = list(filenames)
        walk = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if (here / d).is_symlink():
                entries.append(d)
            elif exclude is None or (here / d).resolve() != exclude:
                walk.append(d)
        dirnames[:] = sorted(walk)
        for name in sorted(entries):
            if not name.startswith("."):
                yield here / name


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
          stat.S_IFBLK: "a device", stat.S_IFDIR: "a linked folder (not followed)"}


def _stat_problem(path: Path, exc: OSError) -> ImageLoadError:
    if exc.errno == errno.ELOOP:
        return ImageLoadError("unreadable", "symlink loop")
    if exc.errno == errno.ENOENT and path.is_symlink():
        return ImageLoadError("unreadable", f"broken link to {display_path(os.readlink(path))}")
    return ImageLoadError("unreadable", exc.strerror or str(exc))


def entry_problem(path: str | os.PathLike) -> tuple[os.stat_result | None, ImageLoadError | None]:
    """(stat, None) for a regular file (links followed), else (None, why it cannot be a photo).
    Never opens the file, so a FIFO cannot block."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        return None, _stat_problem(path, exc)
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        return None, ImageLoadError("not a file", kind)
    return st, None


def open_file(path: str | os.PathLike) -> BinaryIO:
    """A regular file opened for reading. Opened non-blocking and checked after opening, so a FIFO
    or device (or one swapped in under the name) can never hang us; raises :class:`ImageLoadError`."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise _stat_problem(path, exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageLoadError("not a file", _KINDS.get(stat.S_IFMT(mode), "not a regular file"))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file (see :func:`open_file`); raises :class:`ImageLoadError`."""
    with open_file(path) as handle:
        try:
            return handle.read()
        except OSError as exc:
            raise ImageLoadError("unreadable", exc.strerror or str(exc)) from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. Transparent areas become white (like a photo viewer shows them)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16/32-bit greyscale: scale the value range to 8 bits instead of clipping at 255.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int, float]:
    if not max_side or max(width, height) <= max_side:
        return width, height, 1.0
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def load_image(path: str | os.PathLike, max_side: int | None = None,
               data: bytes | None = None) -> LoadedImage:
    """Open ``path`` as an upright 8-bit RGB image, optionally downscaled to ``max_side``.

    JPEGs are decoded at reduced size when ``max_side`` allows it (libjpeg DCT scaling), which makes
    12-MP photos cheap to detect on. ``data``: the file's bytes when the caller already read them
    (``path`` then only names the file). Raises :class:`ImageLoadError` with a short reason.
    """
    source = open_file(path) if data is None else io.BytesIO(data)
    with source:
        return _load_from(source, max_side)


def _load_from(source: BinaryIO, max_side: int | None) -> LoadedImage:
    if source.seek(0, io.SEEK_END) == 0:
        raise ImageLoadError("empty file", "0 bytes")
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                return _decode(im, max_side)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError("too large", str(exc).split(" could be")[0].rstrip(" ,")) from None
    except UnidentifiedImageError:
        raise ImageLoadError("not an image", "unrecognised format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc) or type(exc).__name__
        reason = "truncated" if "truncated" in message.lower() else "corrupt"
        raise ImageLoadError(reason, message) from None
    except MemoryError:
        raise ImageLoadError("too large", "out of memory while decoding") from None


def _decode(im: Image.Image, max_side: int | None) -> LoadedImage:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            "too large",
            f"{width}x{height} = {width * height / 1e6:.0f} MP is above the {MAX_PIXELS / 1e6:.0f} MP "
            "limit (refused as a possible decompression bomb)",
        )
    orientation = im.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):  # rotated 90 degrees: the upright image is height x width
        width, height = height, width
    tw, th, scale = _target_size(width, height, max_side)
    if scale < 1.0 and im.format == "JPEG":
        # draft() picks the smallest DCT scale (1/2, 1/4, 1/8) that stays >= the requested size.
        request = (tw, th) if orientation not in (5, 6, 7, 8) else (th, tw)
        im.draft("RGB", request)
    im.load()
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im) or im
    im = to_rgb(im)
    if im.size != (tw, th):
        im = im.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return LoadedImage(im, width, height, scale)


def as_rgb_image(image) -> LoadedImage:
    """Accept a path, a PIL image or an HxWx3 uint8 array; return a :class:`LoadedImage`."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        rgb = to_rgb(image)
        return LoadedImage(rgb, rgb.width, rgb.height)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got {arr.dtype}")
    rgb = Image.fromarray(np.ascontiguousarray(arr[:, :, :3]), "RGB")
    return LoadedImage(rgb, rgb.width, rgb.height)
