"""Safe image loading: every photo a user may have, or a clear reason why it was skipped.

``load_image`` applies the EXIF orientation, converts every mode (L, LA, P, RGBA, CMYK, I;16, F...)
to 8-bit RGB, opens HEIC/HEIF through pillow-heif, refuses decompression bombs, and turns corrupt,
truncated, empty and non-image files into :class:`ImageLoadError` with a short reason. Source files
are only ever opened for reading.

Every decode runs under two budgets: a pixel limit (:data:`MAX_PIXELS`, from the header, before
anything is decoded) and a memory limit (:data:`MAX_DECODE_BYTES`: the bytes of the decoded pixels
in the file's own mode and bit depth, plus what the conversion to 8-bit RGB needs). Above it a
JPEG is decoded at a reduced size (libjpeg's DCT scaling: 1/2, 1/4, 1/8); other formats are
decoded, then converted and reduced strip by strip, so only the file's own pixels and the reduced
copy are ever held whole; when even the file's own pixels do not fit, the image is refused
("too large") with the memory it would need. A reduced image keeps its original size and its
``scale``, so boxes stay in the original's pixels.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
#: The most memory one decode may take at its peak, in bytes (see the module docstring): a
#: 12-MP JPEG needs ~50 MB, a 100-MP 8-bit RGB PNG ~380 MB; a 169-MP 16-bit grey PNG (338 MB of
#: its own pixels) is reduced while converting, and bigger ones are refused.
MAX_DECODE_BYTES = 384 * 1024 * 1024
#: rows of an image converted at once when it is reduced strip by strip: about this many pixels
_STRIP_PIXELS = 1 << 20


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


_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _grey_top(im: Image.Image) -> float:
    """The white of a 16/32-bit greyscale image: 65535 when any value is above 255, else 255."""
    high = im.getextrema()[1]
    return 65535.0 if high > 255 else 255.0


def to_rgb(im: Image.Image, top: float | None = None) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. Transparent areas become white (like a photo viewer shows them).
    ``top``: the white of a 16/32-bit greyscale image (:func:`_grey_top` of the whole image when a
    strip of it is converted)."""
    if im.mode == "RGB":
        return im
    if im.mode in _WIDE_GREY:
        # 16/32-bit greyscale: scale the value range to 8 bits instead of clipping at 255, a few
        # rows at a time (a float64 copy of a 169-MP image would take 1.4 GB)
        top = _grey_top(im) if top is None else top
        out = np.empty((im.height, im.width), np.uint8)
        # integers through a table of every 16-bit value (the same numbers as the float formula)
        lut = None if im.mode == "F" else \
            np.clip(np.round(np.arange(65536, dtype=np.float64) * (255.0 / top)), 0, 255)
        lut = None if lut is None else lut.astype(np.uint8)
        rows = max(1, _STRIP_PIXELS // max(1, im.width))
        for y in range(0, im.height, rows):
            band = np.asarray(im.crop((0, y, im.width, min(im.height, y + rows))))
            if lut is None:
                band = np.clip(band.astype(np.float64) * (255.0 / top), 0, 255).round()
            else:
                band = lut[band if band.dtype.itemsize == 2 else np.clip(band, 0, 65535)]
            out[y:y + band.shape[0]] = band
        return Image.fromarray(out).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA:
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


def decode_cost(source: bytes | BinaryIO) -> int:
    """The most memory :func:`load_image` can take to decode ``source`` (bytes or a seekable
    file; only its header is read, no pixel decoded): the image's own pixels and its RGB
    conversion, at most :data:`MAX_DECODE_BYTES` (a bigger image is reduced or refused within
    it), plus the file's bytes. A server admits uploads against a byte budget with it.
    Unparseable data costs its own size (its decode fails at once)."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(stream) as im:
                need = im.size[0] * im.size[1] * (2 * _pixel_bytes(im.mode) + _convert_bytes(im) + 4)
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is refused by the decode
        need = 0
    finally:
        stream.seek(0)
    return int(min(need, MAX_DECODE_BYTES) + size)


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


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of a Pillow image in ``mode`` (Pillow keeps RGB, LA, YCbCr in 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _convert_bytes(im: Image.Image) -> int:
    """Bytes per pixel that :func:`to_rgb` adds at its peak to the image's own (a bound)."""
    if im.mode == "RGB":
        return 0
    if im.mode in _WIDE_GREY:
        return 1 + 4              # the 8-bit grey copy, then RGB
    if im.mode in _ALPHA or (im.mode == "P" and "transparency" in im.info):
        return 16                 # RGBA, the white background, the composite, RGB
    return 4                      # convert("RGB")


def _too_large(width: int, height: int, mode: str, need: int) -> ImageLoadError:
    return ImageLoadError(
        "too large", f"{width}x{height} pixels of mode {mode} need at least {need / 2**20:.0f} "
        f"MB to decode, above the {MAX_DECODE_BYTES / 2**20:.0f} MB limit per image")


def _draft_jpeg(im: Image.Image, request: tuple[int, int] | None) -> None:
    """Decode a JPEG at a reduced size (DCT scaling) when ``request`` (the size wanted, in the
    file's orientation) allows, or when its full decode would not fit the memory budget."""
    w, h = im.size
    cost = _pixel_bytes(im.mode) + _convert_bytes(im)
    r = next((r for r in (1, 2, 4, 8) if -(-w // r) * -(-h // r) * cost <= MAX_DECODE_BYTES), 8)
    fits = (-(-w // r), -(-h // r))
    if request is not None:
        fits = (min(fits[0], request[0]), min(fits[1], request[1]))
    if fits != (w, h):
        # draft() picks the smallest DCT scale (1/2, 1/4, 1/8) that stays >= the requested size
        im.draft("RGB", fits)


def _orientation(im: Image.Image, loaded: bool = False) -> int | None:
    """The EXIF orientation (1 = upright); None when it cannot be known before decoding (a PNG
    may put its EXIF after its pixels, and Pillow's PNG ``getexif`` then decodes the image)."""
    if not loaded and im.format == "PNG" and "exif" not in im.info:
        return None
    return im.getexif().get(0x0112, 1)


def _decode(im: Image.Image, max_side: int | None) -> LoadedImage:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            "too large",
            f"{width}x{height} = {width * height / 1e6:.0f} MP is above the {MAX_PIXELS / 1e6:.0f} MP "
            "limit (refused as a possible decompression bomb)",
        )
    orientation = _orientation(im)
    turned = orientation in (5, 6, 7, 8)  # rotated 90 degrees: the upright image is height x width
    if turned:
        width, height = height, width
    tw, th, scale = _target_size(width, height, max_side)
    if im.format == "JPEG":
        _draft_jpeg(im, ((th, tw) if turned else (tw, th)) if scale < 1.0 else None)
        if scale == 1.0 and im.size[0] * im.size[1] < width * height:  # reduced for the budget
            tw, th = im.size[::-1] if turned else im.size
            scale = tw / width
    pixels = im.size[0] * im.size[1]
    upright = im.size[::-1] if turned else im.size
    need = pixels * (_pixel_bytes(im.mode) + _convert_bytes(im)
                     + (_pixel_bytes(im.mode) if orientation in _UPRIGHT else 0)) \
        + (tw * th * 4 if (tw, th) != upright else 0)
    if need > MAX_DECODE_BYTES:
        return _decode_reduced(im, width, height, (tw, th) if scale < 1.0 else None,
                               orientation is not None)
    im.load()
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    if orientation is None:  # known now (a PNG): the upright size may differ
        orientation = _orientation(im, loaded=True)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
            tw, th, scale = _target_size(width, height, max_side)
    if orientation in _UPRIGHT:  # (ImageOps.exif_transpose would copy even an upright image)
        im = im.transpose(_UPRIGHT[orientation])
    im = to_rgb(im)
    if im.size != (tw, th):
        im = im.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return LoadedImage(im, width, height, scale)


#: EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _decode_reduced(im: Image.Image, width: int, height: int, target: tuple[int, int] | None,
                    upright_known: bool) -> LoadedImage:
    """An image whose whole RGB conversion would not fit :data:`MAX_DECODE_BYTES`: decode its own
    pixels (refused when they alone do not fit), then convert and box-reduce it strip by strip
    into an RGB copy that fits, made upright, then resized to ``target`` (upright; None: as large
    as the budget allows). ``width`` x ``height``: the upright original size, when
    ``upright_known`` (else the file's: its orientation is read once decoded)."""
    w, h = im.size  # the decoded size, in the file's orientation
    own = w * h * _pixel_bytes(im.mode)
    strip = _STRIP_PIXELS * (_pixel_bytes(im.mode) + _convert_bytes(im) + 8)
    room = MAX_DECODE_BYTES - own - strip
    if room < 4 * 1024 * 1024:  # not even a 1-MP copy would fit: refuse
        raise _too_large(w, h, im.mode, own + strip + 4 * 1024 * 1024)
    im.load()
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    orientation = _orientation(im, loaded=True)
    if orientation in _UPRIGHT:  # turning the reduced copy upright copies it once more
        room = min(room, MAX_DECODE_BYTES // 2)
    k = max(1, math.ceil(math.sqrt(w * h * 4 / room)))  # the budget's reduction
    if not upright_known and orientation in (5, 6, 7, 8):
        width, height = height, width  # a PNG whose EXIF came after its pixels
        if target is not None:
            target = target[::-1]
    if target is not None:  # max_side's: reduce down to the target size, not below
        tw, th = target[::-1] if orientation in (5, 6, 7, 8) else target
        k = max(k, min(w // max(1, tw), h // max(1, th)))
    top = _grey_top(im) if im.mode in _WIDE_GREY else None
    out = Image.new("RGB", (-(-w // k), -(-h // k)))
    rows = max(k, (_STRIP_PIXELS // max(1, w)) // k * k)
    for y in range(0, h, rows):
        part = to_rgb(im.crop((0, y, w, min(h, y + rows))), top)
        out.paste(part.reduce(k) if k > 1 else part, (0, y // k))
        del part
    im.close()  # the file's own pixels are no longer needed
    if orientation in _UPRIGHT:
        out = out.transpose(_UPRIGHT[orientation])
    if target is not None and out.width > target[0]:
        out = out.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return LoadedImage(out, width, height, out.width / width)


def as_rgb_image(image) -> LoadedImage:
    """Accept a path, a :class:`LoadedImage` (as is: a reduced one keeps its scale), a PIL image
    or an HxWx3 uint8 array; return a :class:`LoadedImage`."""
    if isinstance(image, LoadedImage):
        return image
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
